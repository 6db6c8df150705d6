//! `Server` and its builder: binding, the serving loop, the drain.
//!
//! A request's path (Python: `serve_forever → _handle_request_noblock → get_request →
//! verify_request → process_request`): the loop waits in `epoll` (mio) on every listener plus a
//! waker; a ready listener is accepted from (or received from) until it would block or the
//! in-flight limit is reached; each connection is checked with [`Handler::verify`], gets an
//! in-flight [`Slot`], and goes to the mode's `Dispatch::dispatch`. Shutdown wakes the loop
//! through the waker, never through a poll interval.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::handler::{panic_message, report};
use crate::mode::{self, Dispatch};
use crate::shutdown::{Claim, Entry, Shared, Slot};
use crate::transport::{Kind, Listener, SocketOptions, address_of};
use crate::{Address, AsyncAccept, Error, Handler, Mode, Request, Result, ShutdownHandle};

const WAKER: Token = Token(usize::MAX - 1);
/// A forked child asking for a shutdown (see `Shared::remote`).
const REMOTE: Token = Token(usize::MAX - 3);
/// Most accepts per listener per loop turn, so one busy listener cannot starve the others or
/// delay a shutdown check.
const ACCEPT_BATCH: usize = 64;
/// How long a forced close waits for handlers to notice their sockets were shut down.
const FORCE_GRACE: Duration = Duration::from_secs(1);
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(5);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Server settings; every default is stated on the matching [`ServerBuilder`] setter.
#[derive(Clone, Debug)]
struct Config {
    mode: Mode,
    max_connections: Option<usize>,
    timeout: Option<Duration>,
    shutdown_timeout: Duration,
    socket: SocketOptions,
    nodelay: bool,
    max_packet_size: usize,
    block_on_close: bool,
    handle_signals: bool,
    service_interval: Option<Duration>,
    async_accept: AsyncAccept,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Threading,
            max_connections: None,
            timeout: None,
            shutdown_timeout: Duration::from_secs(10),
            socket: SocketOptions {
                backlog: crate::transport::DEFAULT_BACKLOG,
                reuse_address: true,
                reuse_port: false,
            },
            nodelay: true,
            max_packet_size: 64 * 1024,
            block_on_close: true,
            handle_signals: false,
            service_interval: None,
            async_accept: AsyncAccept::default(),
        }
    }
}

/// Configures and binds a [`Server`]. Made by [`Server::builder`].
///
/// Every setter states its default. Nothing touches the network until [`bind`](Self::bind).
#[derive(Debug)]
pub struct ServerBuilder {
    addrs: Vec<Address>,
    adopted: Vec<Listener>,
    config: Config,
}

