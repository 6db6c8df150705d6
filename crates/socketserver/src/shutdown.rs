//! Shutdown and in-flight accounting.
//!
//! One `Shared` value per server holds the run state, the waker of the serving loop and the
//! table of work in flight. Every accepted connection (or received datagram) holds a [`Slot`]
//! until it is finished: the count bounds `max_connections` and the mode's capacity, and the
//! table lets a forced close reach every connection (shut its socket down) or child (kill it),
//! so "close what remains" is real and not a hope.

use std::fmt;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::Socket;

use crate::mode::ForkLink;

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSING: u8 = 2;

/// An accepted connection's socket, shared by its request and the forced-close table, with
/// what the connection is doing: [`BUSY`], [`IDLE`] between requests (see
/// `Request::set_idle`: a graceful shutdown closes it at once instead of waiting for its
/// deadline) or [`QUIET`], new and silent (closed [`QUIET_GRACE`] into the stop). One
/// allocation holds both.
pub(crate) struct Tracked {
    socket: Socket,
    state: AtomicU8,
}

impl Tracked {
    pub(crate) fn new(socket: Socket) -> Arc<Tracked> {
        Arc::new(Tracked {
            socket,
            state: AtomicU8::new(BUSY),
        })
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Records what the connection is doing ([`BUSY`], [`IDLE`] or [`QUIET`]).
    pub(crate) fn set_state(&self, state: u8) {
        self.state.store(state, SeqCst);
    }

    fn state(&self) -> u8 {
        self.state.load(SeqCst)
    }
}

impl std::ops::Deref for Tracked {
    type Target = Socket;

    fn deref(&self) -> &Socket {
        &self.socket
    }
}

/// The forced-close table: a slab, its free rows reused, so a row costs its entry and no
/// hashing (every connection pays for its row).
#[derive(Default)]
struct Table {
    rows: Vec<Option<Entry>>,
    free: Vec<usize>,
}

impl Table {
    fn insert(&mut self, entry: Entry) -> usize {
        match self.free.pop() {
            Some(row) => {
                self.rows[row] = Some(entry);
                row
            }
            None => {
                self.rows.push(Some(entry));
                self.rows.len() - 1
            }
        }
    }

    fn remove(&mut self, row: usize) {
        if let Some(slot) = self.rows.get_mut(row)
            && slot.take().is_some()
        {
            self.free.push(row);
        }
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.rows.iter().flatten()
    }
}

/// A connection in the middle of something.
pub(crate) const BUSY: u8 = 0;
/// A connection between requests.
pub(crate) const IDLE: u8 = 1;
/// A new connection whose first request has not begun: not idle (its request may be on the
/// way, sent as the client connected), but not to be waited for long either.
pub(crate) const QUIET: u8 = 2;
/// How long into a graceful stop a [`QUIET`] connection is given for its first request.
pub(crate) const QUIET_GRACE: Duration = Duration::from_secs(1);

/// What a forced close does to one piece of in-flight work.
pub(crate) enum Entry {
    /// A connection: shut its socket down so a handler blocked on it returns at once.
    Socket(Arc<Tracked>),
    /// A forked child: kill it.
    Process(i32),
    /// Nothing to interrupt (a datagram being handled).
    Nothing,
}

/// Wakers of event loops to wake together (a freed place under a limit): added as loops
/// start, removed as they stop, so their fds close with them.
#[derive(Default)]
pub(crate) struct LoopWakers(Mutex<Vec<Arc<mio::Waker>>>);

impl LoopWakers {
    pub(crate) fn add(&self, waker: Arc<mio::Waker>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(waker);
    }

    pub(crate) fn remove(&self, waker: &Arc<mio::Waker>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|w| !Arc::ptr_eq(w, waker));
    }

    pub(crate) fn wake_all(&self) {
        for waker in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            // A failed wake means the eventfd is saturated: that loop is due to wake anyway.
            let _ = waker.wake();
        }
    }
}

