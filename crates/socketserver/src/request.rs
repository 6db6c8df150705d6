//! The request a handler receives: Python's `self.request`, `rfile` and `wfile` in one value.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use crate::metrics::{Metrics, Timeout};
use crate::shutdown::{BUSY, IDLE, QUIET, Slot, Tracked};
use crate::{Address, ShutdownHandle};

/// Read buffer size. Reads at least this large bypass the buffer.
const READ_BUF: usize = 8 * 1024;
/// Write buffer size. Writes at least this large go straight to the socket.
const WRITE_BUF: usize = 8 * 1024;
/// What a peer that makes us wait must take within each write timeout: a reader that takes a
/// byte now and then does not keep a connection forever.
const WRITE_PROGRESS: u64 = 64 * 1024;

/// One request: a connection (TCP, Unix stream) or one datagram (UDP, Unix datagram).
///
/// It is [`BufRead`] + [`Write`], so the same handler code serves every transport:
///
/// - **Stream**: reads come from the connection through an 8 KiB buffer (`read_line`,
///   `read_exact`, `read_until` all work). Writes are buffered too, and the buffer is flushed
///   before any read that has to wait for the peer, at the end of the request, and by
///   [`flush`](Write::flush): so a request/response handler never deadlocks waiting for input
///   while its answer sits in a buffer (the reason Python's `StreamRequestHandler` leaves
///   `wfile` unbuffered), yet a handler writing many small pieces sends few packets. When the
///   request ends the write side is shut down, so the peer reads end of file.
/// - **Datagram**: reads come from the datagram's bytes ([`packet`](Request::packet)); writes
///   collect the reply, sent to the sender in one datagram when the request ends
///   (Python's `DatagramRequestHandler`). A reply is sent if anything was written or
///   `flush` was called, so an empty reply is possible.
///
/// "Finish" work (flush, shut down, send the reply) runs when the request is dropped, so it
/// runs even when the handler returns an error or panics.
pub struct Request {
    io: Io,
    peer: Address,
    local: Arc<Address>,
    shutdown: ShutdownHandle,
    /// How long a read may wait for the peer.
    timeout: Limit,
    /// Reads fail once this passes, however the peer trickles.
    read_deadline: Option<Instant>,
    /// How long the peer may make writes wait without taking [`WRITE_PROGRESS`] bytes.
    clock: WriteClock,
    slot: Option<Slot>,
    finished: bool,
    /// A PROXY protocol header is still to come, due within this long of the connection.
    proxy: Limit,
    /// An accepted stream connection the metrics counted: its close is counted too.
    counted: bool,
}

/// The stall window of a connection's writes: it opens when a write has to wait for the peer,
/// restarts each time the peer takes [`WRITE_PROGRESS`] bytes, and closes when a write goes
/// out without waiting. A write that would wait past its end fails with `TimedOut`. The event
/// loop keeps one per connection too: its write deadline runs from [`since`](Self::since).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WriteClock {
    limit: Limit,
    since: Option<Instant>,
    taken: u64,
}

impl WriteClock {
    fn new(limit: Option<Duration>) -> WriteClock {
        WriteClock {
            limit: Limit::of(limit),
            since: None,
            taken: 0,
        }
    }

    /// A write has to wait for the peer: the window opens, unless it is open already.
    pub(crate) fn open(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// When the current window opened (or last restarted), if one is open.
    pub(crate) fn since(&self) -> Option<Instant> {
        self.since
    }

    /// The peer took `n` bytes.
    pub(crate) fn taken(&mut self, n: usize) {
        if self.since.is_some() {
            self.taken = self.taken.saturating_add(n as u64);
            if self.taken >= WRITE_PROGRESS {
                self.since = Some(Instant::now());
                self.taken = 0;
            }
        }
    }

    /// How long a write may wait now (`Ok(None)`: without limit); `Err` when the window is
    /// over.
    fn wait(&mut self) -> Result<Option<Duration>, ()> {
        let Some(limit) = self.limit.get() else {
            return Ok(None);
        };
        let since = *self.since.get_or_insert_with(Instant::now);
        match limit.checked_sub(since.elapsed()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(()),
        }
    }

    /// A write went out without waiting (or the output drained): the peer is reading.
    pub(crate) fn reset(&mut self) {
        self.since = None;
        self.taken = 0;
    }
}

/// An optional duration in 8 bytes, where `Option<Duration>` takes 16: nanoseconds, with
/// `u64::MAX` for none. A request (every connection's) carries a few inline, and pays for
/// each. A duration beyond 584 years counts as none: waiting forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limit(u64);

impl Limit {
    const NONE: Limit = Limit(u64::MAX);

