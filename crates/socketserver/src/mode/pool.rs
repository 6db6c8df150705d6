//! `Mode::Pool`: a fixed set of named workers fed through a queue.
//!
//! The queue itself is unbounded, but the serving loop never lets more than `2 * workers`
//! requests be in flight (running + queued): past that it stops accepting, so excess
//! connections wait in the kernel's listen queue and memory does not grow.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::{Dispatch, join_threads};
use crate::handler::run;
use crate::{Handler, Request};

pub(crate) struct Pool {
    sender: Option<Sender<Request>>,
    /// Kept to drop requests still queued when workers are stuck at close.
    receiver: Receiver<Request>,
    workers: Vec<JoinHandle<()>>,
    size: usize,
}

impl Pool {
    pub(crate) fn new(handler: Arc<dyn Handler>, size: usize) -> std::io::Result<Pool> {
        let (sender, receiver) = unbounded::<Request>();
        let mut workers = Vec::with_capacity(size);
        for n in 0..size {
            let receiver = receiver.clone();
            let handler = Arc::clone(&handler);
            let worker = thread::Builder::new()
                .name(format!("socketserver-worker-{n}"))
                .spawn(move || {
                    // Ends when the server drops the sender and the queue is empty.
                    for request in receiver {
                        run(&*handler, request);
                    }
                });
            match worker {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    drop(sender);
                    join_threads(&mut workers, true);
                    return Err(e);
                }
            }
        }
        Ok(Pool {
            sender: Some(sender),
            receiver,
            workers,
            size,
        })
    }
}

impl Dispatch for Pool {
    fn capacity(&self) -> Option<usize> {
        Some(2 * self.size)
    }

    fn dispatch(&mut self, request: Request) {
        if let Some(sender) = &self.sender {
            // Cannot fail while we hold the sender and workers run (they catch handler panics);
            // if it ever did, the request is dropped and its connection closed.
            let _ = sender.send(request);
        }
    }

    fn close(&mut self, all_done: bool) {
        self.sender = None;
        // Requests no worker took (the workers are stuck past the deadline): close them now
        // rather than leave their connections open behind a stuck worker.
        while self.receiver.try_recv().is_ok() {}
        join_threads(&mut self.workers, all_done);
    }
}
