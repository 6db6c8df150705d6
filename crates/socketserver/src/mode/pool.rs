//! `Mode::Pool`: a fixed set of named workers ([`Workers`]) fed through a queue.
//!
//! The queue itself is unbounded, but the serving loop never lets more than `2 * workers`
//! requests be in flight (running + queued): past that it stops accepting, so excess
//! connections wait in the kernel's listen queue and memory does not grow.

use std::sync::Arc;

use super::Dispatch;
use super::workers::Workers;
use crate::handler::run;
use crate::{Handler, Request};

pub(crate) struct Pool {
    handler: Arc<dyn Handler>,
    workers: Workers,
}

impl Pool {
    pub(crate) fn new(handler: Arc<dyn Handler>, size: usize) -> std::io::Result<Pool> {
        Ok(Pool {
            handler,
            workers: Workers::spawn(size)?,
        })
    }
}

impl Dispatch for Pool {
    fn capacity(&self) -> Option<usize> {
        Some(2 * self.workers.size())
    }

    fn dispatch(&mut self, request: Request) {
        // Workers catch handler panics (`run`); after close the request is dropped and its
        // connection closed.
        let handler = Arc::clone(&self.handler);
        self.workers.run(Box::new(move || run(&*handler, request)));
    }

    fn close(&mut self, all_done: bool) {
        // Requests no worker took (the workers are stuck past the deadline) close now rather
        // than wait behind a stuck worker.
        self.workers.close(all_done);
    }
}
