//! Unix implementation of the platform layer (see `sys/mod.rs` for the list of items).
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{OwnedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use socket2::{SockAddr, Socket};

/// Accepts a connection that is non-blocking and close-on-exec from the start
/// (`accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`, socket2's): two `fcntl` calls per connection
/// fewer than accepting and then setting `O_NONBLOCK`.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub(crate) fn accept_nonblocking(listener: &Socket) -> io::Result<(Socket, SockAddr)> {
    listener.accept4(nix::libc::SOCK_NONBLOCK | nix::libc::SOCK_CLOEXEC)
}

/// Accepts a connection and makes it non-blocking (where `accept4` has no flags for it).
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub(crate) fn accept_nonblocking(listener: &Socket) -> io::Result<(Socket, SockAddr)> {
    let (conn, addr) = listener.accept()?;
    conn.set_nonblocking(true)?;
    Ok((conn, addr))
}

/// Receives one datagram without blocking (`MSG_DONTWAIT`), even on a blocking socket.
///
/// Returns the datagram's real length with `MSG_TRUNC` semantics: a value larger than
/// `buf.len()` means the datagram did not fit and its tail was discarded by the kernel.
pub(crate) fn recv_from_dontwait(socket: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the same layout as `u8`, and `recvfrom` only ever writes
    // initialised bytes into the buffer; it never reads from it or de-initialises it. The slice
    // is therefore still a valid, fully initialised `&mut [u8]` when this borrow ends.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    socket.recv_from_with_flags(uninit, nix::libc::MSG_DONTWAIT | nix::libc::MSG_TRUNC)
}