pub(crate) struct Shared {
    state: AtomicU8,
    waker: mio::Waker,
    /// Set while the loop waits for a slot to free up or for the drain: then every finished
    /// request wakes it.
    want_wake: AtomicBool,
    /// Set while an event loop that accepts is at the connection limit: then a freed place
    /// wakes every such loop (see `loop_wakers`), so none of them polls for it.
    loops_want_wake: AtomicBool,
    /// The wakers of the event loops that accept by themselves.
    loop_wakers: LoopWakers,
    /// Event loops accepting by themselves that have not yet taken their last look at their
    /// listeners since the stop began (see [`LastLook`]): the drain is not over before they
    /// have.
    last_looks: AtomicUsize,
    count: AtomicUsize,
    /// `count` plus the places claimed for connections being accepted: what the connection
    /// limit is checked against, so that threads accepting at once never pass it.
    reserved: AtomicUsize,
    table: Mutex<Table>,
    /// Stream listeners, shut down by whoever asks for the stop (see `stop_listening`).
    /// Emptied when the loop closes the listeners, so their fds do not outlive the close.
    /// Listeners this server bound itself (an adopted socket belongs to whoever bound it:
    /// shutting it down would break it for them too). `true` marks a Unix stream listener.
    listening: Mutex<Vec<(Arc<Socket>, bool)>>,
    /// In fork mode, the pipes to and from the children (a child's copy of this state is not
    /// the server's: its stop requests travel to the parent, and it hears of a drain).
    fork: Option<ForkLink>,
    /// Requests run on the serving thread (`Mode::Sync`): the loop cannot watch the drain
    /// deadline while one runs, so a timer thread does.
    inline: bool,
    shutdown_timeout: Duration,
    drain_timer: Mutex<DrainTimer>,
    /// The server's counters, when it keeps them.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Tell the service manager when a stop begins (see `notify.rs`).
    notify: bool,
}

/// The drain deadline's timer thread in `Mode::Sync`.
enum DrainTimer {
    NotStarted,
    Running(mpsc::Sender<()>, JoinHandle<()>),
    /// The drain is over: a stop asked for late (racing the end of the drain) starts none,
    /// or its thread would outlive the server by the whole shutdown timeout.
    Over,
}

impl Shared {
    pub(crate) fn new(
        waker: mio::Waker,
        listening: Vec<(Arc<Socket>, bool)>,
        inline: bool,
        shutdown_timeout: Duration,
        fork: Option<ForkLink>,
        notify: bool,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Shared {
        Shared {
            state: AtomicU8::new(RUNNING),
            waker,
            want_wake: AtomicBool::new(false),
            loops_want_wake: AtomicBool::new(false),
            loop_wakers: LoopWakers::default(),
            last_looks: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            table: Mutex::new(Table::default()),
            listening: Mutex::new(listening),
            fork,
            inline,
            shutdown_timeout,
            drain_timer: Mutex::new(DrainTimer::NotStarted),
            notify,
            metrics,
        }
    }

    /// The server's counters, when it keeps them.
    pub(crate) fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        self.metrics.as_deref()
    }

    /// Stops accepting at once, from the thread that asks for the stop: on Linux,
    /// `shutdown(2)` on a listening TCP socket refuses new connections and resets those still
    /// waiting in its queue, even while the serving thread is busy in a `Mode::Sync` handler.
    /// A Unix listener refuses new connections but keeps its queue, so the queue is drained
    /// and dropped here. The loop closes the sockets themselves when it ends.
    fn stop_listening(&self) {
        let listening = self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (socket, unix) in listening.iter() {
            let _ = socket.shutdown(Shutdown::Both);
            if *unix {
                // Non-blocking listener: accept until the queue is empty, dropping each one.
                while socket.accept().is_ok() {}
            }
        }
    }

    /// The link to the parent, in a child forked by `Mode::Fork` (`None` anywhere else).
    pub(crate) fn forked_child(&self) -> Option<&ForkLink> {
        self.fork.as_ref().filter(|link| link.in_child())
    }

    /// Drops our references to the listeners; called when the loop closes them.
    pub(crate) fn forget_listeners(&self) {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// In `Mode::Sync`, enforces the drain deadline from a timer thread: the serving thread
    /// is inside the handler and cannot.
    fn start_drain_timer(self: &Arc<Shared>) {
        let mut slot = self
            .drain_timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !matches!(*slot, DrainTimer::NotStarted) {
            return;
        }
        let (cancel, cancelled) = mpsc::channel::<()>();
        let shared = Arc::clone(self);
        let timeout = self.shutdown_timeout;
        let timer = std::thread::Builder::new()
            .name("socketserver-drain".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(timeout) {
                    // The deadline passed: from now on this is a close, so work that starts
                    // late (accepted just before the stop) is cut off too.
                    shared.state.store(CLOSING, SeqCst);
                    shared.force_close();
                    shared.wake();
                }
            });
        match timer {
            Ok(timer) => *slot = DrainTimer::Running(cancel, timer),
            Err(e) => {
                log::warn!("cannot start the drain timer ({e}); the drain waits for the handler")
            }
        }
    }

