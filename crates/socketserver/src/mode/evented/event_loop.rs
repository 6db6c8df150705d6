//! One event loop and its connection table: readiness, reads and writes under budgets, the
//! driver calls, lingering close, timers, parking and the hand-off to a worker and back.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::super::workers::Job;
use super::engine::{Driver, Input, Output, Sent, Step};
use super::timers::{Linger, Timers};
use super::{Busy, Flavor, new_session};
use crate::accept::Intake;
use crate::metrics::Timeout;
use crate::protocol::Conn;
use crate::request::WriteClock;
use crate::shutdown::{LastLook, Shared};
use crate::{Handler, Request, Session};

/// Tells the logger this loop is about to wait (or end): `log::logger().flush()`. A logger
/// may hold a loop thread's records until then and write them in one go (the binary's does,
/// for access lines, as nginx's buffered `access_log` does); none waits longer than the turn
/// of the loop that logged it.
fn flush_logs() {
    log::logger().flush();
}

pub(super) const WAKER: Token = Token(usize::MAX);
/// Listener `i` of a loop has token `LISTENERS + i` (connections count up from 0).
const LISTENERS: usize = usize::MAX / 2;

/// The server's probe session, shared by the loops that accept: whichever takes a
/// connection first serves it with the probe, so the protocol factory runs exactly once per
/// connection whichever loop the kernel picks.
pub(super) type SharedSpare = Arc<std::sync::Mutex<Option<Session>>>;

/// One loop's accepting state.
pub(super) struct Acceptor {
    pub(super) intake: Intake,
    pub(super) shared: Arc<Shared>,
    pub(super) handler: Arc<dyn Handler>,
    /// The server's probe session, shared with the other accepting loops: looked for at
    /// this loop's first connection (and then dropped here, taken or not).
    pub(super) spare: Option<SharedSpare>,
    /// Owed to a graceful stop: the last look at the listeners (see [`LastLook`]). Dropped
    /// with the acceptor, after that look or at the loop's end.
    pub(super) _last_look: Option<LastLook>,
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
/// Emptied outputs a loop keeps for the connections that answer next (see `outputs`).
const OUTPUT_POOL: usize = 64;
/// An output keeping more memory than this is let go rather than kept.
const OUTPUT_KEPT_MAX: usize = 64 * 1024;

pub(super) enum Msg {
    Conn(Request, Session),
    Back(Back),
    Stop,
}

/// A connection returning from a worker.
pub(super) struct Back {
    token: usize,
    generation: u64,
    request: Request,
    driver: Box<dyn Driver>,
    input: Vec<u8>,
    /// What the worker left for the loop to send.
    output: Output,
    step: Step,
}

/// What the [`Evented`](super::Evented) keeps of a loop.
pub(super) struct LoopHandle {
    pub(super) sender: Sender<Msg>,
    pub(super) waker: Arc<Waker>,
    pub(super) thread: Option<JoinHandle<()>>,
}

/// A connection's answer in progress: its output and the stall window of its writes (the
/// same as `Request`'s on the blocking side: while output waits, the driver's deadline runs
/// from when it opened, so a reader taking a little now and then is cut off too).
#[derive(Default)]
pub(super) struct Outgoing {
    output: Output,
    clock: WriteClock,
}

/// Emptied [`Outgoing`]s kept for the next connections to answer. Boxed: a box moves
/// between the pool and an entry as a pointer, and an entry holds only that pointer.
#[allow(clippy::vec_box)]
type Outgoings = Vec<Box<Outgoing>>;

/// Where a connection keeps its [`Outgoing`]: boxed, and only while it answers. An idle
/// connection holds none (what an entry holds inline, every connection pays for); the loop
/// lends emptied ones to the connections that answer next (`EventLoop::outputs`), so a busy
/// one allocates none per answer.
#[derive(Default)]
struct Held(Option<Box<Outgoing>>);

impl Held {
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|o| o.output.is_empty())
    }

    fn is_backed_up(&self) -> bool {
        self.0.as_ref().is_some_and(|o| o.output.is_backed_up())
    }

    /// When the output began to wait for the peer, while it waits.
    fn stalled_since(&self) -> Option<Instant> {
        self.0.as_ref().and_then(|o| o.clock.since())
    }

    /// The connection's output, lent from `pool` (or new) when it holds none.
    fn get<'a>(&'a mut self, pool: &mut Outgoings) -> &'a mut Outgoing {
        self.0.get_or_insert_with(|| pool.pop().unwrap_or_default())
    }

    /// Gives an emptied output back to `pool`, or lets it go when the pool is full or it
    /// keeps too much memory.
    fn release(&mut self, pool: &mut Outgoings) {
        if !self.is_empty() {
            return;
        }
        let Some(mut held) = self.0.take() else {
            return;
        };
        if held.output.kept() <= OUTPUT_KEPT_MAX
            && pool.len() < OUTPUT_POOL
            && let Some(used) = held.output.take_for_reuse()
        {
            held.output = used;
            held.clock.reset();
            pool.push(held);
        }
    }
}