impl ServerBuilder {
    /// A builder with no listener yet; add some with [`listen`](Self::listen) or
    /// [`listener`](Self::listener).
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            addrs: Vec::new(),
            adopted: Vec::new(),
            config: Config::default(),
        }
    }

    /// Adds an address to listen on. Several listeners share one server: one handler, one mode,
    /// one set of limits. Listeners are bound in the order given.
    pub fn listen(mut self, addr: Address) -> Self {
        self.addrs.push(addr);
        self
    }

    /// Adds an already bound socket (inherited from a supervisor, for example); see
    /// [`Listener::from_fd`]. Adopted listeners come after the [`listen`](Self::listen)
    /// addresses.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.adopted.push(listener);
        self
    }

    /// How requests run. Default: [`Mode::Threading`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Most connections (or datagrams being handled) at once, across all listeners. At the
    /// limit the server stops accepting; further clients wait in the kernel's listen queue
    /// (backpressure) and datagrams in the socket's receive buffer. Default: no limit beyond
    /// the mode's own (`Pool`: `2 * workers`, `Fork`: `max_children`, `Sync`: 1).
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.config.max_connections = Some(limit.max(1));
        self
    }

    /// Per-connection timeout: a read that waits longer than this for the peer, or a write the
    /// peer does not drain for this long, fails with `TimedOut` and the connection is closed
    /// (Python's `StreamRequestHandler.timeout`). Default: `None`, wait forever.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// How long a graceful shutdown waits for in-flight requests before it closes them.
    /// Default: 10 seconds.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Listen backlog for stream listeners (Python's `request_queue_size`, which defaults to a
    /// tiny 5). Default: 1024; the kernel clamps it to `net.core.somaxconn`.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.config.socket.backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        self
    }

    /// `SO_REUSEADDR` on TCP and UDP listeners, so a restarted server can bind while old
    /// connections linger in `TIME_WAIT` (Python's `allow_reuse_address`). Default: `true`.
    pub fn reuse_address(mut self, reuse: bool) -> Self {
        self.config.socket.reuse_address = reuse;
        self
    }

    /// `SO_REUSEPORT` on TCP and UDP listeners, so several processes can share a port
    /// (Python's `allow_reuse_port`). On Linux each socket then has its own accept queue.
    /// Default: `false`.
    pub fn reuse_port(mut self, reuse: bool) -> Self {
        self.config.socket.reuse_port = reuse;
        self
    }

    /// `TCP_NODELAY` on accepted TCP connections. Requests already buffer their writes and
    /// flush at the right moments, so Nagle's algorithm only adds delay (the 40 ms
    /// Nagle/delayed-ACK stall). Default: `true`.
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.config.nodelay = nodelay;
        self
    }

    /// Largest datagram accepted. A bigger one is dropped and reported through
    /// [`Handler::on_error`] with [`Error::DatagramTooLarge`], never silently truncated (unlike
    /// Python's `max_packet_size = 8192`). Default: 65536 bytes, enough for any UDP datagram.
    pub fn max_packet_size(mut self, size: usize) -> Self {
        self.config.max_packet_size = size.max(1);
        self
    }

    /// Whether closing a [`Mode::Threading`] server waits for running handler threads
    /// (Python's `block_on_close`). When `false`, shutdown leaves them running detached.
    /// Default: `true`.
    pub fn block_on_close(mut self, block: bool) -> Self {
        self.config.block_on_close = block;
        self
    }

    /// Handle SIGINT and SIGTERM (Unix): the first starts a graceful
    /// [`shutdown`](ShutdownHandle::shutdown), a second one [`close`](ShutdownHandle::close)s at
    /// once. Installed by [`bind`](Self::bind), before it returns, so a supervisor may signal
    /// as soon as the address is announced. Forked children block these signals, so a Ctrl-C
    /// sent to the whole process group does not cut their requests short. Default: `false`.
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.config.handle_signals = handle;
        self
    }

    /// How [`Mode::Async`] takes new stream connections (see [`AsyncAccept`]). Default:
    /// [`AsyncAccept::Shared`]: every loop accepts. Only used when the handler has an
    /// event-driven form (otherwise the serving thread accepts for the workers).
    pub fn async_accept(mut self, accept: AsyncAccept) -> Self {
        self.config.async_accept = accept;
        self
    }

    /// Run [`Handler::service_actions`] at least this often, even when nothing happens.
    /// Default: `None`, only after each wake-up of the loop.
    pub fn service_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.service_interval = interval;
        self
    }

    /// Binds every listener and returns a server ready to [`serve_forever`](Server::serve_forever).
    ///
    /// Fails with [`Error::Bind`] naming the address when a listener cannot be bound (the ones
    /// bound before it are closed again, and their socket files removed).
    pub fn bind<H: Handler>(self, handler: H) -> Result<Server> {
        Server::start(self, Arc::new(handler))
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder::new()
    }
}

