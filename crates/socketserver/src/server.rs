//! `Server` and its builder: binding, the serving loop, the drain.
//!
//! Starting (`Server::start`): the mode's plan (`mode::Plan`: how many event loops, whether
//! they accept), the listeners bound and shared out (`accept::Wiring`), the shared state, the
//! mode built (`mode::build`), signals.
//!
//! A request's path (Python: `serve_forever → _handle_request_noblock → get_request →
//! verify_request → process_request`): the loop waits in `epoll` (mio) on the listeners it
//! serves, the mode's own event sources and a waker; a ready listener is taken from through
//! `accept::Intake` (a place claimed, accept or receive, [`Handler::verify`], socket options)
//! until it would block or the in-flight limit is reached, and each request goes to the
//! mode's `Dispatch::dispatch`. Shutdown wakes the loop through the waker, never through a
//! poll interval.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::accept::{AtLimit, Intake, Settings, Source, Wiring};
use crate::deadline::{deadline_after, time_left};
use crate::handler::panic_message;
use crate::mode::{self, Dispatch};
use crate::shutdown::Shared;
use crate::transport::{Listener, SocketOptions};
use crate::{Address, AsyncAccept, Error, Handler, Mode, Result, ShutdownHandle};

const WAKER: Token = Token(usize::MAX - 1);
/// How long a forced close waits for handlers to notice their sockets were shut down.
const FORCE_GRACE: Duration = Duration::from_secs(1);

/// Server settings; every default is stated on the matching [`ServerBuilder`] setter.
#[derive(Clone, Debug)]
struct Config {
    mode: Mode,
    max_connections: Option<usize>,
    timeout: Option<Duration>,
    shutdown_timeout: Duration,
    socket: SocketOptions,
    max_packet_size: usize,
    block_on_close: bool,
    handle_signals: bool,
    service_interval: Option<Duration>,
    async_accept: AsyncAccept,
    notify: bool,
    proxy: Option<Duration>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
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
                nodelay: true,
            },
            max_packet_size: 64 * 1024,
            block_on_close: true,
            handle_signals: false,
            service_interval: None,
            async_accept: AsyncAccept::default(),
            notify: false,
            proxy: None,
            metrics: None,
        }
    }
}

/// Configures and binds a [`Server`]. Made by [`Server::builder`].
///
/// Every setter states its default. Nothing touches the network until [`bind`](Self::bind).
#[derive(Debug)]
pub struct ServerBuilder {
    /// Addresses to bind and sockets adopted, in the order given.
    sources: Vec<Source>,
    config: Config,
}

