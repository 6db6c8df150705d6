//! The binary's calls that need `unsafe` (the workspace denies it; this file alone allows
//! it), behind a safe function whose caller keeps its precondition.
#![allow(unsafe_code)]

/// Removes systemd's socket-activation variables (`LISTEN_PID`, `LISTEN_FDS`,
/// `LISTEN_FDNAMES`) from the environment once the sockets are taken, as the contract says and
/// `sd_listen_fds(3)` does with `unset_environment`.
///
/// Must be called while this process has one thread: `run` calls it before `bind` starts any
/// (the logger starts none).
pub fn forget_socket_activation() {
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: `remove_var` is safe while no other thread reads or writes the environment;
        // this runs before the server starts its threads, and nothing before it starts one.
        unsafe { std::env::remove_var(name) };
    }
}

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use nix::libc;

/// Starts `command` with `fds` on descriptors 3, 4, … in order (the child's only inherited
/// descriptors besides 0-2: everything else this process opens is close-on-exec), in a
/// process group of its own, and asks the kernel to send the child SIGTERM should this
/// process die first, so no worker outlives its supervisor.
pub fn spawn_with_fds(command: &mut Command, fds: &[RawFd]) -> io::Result<Child> {
    // Copies above the target range first, so that no `dup2` below overwrites a source it has
    // yet to copy. They are close-on-exec and closed again here once the child is started.
    let floor = 3 + i32::try_from(fds.len()).unwrap_or(i32::MAX - 3);
    let mut moved = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor the caller holds open; the result is
        // a new descriptor owned by nothing else.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `copy` was just returned by fcntl and is owned by nobody else.
        moved.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let sources: Vec<RawFd> = moved.iter().map(AsRawFd::as_raw_fd).collect();
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, and only makes
    // async-signal-safe calls (dup2, prctl, getppid) on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            for (i, &fd) in sources.iter().enumerate() {
                let target = 3 + i as i32;
                // dup2 leaves the target without close-on-exec: it survives the exec.
                if libc::dup2(fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(io::Error::last_os_error());
            }
            // A process group of its own: a terminal's Ctrl-C reaches the supervisor alone,
            // which passes it on once (a worker that got it twice would stop at once).
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor died before the request was made: do not start an orphan.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("the supervisor is gone"));
            }
            Ok(())
        });
    }
    let child = command.spawn();
    drop(moved);
    child
}

/// One self-pipe per signal the supervisor handles: SIGINT, SIGTERM, SIGHUP, SIGCHLD, in that
/// order (`signal-hook` writes a byte to a pipe's write end from the handler).
pub struct SignalPipes {
    readers: Vec<UnixStream>,
}

impl SignalPipes {
    pub fn install() -> io::Result<SignalPipes> {
        let mut readers = Vec::new();
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD] {
            let (read, write) = UnixStream::pair()?;
            read.set_nonblocking(true)?;
            write.set_nonblocking(true)?;
            signal_hook::low_level::pipe::register(signal, write)?;
            readers.push(read);
        }
        Ok(SignalPipes { readers })
    }

    pub fn fds(&self) -> Vec<RawFd> {
        self.readers.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Empties pipe `index` after it was readable.
    pub fn drain(&self, index: usize) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.readers[index]).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no limit); returns which
/// are.
pub fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    use std::os::fd::BorrowedFd;
    // SAFETY: the caller holds every descriptor open for the duration of this call.
    let borrowed: Vec<BorrowedFd<'_>> = fds
        .iter()
        .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
        .collect();
    let mut polled: Vec<PollFd<'_>> = borrowed
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let wait = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
    };
    match nix::poll::poll(&mut polled, wait) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(vec![false; fds.len()]),
        Err(e) => return Err(e.into()),
    }
    Ok(polled
        .iter()
        .map(|p| {
            p.revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
        })
        .collect())
}

/// Takes descriptor `fd`, which the supervisor passed this worker (its metrics block, after
/// the listeners). Called once, for a number nothing else in this process uses.
pub fn inherited_fd(fd: usize) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: F_GETFD only asks whether the number is an open descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an open descriptor the supervisor put at this number for this process, which
    // nothing else here claims (the listeners are the ones below it).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