    fn of(duration: Option<Duration>) -> Limit {
        duration
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .map_or(Limit::NONE, Limit)
    }

    fn get(self) -> Option<Duration> {
        (self != Limit::NONE).then(|| Duration::from_nanos(self.0))
    }
}

impl Default for Limit {
    fn default() -> Limit {
        Limit::NONE
    }
}

enum Io {
    Stream {
        socket: Option<Arc<Tracked>>,
        rbuf: Vec<u8>,
        rpos: usize,
        wbuf: Vec<u8>,
    },
    /// The datagram's fields are boxed: a datagram's request lives for one datagram, a
    /// connection's for the whole connection, and every connection would otherwise carry
    /// them. The box is reused (see [`Datagram::boxed`]). The socket is the listener's.
    Datagram(Box<Datagram>, Arc<Socket>),
}

/// A datagram request's bytes, its reply and where the reply goes.
struct Datagram {
    data: Vec<u8>,
    pos: usize,
    reply: Vec<u8>,
    reply_wanted: bool,
    to: ReplyTo,
}

thread_local! {
    /// The box of the last datagram request finished on this thread, for the next one
    /// received here: a datagram then costs no allocation for it (nor for its bytes, when
    /// the buffer it kept is large enough).
    static SPARE_DATAGRAM: std::cell::Cell<Option<Box<Datagram>>> =
        const { std::cell::Cell::new(None) };
}

/// Largest buffer a spare datagram box keeps for the next datagram's bytes or reply.
const SPARE_KEPT: usize = 64 * 1024;

impl Datagram {
    /// A box holding a copy of `bytes` and `to`: this thread's spare, or a new one.
    fn boxed(bytes: &[u8], to: ReplyTo) -> Box<Datagram> {
        match SPARE_DATAGRAM.take() {
            Some(mut spare) => {
                spare.data.extend_from_slice(bytes);
                spare.to = to;
                spare
            }
            None => Box::new(Datagram {
                data: bytes.to_vec(),
                pos: 0,
                reply: Vec::new(),
                reply_wanted: false,
                to,
            }),
        }
    }

    /// Empties the box and keeps it as this thread's spare.
    fn recycle(mut self: Box<Datagram>) {
        for buf in [&mut self.data, &mut self.reply] {
            if buf.capacity() > SPARE_KEPT {
                *buf = Vec::new();
            } else {
                buf.clear();
            }
        }
        self.pos = 0;
        self.reply_wanted = false;
        SPARE_DATAGRAM.set(Some(self));
    }
}

/// Where a datagram's reply goes. An IP address is kept as such (32 bytes, not a 128-byte
/// `sockaddr_storage`): every request, every connection's too, is as large as its largest
/// variant, and most are streams.
enum ReplyTo {
    Ip(std::net::SocketAddr),
    Other(Box<SockAddr>),
}

impl ReplyTo {
    fn of(addr: SockAddr) -> ReplyTo {
        match addr.as_socket() {
            Some(ip) => ReplyTo::Ip(ip),
            None => ReplyTo::Other(Box::new(addr)),
        }
    }

    fn address(&self) -> std::borrow::Cow<'_, SockAddr> {
        match self {
            ReplyTo::Ip(ip) => std::borrow::Cow::Owned(SockAddr::from(*ip)),
            ReplyTo::Other(addr) => std::borrow::Cow::Borrowed(addr),
        }
    }
}

impl Request {
    pub(crate) fn stream(
        socket: Arc<Tracked>,
        peer: Address,
        local: Arc<Address>,
        shutdown: ShutdownHandle,
        timeout: Option<Duration>,
        slot: Slot,
    ) -> Request {
        Request {
            io: Io::Stream {
                socket: Some(socket),
                rbuf: Vec::new(),
                rpos: 0,
                wbuf: Vec::new(),
            },
            peer,
            local,
            shutdown,
            timeout: Limit::of(timeout),
            read_deadline: None,
            clock: WriteClock::new(timeout),
            slot: Some(slot),
            finished: false,
            proxy: Limit::NONE,
            counted: false,
        }
    }

