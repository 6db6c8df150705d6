//! HTTP on the event loop: the loop reads and parses request heads, so a connection that is
//! idle between requests, or trickling its head, costs no thread.
//!
//! A complete request runs on the loop when the service [runs inline](super::Service::runs_inline)
//! and the mode allows it (`Mode::Async`): the response is queued in the connection's output,
//! file bodies as `sendfile(2)` ranges. Such a service never sees a request body (it reads as
//! empty), and a request that came with one is answered and the connection closed, so a
//! client trickling a body holds nothing but its buffer. Otherwise the connection goes to a
//! worker for that one request (in blocking mode, through the same code as every other mode),
//! and comes back to the loop for the next head.

use std::time::{Duration, Instant};

use super::conn::Http;
use super::parse::{self, Parse};
use super::wire::{ConnIo, OutputWire, Spill, Wire};
use super::{Service, StatusCode};
use crate::Request;
use crate::mode::engine::{Driver, Output, Step};
use crate::protocol::Conn;

pub(crate) struct HttpSession<S> {
    http: Http<S>,
    /// When the connection started: the first head is due within the header timeout of it.
    started: Instant,
    /// No request completed yet.
    first: bool,
    /// When the first byte of the head being received arrived.
    head_since: Option<Instant>,
    /// A parsed head waiting for a worker, boxed: an idle connection keeps only the pointer.
    pending: Option<Box<Pending>>,
    /// Bytes of the head being received already looked at without finding its end: a head
    /// trickled a byte at a time is parsed once when it ends, not once per byte.
    scanned: usize,
    /// The request line's end was among them.
    line_seen: bool,
    /// The last answer closes the connection, and its request had no body and nothing came
    /// after it: see `Driver::read_everything`.
    read_everything: bool,
}

/// Bodies up to this size are received on the loop before the request goes to a worker, so
/// a client trickling one costs its buffer, not a worker. A larger one is read by the worker
/// as the service reads it, at the pace `Limits::min_body_rate` sets.
pub(crate) const LOOP_BODY: usize = 64 * 1024;

/// A request the loop parsed for a worker to answer.
struct Pending {
    head: parse::Head,
    /// When its head was complete.
    at: Instant,
    /// Its body, being received on the loop before a worker takes it.
    body: Option<BodyWait>,
}

/// A request body the loop is receiving (its pace counts from `Pending::at`).
struct BodyWait {
    /// Body bytes received so far (the pace's progress).
    got: usize,
    need: Need,
}

enum Need {
    /// Exactly this many bytes.
    Length(usize),
    /// A chunked body: the decoder scans for its end (the worker decodes it again).
    Chunked {
        decoder: parse::ChunkedDecoder,
        scanned: usize,
    },
}

impl BodyWait {
    /// Whether `received` (the bytes after the head) holds the whole body, or as much of it as
    /// the loop keeps, or a chunked body the worker will refuse.
    fn ready(&mut self, received: &[u8]) -> bool {
        self.got = received.len();
        match &mut self.need {
            Need::Length(n) => received.len() >= *n,
            Need::Chunked { decoder, scanned } => {
                let fresh = received.get(*scanned..).unwrap_or_default();
                *scanned = received.len();
                let mut sink = Vec::new();
                match decoder.decode(fresh, &mut sink) {
                    Ok((_, finished)) => finished || received.len() >= LOOP_BODY,
                    Err(_) => true,
                }
            }
        }
    }
}

impl<S: Service> HttpSession<S> {
    pub(crate) fn new(http: Http<S>) -> HttpSession<S> {
        HttpSession {
            http,
            started: Instant::now(),
            first: true,
            head_since: None,
            pending: None,
            scanned: 0,
            line_seen: false,
            read_everything: false,
        }
    }

    /// What the loop waits for before a worker takes `head`: `None` when the worker can take
    /// it at once (no body, a body too large to keep, a client waiting for `100 Continue`, a
    /// framing the worker will refuse).
    fn body_wait(&self, head: &parse::Head) -> Option<BodyWait> {
        let expects = head.headers.get("expect").is_some();
        let need = match parse::framing(head) {
            _ if expects => return None,
            Ok(parse::Framing::Length(n)) if n > 0 && n <= LOOP_BODY as u64 => {
                Need::Length(usize::try_from(n).ok()?)
            }
            Ok(parse::Framing::Chunked) => Need::Chunked {
                decoder: parse::ChunkedDecoder::new(),
                scanned: 0,
            },
            _ => return None,
        };
        Some(BodyWait { got: 0, need })
    }

