//! `http::Request`: the parsed head plus a reader for the body.

use std::fmt;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::parse::{ChunkedDecoder, Framing};
use super::wire::Source;
use crate::Address;

/// The request method. The standard methods of RFC 9110 (plus PATCH) have variants; anything
/// else is kept as [`Method::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `PATCH`
    Patch,
    /// `TRACE`
    Trace,
    /// `CONNECT`
    Connect,
    /// Any other token, as sent (methods are case-sensitive).
    Other(String),
}

impl Method {
    pub(crate) fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            "TRACE" => Method::Trace,
            "CONNECT" => Method::Connect,
            other => Method::Other(other.to_string()),
        }
    }

    /// The method as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Trace => "TRACE",
            Method::Connect => "CONNECT",
            Method::Other(token) => token,
        }
    }

    /// True for the methods this crate knows (every variant but `Other`): a server that does
    /// not support one answers `405 Method Not Allowed`, an unknown one `501 Not Implemented`.
    pub fn is_known(&self) -> bool {
        !matches!(self, Method::Other(_))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Version {
    /// HTTP/1.0: connections close after each response unless the client asks otherwise.
    Http10,
    /// HTTP/1.1: connections stay open unless either side says `Connection: close`.
    Http11,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        })
    }
}

/// The least pace a request body must keep: after `grace` from its first read, at least
/// `rate` bytes a second on average (Apache's `mod_reqtimeout` `MinRate`), so a client
/// trickling a body holds its worker for a bounded time, however steadily it trickles.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    pub(crate) grace: Duration,
    /// Bytes a second; 0 sets no rate (only the per-read timeout applies).
    pub(crate) rate: u64,
}

impl Pace {
    /// When `received` bytes of a body whose first read was at `started` must have been
    /// followed by more (`None`: no deadline).
    pub(crate) fn deadline(&self, started: Instant, received: u64) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let earned = Duration::from_secs(received / self.rate)
            + Duration::from_nanos(
                (received % self.rate).saturating_mul(1_000_000_000) / self.rate,
            );
        started.checked_add(self.grace)?.checked_add(earned)
    }
}

enum BodyState {
    Empty,
    Length(u64),
    Chunked {
        decoder: ChunkedDecoder,
        pending: Vec<u8>,
        at: usize,
        done: bool,
    },
}

/// The body of a request, as a reader. Reading it answers `Expect: 100-continue` first.
///
/// Reads fail with `InvalidData` once the body exceeds [`Limits::max_body`](super::Limits),
/// or when its chunked encoding is malformed.
pub struct Body<'r> {
    io: &'r mut (dyn Source + 'r),
    state: BodyState,
    continue_pending: bool,
    read: u64,
    max: u64,
    failed: bool,
    clock: BodyClock,
}

/// A body's deadline as it arrives: when it became due, and the bytes received since.
#[derive(Debug)]
struct BodyClock {
    pace: Pace,
    started: Option<Instant>,
    received: u64,
}

impl BodyClock {
    /// Reads more of the body from the connection, before the deadline its pace sets.
    fn fill(&mut self, io: &mut dyn Source) -> io::Result<usize> {
        let started = *self.started.get_or_insert_with(Instant::now);
        io.set_read_deadline(self.pace.deadline(started, self.received));
        let n = io.fill()?;
        self.received = self.received.saturating_add(n as u64);
        Ok(n)
    }
}