    /// Counts a new stream connection in the server's metrics (and its close, when dropped).
    pub(crate) fn count_accepted(mut self) -> Request {
        if let Some(m) = self.shutdown.shared.metrics() {
            m.accepted();
            self.counted = true;
        }
        self
    }

    /// Marks a new connection as beginning with a PROXY header due within `within`.
    pub(crate) fn expecting_proxy_header(mut self, within: Option<Duration>) -> Request {
        self.proxy = Limit::of(within);
        self
    }

    /// How long the PROXY header may take, while it is still to come (the event loop reads
    /// it itself, see [`proxy_header_read`](Self::proxy_header_read)).
    pub(crate) fn proxy_header_due(&self) -> Option<Duration> {
        self.proxy.get()
    }

    /// The PROXY header arrived: its source, when it names one, is the peer from now on.
    pub(crate) fn proxy_header_read(&mut self, source: Option<std::net::SocketAddr>) {
        self.proxy = Limit::NONE;
        if let Some(source) = source {
            self.peer = Address::tcp(source);
        }
    }

    /// Reads the PROXY header the connection must begin with (blocking modes), when one is
    /// expected and not read yet: within its time, at most [`proxy::MAX_LEN`] bytes, what
    /// follows it left for the handler. The error says why the connection cannot be served.
    ///
    /// [`proxy::MAX_LEN`]: crate::proxy::MAX_LEN
    pub(crate) fn read_proxy_header(&mut self) -> Result<(), String> {
        let Some(within) = self.proxy.get() else {
            return Ok(());
        };
        let deadline = Instant::now().checked_add(within);
        let Io::Stream {
            socket: Some(sock),
            rbuf,
            rpos,
            ..
        } = &mut self.io
        else {
            return Ok(());
        };
        let sock = Arc::clone(sock);
        let mut chunk = [0u8; 512];
        loop {
            match crate::proxy::parse(&rbuf[*rpos..]) {
                Ok(Some(header)) => {
                    *rpos += header.len;
                    self.proxy_header_read(header.source);
                    return Ok(());
                }
                Ok(None) => {}
                Err(invalid) => return Err(invalid.to_string()),
            }
            // Never past the header's end by more than a chunk; the rest stays buffered.
            match read_waiting(
                &sock,
                &mut chunk,
                self.timeout.get(),
                deadline,
                self.shutdown.shared.metrics(),
            ) {
                Ok(0) => return Err("closed before its PROXY protocol header ended".into()),
                Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(format!(
                        "no complete PROXY protocol header within {}s",
                        within.as_secs_f64()
                    ));
                }
                Err(e) => return Err(format!("reading its PROXY protocol header: {e}")),
            }
        }
    }

    /// True in a child forked by `Mode::Fork`: a shutdown reaches it only through the
    /// drain pipe (see [`wait_readable`](Self::wait_readable)).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn in_forked_child(&self) -> bool {
        self.shutdown.shared.forked_child().is_some()
    }

    pub(crate) fn datagram(
        data: &[u8],
        socket: Arc<Socket>,
        to: SockAddr,
        peer: Address,
        local: Arc<Address>,
        shutdown: ShutdownHandle,
        slot: Slot,
    ) -> Request {
        Request {
            io: Io::Datagram(Datagram::boxed(data, ReplyTo::of(to)), socket),
            peer,
            local,
            shutdown,
            timeout: Limit::NONE,
            read_deadline: None,
            clock: WriteClock::new(None),
            slot: Some(slot),
            finished: false,
            proxy: Limit::NONE,
            counted: false,
        }
    }

    /// The client's address. Unix clients that did not bind a path show an empty path.
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// The address of the listener this request came in on (useful with several listeners).
    pub fn local(&self) -> &Address {
        &self.local
    }

    /// A handle that stops the server; safe to use from inside the handler.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// True for a datagram request (UDP, Unix datagram).
    pub fn is_datagram(&self) -> bool {
        matches!(self.io, Io::Datagram(..))
    }

    /// The whole datagram, for datagram requests (`None` for streams). Reading through
    /// `Read`/`BufRead` yields the same bytes.
    pub fn packet(&self) -> Option<&[u8]> {
        match &self.io {
            Io::Datagram(d, _) => Some(&d.data),
            Io::Stream { .. } => None,
        }
    }

    /// Sets the connection's timeout for reads and writes: a read fails with
    /// [`io::ErrorKind::TimedOut`] when the peer sends nothing for this long, a write when the
    /// peer makes it wait this long without taking 64 KiB (so a reader taking a byte now and
    /// then cannot hold the connection either). `None` waits forever. Starts as the server's
    /// `timeout`. Has no effect on datagram requests. Costs no system call: the waits are
    /// `poll(2)` deadlines.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.timeout = Limit::of(timeout);
        self.clock.limit = Limit::of(timeout);
        Ok(())
    }

    /// Sets only the write side of [`set_timeout`](Self::set_timeout): how long the peer may
    /// make a write wait without taking 64 KiB. Also starts a fresh stall window: call it
    /// before each response, so time spent reading the next request never counts against it.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.clock.limit = Limit::of(timeout);
        self.clock.reset();
    }

    /// What the request read from the socket ahead of its reader (its buffer), taken out: a
    /// worker hands it back to the event loop with the connection, so no byte is lost.
    pub(crate) fn take_read_ahead(&mut self) -> Vec<u8> {
        match &mut self.io {
            Io::Stream { rbuf, rpos, .. } if *rpos < rbuf.len() => {
                let rest = rbuf[*rpos..].to_vec();
                rbuf.clear();
                *rpos = 0;
                rest
            }
            _ => Vec::new(),
        }
    }

    /// Sets a deadline for reads: once it passes, a read that has to wait fails with
    /// [`io::ErrorKind::TimedOut`], however steadily the peer trickles (the per-read timeout
    /// still applies before it). `None` removes it. HTTP uses it for the whole request head
    /// and for a minimum body rate; a TLS handshake must finish before it too.
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.read_deadline = deadline;
    }

    /// Turns Nagle's algorithm off (`true`) or on for a TCP connection. The server turns it off
    /// by default (see `ServerBuilder::nodelay`). No effect on other transports.
    pub fn set_nodelay(&mut self, nodelay: bool) -> io::Result<()> {
        match &self.io {
            Io::Stream {
                socket: Some(socket),
                ..
            } if matches!(self.peer, Address::Tcp { .. }) => socket.set_tcp_nodelay(nodelay),
            _ => Ok(()),
        }
    }

    /// Marks a connection as waiting between requests (`true`) or busy with one (`false`), for
    /// protocols with several requests per connection (HTTP keep-alive). A graceful shutdown
    /// closes idle connections at once (a blocked read returns end of file) instead of giving
    /// them the whole shutdown timeout.
    ///
    /// Returns `false` when the server is already shutting down: then close the connection
    /// rather than wait for another request. Mark a connection idle only after its last
    /// response was written, and busy again as soon as a byte of the next request arrives.
    pub fn set_idle(&mut self, idle: bool) -> bool {
        // Mark, then check (see `Slot::still_running`).
        if let Some(socket) = self.socket() {
            socket.set_state(if idle { IDLE } else { BUSY });
        }
        match &self.slot {
            Some(slot) => slot.still_running(),
            None => !self.shutdown.is_shutting_down(),
        }
    }

    /// Marks a new connection as quiet: its first request has not begun (see
    /// `shutdown::QUIET`). The next [`set_idle`](Self::set_idle) ends it.
    pub(crate) fn set_quiet(&mut self) {
        if let Some(socket) = self.socket() {
            socket.set_state(QUIET);
        }
    }

    /// Waits until the peer sends something (or closes), for at most `timeout`, without
    /// consuming it: `Ok(true)` when a read will not block, `Ok(false)` when the server began
    /// a graceful shutdown meanwhile (close rather than wait for another request), and a
    /// `TimedOut` error when the time ran out. Use it between requests, after
    /// [`set_idle`](Self::set_idle)`(true)`. Datagram requests are always readable.
    pub fn wait_readable(&mut self, timeout: Option<std::time::Duration>) -> io::Result<bool> {
        use std::os::fd::AsFd;
        let socket = match &self.io {
            Io::Stream {
                socket: Some(socket),
                rbuf,
                rpos,
                ..
            } => {
                if *rpos < rbuf.len() {
                    return Ok(true);
                }
                Arc::clone(socket)
            }
            Io::Stream { socket: None, .. } => return Err(closed()),
            Io::Datagram(..) => return Ok(true),
        };
        let shared = Arc::clone(&self.shutdown.shared);
        let mut fds = vec![socket.as_fd()];
        // Only a forked child needs the pipe: in-process, a shutdown shuts idle sockets down.
        if let Some(link) = shared.forked_child() {
            fds.push(link.drain_fd());
        }
        let ready = crate::sys::poll_readable(&fds, timeout)?;
        match ready.as_slice() {
            [_, true] => Ok(false),
            [true, ..] => Ok(true),
            _ => Err(silent(timeout)),
        }
    }

    /// Sends `len` bytes of `file` starting at `offset`, after any buffered output. On Linux
    /// stream connections this is zero-copy (`sendfile(2)`); elsewhere, and for datagram
    /// requests (where the bytes join the reply), it reads and writes. Fails with
    /// `UnexpectedEof` if the file is shorter than promised (it shrank while being sent), and
    /// with `TimedOut` under the connection's timeout like any write.
    pub fn send_file(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        // What was written before (a response head) and the file leave in full segments.
        self.flush_writes_with(if len > 0 { SEND_MORE_FLAGS } else { SEND_FLAGS })?;
        if let Io::Stream {
            socket: Some(sock), ..
        } = &self.io
        {
            let sock = Arc::clone(sock);
            let mut pos =
                i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let mut left = len;
            let mut waited = false;
            while left > 0 {
                let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
                match crate::sys::sendfile(&sock, file, &mut pos, chunk) {
                    Ok(0) => return Err(shrank()),
                    Ok(n) => {
                        left -= n as u64;
                        self.clock.taken(n);
                        if let Some(m) = self.shutdown.shared.metrics() {
                            m.sent(n);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        waited = true;
                        wait_writable(&sock, &mut self.clock, self.shutdown.shared.metrics())?;
                    }
                    // No zero-copy here (an unusual file system, another platform): copy.
                    Err(e)
                        if left == len
                            && matches!(
                                e.raw_os_error(),
                                Some(nix::libc::EINVAL | nix::libc::ENOSYS)
                            ) =>
                    {
                        return self.copy_file(file, offset, len);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        return self.copy_file(file, offset, len);
                    }
                    Err(e) => return Err(e),
                }
            }
            if !waited {
                self.clock.reset();
            }
            return Ok(());
        }
        self.copy_file(file, offset, len)
    }

    fn copy_file(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        copy_file_to(self, file, offset, len)
    }

    /// Moves the datagram's bytes out (empty for streams): the event loop hands them to a
    /// protocol without a copy.
    pub(crate) fn take_packet(&mut self) -> Vec<u8> {
        match &mut self.io {
            Io::Datagram(d, _) => {
                d.pos = 0;
                std::mem::take(&mut d.data)
            }
            Io::Stream { .. } => Vec::new(),
        }
    }

    /// Gives back what [`take_packet`](Self::take_packet) took.
    pub(crate) fn put_packet(&mut self, packet: Vec<u8>) {
        if let Io::Datagram(d, _) = &mut self.io {
            d.data = packet;
            d.pos = 0;
        }
    }

    /// Sets a datagram's whole reply (sent when the request finishes), without a copy.
    pub(crate) fn set_reply(&mut self, bytes: Vec<u8>) {
        if let Io::Datagram(d, _) = &mut self.io {
            d.reply = bytes;
            d.reply_wanted = true;
        }
    }

    /// A datagram's reply buffer, once sent, for the next reply to reuse (empty for a stream).
    pub(crate) fn take_reply(&mut self) -> Vec<u8> {
        match &mut self.io {
            Io::Datagram(d, _) => std::mem::take(&mut d.reply),
            Io::Stream { .. } => Vec::new(),
        }
    }

    /// The stop handle, borrowed.
    pub(crate) fn shutdown_ref(&self) -> &ShutdownHandle {
        &self.shutdown
    }

    /// The connection's socket (stream requests not yet finished).
    pub(crate) fn socket(&self) -> Option<&Arc<Tracked>> {
        match &self.io {
            Io::Stream { socket, .. } => socket.as_ref(),
            Io::Datagram(..) => None,
        }
    }

    /// True when reads and writes buffered in the request are all done with (the event loop
    /// may then use the socket directly).
    pub(crate) fn is_unbuffered(&self) -> bool {
        match &self.io {
            Io::Stream {
                rbuf, rpos, wbuf, ..
            } => *rpos >= rbuf.len() && wbuf.is_empty(),
            Io::Datagram(..) => false,
        }
    }

    pub(crate) fn take_slot(&mut self) -> Option<Slot> {
        self.slot.take()
    }

    pub(crate) fn put_slot(&mut self, slot: Slot) {
        self.slot = Some(slot);
    }

    /// The raw fd the request replies on (the datagram socket), kept open in a forked child.
    pub(crate) fn reply_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match &self.io {
            Io::Datagram(_, socket) => Some(socket.as_raw_fd()),
            Io::Stream { .. } => None,
        }
    }

    /// In a forking parent: forget the request without finishing it (the child finishes it;
    /// a `shutdown(2)` here would cut the child's connection too). Closes our copy of the fd.
    pub(crate) fn release_to_child(mut self) {
        self.finished = true;
        // The child closes it, and counts that.
        self.counted = false;
        if let Io::Stream { socket, .. } = &mut self.io {
            socket.take();
        }
    }

    /// The event loop is closing this connection: its fd is no other process's (the loop
    /// never forks), so closing it ends the connection, and with nothing buffered here
    /// `finish` has nothing to do (its `shutdown(2)` would be a system call for nothing,
    /// failing with `ENOTCONN` once the peer has gone).
    pub(crate) fn closing_on_loop(&mut self) {
        if let Io::Stream { wbuf, .. } = &self.io
            && wbuf.is_empty()
        {
            self.finished = true;
        }
    }

    /// Python's `finish()`: flush the reply, then end the request. Runs once; `Drop` calls it
    /// if the server did not.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        match &mut self.io {
            Io::Stream { socket, wbuf, .. } => {
                let Some(sock) = socket.as_ref() else {
                    return Ok(());
                };
                let metrics = self.shutdown.shared.metrics();
                let (_, flushed) = write_all(sock, wbuf, SEND_FLAGS, &mut self.clock, metrics);
                wbuf.clear();
                // Shut the write side down so the peer reads EOF even while another process
                // (a forked child's parent, say) still holds the fd.
                let _ = sock.shutdown(Shutdown::Write);
                flushed
            }
            Io::Datagram(d, socket) => {
                let Datagram {
                    reply,
                    reply_wanted,
                    to,
                    ..
                } = &mut **d;
                // A datagram reply's errors are its own (a full peer queue is not a timeout).
                if *reply_wanted || !reply.is_empty() {
                    let sent = send_reply(socket, reply, &to.address());
                    if sent.is_ok()
                        && let Some(m) = self.shutdown.shared.metrics()
                    {
                        m.sent(reply.len());
                    }
                    sent
                } else {
                    Ok(())
                }
            }
        }
    }

    fn flush_writes(&mut self) -> io::Result<()> {
        self.flush_writes_with(SEND_FLAGS)
    }

    /// [`flush_writes`](Self::flush_writes) with these `send` flags.
    fn flush_writes_with(&mut self, flags: i32) -> io::Result<()> {
        match &mut self.io {
            Io::Stream {
                socket: Some(sock),
                wbuf,
                ..
            } if !wbuf.is_empty() => {
                // Keep what was not sent: the bytes `write` accepted stay in order even if
                // the caller retries after a timeout.
                let metrics = self.shutdown.shared.metrics();
                let (sent, r) = write_all(sock, wbuf, flags, &mut self.clock, metrics);
                wbuf.drain(..sent);
                r
            }
            _ => Ok(()),
        }
    }
}

