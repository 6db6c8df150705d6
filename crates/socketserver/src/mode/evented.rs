//! `Mode::Async`: event loops driving connections without a thread each (the documentation's
//! `select()` approach, on epoll through mio).
//!
//! By default each loop accepts from the stream listeners itself (`AsyncAccept::Shared`, one
//! loop woken per connection; or `ReusePort`, a listener per loop), through the same
//! `accept_stream` as the serving thread (verify, the connection limit, back-off, in-flight
//! slots); with `AsyncAccept::Handoff` the serving thread accepts and hands each connection
//! to a loop, round robin, through a channel and the loop's waker. A loop owns its
//! connections outright: their buffers, their partial
//! writes, their timers (a heap with lazy deadlines, never a scan of every connection). Each
//! connection's [`Driver`] (a user's [`Protocol`](crate::Protocol), or the HTTP server) is
//! called with the bytes that arrived and queues its output; the loop stops reading a
//! connection whose output is not draining.
//!
//! Work that must block (a handler without an event-driven form, an HTTP service that is not
//! declared inline) runs on a bounded set of worker threads, at most `QUEUE_PER_WORKER ×
//! workers` jobs at a time (`Busy`; past it the connection waits parked on its loop): the
//! connection is handed over (its socket stays non-blocking; the worker's `Request` waits
//! with poll deadlines) and comes back to its loop when the worker is done with it, with the
//! answer the worker queued for the loop to send. Datagrams with a
//! session are handled on the serving thread as they are received (a protocol never blocks).
//!
//! `Mode::Pool` uses the same machinery, with one loop, for handlers whose sessions serve
//! requests rather than connections (HTTP): the loop waits for request heads, the workers
//! serve the requests.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::{Dispatch, join_threads};
use crate::handler::run;
use crate::protocol::{Conn, Driver, Input, Output, Sent, Step};
use crate::request::WriteClock;
use crate::server::{AcceptError, Accepted, StreamSettings, accept_stream, classify};
use crate::shutdown::Shared;
use crate::transport::Kind;
use crate::{Address, Handler, Request, Session};

const WAKER: Token = Token(usize::MAX);
/// Listener `i` of a loop has token `LISTENERS + i` (connections count up from 0).
const LISTENERS: usize = usize::MAX / 2;
/// Requests handed to the workers (running or waiting) per worker, at most: the queue's
/// bound, like nginx's `thread_pool max_queue`. Each connection has at most one request on
/// the workers at a time, so `max_connections` bounds them too. Not `2 ×` as for blocking
/// handlers: past the bound a request waits parked on its loop, and every worker that
/// finishes must then wait for its loop to hand over the next one; with 100 keep-alive
/// clients and 4 workers that halved HTTP throughput (37.5k against 102k req/s,
/// `bench/run` `http-100B-c100`, pool), for no memory saved (a parked request holds what a
/// queued one does).
const QUEUE_PER_WORKER: usize = 64;
/// Most accepts per listener per turn.
const ACCEPT_BATCH: usize = 64;

/// A stream listener an event loop accepts from itself ([`crate::AsyncAccept::Shared`] and
/// `ReusePort`).
pub(crate) struct LoopListener {
    socket: Arc<socket2::Socket>,
    kind: Kind,
    local: Arc<Address>,
    /// Edge-triggered readiness not yet drained to `WouldBlock`.
    ready: bool,
}

impl LoopListener {
    pub(crate) fn new(socket: Arc<socket2::Socket>, kind: Kind, local: Arc<Address>) -> Self {
        LoopListener {
            socket,
            kind,
            local,
            ready: true,
        }
    }
}

/// What the loops need to accept by themselves: per loop, its listeners.
pub(crate) struct LoopAccept {
    pub(crate) per_loop: Vec<Vec<LoopListener>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) settings: StreamSettings,
}

/// One loop's accepting state.
struct Acceptor {
    listeners: Vec<LoopListener>,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    settings: StreamSettings,
    /// Accepting paused until then (resource exhaustion: 5 ms doubling to 1 s).
    backoff: Option<(Duration, Instant)>,
    /// At the connection limit: accept again once a freed place wakes this loop.
    full: bool,
    /// The server's probe session, for this loop's first connection.
    spare: Option<Session>,
}
/// Reads per connection per turn before others get their go.
const READ_BUDGET: usize = 16;
/// Bytes asked for per read.
const READ_SIZE: usize = 64 * 1024;
/// Unconsumed bytes a connection may keep in a buffer of their own size (the loop's big read
/// buffer then goes back to the loop).
const KEEP_SMALL: usize = 4 * 1024;
/// Bytes sent to one connection per turn before others get their go.
const WRITE_BUDGET: usize = 4 * 1024 * 1024;
/// How long, and how many bytes, a closing connection's unread input is discarded for.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

