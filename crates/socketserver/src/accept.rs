//! How a connection gets in, for the serving loop and the event loops alike.
//!
//! An [`Intake`] owns everything between a ready listener and a [`Request`]: the in-flight
//! place claimed before `accept(2)` (so threads accepting at once never pass the connection
//! limit), the accept call or the datagram's receive, [`Handler::verify`], the socket options
//! of a new connection, the error classification (Go's `net/http` rules: a failure of one
//! connection is skipped, resource exhaustion pauses accepting for 5 ms doubling to 1 s,
//! anything else means the listener is broken), the batch that keeps one busy listener from
//! starving the others, and what to do at the limit: ask to be woken when a place frees
//! ([`AtLimit`]), then sleep. Nothing here polls: the caller sleeps in its own `epoll` until
//! a listener is ready, a back-off ends ([`Intake::backoff_until`]) or a freed place wakes it.
//!
//! Callers: `server.rs` (the serving loop: every listener the event loops do not take,
//! datagrams included) and `mode/evented` (each event loop's own stream listeners).

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::handler::{panic_message, report};
use crate::shutdown::{Claim, Entry, Shared, Slot, Tracked};
use crate::transport::{Kind, Listener, SocketOptions, address_of};
use crate::{Address, AsyncAccept, Error, Handler, Request, Result, ShutdownHandle};

/// Most accepts per listener per turn, so one busy listener cannot starve the others or delay
/// a shutdown check.
const ACCEPT_BATCH: usize = 64;
/// The first pause after resource exhaustion; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listener an [`Intake`] takes connections (or datagrams) from.
pub(crate) struct Port {
    pub(crate) socket: Arc<Socket>,
    pub(crate) kind: Kind,
    pub(crate) local: Arc<Address>,
    /// Edge-triggered readiness not yet drained to `WouldBlock`.
    pub(crate) ready: bool,
    /// A TCP listener with `TCP_NODELAY` set, which the connections it accepts inherit
    /// (Linux): they need no `setsockopt` of their own.
    pub(crate) inherits_nodelay: bool,
}

impl Port {
    /// A port to accept from; `ready` when its first readiness edge may already be past.
    pub(crate) fn new(socket: Arc<Socket>, kind: Kind, local: Arc<Address>, ready: bool) -> Port {
        let inherits_nodelay = cfg!(any(target_os = "linux", target_os = "android"))
            && kind == Kind::Tcp
            && socket.tcp_nodelay().unwrap_or(false);
        Port {
            socket,
            kind,
            local,
            ready,
            inherits_nodelay,
        }
    }
}

/// Where a listener comes from.
#[derive(Debug)]
pub(crate) enum Source {
    /// An address to bind.
    Address(Address),
    /// A socket bound elsewhere.
    Adopted(Listener),
}

/// A server's listeners, bound and shared out: the ones the serving loop takes from, and per
/// event loop the stream listeners it accepts from itself.
pub(crate) struct Wiring {
    /// Every listener, in the order given, then the extra `SO_REUSEPORT` ones: they close
    /// with the server (and a Unix listener's socket file goes with it).
    pub(crate) owned: Vec<Listener>,
    /// How many of `owned` the caller asked for (the rest are the extra ones).
    given: usize,
    /// The serving loop's ports; port `i` has token `i` in its poll.
    pub(crate) server: Vec<Port>,
    /// Per event loop, its own ports (all empty when the loops do not accept).
    pub(crate) per_loop: Vec<Vec<Port>>,
}