/// Reads into `buf` from the (non-blocking) stream socket, waiting with `poll(2)` at most
/// `timeout` for the peer's next bytes and never past `deadline`.
fn read_waiting(
    sock: &Socket,
    buf: &mut [u8],
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    metrics: Option<&Metrics>,
) -> io::Result<usize> {
    use std::os::fd::AsFd;
    loop {
        match (&*sock).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(n) => {
                if let Some(m) = metrics {
                    m.received(n);
                }
                return Ok(n);
            }
            other => return other,
        }
        let (wait, by_deadline) = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    if let Some(m) = metrics {
                        m.timed_out(Timeout::Header);
                    }
                    return Err(deadline_passed());
                }
                match timeout {
                    Some(t) if t < left => (Some(t), false),
                    _ => (Some(left), true),
                }
            }
            None => (timeout, false),
        };
        if !crate::sys::poll_one(sock.as_fd(), false, wait)? && !by_deadline {
            if let Some(m) = metrics {
                m.timed_out(Timeout::Idle);
            }
            return Err(silent(timeout));
        }
        // Ready, or at the deadline: the next turn reads or reports it.
    }
}

/// Waits until the peer takes more of what we send, within the write clock's window.
fn wait_writable(
    sock: &Socket,
    clock: &mut WriteClock,
    metrics: Option<&Metrics>,
) -> io::Result<()> {
    use std::os::fd::AsFd;
    let wait = clock.wait().map_err(|()| {
        if let Some(m) = metrics {
            m.timed_out(Timeout::Write);
        }
        stalled(clock.limit.get())
    })?;
    // Not ready in time: the next send meets `WouldBlock` and the clock's verdict.
    crate::sys::poll_one(sock.as_fd(), true, wait).map(drop)
}