type Job = Box<dyn FnOnce() + Send>;

/// How the loops run requests that are complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `Mode::Async`: services declared inline run on the loop.
    Async,
    /// `Mode::Pool`: every request runs on a worker.
    Pool,
}

enum Msg {
    Conn(Request, Session),
    Back(Back),
    Stop,
}

/// A connection returning from a worker.
struct Back {
    token: usize,
    generation: u64,
    request: Request,
    driver: Box<dyn Driver>,
    input: Vec<u8>,
    /// What the worker left for the loop to send.
    output: Output,
    step: Step,
}

struct LoopHandle {
    sender: Sender<Msg>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
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
    jobs: Option<Sender<Job>>,
    job_queue: Receiver<Job>,
    workers: Vec<JoinHandle<()>>,
    worker_count: usize,
    /// The handler has an event-driven form.
    evented: bool,
    /// The session made to find that out, kept for the first connection (so a protocol
    /// factory runs exactly once per connection).
    spare: Option<Session>,
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
    ) -> io::Result<Evented> {
        let spare = probe;
        let evented = spare.is_some();
        let (jobs, job_queue) = unbounded::<Job>();
        let busy = Arc::new(Busy::new(QUEUE_PER_WORKER * workers.max(1)));
        let mut this = Evented {
            handler,
            loops: Vec::new(),
            next: 0,
            // The only sender outside the loops: `close` drops it, and the workers end.
            jobs: Some(jobs),
            job_queue: job_queue.clone(),
            workers: Vec::new(),
            worker_count: workers.max(1),
            evented,
            spare,
        };
        for n in 0..this.worker_count {
            let queue = job_queue.clone();
            let worker = thread::Builder::new()
                .name(format!("socketserver-worker-{n}"))
                .spawn(move || {
                    for job in queue {
                        job();
                    }
                });
            match worker {
                Ok(worker) => this.workers.push(worker),
                Err(e) => {
                    this.close(true);
                    return Err(e);
                }
            }
        }
        if evented {
            let mut accept = accept;
            for n in 0..loops.max(1) {
                let acceptor = accept.as_mut().map(|a| {
                    let listeners =
                        std::mem::take(a.per_loop.get_mut(n).unwrap_or(&mut Vec::new()));
                    // The probe serves the first connection, wherever it arrives first.
                    let spare = if listeners.is_empty() {
                        None
                    } else {
                        this.spare.take()
                    };
                    (listeners, spare, a)
                });
                let acceptor = acceptor.map(|(listeners, spare, a)| Acceptor {
                    listeners,
                    shared: Arc::clone(&a.shared),
                    handler: Arc::clone(&this.handler),
                    settings: a.settings,
                    backoff: None,
                    full: false,
                    spare,
                });
                let Some(jobs) = this.jobs.clone() else {
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
        }
        Ok(this)
    }

    fn to_worker(&self, request: Request) {
        if let Some(jobs) = &self.jobs {
            run_on_worker(jobs, &self.handler, request);
        }
    }

    fn datagram(&self, mut request: Request, mut session: Session) {
        let mut input = Input::from_vec(request.take_packet());
        let mut output = Output::default();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.0.datagram(
                &mut input,
                &mut output,
                request.peer(),
                request.local(),
                request.shutdown_ref(),
            )
        }));
        let failure = match outcome {
            Ok(Some(crate::Flow::Abort)) => None,
            Ok(Some(_)) if !output.touched => None,
            Ok(Some(_)) => match output.into_bytes() {
                Ok(reply) => {
                    request.set_reply(reply);
                    request.finish().err().map(crate::Error::Handler)
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
        if let Some(error) = failure {
            crate::handler::report(&*self.handler, request.peer(), &error);
        }
    }
}

impl Dispatch for Evented {
    fn capacity(&self) -> Option<usize> {
        // Blocking handlers hold a worker per connection: bound them as `Pool` does.
        (!self.evented).then_some(2 * self.worker_count)
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
        let mut loops: Vec<JoinHandle<()>> = self
            .loops
            .iter_mut()
            .filter_map(|h| h.thread.take())
            .collect();
        join_threads(&mut loops, true);
        self.loops.clear();
        self.jobs = None;
        // Jobs no worker took (workers stuck past the deadline): drop them, closing their
        // connections, rather than leave them behind a stuck worker.
        if !all_done {
            while self.job_queue.try_recv().is_ok() {}
        }
        join_threads(&mut self.workers, all_done);
    }
}

impl Drop for Evented {
    /// A server that failed to start after its loops began (or was never closed) must not
    /// leave them accepting and serving: stop them and the workers.
    fn drop(&mut self) {
        self.close(true);
    }
}

/// One connection owned by a loop.
struct Entry {
    /// `None` while a worker has the connection.
    request: Option<Request>,
    driver: Option<Box<dyn Driver>>,
    generation: u64,
    input: Input,
    output: Output,
    readable: bool,
    writable: bool,
    eof: bool,
    /// Close once the output is sent.
    closing: bool,
    /// Marked idle in the server's table (closed at once by a graceful stop).
    idle: bool,
    /// Unconsumed input waits for the output to drain: call the driver again then.
    resume: bool,
    /// Closing, output sent, discarding what the peer still sends: until when, and how many
    /// more bytes.
    linger: Option<(Instant, usize)>,
    last: Instant,
    /// The deadline currently in the timer heap, if any.
    armed: Option<Instant>,
    /// Waiting for a place in the workers' queue (see [`Busy`]): not driven meanwhile.
    parked: bool,
    /// The write stall window, the same as `Request`'s on the blocking side: while output
    /// waits, the driver's deadline runs from when it opened, so a reader taking a little now
    /// and then is cut off too.
    write_clock: WriteClock,
}

struct EventLoop {
    poll: Poll,
    receiver: Receiver<Msg>,
    /// For workers to send connections back.
    sender: Sender<Msg>,
    waker: Arc<Waker>,
    jobs: Sender<Job>,
    busy: Arc<Busy>,
    /// Connections waiting for a place in the workers' queue, oldest first.
    parked: std::collections::VecDeque<(usize, u64)>,
    conns: Vec<Option<Entry>>,
    free: Vec<usize>,
    generations: u64,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Connections with readable data left after their read budget.
    again: Vec<(usize, u64)>,
    /// The read buffer lent to whichever connection reads with nothing left over, so an
    /// idle connection holds no buffer of its own.
    scratch: Input,
    flavor: Flavor,
    timeout: Option<Duration>,
    /// Set when this loop accepts by itself.
    acceptor: Option<Acceptor>,
}

impl EventLoop {
    fn spawn(
        n: usize,
        jobs: Sender<Job>,
        busy: Arc<Busy>,
        flavor: Flavor,
        timeout: Option<Duration>,
        acceptor: Option<Acceptor>,
    ) -> io::Result<LoopHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        if let Some(acceptor) = &acceptor {
            for (i, listener) in acceptor.listeners.iter().enumerate() {
                let fd = listener.socket.as_raw_fd();
                let token = LISTENERS + i;
                // Shared by every loop: one of them is woken per connection, not all.
                if crate::sys::epoll_add_exclusive(poll.as_raw_fd(), fd, token as u64).is_err() {
                    poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(token),
                        Interest::READABLE,
                    )?;
                }
            }
        }
        if let Some(acceptor) = &acceptor {
            // At the connection limit the loop sleeps until a freed place wakes it.
            acceptor.shared.add_loop_waker(Arc::clone(&waker));
        }
        let (sender, receiver) = unbounded();
        let event_loop = EventLoop {
            poll,
            receiver,
            sender: sender.clone(),
            waker: Arc::clone(&waker),
            jobs,
            busy,
            parked: std::collections::VecDeque::new(),
            conns: Vec::new(),
            free: Vec::new(),
            generations: 0,
            timers: BinaryHeap::new(),
            again: Vec::new(),
            scratch: Input::default(),
            flavor,
            timeout,
            acceptor,
        };
        let thread = thread::Builder::new()
            .name(format!("socketserver-loop-{n}"))
            .spawn(move || {
                // A bug here must not pass silently: its connections close as it unwinds.
                if let Err(payload) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| event_loop.run()))
                {
                    log::error!(
                        "event loop {n} stopped by a panic (a bug; its connections were closed): {}",
                        crate::handler::panic_message(payload.as_ref())
                    );
                }
            })?;
        Ok(LoopHandle {
            sender,
            waker,
            thread: Some(thread),
        })
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<usize> = Vec::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() && !self.can_accept() {
                self.next_timer()
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("event loop: poll failed: {e}; closing its connections");
                    break;
                }
            }
            ready.clear();
            let mut woken = false;
            for event in events.iter() {
                if event.token() == WAKER {
                    woken = true;
                    continue;
                }
                let token = event.token().0;
                if token >= LISTENERS {
                    if let Some(l) = self
                        .acceptor
                        .as_mut()
                        .and_then(|a| a.listeners.get_mut(token - LISTENERS))
                    {
                        l.ready = true;
                    }
                    continue;
                }
                if let Some(Some(entry)) = self.conns.get_mut(token) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        entry.readable = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        entry.writable = true;
                    }
                    ready.push(token);
                }
            }
            if woken {
                // A freed place under the connection limit may be what woke us.
                if let Some(a) = self.acceptor.as_mut() {
                    a.full = false;
                }
                if self.messages() {
                    break;
                }
            }
            self.unpark();
            self.accept();
            for &token in &ready {
                self.drive(token);
            }
            for (token, generation) in std::mem::take(&mut self.again) {
                if self.is_current(token, generation) {
                    self.drive(token);
                }
            }
            self.fire_timers();
        }
        for token in 0..self.conns.len() {
            self.close(token);
        }
        if let Some(a) = &self.acceptor {
            a.shared.forget_loop_waker(&self.waker);
        }
    }

    /// True when a listener has connections waiting and nothing stops accepting them now.
    fn can_accept(&self) -> bool {
        let Some(a) = &self.acceptor else {
            return false;
        };
        let now = Instant::now();
        a.listeners.iter().any(|l| l.ready)
            && a.backoff.is_none_or(|(_, until)| until <= now)
            && !a.full
    }

    /// Accepts from this loop's own listeners (not in `Handoff` mode).
    fn accept(&mut self) {
        let Some(mut a) = self.acceptor.take() else {
            return;
        };
        if !a.shared.is_running() {
            // Stopping: never accept again (the listeners are shut down or left alone).
            for l in &a.listeners {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&l.socket.as_raw_fd()));
            }
            return;
        }
        let now = Instant::now();
        if a.backoff.is_some_and(|(_, until)| until > now) || a.full {
            self.acceptor = Some(a);
            return;
        }
        'listeners: for i in 0..a.listeners.len() {
            let mut batch = 0;
            while a.listeners[i].ready && batch < ACCEPT_BATCH {
                batch += 1;
                if !a.shared.is_running() {
                    break 'listeners;
                }
                let l = &a.listeners[i];
                match accept_stream(
                    &l.socket,
                    l.kind,
                    &l.local,
                    &a.shared,
                    &*a.handler,
                    &a.settings,
                ) {
                    Ok(Accepted::Request(request)) => {
                        a.backoff = None;
                        let session = match a.spare.take() {
                            Some(session) => Ok(Some(session)),
                            None => new_session(&*a.handler, &request),
                        };
                        match session {
                            Ok(Some(session)) => self.add(request, session.0),
                            Ok(None) => run_on_worker(&self.jobs, &a.handler, request),
                            Err(()) => drop(request),
                        }
                    }
                    Ok(Accepted::Skipped) => a.backoff = None,
                    Ok(Accepted::Full) => {
                        // The claim in `accept_stream` keeps the limit exact across loops.
                        // Sleep until a place frees (it wakes us), unless one did already.
                        let limit = a.settings.limit.unwrap_or(usize::MAX);
                        if !a.shared.loop_at_limit(limit) {
                            a.full = true;
                            break 'listeners;
                        }
                    }
                    Ok(Accepted::Drained) => {
                        a.backoff = None;
                        a.listeners[i].ready = false;
                    }
                    Err(_) if !a.shared.is_running() => break 'listeners,
                    Err(e) => match classify(&e) {
                        AcceptError::Retry => {}
                        AcceptError::Backoff => {
                            let delay = match a.backoff {
                                Some((delay, _)) => (delay * 2).min(crate::server::BACKOFF_MAX),
                                None => {
                                    log::warn!(
                                        "{}: accept failed: {}; pausing accepts (5 ms doubling to 1 s) until it clears",
                                        a.listeners[i].local,
                                        crate::error::describe(&e)
                                    );
                                    crate::server::BACKOFF_START
                                }
                            };
                            a.backoff = Some((delay, Instant::now() + delay));
                            break 'listeners;
                        }
                        AcceptError::Fatal => {
                            log::error!(
                                "{}: accept failed: {}; this loop stops accepting from it",
                                a.listeners[i].local,
                                crate::error::describe(&e)
                            );
                            let _ = self
                                .poll
                                .registry()
                                .deregister(&mut SourceFd(&a.listeners[i].socket.as_raw_fd()));
                            a.listeners[i].ready = false;
                        }
                    },
                }
            }
        }
        self.acceptor = Some(a);
    }

    /// Takes new connections, returning ones and stop requests. Returns true on stop.
    fn messages(&mut self) -> bool {
        while let Ok(msg) = self.receiver.try_recv() {
            match msg {
                Msg::Conn(request, session) => self.add(request, session.0),
                Msg::Back(back) => self.restore(back),
                Msg::Stop => return true,
            }
        }
        false
    }

    fn is_current(&self, token: usize, generation: u64) -> bool {
        matches!(self.conns.get(token), Some(Some(e)) if e.generation == generation)
    }

    fn add(&mut self, request: Request, mut driver: Box<dyn Driver>) {
        driver.connected();
        let socket = request
            .socket()
            .filter(|_| request.is_unbuffered())
            .map(Arc::clone);
        let Some(socket) = socket else {
            driver.lost();
            return;
        };
        let token = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&socket.as_raw_fd()),
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("{}: could not watch the connection: {e}", request.peer());
            self.free.push(token);
            driver.lost();
            return;
        }
        self.generations += 1;
        self.conns[token] = Some(Entry {
            request: Some(request),
            driver: Some(driver),
            generation: self.generations,
            input: Input::default(),
            output: Output::default(),
            readable: true,
            writable: true,
            eof: false,
            closing: false,
            idle: false,
            resume: false,
            linger: None,
            last: Instant::now(),
            armed: None,
            parked: false,
            write_clock: WriteClock::default(),
        });
        self.drive(token);
    }

    fn restore(&mut self, back: Back) {
        let Back {
            token,
            generation,
            request,
            driver,
            input,
            output,
            step,
        } = back;
        let Some(Some(entry)) = self.conns.get_mut(token) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let usable = request.socket().is_some();
        entry.request = Some(request);
        entry.output = output;
        entry.write_clock.reset();
        entry.resume = !input.is_empty() || driver.pending_input();
        entry.driver = Some(driver);
        // What the worker read ahead (pipelined requests), in a buffer of its own size.
        entry.input = Input::from_vec(input.as_slice().to_vec());
        entry.readable = true;
        entry.writable = true;
        entry.last = Instant::now();
        if !usable {
            return self.close(token);
        }
        if self.apply(token, step) {
            self.drive(token);
        }
    }

    /// Acts on a driver's step; returns whether the connection is still to be driven.
    fn apply(&mut self, token: usize, step: Step) -> bool {
        let Some(Some(entry)) = self.conns.get_mut(token) else {
            return false;
        };
        match step {
            Step::Continue => true,
            Step::Close => {
                entry.closing = true;
                true
            }
            Step::Abort => {
                self.close(token);
                false
            }
            Step::Block => {
                self.hand_off(token);
                false
            }
        }
    }

    /// Gives the connection to a worker (blocking mode) until its driver is done with it.
    fn hand_off(&mut self, token: usize) {
        let Some(Some(entry)) = self.conns.get_mut(token) else {
            return;
        };
        if !entry.parked && !self.busy.try_take() {
            // Counted as parked before the second look: a place freed in between either is
            // seen here or wakes this loop.
            self.busy.parked.fetch_add(1, SeqCst);
            if !self.busy.try_take() {
                entry.parked = true;
                self.parked.push_back((token, entry.generation));
                return;
            }
            self.busy.parked.fetch_sub(1, SeqCst);
        }
        if entry.parked {
            entry.parked = false;
            self.busy.parked.fetch_sub(1, SeqCst);
        }
        let (Some(mut request), Some(mut driver)) = (entry.request.take(), entry.driver.take())
        else {
            self.busy.release();
            return self.close(token);
        };
        // Busy until the worker is done (a stop then lets it finish).
        request.set_idle(false);
        entry.idle = false;
        let mut output = std::mem::take(&mut entry.output);
        // The worker gets a copy of the unconsumed bytes; a big read buffer stays with the
        // loop.
        let mut input = entry.input.bytes().to_vec();
        let mut big = std::mem::take(&mut entry.input);
        if big.capacity() >= READ_SIZE && self.scratch.capacity() < READ_SIZE {
            big.clear();
            self.scratch = big;
        }
        let generation = entry.generation;
        let back = self.sender.clone();
        let waker = Arc::clone(&self.waker);
        let busy = Arc::clone(&self.busy);
        // The socket stays non-blocking: the worker's `Request` waits with poll deadlines.
        if request.socket().is_none() {
            entry.request = Some(request);
            entry.driver = Some(driver);
            self.busy.release();
            return self.close(token);
        }
        let job: Job = Box::new(move || {
            // The output the loop had not sent yet goes with it: the driver sends it first,
            // or queues its answer behind it for the loop to send.
            let step = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                driver.blocking(&mut request, &mut input, &mut output)
            })) {
                Ok(step) => step,
                Err(payload) => {
                    log::error!(
                        "{}: handler panicked: {}",
                        request.peer(),
                        crate::handler::panic_message(payload.as_ref())
                    );
                    Step::Abort
                }
            };
            // Bytes the request read ahead of the driver (rustls reads small pieces) come
            // after what the driver left: the loop reads the socket directly from now on.
            input.extend_from_slice(&request.take_read_ahead());
            busy.release();
            let returned = Msg::Back(Back {
                token,
                generation,
                request,
                driver,
                input,
                output,
                step,
            });
            // If the loop is gone (the server stopped), the connection closes here.
            if back.send(returned).is_ok() {
                let _ = waker.wake();
            }
        });
        if let Err(crossbeam_channel::SendError(_job)) = self.jobs.send(job) {
            // No workers any more: the job (and the connection in it) is dropped.
            self.busy.release();
            self.forget(token);
        }
    }

    /// Hands parked connections to the workers, oldest first, while the queue has room.
    fn unpark(&mut self) {
        while let Some(&(token, generation)) = self.parked.front() {
            let parked = matches!(self.conns.get(token), Some(Some(e)) if e.generation == generation && e.parked);
            if !parked {
                self.parked.pop_front();
                continue;
            }
            if !self.busy.try_take() {
                return;
            }
            self.parked.pop_front();
            self.hand_off(token);
        }
    }

    /// Reads, calls the driver, writes, until nothing more can be done now.
    fn drive(&mut self, token: usize) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(Some(entry)) = self.conns.get_mut(token) else {
                return;
            };
            let (Some(request), Some(driver)) = (entry.request.as_mut(), entry.driver.as_mut())
            else {
                return; // on a worker
            };
            let Some(socket) = request.socket().map(Arc::clone) else {
                return self.close(token);
            };
            if !entry.output.is_empty() && entry.writable {
                let sent = match entry.output.send(&socket, WRITE_BUDGET) {
                    Ok(sent) => sent,
                    Err(_) => return self.close(token),
                };
                let (Sent::Drained(n) | Sent::Blocked(n) | Sent::Budget(n)) = sent;
                if n > 0 {
                    entry.last = Instant::now();
                    entry.write_clock.taken(n);
                }
                match sent {
                    Sent::Drained(_) => entry.write_clock.reset(),
                    Sent::Blocked(_) => {
                        entry.writable = false;
                        entry.write_clock.open();
                    }
                    Sent::Budget(_) => {
                        // Others get their turn; this one goes on in the next.
                        self.again.push((token, entry.generation));
                        break;
                    }
                }
            }
            if entry.parked {
                // Waits for a worker (see `unpark`): earlier answers still go out, nothing
                // more is read.
                break;
            }
            if entry.closing {
                if !entry.output.is_empty() {
                    break;
                }
                if entry.eof {
                    return self.close(token);
                }
                // Lingering close: the peer may still be sending (a body we did not read).
                // Closing with unread bytes would reset the connection and could destroy
                // the answer before the client reads it, so shut our side down and discard
                // what still comes, for a bounded time and amount.
                if entry.linger.is_none() {
                    let _ = socket.shutdown(std::net::Shutdown::Write);
                    entry.linger = Some((Instant::now() + LINGER_TIME, LINGER_BYTES));
                }
                if !entry.readable {
                    break;
                }
                let mut sink = [0u8; 16 * 1024];
                match (&*socket).read(&mut sink) {
                    Ok(0) => return self.close(token),
                    Ok(n) => match entry.linger.as_mut() {
                        Some((_, left)) if *left > n => *left -= n,
                        _ => return self.close(token),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => entry.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.close(token),
                }
                continue;
            }
            if entry.resume && !entry.output.is_backed_up() {
                entry.resume = false;
                let step = call(entry, self.flavor, |d, c| d.data(c));
                entry.resume = entry.output.is_backed_up()
                    && (entry.input.len() > 0
                        || entry.driver.as_ref().is_some_and(|d| d.pending_input()));
                if !self.apply(token, step) {
                    return;
                }
                continue;
            }
            let room = driver.input_limit().saturating_sub(entry.input.len());
            if room == 0 && !entry.output.is_backed_up() {
                // The driver let its input fill up without using it: nothing can progress.
                log::warn!(
                    "{}: closed: {} received bytes were left unconsumed",
                    request.peer(),
                    entry.input.len()
                );
                return self.close(token);
            }
            if !entry.readable || entry.eof || entry.output.is_backed_up() {
                break;
            }
            if budget == 0 {
                self.again.push((token, entry.generation));
                break;
            }
            budget -= 1;
            if entry.input.len() == 0 && entry.input.capacity() < READ_SIZE {
                std::mem::swap(&mut entry.input, &mut self.scratch);
            }
            let spare = entry.input.spare(room.min(READ_SIZE));
            let offered = spare.len();
            let got = (&*socket).read(spare);
            entry.input.commit(offered, *got.as_ref().unwrap_or(&0));
            let step = match got {
                Ok(0) => {
                    entry.eof = true;
                    let step = call(entry, self.flavor, |d, c| d.eof(c));
                    if step == Step::Continue {
                        Step::Close
                    } else {
                        step
                    }
                }
                Ok(_) => {
                    entry.last = Instant::now();
                    let step = call(entry, self.flavor, |d, c| d.data(c));
                    entry.resume = entry.output.is_backed_up()
                        && (entry.input.len() > 0
                            || entry.driver.as_ref().is_some_and(|d| d.pending_input()));
                    step
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    entry.readable = false;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(token),
            };
            if !self.apply(token, step) {
                return;
            }
        }
        self.after_drive(token);
    }

    /// Buffer hand-back, idle marking and the timer, after a connection was driven.
    fn after_drive(&mut self, token: usize) {
        let Some(Some(entry)) = self.conns.get_mut(token) else {
            return;
        };
        // The loop's big read buffer goes back to the loop once (nearly) empty; a few
        // unconsumed bytes move to a buffer of their own size.
        if entry.input.capacity() >= READ_SIZE && entry.input.len() <= KEEP_SMALL {
            let mut big = std::mem::take(&mut entry.input);
            entry.input = Input::from_vec(big.bytes().to_vec());
            if self.scratch.capacity() < READ_SIZE {
                big.clear();
                self.scratch = big;
            }
        }
        let (Some(request), Some(driver)) = (entry.request.as_mut(), entry.driver.as_ref()) else {
            return;
        };
        let idle =
            !entry.closing && entry.output.is_empty() && entry.input.len() == 0 && driver.is_idle();
        if idle != entry.idle {
            entry.idle = idle;
            // A graceful stop began: an idle connection closes now.
            if !request.set_idle(idle) && idle {
                return self.close(token);
            }
        } else if idle && request.shutdown_ref().is_shutting_down() {
            return self.close(token);
        }
        let deadline = deadline_of(entry, &**driver, self.timeout);
        if let Some(deadline) = deadline
            && entry.armed.is_none_or(|armed| deadline < armed)
        {
            entry.armed = Some(deadline);
            self.timers
                .push(Reverse((deadline, token, entry.generation)));
        }
    }

    fn next_timer(&mut self) -> Option<Duration> {
        let mut next = self.timers.peek().map(|Reverse((when, _, _))| *when);
        if let Some((_, until)) = self.acceptor.as_ref().and_then(|a| a.backoff) {
            next = Some(next.map_or(until, |n| n.min(until)));
        }
        // Round up: waking a little early would only spin.
        next.map(|when| when.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((when, token, generation))) = self.timers.peek().copied() {
            if when > now {
                break;
            }
            self.timers.pop();
            let flavor = self.flavor;
            let timeout = self.timeout;
            let Some(Some(entry)) = self.conns.get_mut(token) else {
                continue;
            };
            if entry.generation != generation || entry.armed != Some(when) {
                continue; // stale
            }
            entry.armed = None;
            if entry.parked {
                continue; // waiting for a worker, as in the queue: timed there
            }
            let Some(driver) = entry.driver.as_ref() else {
                continue; // on a worker, which has its own timeouts
            };
            match deadline_of(entry, &**driver, timeout) {
                Some(deadline) if deadline > now => {
                    entry.armed = Some(deadline);
                    self.timers.push(Reverse((deadline, token, generation)));
                }
                None => {}
                Some(_) if entry.closing => self.close(token),
                Some(_) => {
                    let step = call(entry, flavor, |d, c| d.timed_out(c));
                    // One more chance to send a last answer (an HTTP 408), within its own
                    // deadline; a second expiry closes for good.
                    entry.last = now;
                    if self.apply(
                        token,
                        if step == Step::Continue {
                            Step::Close
                        } else {
                            step
                        },
                    ) {
                        self.drive(token);
                    }
                }
            }
        }
    }

    /// Closes a connection: stop watching it, tell its driver, close the socket.
    fn close(&mut self, token: usize) {
        let Some(slot) = self.conns.get_mut(token) else {
            return;
        };
        let Some(mut entry) = slot.take() else {
            return;
        };
        if entry.parked {
            self.busy.parked.fetch_sub(1, SeqCst);
        }
        self.free.push(token);
        // Timers of closed connections wait in the heap until their time: when they outnumber
        // the live connections, sweep them out, so churn with long timeouts cannot pile up.
        let live = self.conns.len() - self.free.len();
        if self.timers.len() > 2 * live + 1024 {
            let conns = &self.conns;
            self.timers.retain(|Reverse((when, token, generation))| {
                matches!(conns.get(*token), Some(Some(e)) if e.generation == *generation && e.armed == Some(*when))
            });
        }
        if let Some(socket) = entry.request.as_ref().and_then(|r| r.socket()) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&socket.as_raw_fd()));
        }
        if let Some(driver) = entry.driver.as_mut() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.lost()));
        }
        // Dropping the request closes the socket and frees its in-flight slot.
        drop(entry);
    }

    /// Forgets a connection a worker could not take (it was dropped with the job).
    fn forget(&mut self, token: usize) {
        if let Some(slot) = self.conns.get_mut(token)
            && slot.take().is_some()
        {
            self.free.push(token);
        }
    }
}

