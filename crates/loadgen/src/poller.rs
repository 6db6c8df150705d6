//! Level-triggered readiness for many non-blocking sockets on one thread: epoll on Linux and
//! Android, poll(2) elsewhere. Each registration carries a `u64` token chosen by the caller.

use std::time::Duration;

#[cfg(any(target_os = "linux", target_os = "android"))]
pub use epoll::Poller;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub use portable::Poller;

/// Which readiness a registration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
    pub const BOTH: Interest = Interest {
        read: true,
        write: true,
    };
}

/// One ready registration. `error` stands for an error or hang-up condition, reported whatever
/// the interest: the next read or write on the socket says which.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    pub error: bool,
}

/// `timeout` in whole milliseconds, rounded up so that a short wait does not become a busy spin.
fn timeout_ms(timeout: Duration) -> libc::c_int {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll {
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};
    use std::time::Duration;

    use super::{Event, Interest, timeout_ms};
    use crate::sys;

    /// Most events taken per `epoll_wait`.
    const BATCH: usize = 1024;

    #[derive(Debug)]
    pub struct Poller {
        epoll: OwnedFd,
        buf: Vec<libc::epoll_event>,
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            Ok(Poller {
                epoll: sys::epoll_create()?,
                buf: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH],
            })
        }

        pub fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
            self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
        }

        pub fn reregister(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
            self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
        }

        /// Nothing to do: callers close the socket right after, and closing the only
        /// descriptor of a socket (this program never duplicates them) removes it from the
        /// epoll set. Saves a system call per connection in the connect workload.
        pub fn deregister(&mut self, _fd: RawFd) {}

        fn ctl(
            &mut self,
            op: libc::c_int,
            fd: RawFd,
            token: u64,
            interest: Interest,
        ) -> io::Result<()> {
            let mut events = 0;
            if interest.read {
                events |= libc::EPOLLIN as u32;
            }
            if interest.write {
                events |= libc::EPOLLOUT as u32;
            }
            let event = libc::epoll_event { events, u64: token };
            sys::epoll_ctl(self.epoll.as_raw_fd(), op, fd, event)
        }

        /// Waits up to `timeout` and replaces the contents of `out` with what is ready (nothing
        /// after a timeout or a signal).
        pub fn wait(&mut self, out: &mut Vec<Event>, timeout: Duration) -> io::Result<()> {
            out.clear();
            let n =
                match sys::epoll_wait(self.epoll.as_raw_fd(), &mut self.buf, timeout_ms(timeout)) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                    Err(e) => return Err(e),
                };
            for raw in &self.buf[..n] {
                let bits = raw.events;
                out.push(Event {
                    token: raw.u64,
                    readable: bits & libc::EPOLLIN as u32 != 0,
                    writable: bits & libc::EPOLLOUT as u32 != 0,
                    error: bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
                });
            }
            Ok(())
        }
    }
}

/// poll(2): portable, but every wait costs time in proportion to the number of sockets. Built
/// on Linux too so that the tests cover it.
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
mod portable {
    use std::collections::HashMap;
    use std::io;
    use std::os::fd::RawFd;
    use std::time::Duration;

    use super::{Event, Interest, timeout_ms};
    use crate::sys;

    #[derive(Debug, Default)]
    pub struct Poller {
        fds: Vec<libc::pollfd>,
        tokens: Vec<u64>,
        /// Where each registered descriptor is in `fds` and `tokens`.
        slots: HashMap<RawFd, usize>,
    }

    fn poll_events(interest: Interest) -> libc::c_short {
        let mut events = 0;
        if interest.read {
            events |= libc::POLLIN;
        }
        if interest.write {
            events |= libc::POLLOUT;
        }
        events
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            Ok(Poller::default())
        }

