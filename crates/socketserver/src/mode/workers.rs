//! The one worker pool: named threads taking jobs from a queue. `Mode::Pool` runs each
//! request on it; the event loops of `Mode::Async` (and of HTTP under `Mode::Pool`) run on it
//! what must block. How many jobs may wait is the caller's to bound (the serving loop's
//! connection limit, the loops' `Busy` queue bound); the queue itself never refuses one.

use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::join_threads;

/// Work for a worker thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Workers {
    /// `None` once closed: the workers end when the queue is empty and every sender is gone.
    sender: Option<Sender<Job>>,
    /// Kept to drop the jobs no worker took when workers are stuck at close.
    queue: Receiver<Job>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `size` workers (at least 1) named `socketserver-worker-{n}`.
    pub(crate) fn spawn(size: usize) -> std::io::Result<Workers> {
        let (sender, queue) = unbounded::<Job>();
        let mut workers = Workers {
            sender: Some(sender),
            queue,
            threads: Vec::with_capacity(size.max(1)),
        };
        for n in 0..size.max(1) {
            let queue = workers.queue.clone();
            let worker = thread::Builder::new()
                .name(format!("socketserver-worker-{n}"))
                .spawn(move || {
                    // Ends when the senders are gone and the queue is empty. Jobs catch their
                    // handlers' panics themselves.
                    for job in queue {
                        job();
                    }
                });
            match worker {
                Ok(worker) => workers.threads.push(worker),
                Err(e) => {
                    workers.close(true);
                    return Err(e);
                }
            }
        }
        Ok(workers)
    }

    /// How many workers run.
    pub(crate) fn size(&self) -> usize {
        self.threads.len()
    }

    /// A sender for threads that queue jobs themselves (the event loops); it must be dropped
    /// before [`close`](Self::close) can join the workers.
    pub(crate) fn sender(&self) -> Option<Sender<Job>> {
        self.sender.clone()
    }

    /// Queues a job. After [`close`](Self::close) the job is dropped (and whatever it owns,
    /// a connection say, closes with it).
    pub(crate) fn run(&self, job: Job) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(job);
        }
    }

    /// Stops taking jobs and joins the workers once the queue is empty. With `all_done`
    /// false (work still running after the forced close), the jobs no worker took are
    /// dropped rather than left behind a stuck worker, and workers still running are left
    /// behind (and logged).
    pub(crate) fn close(&mut self, all_done: bool) {
        self.sender = None;
        if !all_done {
            while self.queue.try_recv().is_ok() {}
        }
        join_threads(&mut self.threads, all_done);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.close(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[test]
    fn every_queued_job_runs_before_close_returns_and_none_after() {
        let mut workers = Workers::spawn(3).unwrap();
        assert_eq!(workers.size(), 3);
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let done = Arc::clone(&done);
            workers.run(Box::new(move || {
                done.fetch_add(1, SeqCst);
            }));
        }
        workers.close(true);
        assert_eq!(done.load(SeqCst), 100);
        let late = Arc::clone(&done);
        workers.run(Box::new(move || {
            late.fetch_add(1, SeqCst);
        }));
        assert_eq!(
            done.load(SeqCst),
            100,
            "a job queued after close runs nowhere"
        );
    }

    #[test]
    fn workers_are_named_for_worker_name() {
        let workers = Workers::spawn(1).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        workers.run(Box::new(move || {
            let _ = tx.send(crate::worker_name());
        }));
        assert_eq!(rx.recv().unwrap(), "socketserver-worker-0");
    }
}