/// Where a connection keeps its unconsumed input: boxed, and only while there is some (or
/// while it has the loop's read buffer, `EventLoop::scratch`, lent for a read).
#[derive(Default)]
struct Received(Option<Box<Input>>);

impl Received {
    /// A buffer of their own size holding `bytes` (none when there are none).
    fn copy_of(bytes: &[u8]) -> Received {
        Received((!bytes.is_empty()).then(|| Box::new(Input::from_vec(bytes.to_vec()))))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |input| input.bytes())
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |input| input.len())
    }

    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |input| input.capacity())
    }

    /// Forgets every byte (the allocation is kept).
    fn clear(&mut self) {
        if let Some(input) = self.0.as_mut() {
            input.clear();
        }
    }

    /// The buffer, an empty one made when there is none.
    fn get(&mut self) -> &mut Input {
        self.0.get_or_insert_with(Box::default)
    }
}

/// One connection owned by a loop.
struct Entry {
    /// `None` while a worker has the connection.
    request: Option<Request>,
    driver: Option<Box<dyn Driver>>,
    generation: u64,
    /// Received bytes not consumed yet, if any (an idle connection holds none).
    input: Received,
    /// The answer in progress, if any (an idle connection holds none).
    output: Held,
    readable: bool,
    /// An event said the peer's side is closed (or in error): read on to the end, as a short
    /// read no longer means that nothing more is coming before the next event.
    hup: bool,
    writable: bool,
    eof: bool,
    /// Close once the output is sent.
    closing: bool,
    /// Marked idle in the server's table (closed at once by a graceful stop).
    idle: bool,
    /// Marked quiet there: new, no request begun (closed a moment into a graceful stop).
    quiet: bool,
    /// Unconsumed input waits for the output to drain: call the driver again then.
    resume: bool,
    /// Closing, output sent, discarding what the peer still sends (boxed: rare, and every
    /// connection pays for what an entry holds inline).
    linger: Option<Box<Linger>>,
    last: Instant,
    /// The deadline currently in the timer heap, if any.
    armed: Option<Instant>,
    /// Waiting for a place in the workers' queue (see [`Busy`]): not driven meanwhile.
    parked: bool,
    /// A PROXY protocol header is still to come, due by then: the loop reads it before the
    /// driver sees a byte.
    proxy: Option<Instant>,
}

pub(super) struct EventLoop {
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
    timers: Timers,
    /// Connections with readable data left after their read budget.
    again: Vec<(usize, u64)>,
    /// The read buffer lent to whichever connection reads with nothing left over, so an
    /// idle connection holds no buffer of its own.
    scratch: Received,
    /// Outputs (their queue and a sent buffer) taken back from connections gone quiet, lent
    /// to those that read a request next: an idle keep-alive connection holds no output
    /// memory, and a busy one allocates none per answer.
    outputs: Outgoings,
    flavor: Flavor,
    timeout: Option<Duration>,
    /// Set when this loop accepts by itself.
    acceptor: Option<Acceptor>,
    /// When the last wait ended: a connection's progress is stamped with it (`Entry::last`,
    /// for its timeouts), a clock read per turn rather than two per message.
    now: Instant,
}

