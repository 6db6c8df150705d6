//! `Mode::Fork`: a child process per request (Python's `ForkingMixIn`).
//!
//! Children are reaped the moment they exit: SIGCHLD writes to a self-pipe the serving loop
//! watches (signal-hook's pipe registration), and every wake-up reaps each known child with
//! `waitpid(pid, WNOHANG)`, so coalesced signals lose nothing. At `max_children` the loop stops
//! accepting until a child is reaped.
//!
//! A child's copy of the server's state is not the server's, so two pipes link them, owned
//! here ([`ForkLink`], kept in the shared state for the child's [`ShutdownHandle`]): a
//! handler's `shutdown()`/`close()` in a child writes `s`/`c` to the parent, which acts on it
//! in [`Dispatch::tick`]; and the parent writes one byte when a graceful stop begins, so a
//! child waiting for the next request on a keep-alive connection closes it instead.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use mio::unix::SourceFd;
use signal_hook::SigId;

use super::Dispatch;
use crate::handler::{report, run};
use crate::shutdown::{Entry, Slot};
use crate::sys;
use crate::{Error, Handler, Request, ShutdownHandle};

/// The loop's token for the SIGCHLD pipe.
const CHILD_TOKEN: mio::Token = mio::Token(usize::MAX - 2);
/// The loop's token for stop requests from children (see [`ForkLink`]).
const REMOTE_TOKEN: mio::Token = mio::Token(usize::MAX - 3);

/// The pipes between a forking server and its children. Made before the server's shared
/// state, which keeps it: the state is what a child's [`ShutdownHandle`] reaches.
pub(crate) struct ForkLink {
    /// Write end of the children's stop requests (`s` shutdown, `c` close); the parent's
    /// [`Fork`] reads the other end.
    remote: UnixStream,
    /// Read and write ends of the drain announcement: one byte once a graceful stop begins.
    drain: (UnixStream, UnixStream),
}

impl ForkLink {
    /// The link, and the read end of the stop requests for [`Fork::new`].
    pub(crate) fn new() -> io::Result<(ForkLink, UnixStream)> {
        let (requests, remote) = UnixStream::pair()?;
        requests.set_nonblocking(true)?;
        let drain = UnixStream::pair()?;
        Ok((ForkLink { remote, drain }, requests))
    }

    /// True in a forked child: a stop is then the parent's to make.
    pub(crate) fn in_child(&self) -> bool {
        sys::is_forked_child()
    }

    /// In a child: asks the parent for a graceful stop (`close` false) or an immediate one.
    pub(crate) fn ask_parent(&self, close: bool) {
        use std::io::Write;
        let _ = (&self.remote).write_all(if close { b"c" } else { b"s" });
    }

    /// In the parent, once: tells every child a graceful stop began.
    pub(crate) fn announce_drain(&self) {
        use std::io::Write;
        let _ = (&self.drain.1).write_all(b"d");
    }

    /// What a child polls to hear of the drain (readable once it began).
    pub(crate) fn drain_fd(&self) -> BorrowedFd<'_> {
        self.drain.0.as_fd()
    }

    /// In a child: whether the parent began a graceful stop.
    pub(crate) fn drain_announced(&self) -> bool {
        sys::poll_readable(&[self.drain_fd()], Some(std::time::Duration::ZERO))
            .is_ok_and(|ready| ready[0])
    }
}

pub(crate) struct Fork {
    handler: Arc<dyn Handler>,
    max_children: usize,
    children: HashMap<i32, Slot>,
    sigchld: Option<(UnixStream, SigId)>,
    /// Listener fds a child closes at once.
    close_in_child: Vec<RawFd>,
    /// Signals a child blocks (those the server handles).
    block_in_child: Vec<i32>,
    /// Stop requests from children (see [`ForkLink`]).
    requests: UnixStream,
    shutdown: ShutdownHandle,
}

impl Fork {
    pub(crate) fn new(
        handler: Arc<dyn Handler>,
        max_children: usize,
        close_in_child: Vec<RawFd>,
        block_in_child: Vec<i32>,
        requests: UnixStream,
        shutdown: ShutdownHandle,
    ) -> Fork {
        Fork {
            handler,
            max_children,
            children: HashMap::new(),
            sigchld: None,
            close_in_child,
            block_in_child,
            requests,
            shutdown,
        }
    }