        pub fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
            if self.slots.contains_key(&fd) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            self.slots.insert(fd, self.fds.len());
            self.fds.push(libc::pollfd {
                fd,
                events: poll_events(interest),
                revents: 0,
            });
            self.tokens.push(token);
            Ok(())
        }

        pub fn reregister(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
            let slot = *self
                .slots
                .get(&fd)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            self.fds[slot].events = poll_events(interest);
            self.tokens[slot] = token;
            Ok(())
        }

        /// Must be called before the socket is closed.
        pub fn deregister(&mut self, fd: RawFd) {
            if let Some(slot) = self.slots.remove(&fd) {
                self.fds.swap_remove(slot);
                self.tokens.swap_remove(slot);
                if let Some(moved) = self.fds.get(slot) {
                    self.slots.insert(moved.fd, slot);
                }
            }
        }

        pub fn wait(&mut self, out: &mut Vec<Event>, timeout: Duration) -> io::Result<()> {
            out.clear();
            let n = match sys::poll(&mut self.fds, timeout_ms(timeout)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            for (pfd, &token) in self.fds.iter().zip(&self.tokens) {
                let bits = pfd.revents;
                if bits != 0 {
                    out.push(Event {
                        token,
                        readable: bits & libc::POLLIN != 0,
                        writable: bits & libc::POLLOUT != 0,
                        error: bits & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
                    });
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Write};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixStream;

    use super::*;

    /// The operations both back ends offer, so that one test drives either.
    trait Readiness {
        fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()>;
        fn reregister(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()>;
        fn deregister(&mut self, fd: RawFd);
        fn wait(&mut self, out: &mut Vec<Event>, timeout: Duration) -> io::Result<()>;
    }

    macro_rules! readiness {
        ($t:ty) => {
            impl Readiness for $t {
                fn register(&mut self, fd: RawFd, token: u64, i: Interest) -> io::Result<()> {
                    <$t>::register(self, fd, token, i)
                }
                fn reregister(&mut self, fd: RawFd, token: u64, i: Interest) -> io::Result<()> {
                    <$t>::reregister(self, fd, token, i)
                }
                fn deregister(&mut self, fd: RawFd) {
                    <$t>::deregister(self, fd)
                }
                fn wait(&mut self, out: &mut Vec<Event>, t: Duration) -> io::Result<()> {
                    <$t>::wait(self, out, t)
                }
            }
        };
    }
    readiness!(portable::Poller);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    readiness!(epoll::Poller);

    fn exercise(poller: &mut dyn Readiness) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        let mut events = Vec::new();
        poller.register(a.as_raw_fd(), 7, Interest::READ).unwrap();
        poller.register(c.as_raw_fd(), 9, Interest::READ).unwrap();
        poller.wait(&mut events, Duration::from_millis(1)).unwrap();
        assert!(events.is_empty(), "nothing to read yet: {events:?}");

        b.write_all(b"x").unwrap();
        poller.wait(&mut events, Duration::from_secs(1)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].token, 7);
        assert!(events[0].readable && !events[0].writable);

        // Level-triggered: still readable, now under a new token and also writable.
        poller.reregister(a.as_raw_fd(), 8, Interest::BOTH).unwrap();
        poller.wait(&mut events, Duration::from_secs(1)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].token, 8);
        assert!(events[0].readable && events[0].writable);

        poller.deregister(a.as_raw_fd());
        drop(a);
        // The peer is gone: a hang-up on b, reported without asking.
        poller.register(b.as_raw_fd(), 11, Interest::WRITE).unwrap();
        poller.wait(&mut events, Duration::from_secs(1)).unwrap();
        let tokens: Vec<u64> = events.iter().map(|e| e.token).collect();
        assert_eq!(tokens, [11]);
        assert!(events[0].error);
    }

    #[test]
    fn poll_backend_reports_readiness() {
        exercise(&mut portable::Poller::new().unwrap());
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn epoll_backend_reports_readiness() {
        exercise(&mut epoll::Poller::new().unwrap());
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_ms(Duration::ZERO), 0);
        assert_eq!(timeout_ms(Duration::from_micros(1)), 1);
        assert_eq!(timeout_ms(Duration::from_millis(10)), 10);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), libc::c_int::MAX);
    }
}