impl EventLoop {
    pub(super) fn spawn(
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
            for (i, listener) in acceptor.intake.ports().iter().enumerate() {
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
            timers: Timers::default(),
            again: Vec::new(),
            scratch: Received::default(),
            outputs: Vec::new(),
            flavor,
            timeout,
            acceptor,
            now: Instant::now(),
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
            // What this turn logged (an access line per answer) goes out in one batch now,
            // before the loop waits: see `flush_logs`.
            flush_logs();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("event loop: poll failed: {e}; closing its connections");
                    break;
                }
            }
            self.now = Instant::now();
            ready.clear();
            let mut woken = false;
            for event in events.iter() {
                if event.token() == WAKER {
                    woken = true;
                    continue;
                }
                let token = event.token().0;
                if token >= LISTENERS {
                    if let Some(a) = self.acceptor.as_mut() {
                        a.intake.mark_ready(token - LISTENERS);
                    }
                    continue;
                }
                if let Some(Some(entry)) = self.conns.get_mut(token) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        entry.readable = true;
                    }
                    if event.is_read_closed() || event.is_error() {
                        entry.hup = true;
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
                    a.intake.woken();
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
        flush_logs();
    }

    /// True when a listener has connections waiting and nothing stops accepting them now.
    fn can_accept(&self) -> bool {
        self.acceptor
            .as_ref()
            .is_some_and(|a| a.intake.has_work(Instant::now()))
    }

