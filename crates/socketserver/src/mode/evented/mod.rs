//! `Mode::Async`: event loops driving connections without a thread each (the documentation's
//! `select()` approach, on epoll through mio).
//!
//! By default each loop accepts from the stream listeners itself (`AsyncAccept::Shared`, one
//! loop woken per connection; or `ReusePort`, a listener per loop), through the same
//! [`Intake`] as the serving thread (verify, the connection limit, back-off, in-flight slots);
//! with `AsyncAccept::Handoff` the serving thread accepts and hands each connection to a
//! loop, round robin, through a channel and the loop's waker. A loop owns its connections
//! outright: their buffers, their partial writes, their timers (a heap with lazy deadlines,
//! never a scan of every connection). Each connection's [`Driver`](engine::Driver) (a user's
//! [`Protocol`](crate::Protocol), or the HTTP server) is called with the bytes that arrived
//! and queues its output; the loop stops reading a connection whose output is not draining.
//!
//! Work that must block (a handler without an event-driven form, an HTTP service that is not
//! declared inline) runs on the worker pool ([`Workers`], the same as `Mode::Pool`'s), at
//! most `QUEUE_PER_WORKER × workers` jobs at a time ([`Busy`]; past it the connection waits
//! parked on its loop): the connection is handed over (its socket stays non-blocking; the
//! worker's `Request` waits with poll deadlines) and comes back to its loop when the worker
//! is done with it, with the answer the worker queued for the loop to send. Datagrams with a
//! session are handled on the serving thread as they are received (a protocol never blocks).
//!
//! `Mode::Pool` uses the same machinery, with one loop, for handlers whose sessions serve
//! requests rather than connections (HTTP): the loop waits for request heads, the workers
//! serve the requests.
//!
//! Files: this one is the [`Dispatch`] (what the serving loop calls) and the bounds shared by
//! the loops; `event_loop.rs` is one loop and its connection table; `timers.rs` its timer
//! heap; `engine.rs` what a loop drives (the [`Driver`](engine::Driver) trait, input and output buffers).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use self::engine::{Input, Output};
use self::event_loop::{Acceptor, EventLoop, LoopHandle, Msg};
use super::workers::{Job, Workers};
use super::{Dispatch, join_threads};
use crate::accept::{AtLimit, Intake, Port, Settings};
use crate::handler::run;
use crate::protocol::Conn;
use crate::shutdown::Shared;
use crate::{Handler, Request, Session};

pub(crate) mod engine;
mod event_loop;
mod timers;

/// Requests handed to the workers (running or waiting) per worker, at most: the queue's
/// bound, like nginx's `thread_pool max_queue`. Each connection has at most one request on
/// the workers at a time, so `max_connections` bounds them too. Not `2 ×` as for blocking
/// handlers: past the bound a request waits parked on its loop, and every worker that
/// finishes must then wait for its loop to hand over the next one; with 100 keep-alive
/// clients and 4 workers that halved HTTP throughput (37.5k against 102k req/s,
/// `bench/run` `http-100B-c100`, pool), for no memory saved (a parked request holds what a
/// queued one does).
const QUEUE_PER_WORKER: usize = 64;

/// What the loops need to accept by themselves: per loop, its ports.
pub(crate) struct LoopAccept {
    pub(crate) per_loop: Vec<Vec<Port>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) settings: Settings,
}

/// How the loops run requests that are complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `Mode::Async`: services declared inline run on the loop.
    Async,
    /// `Mode::Pool`: every request runs on a worker.
    Pool,
}

/// The bound on the workers' queue, shared by the loops: at most `limit` requests handed to
/// the workers (running or waiting) at once ([`QUEUE_PER_WORKER`] × workers). Past
/// it a loop parks the request (its bytes stay in the loop's buffer, nothing more is read)
/// until a worker is free; every loop with parked requests is woken when one is.
pub(crate) struct Busy {
    jobs: AtomicUsize,
    limit: usize,
    parked: AtomicUsize,
    wakers: crate::shutdown::LoopWakers,
}

impl Busy {
    fn new(limit: usize) -> Busy {
        Busy {
            jobs: AtomicUsize::new(0),
            limit: limit.max(1),
            parked: AtomicUsize::new(0),
            wakers: crate::shutdown::LoopWakers::default(),
        }
    }