    /// Whether the bytes received so far are worth parsing: the head's end (an empty line)
    /// or the end of its request line arrived since the last look, or a size limit was
    /// crossed (the parser then refuses it), or these are the first bytes of the request: a
    /// look at them refuses what can never be HTTP (a TLS hello on the plain port, binary
    /// garbage) at once, as the blocking modes do, instead of at the header timeout.
    fn worth_parsing(&mut self, received: &[u8]) -> bool {
        let limits = &self.http.config.limits;
        let first_look = self.scanned == 0;
        // Two bytes back: an end split over two reads is still seen.
        let from = self.scanned.saturating_sub(2).min(received.len());
        let fresh = &received[from..];
        let ended = has_blank_line(fresh);
        let line_now = !self.line_seen && fresh.contains(&b'\n');
        self.line_seen |= line_now;
        let too_long = received.len() > limits.max_head
            || (!self.line_seen && received.len() > limits.max_request_line);
        self.scanned = received.len();
        first_look || ended || line_now || too_long
    }

    /// Bytes of the next request are arriving (still encrypted, say): its head is due within
    /// the header timeout from now.
    #[cfg(feature = "tls")]
    pub(crate) fn bytes_arrived(&mut self) {
        if self.head_since.is_none() {
            self.head_since = Some(Instant::now());
        }
    }

    /// A request is over: the next one starts from scratch.
    fn done(&mut self) {
        self.first = false;
        self.head_since = None;
        self.scanned = 0;
        self.line_seen = false;
        self.pending = None;
    }

    /// The body the loop is receiving, if it is receiving one.
    fn body(&self) -> Option<&BodyWait> {
        self.pending.as_ref().and_then(|p| p.body.as_ref())
    }
}

impl<S: Service> Driver for HttpSession<S> {
    fn input_limit(&self) -> usize {
        // Room for the largest head the limits allow, and a little to see it is too large;
        // or for the body being received.
        let head = self.http.config.limits.max_head.saturating_add(4096);
        if self.body().is_some() {
            head.max(LOOP_BODY)
        } else {
            head
        }
    }

    fn connected(&mut self) {
        // The first head is due within the header timeout of now, not of when this session
        // was made (the server's probe at bind serves the first connection).
        self.started = Instant::now();
    }

    fn data(&mut self, conn: &mut Conn<'_>) -> Step {
        let limits = self.http.config.head_limits();
        if let Some(body) = self.pending.as_mut().and_then(|p| p.body.as_mut()) {
            return if body.ready(conn.received()) {
                Step::Block
            } else {
                Step::Continue
            };
        }
        loop {
            if conn.received().is_empty() {
                return Step::Continue;
            }
            if conn.output.is_backed_up() {
                // Pipelined requests wait until earlier answers drain (the loop calls again).
                return Step::Continue;
            }
            if self.head_since.is_none() {
                self.head_since = Some(Instant::now());
            }
            if !self.worth_parsing(conn.received()) {
                return Step::Continue;
            }
            let head = match parse::parse_head(conn.received(), &limits) {
                Ok(Parse::Partial) => return Step::Continue,
                Ok(Parse::Complete(head)) => head,
                Err(e) => {
                    return self.refuse(conn, e.status(), "the request could not be parsed");
                }
            };
            conn.consume(head.len);
            let inline = conn.inline
                && self
                    .http
                    .service
                    .runs_inline_for(&super::Method::parse(&head.method));
            if !inline {
                let mut body = self.body_wait(&head);
                if body.as_mut().is_some_and(|b| b.ready(conn.received())) {
                    body = None;
                }
                let waits = body.is_some();
                self.pending = Some(Box::new(Pending {
                    head,
                    at: Instant::now(),
                    body,
                }));
                return if waits { Step::Continue } else { Step::Block };
            }
            let peer = conn.peer;
            let bodyless = is_bodyless(&head);
            let mut wire = OutputWire {
                output: conn.output,
                shutting_down: conn.shutdown.is_shutting_down(),
            };
            let mut io = ConnIo::with_received(&mut wire, Vec::new());
            let keep_alive = self
                .http
                .exchange(&mut io, head, peer, false, Instant::now());
            self.done();
            match keep_alive {
                Ok(true) => {}
                Ok(false) => {
                    self.read_everything = bodyless && conn.received().is_empty();
                    return Step::Close;
                }
                Err(e) => {
                    log::error!("{peer}: {e}");
                    return Step::Close;
                }
            }
        }
    }

    fn eof(&mut self, conn: &mut Conn<'_>) -> Step {
        // A client that half-closes after its requests still gets the answers already queued;
        // an unfinished head is dropped without an answer, as when the connection breaks.
        let _ = conn;
        Step::Close
    }