/// The result of [`fork`].
pub(crate) enum Fork {
    /// In the parent; the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// Forks the process.
///
/// The caller must make sure the child does nothing that can deadlock on a lock another thread
/// held at the moment of the fork: in this crate the forking thread is the serving loop, the
/// only other threads in fork mode are the signal watcher (which blocks in `read` and takes no
/// lock the child touches), and the child only runs the handler and then [`exit_child`].
pub(crate) fn fork() -> io::Result<Fork> {
    // SAFETY: see the function's doc comment: the child runs only the request handler (which
    // the documentation of `Mode::Fork` tells users must be fork-safe, as in Python's
    // ForkingMixIn) and leaves through `_exit`, never returning into the parent's stack frames
    // beyond the dispatch function, never touching the server's locks.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Fork::Parent(child.as_raw())),
        Ok(nix::unistd::ForkResult::Child) => {
            FORKED_CHILD.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(Fork::Child)
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Set in a child made by [`fork`]: process-wide state, like the pid.
static FORKED_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True in a child made by [`fork`] (read by `mode/`: the worker's name, the fork link).
pub(crate) fn is_forked_child() -> bool {
    FORKED_CHILD.load(std::sync::atomic::Ordering::SeqCst)
}

/// Prepares a freshly forked child: closes the server's listening sockets (so a stopped parent's
/// listener is really closed and new connections are refused, not queued on a copy) and blocks
/// the signals the parent handles, so a Ctrl-C sent to the whole process group neither kills an
/// in-flight request nor reaches the parent's signal pipe through the inherited handler.
pub(crate) fn child_prepare(close_fds: &[RawFd], block: &[i32]) {
    for &fd in close_fds {
        let _ = nix::unistd::close(fd);
    }
    let _ = block_signals(block);
}

fn sigset(signals: &[i32]) -> SigSet {
    let mut set = SigSet::empty();
    for &sig in signals {
        if let Ok(sig) = Signal::try_from(sig) {
            set.add(sig);
        }
    }
    set
}

/// Blocks `signals` for the calling thread; returns the previous mask for [`restore_signals`].
/// Used around `fork()`, so the child cannot run the parent's signal handlers before it
/// blocks them itself (they write to the parent's signal pipe).
pub(crate) fn block_signals(signals: &[i32]) -> Option<SigSet> {
    if signals.is_empty() {
        return None;
    }
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&sigset(signals)),
        Some(&mut old),
    )
    .ok()
    .map(|()| old)
}

/// Restores a mask saved by [`block_signals`]; signals that arrived meanwhile are delivered.
pub(crate) fn restore_signals(old: Option<SigSet>) {
    if let Some(old) = old {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

/// Leaves a forked child at once, without running destructors or `atexit` handlers that belong
/// to the parent (Python's `os._exit` in ForkingMixIn).
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointers and never returns; it is the documented way for a
    // forked child to end without running the parent's `atexit` handlers or flushing its
    // stdio buffers twice.
    unsafe { nix::libc::_exit(code) }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
/// Reaps `pid` if it has exited. Returns `true` when the child is gone (reaped now, or already
/// reaped by someone else).
pub(crate) fn reap(pid: i32) -> bool {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(nix::errno::Errno::EINTR) => false,
        // ECHILD: not our child any more (reaped elsewhere); nothing left to wait for.
        Err(_) => true,
    }
}

/// True when `pid` has exited (or is not our child any more), without reaping it: the caller
/// takes it off the forced-close table first, so a `kill` can never reach a recycled pid.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn exited(pid: i32) -> bool {
    use nix::sys::wait::{Id, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(nix::errno::Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// Elsewhere: reap at once (the recycled-pid window is left open).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn exited(pid: i32) -> bool {
    reap(pid)
}

/// Waits for `pid` to exit and reaps it.
pub(crate) fn reap_blocking(pid: i32) {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Copies up to `count` bytes of `file` from `*offset` to the socket without passing through
/// user space, advancing `*offset`. `Unsupported` where the platform has no such call, so the
/// caller can fall back to reading and writing.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn sendfile(
    out: &Socket,
    file: &std::fs::File,
    offset: &mut i64,
    count: usize,
) -> io::Result<usize> {
    nix::sys::sendfile::sendfile(out, file, Some(offset), count).map_err(io::Error::from)
}

/// Segments a TCP socket has sent (`tcpi_segs_out` of `TCP_INFO`, at its offset in the
/// kernel's `struct tcp_info` since Linux 4.2): how tests see what leaves in one packet.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn tcp_segments_out(socket: &Socket) -> io::Result<u32> {
    let mut info = [0u8; 256];
    let mut len = info.len() as nix::libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info` and sets `len` to how many.
    let rc = unsafe {
        nix::libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    info.get(136..140)
        .filter(|_| len >= 140)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| io::Error::other("TCP_INFO without tcpi_segs_out (Linux before 4.2)"))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn sendfile(
    _out: &Socket,
    _file: &std::fs::File,
    _offset: &mut i64,
    _count: usize,
) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Waits until `fd` is readable (`writable`: writable), or hung up or failed, at most
/// `timeout` (`None`: no limit). `false` when the time ran out.
pub(crate) fn poll_one(
    fd: std::os::fd::BorrowedFd<'_>,
    writable: bool,
    timeout: Option<std::time::Duration>,
) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let events = if writable {
        PollFlags::POLLOUT
    } else {
        PollFlags::POLLIN
    };
    let mut polled = [PollFd::new(fd, events)];
    // Rounded up to a whole millisecond, so a wait never ends just before its deadline.
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t.saturating_add(std::time::Duration::from_micros(999)))
            .unwrap_or(PollTimeout::MAX),
    };
    loop {
        match nix::poll::poll(&mut polled, timeout) {
            Ok(n) => return Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until one of `fds` is readable (or hung up), at most `timeout` (`None`: no limit).
/// Returns, per fd, whether it is ready; all `false` when the time ran out.
pub(crate) fn poll_readable(
    fds: &[std::os::fd::BorrowedFd<'_>],
    timeout: Option<std::time::Duration>,
) -> io::Result<Vec<bool>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    // Longer than poll(2) can express (~24 days): wait as long as it can, the caller loops.
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
    };
    loop {
        match nix::poll::poll(&mut polled, timeout) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(polled
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
        .collect())
}

/// Adds a listening socket to the epoll instance `epoll` (a mio `Poll`) for readability,
/// edge-triggered, with `EPOLLEXCLUSIVE`: of several event loops watching the same listener,
/// the kernel wakes one per new connection instead of all of them (the thundering herd).
/// `token` is what mio reports for it. Removed with mio's `deregister`, like any source.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn epoll_add_exclusive(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    use nix::libc;
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32,
        u64: token,
    };
    // SAFETY: `epoll` and `fd` are open descriptors owned by the caller for the duration of
    // the call, and `event` is a valid, initialised `epoll_event` that the kernel only reads.
    let rc = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn epoll_add_exclusive(_epoll: RawFd, _fd: RawFd, _token: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Opens `path` (relative, no `..`) under the directory `dir` for reading, with the kernel
/// guaranteeing that resolution never leaves `dir` (`openat2` with `RESOLVE_BENEATH`: a `..`,
/// an absolute symlink or a symlink leading out fails with `EXDEV`; magic links are refused).
/// `O_NONBLOCK`, so a FIFO cannot block the caller (the caller refuses what is not a regular
/// file). `Unsupported` where there is no `openat2` (the caller then checks paths itself).
#[cfg(target_os = "linux")]
#[cfg_attr(not(feature = "http"), allow(dead_code))] // the static-file service's
pub(crate) fn open_beneath(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &std::path::Path,
) -> io::Result<std::fs::File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(dir, path, how) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        Err(nix::errno::Errno::ENOSYS) => Err(io::ErrorKind::Unsupported.into()),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(not(target_os = "linux"))]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn open_beneath(
    _dir: std::os::fd::BorrowedFd<'_>,
    _path: &std::path::Path,
) -> io::Result<std::fs::File> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Creates `name` in the directory `dir` for writing (mode 0644 before the umask),
/// exclusively: an existing file or symlink of that name fails (`AlreadyExists`), so nothing
/// is ever written through a link someone planted.
#[cfg_attr(not(feature = "http"), allow(dead_code))] // the upload service's
pub(crate) fn create_in(dir: &std::fs::File, name: &std::ffi::OsStr) -> io::Result<std::fs::File> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_CREAT
        | OFlag::O_EXCL
        | OFlag::O_WRONLY
        | OFlag::O_CLOEXEC
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY;
    let mode = Mode::from_bits_truncate(0o644);
    openat(dir, name, flags, mode)
        .map(std::fs::File::from)
        .map_err(io::Error::from)
}

/// Renames `from` to `to`, both in the directory `dir`. Unless `replace`, an existing `to` is
/// left alone and the call fails with `AlreadyExists` (`renameat2` with `RENAME_NOREPLACE`,
/// atomic: of two racing uploads exactly one gets the name).
#[cfg(target_os = "linux")]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn rename_in(
    dir: &std::fs::File,
    from: &std::ffi::OsStr,
    to: &std::ffi::OsStr,
    replace: bool,
) -> io::Result<()> {
    use nix::fcntl::{RenameFlags, renameat, renameat2};
    if replace {
        renameat(dir, from, dir, to).map_err(io::Error::from)
    } else {
        renameat2(dir, from, dir, to, RenameFlags::RENAME_NOREPLACE).map_err(io::Error::from)
    }
}

#[cfg(not(target_os = "linux"))]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn rename_in(
    dir: &std::fs::File,
    from: &std::ffi::OsStr,
    to: &std::ffi::OsStr,
    replace: bool,
) -> io::Result<()> {
    use nix::fcntl::renameat;
    if !replace {
        // link(2) fails on an existing name: the same guarantee, then the temporary goes.
        nix::unistd::linkat(dir, from, dir, to, nix::fcntl::AtFlags::empty())
            .map_err(io::Error::from)?;
        return unlink_in(dir, from);
    }
    renameat(dir, from, dir, to).map_err(io::Error::from)
}

/// Removes the file `name` from the directory `dir`.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn unlink_in(dir: &std::fs::File, name: &std::ffi::OsStr) -> io::Result<()> {
    nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
        .map_err(io::Error::from)
}

/// Takes ownership of an inherited descriptor `fd` after checking that it is an open socket,
/// and marks it close-on-exec (a program this process starts inherits only what it is given).
/// Fails with `BadFd`/`InvalidInput` naming what it is otherwise.
///
/// The caller must take each descriptor at most once (`Listener::from_raw_fd` documents it;
/// `Listener::from_systemd` takes the systemd range once per process).
pub(crate) fn adopt_socket_fd(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{F_GETFD, F_SETFD, FdFlag, fcntl};
    use nix::sys::stat::{SFlag, fstat};
    use std::os::fd::{BorrowedFd, FromRawFd};
    if fd < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is negative"),
        ));
    }
    // SAFETY: the descriptor is only borrowed for the two checks below, which report a closed
    // or foreign descriptor as an error (EBADF) rather than touching memory.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = fcntl(borrowed, F_GETFD).map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("descriptor {fd} is not open"),
        )
    })?;
    let stat = fstat(borrowed).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    let cloexec = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
    fcntl(borrowed, F_SETFD(cloexec)).map_err(io::Error::from)?;
    // SAFETY: `fd` is open and a socket (checked above), and the caller hands it over once:
    // nothing else in this process owns it, so the `OwnedFd` may close it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `len` zeroed 64-bit atomics in a shared mapping: anonymous (forked children count into
/// the same words) or of a memfd (a process that maps the same memfd sees them too). Unmapped
/// on drop.
pub(crate) struct SharedWords {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the mapping holds only atomics, which are safe to share between threads.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    fn bytes(len: usize) -> io::Result<std::num::NonZeroUsize> {
        len.checked_mul(8)
            .and_then(std::num::NonZeroUsize::new)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no words to map"))
    }

    /// Anonymous shared memory: this process and the children it forks.
    pub(crate) fn anonymous(len: usize) -> io::Result<SharedWords> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
        let bytes = SharedWords::bytes(len)?;
        // SAFETY: a fresh anonymous mapping, aliasing nothing; zero-filled by the kernel,
        // which is a valid `AtomicU64` bit pattern.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(SharedWords { ptr, len })
    }

    /// A new memfd of `len` words, mapped: hand the descriptor to another process, which
    /// maps it with [`of_fd`](Self::of_fd).
    pub(crate) fn memfd(len: usize) -> io::Result<(SharedWords, OwnedFd)> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let bytes = SharedWords::bytes(len)?;
        let fd = memfd_create(c"socketserver-metrics", MFdFlags::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, i64::try_from(bytes.get()).unwrap_or(i64::MAX))?;
        Ok((SharedWords::of_fd(&fd, len)?, fd))
    }

    /// Maps the memfd `fd`, which must hold exactly `len` words.
    pub(crate) fn of_fd(fd: &OwnedFd, len: usize) -> io::Result<SharedWords> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let bytes = SharedWords::bytes(len)?;
        let size = nix::sys::stat::fstat(fd)?.st_size;
        if u64::try_from(size).ok() != Some(bytes.get() as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a metrics block of {size} bytes, not {}: from another version?",
                    bytes.get()
                ),
            ));
        }
        // SAFETY: a shared mapping of a memfd of exactly this size; its bytes are only ever
        // accessed as atomics, here and in every other process mapping it.
        let ptr = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        Ok(SharedWords { ptr, len })
    }

    pub(crate) fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is `len` words long, page-aligned, lives as long as `self`, and
        // is only ever accessed through atomics.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().cast::<std::sync::atomic::AtomicU64>(),
                self.len,
            )
        }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping made in the constructor, unmapped once; no reference to its
        // words outlives `self` (they borrow it).
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len * 8) };
    }
}