    /// Stops the drain timer (the drain is over) and waits for its thread.
    pub(crate) fn cancel_drain_timer(&self) {
        let timer = std::mem::replace(
            &mut *self
                .drain_timer
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            DrainTimer::Over,
        );
        if let DrainTimer::Running(cancel, thread) = timer {
            drop(cancel);
            let _ = thread.join();
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.state.load(SeqCst) == RUNNING
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.state.load(SeqCst) == CLOSING
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.count.load(SeqCst)
    }

    /// In flight plus the places claimed by connections being accepted: what the connection
    /// limit is checked against.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved.load(SeqCst)
    }

    pub(crate) fn set_want_wake(&self, want: bool) {
        self.want_wake.store(want, SeqCst);
    }

    /// An event loop that accepts by itself: woken when a place under the limit frees up.
    pub(crate) fn add_loop_waker(&self, waker: Arc<mio::Waker>) {
        self.loop_wakers.add(waker);
    }

    /// Drops a loop's waker (the loop has stopped), so its fd closes with the loop.
    pub(crate) fn forget_loop_waker(&self, waker: &Arc<mio::Waker>) {
        self.loop_wakers.remove(waker);
    }

    /// An event loop that accepts by itself owes the stop a last look at its listeners: the
    /// drain waits for it (or for the loop's end) before it is over.
    pub(crate) fn last_look_due(self: &Arc<Shared>) -> LastLook {
        self.last_looks.fetch_add(1, SeqCst);
        LastLook(Arc::clone(self))
    }

    /// True while an accepting event loop has not yet taken its last look (see
    /// [`LastLook`]). Check it before [`in_flight`](Self::in_flight): what a last look takes
    /// is counted in flight before the look is done.
    pub(crate) fn last_looks_due(&self) -> bool {
        self.last_looks.load(SeqCst) > 0
    }

    /// A loop at the limit asks to be woken by the next freed place. Returns whether a place
    /// is free after all (it freed in between): then accept again at once.
    pub(crate) fn loop_at_limit(&self, limit: usize) -> bool {
        self.loops_want_wake.store(true, SeqCst);
        self.reserved.load(SeqCst) < limit
    }

    /// A place under the limit was given back: wake whoever waits for one.
    fn place_freed(&self) {
        if self.want_wake.load(SeqCst) {
            self.wake();
        }
        if self.loops_want_wake.swap(false, SeqCst) {
            self.loop_wakers.wake_all();
        }
    }

    pub(crate) fn wake(&self) {
        // A failed wake means the eventfd counter is saturated: the loop is already due to wake.
        let _ = self.waker.wake();
    }

    /// Interrupts everything still in flight: shuts sockets down and kills children.
    pub(crate) fn force_close(&self) {
        self.close_listed(false);
    }