/// Queues a whole connection (or datagram) for the blocking handler on the workers. Fails only
/// once the server is closing: the request is then dropped and its connection closed.
fn run_on_worker(jobs: &Sender<Job>, handler: &Arc<dyn Handler>, request: Request) {
    let handler = Arc::clone(handler);
    let _ = jobs.send(Box::new(move || run(&*handler, request)));
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

/// When the connection must have made progress by: the end of its lingering close, or what
/// its driver says.
fn deadline_of(entry: &Entry, driver: &dyn Driver, timeout: Option<Duration>) -> Option<Instant> {
    match entry.linger {
        Some((until, _)) => Some(until),
        None if !entry.output.is_empty() => driver.deadline(
            entry.write_clock.since().unwrap_or(entry.last),
            timeout,
            true,
        ),
        None => driver.deadline(entry.last, timeout, false),
    }
}

/// Calls a driver with the connection's buffers, shielding the loop from a panic (which
/// aborts that connection only).
fn call(
    entry: &mut Entry,
    flavor: Flavor,
    f: impl FnOnce(&mut dyn Driver, &mut Conn<'_>) -> Step,
) -> Step {
    let (Some(request), Some(driver)) = (entry.request.as_ref(), entry.driver.as_mut()) else {
        return Step::Abort;
    };
    let mut conn = Conn {
        input: &mut entry.input,
        output: &mut entry.output,
        peer: request.peer(),
        local: request.local(),
        datagram: false,
        shutdown: request.shutdown_ref(),
        inline: flavor == Flavor::Async,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut **driver, &mut conn))) {
        Ok(step) => step,
        Err(payload) => {
            log::error!(
                "{}: protocol panicked: {}",
                request.peer(),
                crate::handler::panic_message(payload.as_ref())
            );
            Step::Abort
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