impl Wiring {
    /// Binds the addresses and takes the adopted sockets of `sources`, in order, and shares
    /// them out: with `accept`
    /// other than `Handoff`, the `loops` event loops take every stream listener (with
    /// `ReusePort`, a TCP listener of its own each on the same port, which `options` must
    /// allow), and the serving loop the rest. Fails with [`Error::Bind`] naming the address;
    /// the listeners bound before it close again.
    pub(crate) fn bind(
        sources: Vec<Source>,
        options: &SocketOptions,
        loops: usize,
        accept: AsyncAccept,
    ) -> Result<Wiring> {
        let mut owned = Vec::with_capacity(sources.len());
        for source in sources {
            owned.push(match source {
                Source::Address(addr) => Listener::bind_with(&addr, options)?,
                Source::Adopted(listener) => listener,
            });
        }
        let given = owned.len();
        let on_loops = |l: &Listener| accept != AsyncAccept::Handoff && l.kind.is_stream();
        let mut server = Vec::new();
        let mut per_loop: Vec<Vec<Port>> = (0..loops.max(1)).map(|_| Vec::new()).collect();
        for i in 0..given {
            let local = Arc::new(owned[i].local.clone());
            let (socket, kind) = (Arc::clone(&owned[i].socket), owned[i].kind);
            if !on_loops(&owned[i]) {
                server.push(Port::new(socket, kind, local, true));
                continue;
            }
            // One more TCP listener per extra loop on the same port, for the kernel to spread
            // connections over; other listeners are shared by the loops.
            let own = accept == AsyncAccept::ReusePort && kind == Kind::Tcp && !owned[i].adopted;
            for (n, ports) in per_loop.iter_mut().enumerate() {
                let socket = if own && n > 0 {
                    let more = Listener::bind_with(&owned[i].local, options)?;
                    let socket = Arc::clone(&more.socket);
                    owned.push(more);
                    socket
                } else {
                    Arc::clone(&socket)
                };
                ports.push(Port::new(socket, kind, Arc::clone(&local), true));
            }
        }
        Ok(Wiring {
            owned,
            given,
            server,
            per_loop,
        })
    }

    /// The stream listeners this server bound itself (`true`: a Unix one), for a stop to shut
    /// down from any thread. An adopted socket belongs to whoever bound it.
    pub(crate) fn listening(&self) -> Vec<(Arc<Socket>, bool)> {
        self.owned
            .iter()
            .filter(|l| l.kind.is_stream() && !l.adopted)
            .map(|l| (Arc::clone(&l.socket), l.kind == Kind::Unix))
            .collect()
    }

    /// The addresses of the listeners asked for, in order, with their real ports.
    pub(crate) fn locals(&self) -> Vec<Address> {
        self.owned[..self.given]
            .iter()
            .map(|l| l.local.clone())
            .collect()
    }

    /// The file descriptors of the listeners asked for, in order.
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        self.owned[..self.given]
            .iter()
            .map(Listener::raw_fd)
            .collect()
    }
}

/// Who waits for a freed place at the connection limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtLimit {
    /// The serving loop: the server's own waker wakes it (`Shared::set_want_wake`).
    Server,
    /// An event loop: every such loop's waker is woken (`Shared::loop_at_limit`).
    Loops,
}

/// What a new connection gets, and the limits an [`Intake`] keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// `TCP_NODELAY` on accepted TCP connections.
    pub(crate) nodelay: bool,
    /// The per-connection timeout of a new [`Request`].
    pub(crate) timeout: Option<Duration>,
    /// Most requests in flight (connections, datagrams being handled), across every intake
    /// of the server.
    pub(crate) limit: Option<usize>,
    /// Largest datagram accepted.
    pub(crate) max_packet_size: usize,
    /// Stream connections begin with a PROXY header, due within this long.
    pub(crate) proxy: Option<Duration>,
}

/// A listener that cannot be accepted from any more (its index among the ports). It is no
/// longer marked ready.
#[derive(Debug)]
pub(crate) struct Broken {
    pub(crate) index: usize,
    pub(crate) error: io::Error,
}

/// A paused intake: until when, and the pause that led there (the next one doubles it).
#[derive(Clone, Copy, Debug)]
struct Backoff {
    delay: Duration,
    until: Instant,
}

/// One accepting thread's way in (see the module documentation).
pub(crate) struct Intake {
    ports: Vec<Port>,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    settings: Settings,
    at_limit: AtLimit,
    backoff: Option<Backoff>,
    /// At the limit, and asked to be woken when a place frees.
    full: bool,
    /// The datagram receive buffer (allocated on the first datagram).
    recv_buf: Vec<u8>,
}

/// The outcome of one accept attempt.
// A `Request` is returned once per accept and moved straight on; boxing it would cost an
// allocation per request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
enum Accepted {
    Request(Request),
    /// Nothing to serve this time (denied, dropped or skipped); try again.
    Skipped,
    /// The listener has nothing more right now.
    Drained,
    /// The connection limit is reached.
    Full,
}

/// What an accept error means.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// The failure belongs to one connection: carry on at once.
    Retry,
    /// The process or system is out of a resource: pause, then try again.
    Backoff,
    /// The listener itself is broken.
    Fatal,
}