    /// Shuts down connections and kills children; with `only_idle`, only the connections
    /// waiting between requests.
    /// Shuts down the connections still [`QUIET`]: called [`QUIET_GRACE`] into a graceful
    /// stop.
    pub(crate) fn close_quiet(&self) {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in table.entries() {
            if let Entry::Socket(socket) = entry
                && socket.state() == QUIET
            {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }

    fn close_listed(&self, only_idle: bool) {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in table.entries() {
            if only_idle && !matches!(entry, Entry::Socket(s) if s.state() == IDLE) {
                continue;
            }
            match entry {
                Entry::Socket(socket) => {
                    let _ = socket.shutdown(Shutdown::Both);
                }
                Entry::Process(pid) => crate::sys::kill(*pid),
                Entry::Nothing => {}
            }
        }
    }
}

/// An accepting event loop's debt to a graceful stop: one last look at its listeners.
///
/// A listener shared with other processes (a restart's new workers in `--processes`) is
/// watched with `EPOLLEXCLUSIVE`, edge-triggered: the kernel wakes one waiter per new
/// connection. When it woke a loop that is stopping, no other waiter hears of that
/// connection, so the loop must accept it (`Intake::sweep`) and serve it in the drain. The
/// drain is not over, and the loops are not told to end, until every loop has looked: the
/// loop drops this after its look, or when it ends without one.
pub(crate) struct LastLook(Arc<Shared>);

impl Drop for LastLook {
    fn drop(&mut self) {
        self.0.last_looks.fetch_sub(1, SeqCst);
        // The drain may be waiting for this look only.
        self.0.wake();
    }
}

/// One unit of in-flight work (RAII, like tiny-http's `Registration`): counted from creation to
/// drop, and listed in the table until then so a forced close can reach it.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    /// Its row in the table, while it is listed there.
    row: Option<usize>,
}

/// A place among the in-flight work taken before a connection is accepted, so that several
/// threads accepting at once never pass the limit between them. Given back on drop unless it
/// became a [`Slot`].
pub(crate) struct Claim<'s> {
    shared: &'s Arc<Shared>,
    /// Still to be given back (not turned into a slot).
    held: bool,
}