    /// Takes a place in the queue, if there is one.
    fn try_take(&self) -> bool {
        self.jobs
            .fetch_update(SeqCst, SeqCst, |n| (n < self.limit).then_some(n + 1))
            .is_ok()
    }

    /// A job is done: its place is free, and loops with parked requests hear of it.
    fn release(&self) {
        self.jobs.fetch_sub(1, SeqCst);
        if self.parked.load(SeqCst) > 0 {
            self.wakers.wake_all();
        }
    }
}

pub(crate) struct Evented {
    handler: Arc<dyn Handler>,
    loops: Vec<LoopHandle>,
    next: usize,
    workers: Workers,
    /// The handler has an event-driven form.
    evented: bool,
    /// The session made to find that out, kept for the first connection (so a protocol
    /// factory runs exactly once per connection).
    spare: Option<Session>,
    /// The output datagram replies are written into, kept with its memory (and the last
    /// reply's buffer) from one datagram to the next.
    replies: Output,
}

impl Evented {
    /// `probe` is `handler.session()`, made by the caller to learn whether the handler is
    /// event-driven; `accept`, when the loops accept by themselves.
    pub(crate) fn new(
        handler: Arc<dyn Handler>,
        probe: Option<Session>,
        loops: usize,
        workers: usize,
        flavor: Flavor,
        timeout: Option<Duration>,
        accept: Option<LoopAccept>,
    ) -> std::io::Result<Evented> {
        let evented = probe.is_some();
        let workers = Workers::spawn(workers)?;
        let busy = Arc::new(Busy::new(QUEUE_PER_WORKER * workers.size()));
        let mut this = Evented {
            handler,
            loops: Vec::new(),
            next: 0,
            replies: Output::default(),
            workers,
            evented,
            spare: probe,
        };
        if !evented {
            return Ok(this);
        }
        let mut accept = accept;
        // The loops take the probe only when some of them accept (datagrams are served
        // here, with `spare`).
        let loops_accept = accept
            .as_ref()
            .is_some_and(|a| a.per_loop.iter().any(|ports| !ports.is_empty()));
        let probe = if loops_accept {
            this.spare.take()
        } else {
            None
        };
        let shared_spare: event_loop::SharedSpare = Arc::new(std::sync::Mutex::new(probe));
        for n in 0..loops.max(1) {
            let acceptor = accept.as_mut().map(|a| {
                let ports = a
                    .per_loop
                    .get_mut(n)
                    .map(std::mem::take)
                    .unwrap_or_default();
                let accepts = !ports.is_empty();
                Acceptor {
                    // The probe serves the first connection, wherever it arrives first.
                    spare: accepts.then(|| Arc::clone(&shared_spare)),
                    intake: Intake::new(
                        ports,
                        Arc::clone(&a.shared),
                        Arc::clone(&this.handler),
                        a.settings,
                        AtLimit::Loops,
                    ),
                    _last_look: accepts.then(|| a.shared.last_look_due()),
                    shared: Arc::clone(&a.shared),
                    handler: Arc::clone(&this.handler),
                }
            });
            let Some(jobs) = this.workers.sender() else {
                break;
            };
            match EventLoop::spawn(n, jobs, Arc::clone(&busy), flavor, timeout, acceptor) {
                Ok(handle) => {
                    busy.wakers.add(Arc::clone(&handle.waker));
                    this.loops.push(handle);
                }
                Err(e) => {
                    this.close(true);
                    return Err(e);
                }
            }
        }
        Ok(this)
    }

    fn to_worker(&self, request: Request) {
        self.workers.run(blocking_job(&self.handler, request));
    }

