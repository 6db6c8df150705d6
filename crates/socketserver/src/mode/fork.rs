//! `Mode::Fork`: a child process per request (Python's `ForkingMixIn`).
//!
//! Children are reaped the moment they exit: SIGCHLD writes to a self-pipe the serving loop
//! watches (signal-hook's pipe registration), and every wake-up reaps each known child with
//! `waitpid(pid, WNOHANG)`, so coalesced signals lose nothing. At `max_children` the loop stops
//! accepting until a child is reaped.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use mio::unix::SourceFd;
use signal_hook::SigId;

use super::Dispatch;
use crate::handler::{report, run};
use crate::shutdown::{Entry, Slot};
use crate::sys;
use crate::{Error, Handler, Request};

/// The loop's token for the SIGCHLD pipe.
pub(crate) const CHILD_TOKEN: mio::Token = mio::Token(usize::MAX - 2);

pub(crate) struct Fork {
    handler: Arc<dyn Handler>,
    max_children: usize,
    children: HashMap<i32, Slot>,
    sigchld: Option<(UnixStream, SigId)>,
    /// Listener fds a child closes at once.
    close_in_child: Vec<RawFd>,
    /// Signals a child blocks (those the server handles).
    block_in_child: Vec<i32>,
}

impl Fork {
    pub(crate) fn new(
        handler: Arc<dyn Handler>,
        max_children: usize,
        close_in_child: Vec<RawFd>,
        block_in_child: Vec<i32>,
    ) -> Fork {
        Fork {
            handler,
            max_children,
            children: HashMap::new(),
            sigchld: None,
            close_in_child,
            block_in_child,
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
        super::mark_forked_child();
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
        Ok(())
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

    fn tick(&mut self) {
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
