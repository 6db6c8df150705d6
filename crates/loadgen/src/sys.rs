//! Every call into the system that needs `unsafe`, each behind a safe function with its
//! reasons (`// SAFETY:`): the rest of loadgen has no `unsafe` (the workspace denies it, and
//! this file alone allows it).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::net::Peer;

/// C structures that are plain integers and byte arrays, for which all zeroes is a valid value.
pub trait Plain: Copy {}
impl Plain for libc::sockaddr_in {}
impl Plain for libc::sockaddr_in6 {}
impl Plain for libc::sockaddr_un {}
impl Plain for libc::rlimit {}
impl Plain for libc::rusage {}

/// An all-zeroes value of a [`Plain`] C structure.
pub fn zeroed<T: Plain>() -> T {
    // SAFETY: `Plain` is implemented only for structures of integers and byte arrays (and
    // timevals, which are integers), for which all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// A new stream socket in `domain`, non-blocking and close-on-exec where the system can say so
/// at creation (Linux, Android; elsewhere the caller sets non-blocking).
pub fn stream_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let kind = libc::SOCK_STREAM;
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(domain, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor that was just created and that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `connect(2)` of `fd` to `peer` (`EINPROGRESS` and the like come back as errors).
pub fn connect(fd: RawFd, peer: &Peer) -> io::Result<()> {
    let (addr, len) = peer.raw();
    // SAFETY: `addr` and `len` describe a sockaddr owned by `peer`, which outlives the call;
    // connect only reads it. A bad descriptor is reported through the return value.
    if unsafe { libc::connect(fd, addr, len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new epoll instance.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers; the result is checked before use.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor that was just created and that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(2)`: `op` for `fd` in `epoll`, with `event`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn epoll_ctl(
    epoll: RawFd,
    op: libc::c_int,
    fd: RawFd,
    mut event: libc::epoll_event,
) -> io::Result<()> {
    // SAFETY: `event` is a valid epoll_event that outlives the call, and epoll_ctl only reads
    // it; bad descriptors are reported through the return value.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `epoll_wait(2)` into `buf`, at most `timeout_ms`: how many entries of `buf` it filled.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn epoll_wait(
    epoll: RawFd,
    buf: &mut [libc::epoll_event],
    timeout_ms: libc::c_int,
) -> io::Result<usize> {
    let max = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `buf` holds at least `max` initialized epoll_events and stays borrowed mutably
    // for the whole call, so the kernel may write that many.
    let n = unsafe { libc::epoll_wait(epoll, buf.as_mut_ptr(), max, timeout_ms) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `poll(2)` on `fds`, at most `timeout_ms`: how many have events.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds, borrowed mutably for the whole
    // call, and poll writes only their `revents`.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Raises the soft limit on open files to the hard limit, and returns the new soft limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    // SAFETY: rlimit is two integers: all zeroes is valid.
    let mut limit: libc::rlimit = zeroed();
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that setrlimit only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
        // Some systems refuse an unlimited soft limit: keep the old one then.
    }
    // `rlim_t` is `u64` here but not on every system.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

/// CPU time (user and system) this process has used so far.
pub fn process_cpu_time() -> io::Result<Duration> {
    // SAFETY: rusage is integers and timevals: all zeroes is valid.
    let mut usage: libc::rusage = zeroed();
    // SAFETY: `usage` is a valid rusage for getrusage to fill in.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = process_cpu_time().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu_time().unwrap() > before);
    }

    #[test]
    fn the_open_files_limit_is_raised_to_at_least_what_it_was() {
        let before = raise_open_files_limit().unwrap();
        assert!(raise_open_files_limit().unwrap() >= before);
    }
}