impl Intake {
    pub(crate) fn new(
        ports: Vec<Port>,
        shared: Arc<Shared>,
        handler: Arc<dyn Handler>,
        settings: Settings,
        at_limit: AtLimit,
    ) -> Intake {
        Intake {
            ports,
            shared,
            handler,
            settings,
            at_limit,
            backoff: None,
            full: false,
            recv_buf: Vec::new(),
        }
    }

    pub(crate) fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Port `index` became ready (an `epoll` edge).
    pub(crate) fn mark_ready(&mut self, index: usize) {
        if let Some(port) = self.ports.get_mut(index) {
            port.ready = true;
        }
    }

    /// The caller was woken: a freed place may be what woke it, so look again.
    pub(crate) fn woken(&mut self) {
        self.full = false;
    }

    /// True when a listener has connections waiting and nothing stops taking them now: the
    /// caller must not sleep.
    pub(crate) fn has_work(&self, now: Instant) -> bool {
        !self.full
            && self.backoff.is_none_or(|b| b.until <= now)
            && self.ports.iter().any(|p| p.ready)
    }

    /// When a pause after resource exhaustion ends (the caller wakes then).
    pub(crate) fn backoff_until(&self) -> Option<Instant> {
        self.backoff.map(|b| b.until)
    }

    /// Takes connections (or datagrams) from every ready port, at most a batch per port and
    /// `max` in all, and passes each to `take`. Returns how many were taken, or the first
    /// port found broken (the others are left for the next call).
    pub(crate) fn accept(
        &mut self,
        max: usize,
        mut take: impl FnMut(Request),
    ) -> Result<usize, Broken> {
        if self.backoff.is_some_and(|b| Instant::now() < b.until) {
            return Ok(0);
        }
        let mut taken = 0;
        for index in 0..self.ports.len() {
            let mut batch = 0;
            while self.ports[index].ready && batch < ACCEPT_BATCH && taken < max {
                if !self.shared.is_running() || !self.has_room() {
                    return Ok(taken);
                }
                batch += 1;
                match self.accept_one(index) {
                    Ok(Accepted::Request(request)) => {
                        self.backoff = None;
                        take(request);
                        taken += 1;
                    }
                    Ok(Accepted::Skipped) => self.backoff = None,
                    // Another thread took the last place: wait for one to free, unless one
                    // did already.
                    Ok(Accepted::Full) if !self.has_room() => return Ok(taken),
                    Ok(Accepted::Full) => {}
                    Ok(Accepted::Drained) => {
                        // Nothing left to accept: whatever exhausted a resource is past.
                        self.backoff = None;
                        self.ports[index].ready = false;
                    }
                    // A stop shuts the listeners down from another thread: an accept failing
                    // after that is the stop, not a broken listener.
                    Err(_) if !self.shared.is_running() => return Ok(taken),
                    Err(error) => {
                        if let Some(m) = self.shared.metrics() {
                            m.accept_error();
                        }
                        match classify(&error) {
                            AcceptError::Retry => {}
                            AcceptError::Backoff => {
                                self.pause(index, &error);
                                return Ok(taken);
                            }
                            AcceptError::Fatal => {
                                self.ports[index].ready = false;
                                return Err(Broken { index, error });
                            }
                        }
                    }
                }
            }
        }
        Ok(taken)
    }

    /// One last look at every stream port as a graceful stop begins, after the caller stopped
    /// watching them: takes what is already queued (at most a batch per port). A listener
    /// shared with other processes (a restart's new workers) may have woken only this one,
    /// with `EPOLLEXCLUSIVE`, for a connection it will now never see again: without this look
    /// that connection would wait for the next one to wake someone else.
    pub(crate) fn sweep(&mut self, mut take: impl FnMut(Request)) {
        for index in 0..self.ports.len() {
            if !self.ports[index].kind.is_stream() {
                continue;
            }
            for _ in 0..ACCEPT_BATCH {
                if !self.has_room() {
                    return;
                }
                match self.accept_stream(index) {
                    Ok(Accepted::Request(request)) => take(request),
                    Ok(Accepted::Skipped) => {}
                    // Drained, full, or shut down with the server: nothing more here.
                    Ok(Accepted::Drained | Accepted::Full) | Err(_) => break,
                }
            }
        }
    }