impl<'s> Claim<'s> {
    /// Takes a place if fewer than `limit` are taken (any number without a limit).
    pub(crate) fn take(shared: &'s Arc<Shared>, limit: Option<usize>) -> Option<Claim<'s>> {
        let mut count = shared.reserved.load(SeqCst);
        loop {
            if limit.is_some_and(|limit| count >= limit) {
                return None;
            }
            match shared
                .reserved
                .compare_exchange_weak(count, count + 1, SeqCst, SeqCst)
            {
                Ok(_) => return Some(Claim { shared, held: true }),
                Err(now) => count = now,
            }
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        self.shared.reserved.fetch_sub(1, SeqCst);
        self.shared.place_freed();
    }
}

impl Slot {
    pub(crate) fn new(shared: &Arc<Shared>, entry: Entry) -> Slot {
        shared.reserved.fetch_add(1, SeqCst);
        Slot::listed(shared, entry)
    }

    /// The slot of a connection accepted under `claim` (counted already).
    pub(crate) fn claimed(mut claim: Claim<'_>, entry: Entry) -> Slot {
        claim.held = false;
        Slot::listed(claim.shared, entry)
    }

    /// A slot for a place already reserved.
    fn listed(shared: &Arc<Shared>, entry: Entry) -> Slot {
        shared.count.fetch_add(1, SeqCst);
        let mut slot = Slot {
            shared: Arc::clone(shared),
            row: None,
        };
        if !matches!(entry, Entry::Nothing) {
            slot.relist(entry);
        }
        slot
    }

    /// Whether the server still runs: `false` once it is shutting down, when a connection
    /// marked idle should close instead of waiting for a request. Called after the mark (see
    /// `Request::set_idle`): a concurrent `shutdown` either sees the mark (and shuts the
    /// socket down) or is seen here.
    pub(crate) fn still_running(&self) -> bool {
        self.shared.is_running()
    }

    /// Lists the work, or replaces what a forced close does to it (a forked connection
    /// becomes its child process).
    pub(crate) fn relist(&mut self, entry: Entry) {
        let mut table = self
            .shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.shared.is_closing()
            && let Entry::Socket(socket) = &entry
        {
            // Accepted just before a forced close that could not see it yet.
            let _ = socket.shutdown(Shutdown::Both);
        }
        match self.row {
            Some(row) => {
                if let Some(listed) = table.rows.get_mut(row) {
                    *listed = Some(entry);
                }
            }
            None => self.row = Some(table.insert(entry)),
        }
    }

    /// Takes the work off the table before its socket is closed, so a forced close never
    /// touches a socket after it is gone.
    pub(crate) fn unlist(&mut self) {
        if let Some(row) = self.row.take() {
            self.shared
                .table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(row);
        }
    }

    /// Leaves the slot without releasing it: used in a forked child, whose copy of the table
    /// belongs to the parent and whose locks may be held by threads that do not exist there.
    pub(crate) fn abandon(self) {
        std::mem::forget(self);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.unlist();
        self.shared.count.fetch_sub(1, SeqCst);
        self.shared.reserved.fetch_sub(1, SeqCst);
        self.shared.place_freed();
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("row", &self.row).finish()
    }
}

/// Stops a server from any thread, including from inside a handler.
///
/// Cloneable and cheap. Unlike Python's `shutdown()`, it never blocks, so calling it from the
/// serving thread or a handler cannot deadlock: the serving loop is woken at once (no poll
/// interval) and does the rest.
///
/// # Examples
///
/// ```
/// use socketserver::{Request, Server};
/// use std::io::{self, Write};
///
/// let server = Server::builder("tcp://127.0.0.1:0".parse()?).bind(|req: &mut Request| {
///     req.write_all(b"bye\n")?;
///     req.shutdown_handle().shutdown(); // a handler may stop its own server
///     Ok(())
/// })?;
/// let addr = server.local_addr().socket_addr().unwrap();
/// let serving = std::thread::spawn(move || server.serve_forever());
/// let mut reply = String::new();
/// io::Read::read_to_string(&mut std::net::TcpStream::connect(addr)?, &mut reply)?;
/// assert_eq!(reply, "bye\n");
/// serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ShutdownHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Graceful stop: the server stops accepting at once, closes its listeners, lets in-flight
    /// requests finish within the shutdown timeout, then closes what remains.
    /// `serve_forever` returns `Ok(())` afterwards. Calling it again does nothing.
    pub fn shutdown(&self) {
        if let Some(link) = self.shared.forked_child() {
            return link.ask_parent(false);
        }
        if self
            .shared
            .state
            .compare_exchange(RUNNING, DRAINING, SeqCst, SeqCst)
            .is_ok()
        {
            if self.shared.notify {
                crate::notify::stopping();
            }
            self.shared.stop_listening();
            // Connections idle between requests have nothing in flight: close them now.
            self.shared.close_listed(true);
            if let Some(link) = self.shared.fork.as_ref() {
                link.announce_drain();
            }
            if self.shared.inline {
                // The serving thread may be inside a handler (or about to enter one it just
                // accepted): only another thread can keep the deadline.
                self.shared.start_drain_timer();
            }
        }
        self.shared.wake();
        // Accepting loops take their last look at the listeners now, not at their next event.
        self.shared.loop_wakers.wake_all();
    }

    /// Immediate stop: like [`shutdown`](Self::shutdown) with no time to drain. Every
    /// in-flight connection is shut down (its handler sees end of file or an error) and every
    /// forked child is killed.
    pub fn close(&self) {
        if let Some(link) = self.shared.forked_child() {
            return link.ask_parent(true);
        }
        if self.shared.state.swap(CLOSING, SeqCst) == RUNNING && self.shared.notify {
            crate::notify::stopping();
        }
        self.shared.stop_listening();
        self.shared.wake();
        self.shared.loop_wakers.wake_all();
        self.shared.force_close();
    }

    /// True once [`shutdown`](Self::shutdown) or [`close`](Self::close) was called.
    pub fn is_shutting_down(&self) -> bool {
        if let Some(link) = self.shared.forked_child() {
            return link.drain_announced();
        }
        !self.shared.is_running()
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reuses_the_rows_it_frees() {
        let mut table = Table::default();
        let a = table.insert(Entry::Process(1));
        let b = table.insert(Entry::Process(2));
        assert_ne!(a, b);
        table.remove(a);
        table.remove(a); // twice: nothing more happens
        assert_eq!(table.free, vec![a]);
        let c = table.insert(Entry::Process(3));
        assert_eq!(c, a, "a freed row is taken before the table grows");
        assert_eq!(table.rows.len(), 2);
        let pids: Vec<i32> = table
            .entries()
            .filter_map(|e| match e {
                Entry::Process(pid) => Some(*pid),
                _ => None,
            })
            .collect();
        assert_eq!(pids, vec![3, 2]);
        table.remove(99); // never listed: ignored
    }

    #[test]
    fn a_tracked_socket_carries_its_state() {
        let socket = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let tracked = Tracked::new(socket);
        assert_eq!(tracked.state(), BUSY);
        tracked.set_state(IDLE);
        assert_eq!(tracked.state(), IDLE);
        assert_eq!(tracked.socket().r#type().unwrap(), socket2::Type::STREAM);
    }
}