/// A bound server: Python's `BaseServer` and its `TCPServer`/`UDPServer`/`Unix*Server`
/// subclasses in one type (the transport comes from the [`Address`]).
///
/// Methods for the caller: [`serve_forever`](Self::serve_forever),
/// [`handle_request`](Self::handle_request), [`shutdown_handle`](Self::shutdown_handle),
/// [`local_addr`](Self::local_addr), [`fileno`](Self::fileno),
/// [`server_close`](Self::server_close) (or drop). Methods that may be overridden live on
/// [`Handler`].
///
/// # Examples
///
/// ```
/// use socketserver::{Mode, Request, Server};
/// use std::io::{self, BufRead, Read, Write};
///
/// fn upper(req: &mut Request) -> io::Result<()> {
///     let mut line = String::new();
///     req.read_line(&mut line)?;
///     req.write_all(line.trim().to_uppercase().as_bytes())
/// }
///
/// let server = Server::builder("tcp://127.0.0.1:0".parse()?).mode(Mode::Threading).bind(upper)?;
/// let addr = server.local_addr().socket_addr().unwrap();
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hello world\n")?;
/// let mut reply = String::new();
/// client.read_to_string(&mut reply)?;
/// assert_eq!(reply, "HELLO WORLD");
///
/// stop.shutdown();
/// serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    locals: Vec<Address>,
    fds: Vec<RawFd>,
    inner: Mutex<Option<Loop>>,
    // Declared after `inner`: dropped after the loop's drain, so a second signal can still cut
    // a drain in `Drop` short.
    #[cfg(unix)]
    _signals: Option<crate::signals::SignalWatcher>,
}

impl Server {
    /// A builder listening on `addr`.
    pub fn builder(addr: Address) -> ServerBuilder {
        ServerBuilder::new().listen(addr)
    }

    /// Binds `addr` with the default settings (threading mode) and `handler`.
    pub fn bind<H: Handler>(addr: Address, handler: H) -> Result<Server> {
        Server::builder(addr).bind(handler)
    }