impl<'r> Body<'r> {
    /// The bytes still to come when the length is known (`Content-Length`, or none at all):
    /// before any read, the whole announced length. `None` for a chunked body.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            BodyState::Empty => Some(0),
            BodyState::Length(n) => Some(n),
            BodyState::Chunked { .. } => None,
        }
    }

    pub(crate) fn new(
        io: &'r mut (dyn Source + 'r),
        framing: Framing,
        expect_continue: bool,
        max: u64,
        pace: Pace,
        since: Instant,
    ) -> Body<'r> {
        let state = match framing {
            Framing::None | Framing::Length(0) => BodyState::Empty,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked {
                decoder: ChunkedDecoder::new(),
                pending: Vec::new(),
                at: 0,
                done: false,
            },
        };
        let continue_pending = expect_continue && !matches!(state, BodyState::Empty);
        // What already arrived with the head, or while the event loop received the body,
        // earns its time as if read here.
        let arrived = io.buffered().len() as u64;
        let arrived = match framing {
            Framing::Length(n) => arrived.min(n),
            Framing::Chunked => arrived,
            Framing::None => 0,
        };
        Body {
            io,
            state,
            continue_pending,
            read: 0,
            max,
            failed: false,
            // The body is due from the end of its head, or from the `100 Continue` the
            // client waits for.
            clock: BodyClock {
                pace,
                started: (!continue_pending).then_some(since),
                received: arrived,
            },
        }
    }

    /// True when the whole body has been read (or there is none), so the connection is at
    /// the start of the next request.
    pub(crate) fn is_complete(&self) -> bool {
        !self.failed
            && match &self.state {
                BodyState::Empty => true,
                BodyState::Length(left) => *left == 0,
                BodyState::Chunked {
                    done, pending, at, ..
                } => *done && *at >= pending.len(),
            }
    }

    /// True while a `100 Continue` was owed but never sent (the service did not read).
    pub(crate) fn continue_pending(&self) -> bool {
        self.continue_pending
    }

    /// Reads and discards what is left of the body, at most `limit` bytes; with `wait` false
    /// only what has already arrived. Returns whether the body is now complete.
    pub(crate) fn discard(&mut self, limit: u64, wait: bool) -> bool {
        if self.continue_pending {
            return false;
        }
        let mut sink = [0u8; 8 * 1024];
        let mut discarded = 0u64;
        while !self.is_complete() && discarded < limit {
            let decoded = matches!(&self.state, BodyState::Chunked { pending, at, .. } if *at < pending.len());
            if !wait && !decoded && self.io.buffered().is_empty() {
                break;
            }
            match self.read(&mut sink) {
                Ok(0) | Err(_) => return false,
                Ok(n) => discarded += n as u64,
            }
        }
        self.is_complete()
    }

    fn send_continue(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            self.clock.started = Some(Instant::now());
            self.io.interim(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        Ok(())
    }

    fn too_large(&mut self) -> io::Error {
        self.failed = true;
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the request body is larger than the limit of {} bytes",
                self.max
            ),
        )
    }
}

impl Read for Body<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.failed {
            return Ok(0);
        }
        self.send_continue()?;
        let n = match &mut self.state {
            BodyState::Empty => 0,
            BodyState::Length(left) => {
                if *left == 0 {
                    return Ok(0);
                }
                if self.io.buffered().is_empty() && self.clock.fill(&mut *self.io)? == 0 {
                    self.failed = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed before sending the whole body",
                    ));
                }
                let available = self.io.buffered();
                let n = available
                    .len()
                    .min(out.len())
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                out[..n].copy_from_slice(&available[..n]);
                self.io.consume(n);
                *left -= n as u64;
                n
            }
            BodyState::Chunked {
                decoder,
                pending,
                at,
                done,
            } => {
                while *at >= pending.len() && !*done {
                    pending.clear();
                    *at = 0;
                    if self.io.buffered().is_empty() && self.clock.fill(&mut *self.io)? == 0 {
                        self.failed = true;
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed inside a chunked body",
                        ));
                    }
                    let (used, finished) = match decoder.decode(self.io.buffered(), pending) {
                        Ok(pair) => pair,
                        Err(e) => {
                            self.failed = true;
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("malformed chunked body: {e:?}"),
                            ));
                        }
                    };
                    self.io.consume(used);
                    *done = finished;
                }
                let n = (pending.len() - *at).min(out.len());
                out[..n].copy_from_slice(&pending[*at..*at + n]);
                *at += n;
                n
            }
        };
        self.read += n as u64;
        if self.read > self.max {
            return Err(self.too_large());
        }
        Ok(n)
    }
}

impl fmt::Debug for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("read", &self.read)
            .field("complete", &self.is_complete())
            .finish()
    }
}

/// One HTTP request: method, target, version, headers, and the body as a reader.
///
/// The HTTP counterpart of [`crate::Request`], written `http::Request` at call sites.
pub struct Request<'r> {
    pub(crate) method: Method,
    pub(crate) target: String,
    pub(crate) path_len: usize,
    pub(crate) version: Version,
    pub(crate) headers: super::parse::Fields,
    pub(crate) peer: Address,
    pub(crate) body: Body<'r>,
}

impl<'r> Request<'r> {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target as sent: path and query, still percent-encoded.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The path part of the target, still percent-encoded (`/a%20b` for `/a%20b?x=1`).
    pub fn path(&self) -> &str {
        &self.target[..self.path_len]
    }

    /// The query part of the target without the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target
            .get(self.path_len..)
            .and_then(|q| q.strip_prefix('?'))
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Every header field in the order received: name as sent, raw value.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter()
    }

    /// The first value of the header `name` (case-insensitive), raw.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The first value of the header `name` (case-insensitive) as text, trimmed; `None` if
    /// absent or not valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// The client's address.
    pub fn peer(&self) -> &Address {
        &self.peer
    }

    /// The body, as a reader. Empty for requests without one.
    pub fn body(&mut self) -> &mut Body<'r> {
        &mut self.body
    }

    /// Reads the whole body into memory (bounded by `Limits::max_body`).
    pub fn read_body(&mut self) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.body.read_to_end(&mut data)?;
        Ok(data)
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("version", &self.version)
            .field("peer", &self.peer)
            .finish()
    }
}