fn silent(timeout: Option<Duration>) -> io::Error {
    let secs = timeout.map_or(0.0, |t| t.as_secs_f64());
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("timed out: the peer sent nothing for {secs}s"),
    )
}

fn deadline_passed() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "timed out: the peer did not send what it owed before its deadline",
    )
}

fn stalled(limit: Option<Duration>) -> io::Error {
    let secs = limit.map_or(0.0, |t| t.as_secs_f64());
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "timed out: the peer took less than {} KiB of what we sent in {secs}s",
            WRITE_PROGRESS / 1024
        ),
    )
}

/// Writes `len` bytes of `file` from `offset` to `out` through a 64 KiB buffer: the fallback
/// where `sendfile(2)` cannot be used (datagrams, TLS, other platforms).
pub(crate) fn copy_file_to(
    out: &mut dyn Write,
    file: &std::fs::File,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut pos, end) = (offset, offset.saturating_add(len));
    while pos < end {
        let want = usize::try_from((end - pos).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(shrank());
        }
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file is shorter than its announced length (it changed while being sent)",
    )
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the request is finished")
}

/// `send` flags: never raise SIGPIPE on a closed connection (the host program may not ignore
/// it, as Rust binaries do); the error comes back as `BrokenPipe` instead.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const SEND_FLAGS: i32 = nix::libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const SEND_FLAGS: i32 = 0;

