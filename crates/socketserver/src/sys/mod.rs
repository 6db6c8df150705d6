//! Platform code: the only module allowed `unsafe`.
//!
//! Every backend provides the same small set of functions; the rest of the crate calls them
//! through `crate::sys::*` and never touches `libc`/`nix` directly.
//!
//! Required items (unix):
//! - `recv_from_dontwait(socket, buf)`: one datagram without blocking, reporting its real length
//!   so truncation is detected instead of silently cutting the packet.
//! - `fork()`: fork the process; the child side is only safe for the reasons given at the call.
//! - `child_prepare(close_fds, block_signals)`: what a forked child does before it runs a handler.
//! - `exit_child(code)`: leave a forked child without running the parent's destructors.
//! - `reap(pid)`, `kill(pid)`: waitpid(WNOHANG) and SIGKILL for the fork mode.
//! - `epoll_add_exclusive(epoll, fd, token)`: watch a listener shared by several event loops
//!   so that one loop, not all, wakes per connection (`Unsupported` where there is no such
//!   flag: the caller then registers it plainly).
//! - `open_beneath(dir, path)`: open a file for reading with the kernel keeping the
//!   resolution inside `dir` (`Unsupported` without `openat2`: the caller checks paths).
//! - `adopt_socket_fd(fd)`: take ownership of an inherited descriptor once it is known to be
//!   an open socket (`--listen fd:N`, systemd socket activation).
//! - `SharedWords`: zeroed 64-bit atomics in memory shared with forked children (anonymous)
//!   or with other processes (a memfd), for the metrics counters.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;