    fn start(builder: ServerBuilder, handler: Arc<dyn Handler>) -> Result<Server> {
        let ServerBuilder {
            addrs,
            adopted,
            mut config,
        } = builder;
        if addrs.is_empty() && adopted.is_empty() {
            return Err(Error::Unsupported {
                what: "no address to listen on: add one with listen()".into(),
            });
        }
        // Async mode: the session that tells whether the handler is event-driven (kept for
        // the first connection), and whether the loops accept by themselves.
        let (probe, loops) = match config.mode {
            Mode::Async { loops, .. } => (handler.session(), loops.max(1)),
            _ => (None, 1),
        };
        let loop_accept = if probe.is_some() {
            config.async_accept
        } else {
            AsyncAccept::Handoff
        };
        if loop_accept == AsyncAccept::ReusePort {
            config.socket.reuse_port = true;
        }
        let mut listeners = Vec::with_capacity(addrs.len() + adopted.len());
        for addr in &addrs {
            listeners.push(Listener::bind(addr, &config.socket)?);
        }
        listeners.extend(adopted);
        // One more TCP listener per extra loop on the same port, for the kernel to spread
        // connections over (`SO_REUSEPORT`); other listeners are shared by the loops.
        let mut extra: Vec<Vec<Listener>> = Vec::with_capacity(listeners.len());
        for listener in &listeners {
            let mut more = Vec::new();
            if loop_accept == AsyncAccept::ReusePort
                && listener.kind == Kind::Tcp
                && !listener.adopted
            {
                for _ in 1..loops {
                    more.push(Listener::bind(&listener.local, &config.socket)?);
                }
            }
            extra.push(more);
        }

        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let listening = listeners
            .iter()
            .chain(extra.iter().flatten())
            .filter(|l| l.kind.is_stream() && !l.adopted)
            .map(|l| (Arc::clone(&l.socket), l.kind == Kind::Unix))
            .collect();
        let inline = matches!(config.mode, Mode::Sync);
        // Fork mode: a handler's shutdown() runs in a child, which tells the parent here.
        let (remote_read, remote_write) = if matches!(config.mode, Mode::Fork { .. }) {
            let (read, write) = std::os::unix::net::UnixStream::pair()?;
            read.set_nonblocking(true)?;
            poll.registry().register(
                &mut SourceFd(&read.as_raw_fd()),
                REMOTE,
                Interest::READABLE,
            )?;
            (Some(read), Some(write))
        } else {
            (None, None)
        };
        let drain = if matches!(config.mode, Mode::Fork { .. }) {
            Some(std::os::unix::net::UnixStream::pair()?)
        } else {
            None
        };
        let shared = Arc::new(Shared::new(
            waker,
            listening,
            inline,
            config.shutdown_timeout,
            remote_write,
            drain,
        ));
        let on_loops = |l: &Listener| loop_accept != AsyncAccept::Handoff && l.kind.is_stream();
        let locals_shared: Vec<Arc<Address>> = listeners
            .iter()
            .map(|l| Arc::new(l.local.clone()))
            .collect();
        for (i, listener) in listeners.iter().enumerate() {
            if on_loops(listener) {
                continue; // the event loops watch it
            }
            poll.registry().register(
                &mut SourceFd(&listener.raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        // For each loop, the stream listeners it accepts from.
        let accept = (loop_accept != AsyncAccept::Handoff).then(|| {
            let per_loop = (0..loops)
                .map(|n| {
                    listeners
                        .iter()
                        .zip(&extra)
                        .zip(&locals_shared)
                        .filter(|((l, _), _)| on_loops(l))
                        .map(|((l, more), local)| {
                            let socket = match n {
                                0 => &l.socket,
                                n => more.get(n - 1).map_or(&l.socket, |m| &m.socket),
                            };
                            mode::LoopListener::new(Arc::clone(socket), l.kind, Arc::clone(local))
                        })
                        .collect()
                })
                .collect();
            mode::LoopAccept {
                per_loop,
                shared: Arc::clone(&shared),
                settings: StreamSettings {
                    nodelay: config.nodelay,
                    timeout: config.timeout,
                    limit: config.max_connections,
                },
            }
        });
        let fds: Vec<RawFd> = listeners.iter().map(Listener::raw_fd).collect();
        let signals: Vec<i32> = if config.handle_signals {
            crate::signals::SIGNALS.to_vec()
        } else {
            Vec::new()
        };
        let mut dispatcher: Box<dyn Dispatch> = match config.mode {
            Mode::Sync => Box::new(mode::Sync::new(Arc::clone(&handler))),
            Mode::Threading => Box::new(mode::Threading::new(
                Arc::clone(&handler),
                config.block_on_close,
            )),
            // HTTP under a pool: the workers serve requests, one loop waits for them.
            Mode::Pool { workers } if handler.serves_requests() => Box::new(mode::Evented::new(
                Arc::clone(&handler),
                handler.session(),
                1,
                workers,
                mode::Flavor::Pool,
                config.timeout,
                None,
            )?),
            Mode::Pool { workers } => {
                Box::new(mode::Pool::new(Arc::clone(&handler), workers.max(1))?)
            }
            Mode::Fork { max_children } => Box::new(mode::Fork::new(
                Arc::clone(&handler),
                max_children,
                fds.clone(),
                signals.clone(),
            )),
            Mode::Async { workers, .. } => Box::new(mode::Evented::new(
                Arc::clone(&handler),
                probe,
                loops,
                workers,
                mode::Flavor::Async,
                config.timeout,
                accept,
            )?),
        };
        dispatcher.register(poll.registry())?;
        let locals: Vec<Address> = listeners.iter().map(|l| l.local.clone()).collect();
        let served = listeners
            .into_iter()
            .zip(locals_shared)
            .map(|(listener, local)| Served {
                ready: !on_loops(&listener),
                local,
                listener,
            })
            .chain(extra.into_iter().flatten().map(|listener| Served {
                // Bound for the loops; kept here so it closes with the others.
                local: Arc::new(listener.local.clone()),
                listener,
                ready: false,
            }))
            .collect();
        let lp = Loop {
            poll,
            events: Events::with_capacity(256),
            listeners: served,
            dispatcher,
            recv_buf: Vec::new(),
            backoff: None,
            remote: remote_read,
            config: config.clone(),
        };
        let server_signals = if config.handle_signals {
            Some(crate::signals::SignalWatcher::start(ShutdownHandle {
                shared: Arc::clone(&shared),
            })?)
        } else {
            None
        };
        Ok(Server {
            shared,
            handler,
            locals,
            fds,
            inner: Mutex::new(Some(lp)),
            _signals: server_signals,
        })
    }

    /// The first listener's address, with the real port (`tcp://127.0.0.1:0` becomes
    /// `tcp://127.0.0.1:43127`). Python's `server_address`.
    pub fn local_addr(&self) -> &Address {
        &self.locals[0]
    }

    /// Every listener's address, in the order they were added.
    pub fn local_addrs(&self) -> &[Address] {
        &self.locals
    }

    /// The first listener's file descriptor (Python's `fileno()`), for `select`-style use by
    /// the caller. Valid until the server is closed.
    pub fn fileno(&self) -> RawFd {
        self.fds[0]
    }

    /// Every listener's file descriptor, in order.
    pub fn filenos(&self) -> &[RawFd] {
        &self.fds
    }

    /// A handle that stops this server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Number of requests in flight right now (connections being served, datagrams being
    /// handled, children alive).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Serves until [`ShutdownHandle::shutdown`] or [`ShutdownHandle::close`]; then closes the
    /// listeners at once (new connections are refused), lets in-flight requests finish within
    /// the shutdown timeout, closes what remains, and returns `Ok(())`. The server is closed
    /// afterwards: a second call returns [`Error::Closed`].
    ///
    /// The loop sleeps in `epoll` until a listener is ready or the waker fires; there is no
    /// poll interval. Accept errors are handled as Go's `net/http` does: aborted connections
    /// are skipped, resource exhaustion (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) pauses
    /// accepting for 5 ms doubling to 1 s (logged once per burst), and only an error that
    /// means the listener itself is unusable ends the loop with [`Error::Accept`].
    pub fn serve_forever(&self) -> Result<()> {
        let mut guard = self.lock()?;
        let Some(lp) = guard.as_mut() else {
            return Err(Error::Closed);
        };
        let mut outcome = Ok(());
        while self.shared.is_running() {
            if let Err(e) = lp.turn(&self.shared, &*self.handler, None, usize::MAX) {
                outcome = Err(e);
                break;
            }
        }
        if let Some(lp) = guard.take() {
            lp.finish(&self.shared);
        }
        outcome
    }

    /// Waits for one request (at most `timeout`; `None` waits as long as it takes) and
    /// dispatches it under the server's mode, like Python's `handle_request()`. Returns
    /// `Ok(true)` when a request was dispatched, `Ok(false)` when the timeout passed (after
    /// calling [`Handler::on_timeout`]) or the server is shutting down.
    pub fn handle_request(&self, timeout: Option<Duration>) -> Result<bool> {
        let mut guard = self.lock()?;
        let Some(lp) = guard.as_mut() else {
            return Err(Error::Closed);
        };
        let deadline = timeout.and_then(deadline_after);
        while self.shared.is_running() {
            let Ok(remaining) = time_left(deadline) else {
                break;
            };
            if lp.turn(&self.shared, &*self.handler, remaining, 1)? > 0 {
                return Ok(true);
            }
        }
        if self.shared.is_running() {
            let handler = Arc::clone(&self.handler);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.on_timeout()));
        }
        Ok(false)
    }

    /// Closes the server (Python's `server_close()`): the listeners close at once, in-flight
    /// requests get the shutdown timeout to finish, threads are joined and children reaped,
    /// socket files are removed. Dropping the server does the same.
    pub fn server_close(self) {
        drop(self);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Loop>>> {
        match self.inner.try_lock() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Error::Unsupported {
                what: "the server is already serving on another thread".into(),
            }),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let lp = self
            .inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(lp) = lp {
            ShutdownHandle {
                shared: Arc::clone(&self.shared),
            }
            .shutdown();
            lp.finish(&self.shared);
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.locals)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

struct Served {
    listener: Listener,
    local: Arc<Address>,
    /// Edge-triggered readiness not yet drained to `WouldBlock`.
    ready: bool,
}

struct Backoff {
    delay: Duration,
    until: Instant,
}

/// The serving loop's state, owned by whichever thread serves.
struct Loop {
    poll: Poll,
    events: Events,
    listeners: Vec<Served>,
    dispatcher: Box<dyn Dispatch>,
    recv_buf: Vec<u8>,
    backoff: Option<Backoff>,
    /// Fork mode: requests to stop from handlers running in children.
    remote: Option<std::os::unix::net::UnixStream>,
    config: Config,
}

// A `Request` is returned once per accept and moved straight into dispatch; boxing it would
// cost an allocation per request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Accepted {
    Request(Request),
    /// Nothing to serve this time (denied, dropped or skipped); try again.
    Skipped,
    /// The listener has nothing more right now.
    Drained,
    /// The connection limit is reached: accept again once a connection ends.
    Full,
}

impl Loop {
    /// One turn of the loop: wait for readiness, accept and dispatch up to `max` requests,
    /// housekeeping. Returns how many requests were dispatched.
    fn turn(
        &mut self,
        shared: &Arc<Shared>,
        handler: &dyn Handler,
        wait: Option<Duration>,
        max: usize,
    ) -> Result<usize> {
        let timeout = self.poll_timeout(shared, wait);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
        let mut remote = false;
        for event in self.events.iter() {
            if let Some(served) = self.listeners.get_mut(event.token().0) {
                served.ready = true;
            }
            remote |= event.token() == REMOTE;
        }
        if remote {
            self.remote_requests(shared);
        }
        self.dispatcher.tick();
        let dispatched = if shared.is_running() {
            self.accept(shared, handler, max)?
        } else {
            0
        };
        if let Err(payload) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.service_actions()))
        {
            log::error!(
                "service_actions panicked: {}",
                panic_message(payload.as_ref())
            );
        }
        Ok(dispatched)
    }