    /// Acts on the stop requests children sent (see [`ForkLink`]).
    fn stop_requests(&mut self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = self.requests.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &what in &buf[..n] {
                match what {
                    b'c' => self.shutdown.close(),
                    _ => self.shutdown.shutdown(),
                }
            }
        }
    }

    fn reap(&mut self) {
        if let Some((pipe, _)) = &mut self.sigchld {
            let mut buf = [0u8; 64];
            while matches!(pipe.read(&mut buf), Ok(n) if n > 0) {}
        }
        // Exited children come off the forced-close table before they are reaped, so a
        // concurrent `close()` never signals a pid the system may have handed out again.
        // Dropping a child's slot frees its place under `max_children`.
        self.children.retain(|&pid, slot| {
            if !sys::exited(pid) {
                return true;
            }
            slot.unlist();
            sys::reap_blocking(pid);
            false
        });
    }

    fn child(&self, request: Request) -> ! {
        let keep = request.reply_fd();
        let close: Vec<RawFd> = self
            .close_in_child
            .iter()
            .copied()
            .filter(|fd| Some(*fd) != keep)
            .collect();
        sys::child_prepare(&close, &self.block_in_child);
        run(&*self.handler, request);
        // No stdout flush here: another thread of the parent may have held stdout's lock at
        // the moment of the fork, and the child would wait for it forever.
        sys::exit_child(0)
    }
}

impl Dispatch for Fork {
    fn capacity(&self) -> Option<usize> {
        Some(self.max_children.max(1))
    }

    fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let id = signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, write)?;
        registry.register(
            &mut SourceFd(&read.as_raw_fd()),
            CHILD_TOKEN,
            mio::Interest::READABLE,
        )?;
        self.sigchld = Some((read, id));
        registry.register(
            &mut SourceFd(&self.requests.as_raw_fd()),
            REMOTE_TOKEN,
            mio::Interest::READABLE,
        )
    }

    fn dispatch(&mut self, mut request: Request) {
        let slot = request.take_slot();
        // Until the child blocks the server's signals itself, it must not run their handlers
        // (they would write into the parent's signal pipe): fork with them blocked.
        let mask = sys::block_signals(&self.block_in_child);
        let forked = sys::fork();
        if !matches!(forked, Ok(sys::Fork::Child)) {
            sys::restore_signals(mask);
        }
        match forked {
            Ok(sys::Fork::Parent(pid)) => {
                if let Some(mut slot) = slot {
                    slot.relist(Entry::Process(pid));
                    self.children.insert(pid, slot);
                }
                request.release_to_child();
            }
            Ok(sys::Fork::Child) => {
                if let Some(slot) = slot {
                    slot.abandon();
                }
                self.child(request)
            }
            Err(e) => {
                if let Some(slot) = slot {
                    request.put_slot(slot);
                }
                let peer = request.peer().clone();
                drop(request);
                report(&*self.handler, &peer, &Error::Accept(e));
            }
        }
    }

    /// After every wake-up, in the drain too: reap exited children, act on their stop
    /// requests (a handler in a child may ask for `close()` during the drain).
    fn tick(&mut self) {
        self.stop_requests();
        self.reap();
    }

    /// SIGCHLD wakes the loop; this fallback covers a program that replaced the handler.
    fn tick_interval(&self) -> Option<std::time::Duration> {
        (!self.children.is_empty()).then_some(std::time::Duration::from_secs(1))
    }

    fn close(&mut self, _all_done: bool) {
        self.reap();
        for (&pid, _) in self.children.iter() {
            // Still alive after the drain (and the forced close already sent SIGKILL): wait.
            sys::kill(pid);
            sys::reap_blocking(pid);
        }
        self.children.clear();
        if let Some((_, id)) = self.sigchld.take() {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl Drop for Fork {
    fn drop(&mut self) {
        // `close` normally did this; a server that failed to start never called it.
        if let Some((_, id)) = self.sigchld.take() {
            signal_hook::low_level::unregister(id);
        }
    }
}
