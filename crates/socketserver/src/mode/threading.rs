//! `Mode::Threading`: a named thread per request (Python's `ThreadingMixIn`).
//!
//! Only live threads are kept: finished ones are joined on every wake-up of the loop, so the
//! list never grows with the number of requests served (python/cpython#81374).

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use super::{Dispatch, join_threads};
use crate::handler::{report, run};
use crate::{Error, Handler, Request};

pub(crate) struct Threading {
    handler: Arc<dyn Handler>,
    threads: Vec<JoinHandle<()>>,
    next: u64,
    block_on_close: bool,
}

impl Threading {
    pub(crate) fn new(handler: Arc<dyn Handler>, block_on_close: bool) -> Threading {
        Threading {
            handler,
            threads: Vec::new(),
            next: 0,
            block_on_close,
        }
    }
}

impl Dispatch for Threading {
    fn dispatch(&mut self, request: Request) {
        let name = format!("socketserver-conn-{}", self.next);
        self.next += 1;
        let peer = request.peer().clone();
        let handler = Arc::clone(&self.handler);
        match thread::Builder::new()
            .name(name)
            .spawn(move || run(&*handler, request))
        {
            Ok(thread) => self.threads.push(thread),
            // The closure, and with it the request, is dropped: the connection closes.
            Err(e) => report(&*self.handler, &peer, &Error::Accept(e)),
        }
    }

    fn tick(&mut self) {
        if self.threads.iter().any(JoinHandle::is_finished) {
            let (done, running): (Vec<_>, Vec<_>) =
                self.threads.drain(..).partition(JoinHandle::is_finished);
            self.threads = running;
            for thread in done {
                let _ = thread.join();
            }
        }
    }

    fn close(&mut self, all_done: bool) {
        if self.block_on_close {
            join_threads(&mut self.threads, all_done);
        } else {
            // Python's `block_on_close = False`: leave running threads to themselves.
            self.tick();
            self.threads.clear();
        }
    }
}