    fn timed_out(&mut self, conn: &mut Conn<'_>) -> Step {
        if self.body().is_some() {
            self.pending = None;
            return self.refuse(
                conn,
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
        if self.head_since.is_some() && !conn.received().is_empty() {
            self.refuse(
                conn,
                StatusCode::REQUEST_TIMEOUT,
                "the request head did not arrive in time",
            )
        } else {
            Step::Abort
        }
    }

    fn deadline(
        &self,
        last: Instant,
        _timeout: Option<Duration>,
        sending: bool,
    ) -> Option<Instant> {
        let limits = &self.http.config.limits;
        if sending {
            last.checked_add(limits.write_timeout)
        } else if let Some((pending, body)) = self
            .pending
            .as_ref()
            .and_then(|p| Some((p, p.body.as_ref()?)))
        {
            // Each wait within the idle timeout too, as on a worker.
            let idle = last.checked_add(limits.idle_timeout);
            let paced = limits.body_pace().deadline(pending.at, body.got as u64);
            match (paced, idle) {
                (Some(paced), Some(idle)) => Some(paced.min(idle)),
                (paced, idle) => paced.or(idle),
            }
        } else if let Some(since) = self.head_since {
            since.checked_add(limits.header_timeout)
        } else if self.first {
            self.started.checked_add(limits.header_timeout)
        } else {
            last.checked_add(limits.idle_timeout)
        }
    }

    fn read_everything(&self) -> bool {
        self.read_everything
    }

    fn is_idle(&self) -> bool {
        // Before its first request a connection is quiet, not idle (see `Http::next_head`).
        !self.first && self.head_since.is_none() && self.pending.is_none()
    }

    fn is_quiet(&self) -> bool {
        self.first && self.head_since.is_none() && self.pending.is_none()
    }

    fn blocking(
        &mut self,
        request: &mut Request,
        input: &mut Vec<u8>,
        output: &mut Output,
    ) -> Step {
        let peer = request.peer().clone();
        let mut wire = Spill::new(request, output);
        self.serve_pending(&mut wire, &peer, input)
    }
}

impl<S: Service> HttpSession<S> {
    /// On a worker: answers the request whose head the loop parsed, over `wire` (the
    /// connection in blocking mode, or TLS on it); `input` holds the bytes received after the
    /// head and gets back those after the request.
    pub(crate) fn serve_pending(
        &mut self,
        wire: &mut dyn Wire,
        peer: &crate::Address,
        input: &mut Vec<u8>,
    ) -> Step {
        let Some(pending) = self.pending.take() else {
            return Step::Close;
        };
        let Pending { head, at, .. } = *pending;
        let bodyless = is_bodyless(&head);
        let mut io = ConnIo::with_received(wire, std::mem::take(input));
        // A body left unread is not waited for here: a worker never waits on a slow peer.
        let keep_alive = self.http.exchange(&mut io, head, peer, false, at);
        *input = io.into_received();
        self.done();
        match keep_alive {
            Ok(true) => Step::Continue,
            Ok(false) => {
                self.read_everything = bodyless && input.is_empty();
                Step::Close
            }
            Err(e) => {
                log::error!("{peer}: {e}");
                Step::Abort
            }
        }
    }
}

/// The request has no body: nothing of it can follow its head.
fn is_bodyless(head: &parse::Head) -> bool {
    matches!(
        parse::framing(head),
        Ok(parse::Framing::None | parse::Framing::Length(0))
    )
}

impl<S: Service> HttpSession<S> {
    /// Queues an error answer and closes after it.
    fn refuse(&mut self, conn: &mut Conn<'_>, status: StatusCode, detail: &str) -> Step {
        let peer = conn.peer.clone();
        let mut wire = OutputWire {
            output: conn.output,
            shutting_down: true,
        };
        let mut io = ConnIo::with_received(&mut wire, Vec::new());
        let _ = self.http.refuse(&mut io, &peer, "-", status, detail, true);
        self.done();
        Step::Close
    }
}

/// Whether `bytes` hold the end of a head: `\n\n` or `\n\r\n`. One pass from line end to
/// line end, not a window compared at every byte.
fn has_blank_line(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let after = &rest[i + 1..];
        if after.first() == Some(&b'\n') || after.starts_with(b"\r\n") {
            return true;
        }
        rest = after;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_end_heads() {
        assert!(has_blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(has_blank_line(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(has_blank_line(b"\n\r\n"));
        assert!(!has_blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!has_blank_line(b"\r\n\r"));
        assert!(!has_blank_line(b""));
    }

    /// Every idle keep-alive connection holds its session: a request waiting for a worker
    /// is boxed (`Pending`) so that the session stays small (bench/idle_memory.py measures
    /// the whole connection).
    #[test]
    fn a_session_stays_small() {
        let size = std::mem::size_of::<HttpSession<std::sync::Arc<dyn Service>>>();
        assert!(size <= 80, "HttpSession is {size} bytes");
    }
}