    /// Accepts from this loop's own listeners (not in `Handoff` mode).
    fn accept(&mut self) {
        let Some(mut a) = self.acceptor.take() else {
            return;
        };
        if !a.shared.is_running() {
            // Stopping: never accept again (the listeners are shut down or left alone),
            // after one last look at a shared listener (see `Intake::sweep`). The acceptor
            // goes with this return, and with it the stop's `LastLook`: the drain may end.
            for port in a.intake.ports() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&port.socket.as_raw_fd()));
            }
            if !a.shared.is_closing() {
                let (handler, spare) = (&a.handler, &mut a.spare);
                a.intake
                    .sweep(|request| self.take_new(handler, spare, request));
            }
            a.shared.forget_loop_waker(&self.waker);
            return;
        }
        loop {
            let (handler, spare) = (&a.handler, &mut a.spare);
            let taken = a
                .intake
                .accept(usize::MAX, |request| self.take_new(handler, spare, request));
            let Err(broken) = taken else {
                break;
            };
            let port = &a.intake.ports()[broken.index];
            log::error!(
                "{}: accept failed: {}; this loop stops accepting from it",
                port.local,
                crate::error::describe(&broken.error)
            );
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&port.socket.as_raw_fd()));
        }
        self.acceptor = Some(a);
    }

    /// Serves a connection this loop accepted: on the loop with a session of its own (the
    /// probe's spare one first), or on a worker when the handler has only the blocking form.
    fn take_new(
        &mut self,
        handler: &Arc<dyn Handler>,
        spare: &mut Option<SharedSpare>,
        request: Request,
    ) {
        // A loop looks for the probe at its first connection only: taken by it or by another
        // loop before, it is gone for good.
        let probe = spare
            .take()
            .and_then(|shared| shared.lock().ok().and_then(|mut s| s.take()));
        let session = match probe {
            Some(session) => Ok(Some(session)),
            None => new_session(&**handler, &request),
        };
        match session {
            Ok(Some(session)) => self.add(request, session.0),
            Ok(None) => {
                let _ = self.jobs.send(super::blocking_job(handler, request));
            }
            Err(()) => drop(request),
        }
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
        let proxy = request
            .proxy_header_due()
            .and_then(|within| Instant::now().checked_add(within));
        self.conns[token] = Some(Entry {
            request: Some(request),
            driver: Some(driver),
            generation: self.generations,
            input: Received::default(),
            output: Held::default(),
            readable: true,
            hup: false,
            writable: true,
            eof: false,
            closing: false,
            idle: false,
            quiet: false,
            resume: false,
            linger: None,
            last: Instant::now(),
            armed: None,
            parked: false,
            proxy,
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
        let held = entry.output.get(&mut self.outputs);
        held.output = output;
        held.clock.reset();
        entry.resume = !input.is_empty() || driver.pending_input();
        entry.driver = Some(driver);
        // What the worker read ahead (pipelined requests), in a buffer of its own size.
        entry.input = Received::copy_of(&input);
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
        // The output goes to the worker; its box stays, empty, for the answer coming back.
        let mut output = entry
            .output
            .0
            .as_mut()
            .map(|held| std::mem::take(&mut held.output))
            .unwrap_or_default();
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
            if entry.writable
                && let Some(out) = entry.output.0.as_mut().filter(|o| !o.output.is_empty())
            {
                let sent = match out.output.send(&socket, WRITE_BUDGET) {
                    Ok(sent) => sent,
                    Err(_) => return self.close(token),
                };
                let (Sent::Drained(n) | Sent::Blocked(n) | Sent::Budget(n)) = sent;
                if n > 0 {
                    entry.last = self.now;
                    out.clock.taken(n);
                    if let Some(m) = request.shutdown_ref().shared.metrics() {
                        m.sent(n);
                    }
                }
                match sent {
                    Sent::Drained(_) => out.clock.reset(),
                    Sent::Blocked(_) => {
                        entry.writable = false;
                        out.clock.open();
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
                // Nothing can follow what was read: once the socket is seen empty, close
                // now, as nginx does, without the half-close and the wait for the peer's FIN.
                let fresh = entry.linger.is_none();
                let clean = fresh && entry.input.len() == 0 && driver.read_everything();
                if clean && !entry.readable {
                    return self.close(token);
                }
                // Lingering close (see `Linger`): the peer may still be sending a body we
                // did not read.
                if fresh {
                    let _ = socket.shutdown(std::net::Shutdown::Write);
                    entry.linger = Some(Box::new(Linger::start(Instant::now())));
                }
                if !entry.readable {
                    break;
                }
                let mut sink = [0u8; 16 * 1024];
                match socket.socket().read(&mut sink) {
                    Ok(0) => return self.close(token),
                    Ok(n) => {
                        if let Some(m) = request.shutdown_ref().shared.metrics() {
                            m.received(n);
                        }
                        if !entry.linger.as_mut().is_some_and(|l| l.discarded(n)) {
                            return self.close(token);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && clean => {
                        return self.close(token);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => entry.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.close(token),
                }
                continue;
            }
            if entry.resume && !entry.output.is_backed_up() {
                if budget == 0 {
                    // A driver producing output of its own (an encrypting pump) gets as many
                    // goes a turn as a reader: others get theirs in between.
                    self.again.push((token, entry.generation));
                    break;
                }
                budget -= 1;
                entry.resume = false;
                let step = call(entry, &mut self.outputs, self.flavor, |d, c| d.data(c));
                entry.resume = resume_after(entry);
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
            let input = entry.input.get();
            let spare = input.spare(room.min(READ_SIZE));
            let offered = spare.len();
            let got = socket.socket().read(spare);
            input.commit(offered, *got.as_ref().unwrap_or(&0));
            if let (Ok(n), Some(m)) = (&got, request.shutdown_ref().shared.metrics()) {
                m.received(*n);
            }
            let step = match got {
                Ok(0) if entry.proxy.is_some() => {
                    log::warn!(
                        "{}: closed: closed before its PROXY protocol header ended",
                        request.peer()
                    );
                    return self.close(token);
                }
                Ok(_) if entry.proxy.is_some() => {
                    match crate::proxy::parse(entry.input.bytes()) {
                        Ok(None) => {}
                        Ok(Some(header)) => {
                            entry.input.get().consume(header.len);
                            entry.proxy = None;
                            entry.last = self.now;
                            request.proxy_header_read(header.source);
                            entry.resume = entry.input.len() > 0;
                        }
                        Err(invalid) => {
                            log::warn!("{}: closed: {invalid}", request.peer());
                            return self.close(token);
                        }
                    }
                    continue;
                }
                Ok(0) => {
                    entry.eof = true;
                    let step = call(entry, &mut self.outputs, self.flavor, |d, c| d.eof(c));
                    if step == Step::Continue {
                        Step::Close
                    } else {
                        step
                    }
                }
                Ok(n) => {
                    // A short read took all the socket had: the next byte comes with an event
                    // of its own (edge-triggered), so reading again now would only be told
                    // EAGAIN, a system call per request for nothing (as tokio and nginx do).
                    if n < offered && !entry.hup {
                        entry.readable = false;
                    }
                    entry.last = self.now;
                    let step = call(entry, &mut self.outputs, self.flavor, |d, c| d.data(c));
                    entry.resume = resume_after(entry);
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
            entry.input = Received::copy_of(big.bytes());
            if self.scratch.capacity() < READ_SIZE {
                big.clear();
                self.scratch = big;
            }
        } else if entry.input.len() == 0 {
            entry.input = Received::default();
        }
        let (Some(request), Some(driver)) = (entry.request.as_mut(), entry.driver.as_ref()) else {
            return;
        };
        let still = !entry.closing
            && entry.output.is_empty()
            && entry.input.len() == 0
            && entry.proxy.is_none();
        if still {
            entry.output.release(&mut self.outputs);
        }
        let idle = still && driver.is_idle();
        let quiet = still && !idle && driver.is_quiet();
        if quiet != entry.quiet && quiet {
            entry.quiet = true;
            request.set_quiet();
        }
        if idle != entry.idle || (entry.quiet && !quiet) {
            entry.idle = idle;
            entry.quiet = false;
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
            self.timers.arm(deadline, token, entry.generation);
        }
    }

    fn next_timer(&mut self) -> Option<Duration> {
        let mut next = self.timers.next();
        if let Some(until) = self
            .acceptor
            .as_ref()
            .and_then(|a| a.intake.backoff_until())
        {
            next = Some(next.map_or(until, |n| n.min(until)));
        }
        // Round up: waking a little early would only spin.
        next.map(|when| when.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((when, token, generation)) = self.timers.pop_due(now) {
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
            if entry.proxy.is_some_and(|due| due <= now) {
                if let Some(request) = entry.request.as_ref() {
                    if let Some(m) = request.shutdown_ref().shared.metrics() {
                        m.timed_out(Timeout::Header);
                    }
                    log::warn!(
                        "{}: closed: no complete PROXY protocol header in time",
                        request.peer()
                    );
                }
                self.close(token);
                continue;
            }
            match deadline_of(entry, &**driver, timeout) {
                Some(deadline) if deadline > now => {
                    entry.armed = Some(deadline);
                    self.timers.arm(deadline, token, generation);
                }
                None => {}
                Some(_) if entry.closing => self.close(token),
                Some(_) => {
                    if let Some(m) = entry
                        .request
                        .as_ref()
                        .and_then(|r| r.shutdown_ref().shared.metrics())
                    {
                        m.timed_out(if !entry.output.is_empty() {
                            Timeout::Write
                        } else if driver.is_idle() || driver.is_quiet() {
                            Timeout::Idle
                        } else {
                            Timeout::Header
                        });
                    }
                    let step = call(entry, &mut self.outputs, flavor, |d, c| d.timed_out(c));
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
        // The loop's big read buffer, if this connection had it, stays with the loop: a
        // connection per request would otherwise cost a 64 KiB allocation, zeroed, each.
        if entry.input.capacity() >= READ_SIZE && self.scratch.capacity() < READ_SIZE {
            entry.input.clear();
            self.scratch = std::mem::take(&mut entry.input);
        }
        self.free.push(token);
        // Timers of closed connections wait in the heap until their time: when they outnumber
        // the live connections, sweep them out, so churn with long timeouts cannot pile up.
        let live = self.conns.len() - self.free.len();
        let conns = &self.conns;
        self.timers.sweep(live, |&(when, token, generation)| {
            matches!(conns.get(token), Some(Some(e)) if e.generation == generation && e.armed == Some(when))
        });
        if let Some(socket) = entry.request.as_ref().and_then(|r| r.socket()) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&socket.as_raw_fd()));
        }
        if let Some(driver) = entry.driver.as_mut() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.lost()));
        }
        if let Some(request) = entry.request.as_mut() {
            request.closing_on_loop();
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

/// When the connection must have made progress by: the end of its lingering close, or what
/// its driver says.
/// Whether the driver is called again, without new input, once the output has room: it has
/// input left that waits for the output to drain (pipelined requests), or output of its own
/// to make (`Driver::producing`).
fn resume_after(entry: &Entry) -> bool {
    let Some(driver) = entry.driver.as_ref() else {
        return false;
    };
    (entry.output.is_backed_up() && (entry.input.len() > 0 || driver.pending_input()))
        || driver.producing()
}

fn deadline_of(entry: &Entry, driver: &dyn Driver, timeout: Option<Duration>) -> Option<Instant> {
    if let Some(due) = entry.proxy {
        return Some(due);
    }
    match &entry.linger {
        Some(linger) => Some(linger.until),
        None if !entry.output.is_empty() => driver.deadline(
            entry.output.stalled_since().unwrap_or(entry.last),
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
    outputs: &mut Outgoings,
    flavor: Flavor,
    f: impl FnOnce(&mut dyn Driver, &mut Conn<'_>) -> Step,
) -> Step {
    let (Some(request), Some(driver)) = (entry.request.as_ref(), entry.driver.as_mut()) else {
        return Step::Abort;
    };
    let mut conn = Conn {
        input: entry.input.get(),
        output: &mut entry.output.get(outputs).output,
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

    /// What an idle connection costs is mostly what its entry and request hold inline:
    /// every connection pays for a field there, busy or not (bench/idle_memory.py measures
    /// the whole). What only a busy connection needs is boxed and pooled instead.
    #[test]
    fn an_idle_connection_stays_small() {
        let entry = std::mem::size_of::<Entry>();
        let request = std::mem::size_of::<Request>();
        assert!(request <= 208, "Request is {request} bytes");
        assert!(
            entry <= request + 112,
            "Entry is {entry} bytes, its Request {request}"
        );
    }

    #[test]
    fn an_output_goes_back_to_the_pool_only_when_empty() {
        let mut pool = Vec::new();
        let mut held = Held::default();
        assert!(held.is_empty() && !held.is_backed_up() && held.stalled_since().is_none());
        held.get(&mut pool).output.write(b"answer");
        held.get(&mut pool).clock.open();
        assert!(!held.is_empty() && held.stalled_since().is_some());
        held.release(&mut pool);
        assert!(
            pool.is_empty(),
            "an output with bytes waiting stays with its connection"
        );
        let sent = held.0.as_mut().map(|o| o.output.take_bytes());
        assert_eq!(sent.and_then(Result::ok).as_deref(), Some(&b"answer"[..]));
        held.release(&mut pool);
        assert!(held.0.is_none() && pool.len() == 1);
        // The next connection to answer gets it back, its clock reset and nothing queued.
        let mut next = Held::default();
        let lent = next.get(&mut pool);
        assert!(lent.output.is_empty() && lent.clock.since().is_none() && !lent.output.touched);
        assert!(pool.is_empty());
    }

    #[test]
    fn unconsumed_input_is_kept_in_a_buffer_of_its_size() {
        assert!(Received::copy_of(b"").0.is_none());
        let mut kept = Received::copy_of(b"GET");
        assert_eq!(
            (kept.bytes(), kept.len(), kept.capacity()),
            (&b"GET"[..], 3, 3)
        );
        kept.clear();
        assert_eq!(kept.len(), 0);
        let mut none = Received::default();
        assert_eq!(
            (none.bytes(), none.len(), none.capacity()),
            (&b""[..], 0, 0)
        );
        none.get().spare(4)[..2].copy_from_slice(b"ab");
        none.get().commit(4, 2);
        assert_eq!(none.bytes(), b"ab");
    }
}