    /// Pauses accepting after resource exhaustion: 5 ms, doubling to 1 s while it lasts,
    /// logged once per burst.
    fn pause(&mut self, index: usize, error: &io::Error) {
        let delay = match self.backoff {
            Some(b) => (b.delay * 2).min(BACKOFF_MAX),
            None => {
                log::warn!(
                    "{}: accept failed: {}; pausing accepts (5 ms doubling to 1 s) until it clears",
                    self.ports[index].local,
                    crate::error::describe(error)
                );
                BACKOFF_START
            }
        };
        self.backoff = Some(Backoff {
            delay,
            until: Instant::now() + delay,
        });
    }

    /// True when another request may start. Otherwise asks for the next freed place to wake
    /// the caller (ask, then look again, so a place freed in between is seen) and marks the
    /// intake full.
    fn has_room(&mut self) -> bool {
        let Some(limit) = self.settings.limit else {
            return true;
        };
        if self.shared.reserved() < limit {
            return true;
        }
        let room = match self.at_limit {
            AtLimit::Server => {
                self.shared.set_want_wake(true);
                let room = self.shared.reserved() < limit;
                if room {
                    self.shared.set_want_wake(false);
                }
                room
            }
            AtLimit::Loops => self.shared.loop_at_limit(limit),
        };
        self.full = !room;
        room
    }

    fn accept_one(&mut self, index: usize) -> io::Result<Accepted> {
        if self.ports[index].kind.is_stream() {
            self.accept_stream(index)
        } else {
            self.receive_datagram(index)
        }
    }

    /// Accepts one stream connection (non-blocking): claim a place, accept, verify, set the
    /// socket's options, list it for a forced close.
    fn accept_stream(&mut self, index: usize) -> io::Result<Accepted> {
        let port = &self.ports[index];
        let Some(claim) = Claim::take(&self.shared, self.settings.limit) else {
            return Ok(Accepted::Full);
        };
        let (conn, addr) = match crate::sys::accept_nonblocking(&port.socket) {
            Ok(pair) => pair,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accepted::Drained),
            Err(e) => return Err(e),
        };
        let peer = address_of(&addr, port.kind);
        if !verified(&*self.handler, &peer) {
            return Ok(Accepted::Skipped);
        }
        // Every stream socket is non-blocking (accepted so): a request waits for its peer with
        // `poll(2)` deadlines (see `Request`), and the event loops need nothing changed to
        // take it.
        if port.kind == Kind::Tcp && self.settings.nodelay != port.inherits_nodelay {
            let _ = conn.set_tcp_nodelay(self.settings.nodelay);
        }
        let conn = Tracked::new(conn);
        let slot = Slot::claimed(claim, Entry::Socket(Arc::clone(&conn)));
        Ok(Accepted::Request(
            Request::stream(
                conn,
                peer,
                Arc::clone(&port.local),
                self.shutdown_handle(),
                self.settings.timeout,
                slot,
            )
            .count_accepted()
            .expecting_proxy_header(self.settings.proxy),
        ))
    }

    /// Receives one datagram: a too large one is reported and dropped, never truncated.
    fn receive_datagram(&mut self, index: usize) -> io::Result<Accepted> {
        let max = self.settings.max_packet_size;
        // MSG_TRUNC reports a datagram's real length, so one byte of slack is enough to tell
        // "exactly the limit" from "too large".
        if self.recv_buf.len() != max + 1 {
            self.recv_buf = vec![0; max + 1];
        }
        let port = &self.ports[index];
        let (len, from) = match crate::sys::recv_from_dontwait(&port.socket, &mut self.recv_buf) {
            Ok(pair) => pair,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accepted::Drained),
            Err(e) => return Err(e),
        };
        let peer = address_of(&from, port.kind);
        if let Some(m) = self.shared.metrics() {
            m.datagram();
            m.received(len);
        }
        if len > max {
            let error = Error::DatagramTooLarge { len, limit: max };
            report(&*self.handler, &peer, &error);
            return Ok(Accepted::Skipped);
        }
        if !verified(&*self.handler, &peer) {
            return Ok(Accepted::Skipped);
        }
        let slot = Slot::new(&self.shared, Entry::Nothing);
        Ok(Accepted::Request(Request::datagram(
            &self.recv_buf[..len],
            Arc::clone(&port.socket),
            from,
            peer,
            Arc::clone(&port.local),
            self.shutdown_handle(),
            slot,
        )))
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// [`Handler::verify`], a panic in it counting as a refusal (and reported).
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