    /// Acts on stop requests forked children sent through the pipe.
    fn remote_requests(&mut self, shared: &Arc<Shared>) {
        use std::io::Read;
        let Some(pipe) = self.remote.as_mut() else {
            return;
        };
        let handle = ShutdownHandle {
            shared: Arc::clone(shared),
        };
        let mut buf = [0u8; 64];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &what in &buf[..n] {
                match what {
                    b'c' => handle.close(),
                    _ => handle.shutdown(),
                }
            }
        }
    }

    fn limit(&self) -> Option<usize> {
        match (self.config.max_connections, self.dispatcher.capacity()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when another request may start. Otherwise arranges for the next finished request
    /// to wake the loop (set the flag, then check again, so a slot freed in between is seen).
    fn has_room(&self, shared: &Shared) -> bool {
        let Some(limit) = self.limit() else {
            return true;
        };
        if shared.in_flight() < limit {
            return true;
        }
        shared.set_want_wake(true);
        if shared.in_flight() < limit {
            shared.set_want_wake(false);
            return true;
        }
        false
    }

    fn poll_timeout(&self, shared: &Shared, wait: Option<Duration>) -> Option<Duration> {
        let mut timeout = wait;
        let mut at_most = |d: Duration| timeout = Some(timeout.map_or(d, |t| t.min(d)));
        if let Some(interval) = self.config.service_interval {
            at_most(interval);
        }
        if let Some(interval) = self.dispatcher.tick_interval() {
            at_most(interval);
        }
        let now = Instant::now();
        if let Some(backoff) = self.backoff.as_ref().filter(|b| b.until > now) {
            at_most(backoff.until - now);
        } else if self.listeners.iter().any(|s| s.ready)
            && self.limit().is_none_or(|l| shared.in_flight() < l)
        {
            // A listener still has connections waiting from the last edge: don't sleep.
            at_most(Duration::ZERO);
        }
        timeout
    }

    fn accept(&mut self, shared: &Arc<Shared>, handler: &dyn Handler, max: usize) -> Result<usize> {
        if let Some(backoff) = &self.backoff
            && Instant::now() < backoff.until
        {
            return Ok(0);
        }
        let mut dispatched = 0;
        for i in 0..self.listeners.len() {
            let mut batch = 0;
            while self.listeners[i].ready && batch < ACCEPT_BATCH && dispatched < max {
                if !shared.is_running() || !self.has_room(shared) {
                    return Ok(dispatched);
                }
                batch += 1;
                match self.accept_one(i, shared, handler) {
                    Ok(Accepted::Request(request)) => {
                        self.backoff = None;
                        self.dispatcher.dispatch(request);
                        dispatched += 1;
                    }
                    Ok(Accepted::Skipped) => self.backoff = None,
                    // Another thread took the last place: wait for a connection to end.
                    Ok(Accepted::Full) if !self.has_room(shared) => return Ok(dispatched),
                    Ok(Accepted::Full) => {}
                    Ok(Accepted::Drained) => {
                        // Nothing left to accept: whatever exhausted a resource is past.
                        self.backoff = None;
                        self.listeners[i].ready = false;
                    }
                    // A stop shuts the listeners down from another thread: an accept
                    // failing after that is the stop, not a broken listener.
                    Err(_) if !shared.is_running() => return Ok(dispatched),
                    Err(e) => match classify(&e) {
                        AcceptError::Retry => {}
                        AcceptError::Backoff => {
                            let delay = match &self.backoff {
                                Some(b) => (b.delay * 2).min(BACKOFF_MAX),
                                None => {
                                    log::warn!(
                                        "{}: accept failed: {}; pausing accepts (5 ms doubling to 1 s) until it clears",
                                        self.listeners[i].local,
                                        crate::error::describe(&e)
                                    );
                                    BACKOFF_START
                                }
                            };
                            self.backoff = Some(Backoff {
                                delay,
                                until: Instant::now() + delay,
                            });
                            return Ok(dispatched);
                        }
                        AcceptError::Fatal => return Err(Error::Accept(e)),
                    },
                }
            }
        }
        Ok(dispatched)
    }

    fn accept_one(
        &mut self,
        i: usize,
        shared: &Arc<Shared>,
        handler: &dyn Handler,
    ) -> io::Result<Accepted> {
        let served = &self.listeners[i];
        let kind = served.listener.kind;
        let socket = &served.listener.socket;
        if kind.is_stream() {
            let settings = StreamSettings {
                nodelay: self.config.nodelay,
                timeout: self.config.timeout,
                limit: self.limit(),
            };
            accept_stream(socket, kind, &served.local, shared, handler, &settings)
        } else {
            // MSG_TRUNC reports a datagram's real length, so one byte of slack is enough to
            // tell "exactly the limit" from "too large".
            let size = self.config.max_packet_size + 1;
            if self.recv_buf.len() != size {
                self.recv_buf = vec![0; size];
            }
            let (len, from) = match crate::sys::recv_from_dontwait(socket, &mut self.recv_buf) {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accepted::Drained),
                Err(e) => return Err(e),
            };
            let peer = address_of(&from, kind);
            if len > self.config.max_packet_size {
                let error = Error::DatagramTooLarge {
                    len,
                    limit: self.config.max_packet_size,
                };
                report(handler, &peer, &error);
                return Ok(Accepted::Skipped);
            }
            if !verified(handler, &peer) {
                return Ok(Accepted::Skipped);
            }
            let handle = ShutdownHandle {
                shared: Arc::clone(shared),
            };
            let data = self.recv_buf[..len].to_vec();
            let slot = Slot::new(shared, Entry::Nothing);
            let local = Arc::clone(&served.local);
            let socket = Arc::clone(socket);
            Ok(Accepted::Request(Request::datagram(
                data, socket, from, peer, local, handle, slot,
            )))
        }
    }

    /// Graceful end: close the listeners at once, wait for in-flight work until the deadline
    /// (cut short by [`ShutdownHandle::close`]), force what remains, release the workers.
    fn finish(mut self, shared: &Arc<Shared>) {
        for served in self.listeners.drain(..) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&served.listener.raw_fd()));
        }
        shared.forget_listeners();
        let waits = !matches!(self.config.mode, Mode::Threading) || self.config.block_on_close;
        let mut all_done = true;
        if waits {
            all_done = self.wait_idle(shared, deadline_after(self.config.shutdown_timeout), true);
            if !all_done {
                shared.force_close();
                all_done = self.wait_idle(shared, deadline_after(FORCE_GRACE), false);
            }
        }
        self.dispatcher.close(all_done);
        shared.set_want_wake(false);
        shared.cancel_drain_timer();
    }

    /// Waits until nothing is in flight (true) or `deadline` passes (false; `None` waits as
    /// long as it takes).
    fn wait_idle(
        &mut self,
        shared: &Arc<Shared>,
        deadline: Option<Instant>,
        stop_on_close: bool,
    ) -> bool {
        shared.set_want_wake(true);
        loop {
            self.dispatcher.tick();
            if shared.in_flight() == 0 {
                return true;
            }
            if stop_on_close && shared.is_closing() {
                return false;
            }
            let Ok(left) = time_left(deadline) else {
                return false;
            };
            let left = left.map(|l| l.min(self.dispatcher.tick_interval().unwrap_or(l)));
            if let Err(e) = self.poll.poll(&mut self.events, left)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return false;
            }
            // A handler in a forked child may ask for `close()` during the drain.
            if self.events.iter().any(|e| e.token() == REMOTE) {
                self.remote_requests(shared);
            }
        }
    }
}