impl ServerBuilder {
    /// A builder with no listener yet; add some with [`listen`](Self::listen) or
    /// [`listener`](Self::listener).
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            sources: Vec::new(),
            config: Config::default(),
        }
    }

    /// Adds an address to listen on. Several listeners share one server: one handler, one mode,
    /// one set of limits. Listeners are bound in the order given.
    pub fn listen(mut self, addr: Address) -> Self {
        self.sources.push(Source::Address(addr));
        self
    }

    /// Adds an already bound socket (inherited from a supervisor or systemd, for example); see
    /// [`Listener::from_fd`], [`Listener::from_raw_fd`] and [`Listener::from_systemd`]. It
    /// takes its place among the [`listen`](Self::listen) addresses in the order given.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.sources.push(Source::Adopted(listener));
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
    /// Nagle/delayed-ACK stall). Set on the TCP listeners the server binds as well, so on
    /// Linux accepted connections inherit it without a call of their own. Default: `true`.
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.config.socket.nodelay = nodelay;
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

    /// Tell the service manager how the server is doing, when it asks (systemd's
    /// `NOTIFY_SOCKET`, as for a unit with `Type=notify`): `READY=1` when serving starts (every
    /// listener is bound), `STOPPING=1` when a stop begins, and `WATCHDOG=1` from the serving
    /// loop at half the `WATCHDOG_USEC` interval, so a loop that stops turning stops the pings.
    /// Without `NOTIFY_SOCKET` in the environment nothing is sent. Default: `false`.
    pub fn notify_service_manager(mut self, notify: bool) -> Self {
        self.config.notify = notify;
        self
    }

    /// Count connections, datagrams, bytes, timeouts and errors into `metrics` (see
    /// [`metrics`](crate::metrics)); give the same value to the HTTP handler
    /// ([`Http::metrics`](crate::http::Http::metrics)) for its request counts. Serve the
    /// figures from a separate listener, so that scrapes are not counted. Default: none kept.
    pub fn metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.config.metrics = Some(metrics);
        self
    }

    /// Expect a PROXY protocol header (v1 or v2, as HAProxy, nginx's `proxy_protocol` and cloud
    /// balancers send) at the start of every stream connection, within `timeout`; `None` (the
    /// default) expects none. The address it carries becomes the [`Request::peer`](crate::Request::peer) (and so the
    /// peer of every log line); a v2 `LOCAL` header or v1 `UNKNOWN` keeps the socket's peer. A
    /// connection whose header is missing, malformed or late is closed without an answer and
    /// logged at warning level. [`Handler::verify`] still sees the socket's peer (the balancer),
    /// since it runs before the header arrives. Datagram listeners are not affected. Turn it
    /// on only behind a balancer that always sends the header: otherwise any client can claim
    /// any address.
    pub fn proxy_protocol(mut self, timeout: Option<Duration>) -> Self {
        self.config.proxy = timeout;
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

    /// Binds, shares the listeners out, builds the mode, starts the signal watcher.
    fn start(builder: ServerBuilder, handler: Arc<dyn Handler>) -> Result<Server> {
        let ServerBuilder {
            sources,
            mut config,
        } = builder;
        if sources.is_empty() {
            return Err(Error::Unsupported {
                what: "no address to listen on: add one with listen()".into(),
            });
        }
        let mut plan = mode::Plan::new(config.mode, config.async_accept, &*handler)?;
        if plan.accept == AsyncAccept::ReusePort {
            config.socket.reuse_port = true;
        }
        let wiring = Wiring::bind(sources, &config.socket, plan.loops, plan.accept)?;
        let (locals, fds) = (wiring.locals(), wiring.fds());
        let poll = Poll::new()?;
        let shared = Arc::new(Shared::new(
            mio::Waker::new(poll.registry(), WAKER)?,
            wiring.listening(),
            matches!(config.mode, Mode::Sync),
            config.shutdown_timeout,
            plan.take_fork_link(),
            config.notify,
            config.metrics.clone(),
        ));
        let Wiring {
            owned,
            server: ports,
            per_loop,
            ..
        } = wiring;
        for (i, port) in ports.iter().enumerate() {
            poll.registry().register(
                &mut SourceFd(&port.socket.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        let settings = Settings {
            nodelay: config.socket.nodelay,
            timeout: config.timeout,
            limit: config.max_connections,
            max_packet_size: config.max_packet_size,
            proxy: config.proxy,
        };
        let mut dispatcher = mode::build(
            config.mode,
            plan,
            mode::Parts {
                handler: Arc::clone(&handler),
                shared: Arc::clone(&shared),
                timeout: config.timeout,
                block_on_close: config.block_on_close,
                loop_ports: per_loop,
                settings,
                listener_fds: fds.clone(),
                signals: if config.handle_signals {
                    crate::signals::SIGNALS.to_vec()
                } else {
                    Vec::new()
                },
            },
        )?;
        dispatcher.register(poll.registry())?;
        // The serving loop's limit is the mode's too (`Pool`: 2 × workers, `Fork`:
        // `max_children`, `Sync`: 1).
        let limit = match (config.max_connections, dispatcher.capacity()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let intake = Intake::new(
            ports,
            Arc::clone(&shared),
            Arc::clone(&handler),
            Settings { limit, ..settings },
            AtLimit::Server,
        );
        let lp = Loop {
            poll,
            events: Events::with_capacity(256),
            listeners: owned,
            intake,
            dispatcher,
            unannounced: config.notify,
            watchdog: config
                .notify
                .then(crate::notify::Watchdog::from_env)
                .flatten(),
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

/// The serving loop's state, owned by whichever thread serves.
struct Loop {
    poll: Poll,
    events: Events,
    /// Every listener (closed when the loop finishes).
    listeners: Vec<Listener>,
    /// The way in from the listeners the serving loop watches (token `i` is port `i`).
    intake: Intake,
    dispatcher: Box<dyn Dispatch>,
    /// `READY=1` is still to be sent (see `notify.rs`).
    unannounced: bool,
    /// `WATCHDOG=1` pings, when the service manager asks for them.
    watchdog: Option<crate::notify::Watchdog>,
    config: Config,
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
        if std::mem::take(&mut self.unannounced) {
            crate::notify::ready();
        }
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.turn(Instant::now());
        }
        let timeout = self.poll_timeout(wait);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
        for event in self.events.iter() {
            self.intake.mark_ready(event.token().0);
        }
        // Any wake-up may come with a freed place: a finished request, a reaped child.
        self.intake.woken();
        self.dispatcher.tick();
        let dispatched = if shared.is_running() {
            let dispatcher = &mut self.dispatcher;
            self.intake
                .accept(max, |request| dispatcher.dispatch(request))
                .map_err(|broken| Error::Accept(broken.error))?
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

    fn poll_timeout(&self, wait: Option<Duration>) -> Option<Duration> {
        let mut timeout = wait;
        let mut at_most = |d: Duration| timeout = Some(timeout.map_or(d, |t| t.min(d)));
        if let Some(interval) = self.config.service_interval {
            at_most(interval);
        }
        if let Some(interval) = self.dispatcher.tick_interval() {
            at_most(interval);
        }
        let now = Instant::now();
        if let Some(watchdog) = &self.watchdog {
            at_most(watchdog.next().saturating_duration_since(now));
        }
        if let Some(until) = self.intake.backoff_until().filter(|&until| until > now) {
            at_most(until - now);
        } else if self.intake.has_work(now) {
            // A listener still has connections waiting from the last edge: don't sleep.
            at_most(Duration::ZERO);
        }
        timeout
    }

    /// Graceful end: close the listeners at once, wait for in-flight work until the deadline
    /// (cut short by [`ShutdownHandle::close`]), force what remains, release the workers.
    fn finish(mut self, shared: &Arc<Shared>) {
        for port in self.intake.ports() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&port.socket.as_raw_fd()));
        }
        self.listeners.clear();
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
        // New connections still silent get a moment for their first request, then close.
        let mut quiet = Some(Instant::now() + crate::shutdown::QUIET_GRACE);
        loop {
            // The mode's housekeeping: reaping children, a child's request to close.
            self.dispatcher.tick();
            // Looks first: what a loop's last look takes is in flight before the look is done.
            // No stop was asked for when a fatal accept error ended the serving: no loop owes
            // a look then.
            let looked = shared.is_running() || !shared.last_looks_due();
            if looked && shared.in_flight() == 0 {
                return true;
            }
            if stop_on_close && shared.is_closing() {
                return false;
            }
            if quiet.is_some_and(|at| at <= Instant::now()) {
                quiet = None;
                shared.close_quiet();
            }
            let Ok(left) = time_left(deadline) else {
                return false;
            };
            let left = left.map(|l| l.min(self.dispatcher.tick_interval().unwrap_or(l)));
            let left = match quiet {
                Some(at) => {
                    let until = at.saturating_duration_since(Instant::now());
                    Some(left.map_or(until, |l| l.min(until)))
                }
                None => left,
            };
            if let Err(e) = self.poll.poll(&mut self.events, left)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return false;
            }
        }
    }
}