fn classify(err: &io::Error) -> AcceptError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn listening() -> (Listener, Arc<Shared>, mio::Poll) {
        listening_with(true)
    }

    fn listening_with(nodelay: bool) -> (Listener, Arc<Shared>, mio::Poll) {
        let options = SocketOptions {
            backlog: 16,
            reuse_address: true,
            reuse_port: false,
            nodelay,
        };
        let listener =
            Listener::bind_with(&"tcp://127.0.0.1:0".parse().unwrap(), &options).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let shared = Arc::new(Shared::new(
            waker,
            Vec::new(),
            false,
            Duration::from_secs(1),
            None,
            false,
            None,
        ));
        (listener, shared, poll)
    }

    /// The listener as a port to accept from, ready.
    fn port_of(listener: &Listener) -> Port {
        Port::new(
            Arc::clone(&listener.socket),
            listener.kind,
            Arc::new(listener.local.clone()),
            true,
        )
    }

    #[test]
    fn at_the_limit_the_intake_stops_asks_to_be_woken_and_takes_the_next_once_a_place_frees() {
        let (listener, shared, mut poll) = listening();
        let addr = listener.local.socket_addr().unwrap();
        let port = port_of(&listener);
        let settings = Settings {
            nodelay: true,
            timeout: None,
            limit: Some(1),
            max_packet_size: 1500,
            proxy: None,
        };
        let handler: Arc<dyn Handler> = Arc::new(|_: &mut Request| Ok(()));
        let mut intake = Intake::new(vec![port], shared, handler, settings, AtLimit::Server);
        let _clients: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut taken = Vec::new();
        // Both clients wait in the queue; only one place exists.
        let deadline = Instant::now() + Duration::from_secs(5);
        while taken.is_empty() && Instant::now() < deadline {
            intake.accept(usize::MAX, |r| taken.push(r)).unwrap();
        }
        assert_eq!(taken.len(), 1);
        assert!(
            !intake.has_work(Instant::now()),
            "full: the caller may sleep"
        );
        assert_eq!(intake.accept(usize::MAX, |r| taken.push(r)).unwrap(), 0);
        // The request ends: its freed place wakes the serving loop.
        taken.clear();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(
            !events.is_empty(),
            "a freed place wakes whoever waits for one"
        );
        intake.woken();
        assert!(intake.has_work(Instant::now()));
        while taken.is_empty() && Instant::now() < deadline {
            intake.accept(usize::MAX, |r| taken.push(r)).unwrap();
        }
        assert_eq!(taken.len(), 1, "the second client is taken");
    }

    #[test]
    fn accepted_tcp_connections_get_tcp_nodelay_from_the_listener_or_of_their_own() {
        // (listener has it, the server wants it): what the accepted connection has.
        for (on_listener, wanted) in [(true, true), (false, true), (false, false), (true, false)] {
            let (listener, shared, _poll) = listening_with(on_listener);
            let addr = listener.local.socket_addr().unwrap();
            let port = port_of(&listener);
            assert_eq!(port.inherits_nodelay, on_listener);
            let settings = Settings {
                nodelay: wanted,
                timeout: None,
                limit: None,
                max_packet_size: 1500,
                proxy: None,
            };
            let handler: Arc<dyn Handler> = Arc::new(|_: &mut Request| Ok(()));
            let mut intake = Intake::new(vec![port], shared, handler, settings, AtLimit::Server);
            let _client = TcpStream::connect(addr).unwrap();
            let mut taken = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            while taken.is_empty() && Instant::now() < deadline {
                intake.accept(usize::MAX, |r| taken.push(r)).unwrap();
            }
            let socket = taken.first().and_then(|r| r.socket()).expect("accepted");
            assert_eq!(
                socket.tcp_nodelay().unwrap(),
                wanted,
                "listener {on_listener}, wanted {wanted}"
            );
        }
    }

    #[test]
    fn accept_errors_are_classified_as_go_does() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify(&os(nix::libc::ECONNABORTED)), AcceptError::Retry);
        assert_eq!(classify(&os(nix::libc::EMFILE)), AcceptError::Backoff);
        assert_eq!(classify(&os(nix::libc::ENOBUFS)), AcceptError::Backoff);
        assert_eq!(classify(&os(nix::libc::EBADF)), AcceptError::Fatal);
        assert_eq!(classify(&os(nix::libc::EINVAL)), AcceptError::Fatal);
    }
}