/// `now + d`, or `None` ("never") when that is past what `Instant` can hold.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// A deadline that has passed.
#[derive(Debug)]
pub(crate) struct Expired;

/// Time left until `deadline`: `Ok(None)` when there is none, `Err(Expired)` once it passed.
pub(crate) fn time_left(deadline: Option<Instant>) -> Result<Option<Duration>, Expired> {
    match deadline {
        None => Ok(None),
        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(Expired),
        },
    }
}

/// What accepting a stream connection needs from the settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamSettings {
    pub(crate) nodelay: bool,
    pub(crate) timeout: Option<Duration>,
    /// Most connections in flight: a connection is accepted only with a place among them
    /// claimed first, so several accepting threads never pass it together.
    pub(crate) limit: Option<usize>,
}

/// Accepts one stream connection from `socket` (non-blocking): verify it, set its options,
/// give it an in-flight slot. Shared by the serving loop and the event loops of `Mode::Async`.
pub(crate) fn accept_stream(
    socket: &socket2::Socket,
    kind: Kind,
    local: &Arc<Address>,
    shared: &Arc<Shared>,
    handler: &dyn Handler,
    settings: &StreamSettings,
) -> io::Result<Accepted> {
    let Some(claim) = Claim::take(shared, settings.limit) else {
        return Ok(Accepted::Full);
    };
    let (conn, addr) = match socket.accept() {
        Ok(pair) => pair,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accepted::Drained),
        Err(e) => return Err(e),
    };
    let peer = address_of(&addr, kind);
    if !verified(handler, &peer) {
        return Ok(Accepted::Skipped);
    }
    // Every stream socket is non-blocking: a request waits for its peer with `poll(2)`
    // deadlines (see `Request`), and the event loops need nothing changed to take it.
    conn.set_nonblocking(true)?;
    if kind == Kind::Tcp && settings.nodelay {
        let _ = conn.set_tcp_nodelay(true);
    }
    let conn = Arc::new(conn);
    let slot = Slot::claimed(claim, Entry::Socket(Arc::clone(&conn)));
    let handle = ShutdownHandle {
        shared: Arc::clone(shared),
    };
    Ok(Accepted::Request(Request::stream(
        conn,
        peer,
        Arc::clone(local),
        handle,
        settings.timeout,
        slot,
    )))
}