/// [`SEND_FLAGS`] for bytes a file's `sendfile(2)` follows at once (a response head): more is
/// coming, so the kernel holds a partial segment for it instead of sending the head in a
/// packet of its own (as nginx's `tcp_nopush` does with `TCP_CORK`, in no extra call). The
/// `sendfile` after it pushes.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const SEND_MORE_FLAGS: i32 = SEND_FLAGS | nix::libc::MSG_MORE;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const SEND_MORE_FLAGS: i32 = SEND_FLAGS;

/// Sends all of `buf` on the (non-blocking) stream socket, waiting for the peer within the
/// write clock's window; returns how much was sent and how it ended.
fn write_all(
    sock: &Socket,
    buf: &[u8],
    flags: i32,
    clock: &mut WriteClock,
    metrics: Option<&Metrics>,
) -> (usize, io::Result<()>) {
    let mut sent = 0;
    let mut waited = false;
    while sent < buf.len() {
        match sock.send_with_flags(&buf[sent..], flags) {
            Ok(0) => return (sent, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                sent += n;
                clock.taken(n);
                if let Some(m) = metrics {
                    m.sent(n);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                waited = true;
                if let Err(e) = wait_writable(sock, clock, metrics) {
                    return (sent, Err(e));
                }
            }
            Err(e) => return (sent, Err(e)),
        }
    }
    if !waited {
        clock.reset();
    }
    (sent, Ok(()))
}

fn send_reply(socket: &Socket, reply: &[u8], to: &SockAddr) -> io::Result<()> {
    if to.as_socket().is_none() && to.as_pathname().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "cannot reply to an unnamed Unix datagram socket: the client must bind a path",
        ));
    }
    loop {
        // MSG_DONTWAIT: a peer whose receive queue is full loses this reply (datagram
        // semantics) instead of stalling the server.
        match socket.send_to_with_flags(reply, to, nix::libc::MSG_DONTWAIT) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "reply dropped: the peer's receive queue is full",
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Read for Request {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Io::Stream {
            socket: Some(sock),
            rbuf,
            rpos,
            ..
        } = &mut self.io
            && *rpos >= rbuf.len()
            && buf.len() >= READ_BUF
        {
            // Large reads bypass the buffer, but pending output goes first.
            let sock = Arc::clone(sock);
            self.flush_writes()?;
            return read_waiting(
                &sock,
                buf,
                self.timeout.get(),
                self.read_deadline,
                self.shutdown.shared.metrics(),
            );
        }
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Request {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let needs_read = match &self.io {
            Io::Stream {
                socket, rbuf, rpos, ..
            } => {
                if socket.is_none() {
                    return Err(closed());
                }
                *rpos >= rbuf.len()
            }
            Io::Datagram(..) => false,
        };
        if needs_read {
            self.flush_writes()?;
            if let Io::Stream {
                socket: Some(sock),
                rbuf,
                rpos,
                ..
            } = &mut self.io
            {
                rbuf.resize(READ_BUF, 0);
                *rpos = 0;
                let metrics = self.shutdown.shared.metrics();
                let r = read_waiting(sock, rbuf, self.timeout.get(), self.read_deadline, metrics);
                rbuf.truncate(*r.as_ref().unwrap_or(&0));
                r?;
            }
        }
        match &self.io {
            Io::Stream { rbuf, rpos, .. } => Ok(&rbuf[*rpos..]),
            Io::Datagram(d, _) => Ok(&d.data[d.pos..]),
        }
    }

    fn consume(&mut self, amt: usize) {
        match &mut self.io {
            Io::Stream { rbuf, rpos, .. } => *rpos = (*rpos + amt).min(rbuf.len()),
            Io::Datagram(d, _) => d.pos = (d.pos + amt).min(d.data.len()),
        }
    }
}

impl Write for Request {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Stream { socket: None, .. } => Err(closed()),
            Io::Stream {
                socket: Some(_),
                wbuf,
                ..
            } if wbuf.len() + buf.len() <= WRITE_BUF => {
                wbuf.extend_from_slice(buf);
                Ok(buf.len())
            }
            Io::Stream {
                socket: Some(sock), ..
            } => {
                let sock = Arc::clone(sock);
                self.flush_writes()?;
                if buf.len() >= WRITE_BUF {
                    let metrics = self.shutdown.shared.metrics();
                    match write_all(&sock, buf, SEND_FLAGS, &mut self.clock, metrics) {
                        (_, Ok(())) => {}
                        // Report the part that went out; the next write meets the error.
                        (sent, Err(_)) if sent > 0 => return Ok(sent),
                        (_, Err(e)) => return Err(e),
                    }
                } else if let Io::Stream { wbuf, .. } = &mut self.io {
                    wbuf.extend_from_slice(buf);
                }
                Ok(buf.len())
            }
            Io::Datagram(d, _) => {
                d.reply.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Io::Datagram(d, _) = &mut self.io {
            d.reply_wanted = true;
        }
        self.flush_writes()
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let _ = self.finish();
        if self.counted
            && let Some(m) = self.shutdown.shared.metrics()
        {
            m.closed();
        }
        // Off the table first, then close, then free the slot: a forced close never sees a
        // closed socket, and `max_connections` counts the fd until it is really closed.
        let mut slot = self.slot.take();
        if let Some(slot) = slot.as_mut() {
            slot.unlist();
        }
        match &mut self.io {
            Io::Stream { socket, .. } => drop(socket.take()),
            Io::Datagram(..) => {
                let placeholder = Io::Stream {
                    socket: None,
                    rbuf: Vec::new(),
                    rpos: 0,
                    wbuf: Vec::new(),
                };
                if let Io::Datagram(datagram, _) = std::mem::replace(&mut self.io, placeholder) {
                    datagram.recycle();
                }
            }
        }
        drop(slot);
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("datagram", &self.is_datagram())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_keeps_its_duration_in_eight_bytes() {
        assert_eq!(std::mem::size_of::<Limit>(), 8);
        for d in [
            None,
            Some(Duration::ZERO),
            Some(Duration::from_millis(1500)),
        ] {
            assert_eq!(Limit::of(d).get(), d);
        }
        let years = Some(Duration::from_secs(100 * 365 * 86_400));
        assert_eq!(Limit::of(years).get(), years);
        // Beyond u64 nanoseconds (584 years): waiting forever, as `None` says.
        assert_eq!(Limit::of(Some(Duration::MAX)).get(), None);
        assert_eq!(Limit::default().get(), None);
    }
}