    fn datagram(&mut self, mut request: Request, mut session: Session) {
        let mut input = Input::from_vec(request.take_packet());
        let mut output = std::mem::take(&mut self.replies);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.0.datagram(&mut Conn {
                input: &mut input,
                output: &mut output,
                peer: request.peer(),
                local: request.local(),
                datagram: true,
                shutdown: request.shutdown_ref(),
                inline: true,
            })
        }));
        let failure = match outcome {
            Ok(Some(crate::Flow::Abort)) => None,
            Ok(Some(_)) if !output.touched => None,
            Ok(Some(_)) => match output.take_bytes() {
                Ok(reply) => {
                    request.set_reply(reply);
                    let sent = request.finish().err().map(crate::Error::Handler);
                    output.keep_spare(request.take_reply());
                    sent
                }
                Err(e) => Some(crate::Error::Handler(e)),
            },
            Ok(None) => {
                // No event-driven form for datagrams (HTTP): the blocking handler gets it.
                request.put_packet(input.bytes().to_vec());
                return self.to_worker(request);
            }
            Err(payload) => Some(crate::Error::Panicked {
                message: crate::handler::panic_message(payload.as_ref()),
            }),
        };
        // Kept only when empty: nothing of this reply reaches the next.
        if let Some(empty) = output.take_for_reuse() {
            self.replies = empty;
        }
        // The packet's buffer goes back with the request, whose box the next datagram reuses.
        request.put_packet(input.into_vec());
        if let Some(error) = failure {
            if let Some(m) = request.shutdown_ref().shared.metrics() {
                m.handler_error();
            }
            crate::handler::report(&*self.handler, request.peer(), &error);
        }
    }
}

impl Dispatch for Evented {
    fn capacity(&self) -> Option<usize> {
        // Blocking handlers hold a worker per connection: bound them as `Pool` does.
        (!self.evented).then_some(2 * self.workers.size())
    }

    fn dispatch(&mut self, request: Request) {
        if !self.evented {
            return self.to_worker(request);
        }
        let session = match self.spare.take() {
            Some(session) => session,
            None => match new_session(&*self.handler, &request) {
                Ok(Some(session)) => session,
                Ok(None) => return self.to_worker(request),
                Err(()) => return, // reported; the connection closes
            },
        };
        if request.is_datagram() {
            return self.datagram(request, session);
        }
        if self.loops.is_empty() {
            return self.to_worker(request);
        }
        self.next = (self.next + 1) % self.loops.len();
        let target = &self.loops[self.next];
        if target.sender.send(Msg::Conn(request, session)).is_ok() {
            let _ = target.waker.wake();
        }
    }

    fn close(&mut self, all_done: bool) {
        for handle in &self.loops {
            if handle.sender.send(Msg::Stop).is_ok() {
                let _ = handle.waker.wake();
            }
        }
        let mut loops: Vec<std::thread::JoinHandle<()>> = self
            .loops
            .iter_mut()
            .filter_map(|h| h.thread.take())
            .collect();
        join_threads(&mut loops, true);
        self.loops.clear();
        // The loops (and their senders) are gone: the workers end once their queue is.
        self.workers.close(all_done);
    }
}

impl Drop for Evented {
    /// A server that failed to start after its loops began (or was never closed) must not
    /// leave them accepting and serving: stop them and the workers.
    fn drop(&mut self) {
        self.close(true);
    }
}

/// A whole connection (or datagram) for the blocking handler, as a job for the workers. A job
/// that runs nowhere (the server is closing) drops the request, closing its connection.
fn blocking_job(handler: &Arc<dyn Handler>, request: Request) -> Job {
    let handler = Arc::clone(handler);
    Box::new(move || run(&*handler, request))
}

/// A new session from the handler, shielding the loop from a panicking factory (reported
/// through `on_error`, then `Err`: the connection is closed). `Ok(None)`: this connection
/// takes the blocking handler.
fn new_session(handler: &dyn Handler, request: &Request) -> Result<Option<Session>, ()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.session())) {
        Ok(session) => Ok(session),
        Err(payload) => {
            crate::handler::report(
                handler,
                request.peer(),
                &crate::Error::Panicked {
                    message: crate::handler::panic_message(payload.as_ref()),
                },
            );
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event_loop::WAKER;
    use super::*;
    use mio::{Events, Poll, Waker};

    #[test]
    fn the_workers_queue_holds_at_most_its_limit_and_a_release_wakes_parked_loops() {
        let busy = Busy::new(2);
        assert!(busy.try_take());
        assert!(busy.try_take());
        assert!(!busy.try_take(), "a third place past a limit of 2");
        // A loop with a parked request is woken when a place frees.
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        busy.wakers.add(Arc::clone(&waker));
        busy.parked.fetch_add(1, SeqCst);
        busy.release();
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == WAKER));
        assert!(busy.try_take(), "the released place is free again");
        assert!(!busy.try_take());
        // Without parked requests a release wakes no one.
        busy.parked.fetch_sub(1, SeqCst);
        busy.release();
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(events.is_empty());
    }
}