fn verified(handler: &dyn Handler, peer: &Address) -> bool {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.verify(peer))) {
        Ok(allowed) => allowed,
        Err(payload) => {
            report(
                handler,
                peer,
                &Error::Panicked {
                    message: panic_message(payload.as_ref()),
                },
            );
            false
        }
    }
}

pub(crate) enum AcceptError {
    /// The failure belongs to one connection: carry on at once.
    Retry,
    /// The process or system is out of a resource: pause, then try again.
    Backoff,
    /// The listener itself is broken.
    Fatal,
}

pub(crate) fn classify(err: &io::Error) -> AcceptError {
    use nix::libc::*;
    match err.raw_os_error() {
        Some(
            ECONNABORTED | EPROTO | EINTR | ECONNRESET | EPERM | ENETDOWN | ENOPROTOOPT | EHOSTDOWN
            | ENONET | EHOSTUNREACH | EOPNOTSUPP | ENETUNREACH | ETIMEDOUT | ECONNREFUSED | EAGAIN,
        ) => AcceptError::Retry,
        Some(EMFILE | ENFILE | ENOBUFS | ENOMEM) => AcceptError::Backoff,
        _ if err.kind() == io::ErrorKind::Interrupted => AcceptError::Retry,
        _ => AcceptError::Fatal,
    }
}
