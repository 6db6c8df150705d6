//! `Response`: status, headers and a body, and how it goes on the wire.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};

use super::compress::{self, Compression, Encoder, Encoding};
use super::{Request, StatusCode};
use crate::mode::engine::{Produce, Produced};

/// What a response carries after its head.
#[non_exhaustive]
pub enum ResponseBody {
    /// No body (`Content-Length: 0`).
    Empty,
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// `len` bytes of a file from `offset`: sent with `sendfile(2)` where the transport
    /// allows, never read whole into memory.
    File {
        /// The open file.
        file: File,
        /// Where to start.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// A stream of unknown length: sent chunked to HTTP/1.1 clients, and to HTTP/1.0 clients
    /// until the connection closes.
    Reader(Box<dyn Read + Send>),
    /// Pieces sent one after the other, of a known total length: bytes in memory and ranges
    /// of files (each with `sendfile(2)` where the transport allows). A
    /// `multipart/byteranges` answer is made of these.
    Pieces(Vec<Piece>),
    /// A body compressed as it is sent (see [`Response::compress`]): of unknown length, so
    /// sent chunked to HTTP/1.1 clients and until the connection closes to HTTP/1.0 ones. On
    /// an event loop it is made a bounded step at a time as the socket drains.
    Encoded(Box<Encoder>),
}

/// One piece of a [`ResponseBody::Pieces`] body.
pub enum Piece {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `offset`.
    File {
        /// The open file (a `try_clone` of one shared by the pieces is fine).
        file: File,
        /// Where to start.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::File { len, .. } => *len,
        }
    }
}

impl fmt::Debug for Piece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Piece::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Piece::File { offset, len, .. } => {
                write!(f, "File {{ offset: {offset}, len: {len} }}")
            }
        }
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseBody::Empty => f.write_str("Empty"),
            ResponseBody::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            ResponseBody::File { offset, len, .. } => {
                write!(f, "File {{ offset: {offset}, len: {len} }}")
            }
            ResponseBody::Reader(_) => f.write_str("Reader"),
            ResponseBody::Pieces(pieces) => write!(f, "Pieces({pieces:?})"),
            ResponseBody::Encoded(encoder) => write!(f, "{encoder:?}"),
        }
    }
}

/// An HTTP response under construction.
///
/// The server adds `Date`, `Server`, `Content-Length` or `Transfer-Encoding`, and
/// `Connection`; framing headers set here are replaced, so a response cannot lie about its
/// length.
///
/// ```
/// use socketserver::http::{Response, StatusCode};
///
/// let response = Response::text(StatusCode::NOT_FOUND, "no such page\n").header("Cache-Control", "no-store");
/// assert_eq!(response.status(), StatusCode::NOT_FOUND);
/// ```
#[derive(Debug)]
pub struct Response {
    pub(crate) status: StatusCode,
    /// Names and values; the server's own are `&'static` text where they can be, so most
    /// answers allocate nothing for them.
    pub(crate) headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    pub(crate) body: ResponseBody,
}

impl Response {
    /// A response with `status`, no headers and no body.
    pub fn new(status: StatusCode) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: ResponseBody::Empty,
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: StatusCode, text: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(text.into().into_bytes())
    }

    /// A `text/html; charset=utf-8` response.
    pub fn html(status: StatusCode, html: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/html; charset=utf-8")
            .body(html.into().into_bytes())
    }

    /// A short plain-text error page: the status line as the body (`404 Not Found`), plus an
    /// explanation when given.
    pub fn error(status: StatusCode, detail: &str) -> Response {
        let mut text = format!("{status}\n");
        if !detail.is_empty() {
            text.push_str(detail);
            text.push('\n');
        }
        Response::text(status, text)
    }

    /// Adds a header. Names are sent as given; values must not contain CR or LF (such a
    /// header is dropped when sent, rather than let it split the response).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers
            .push((Cow::Owned(name.into()), Cow::Owned(value.into())));
        self
    }

    /// [`header`](Self::header) for the server's own headers: a name known in advance, and
    /// a value that need not be copied when it is known in advance too.
    pub(crate) fn set(
        mut self,
        name: &'static str,
        value: impl Into<Cow<'static, str>>,
    ) -> Response {
        self.headers.push((Cow::Borrowed(name), value.into()));
        self
    }

    /// Sets the body to these bytes.
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Response {
        self.body = ResponseBody::Bytes(bytes.into());
        self
    }

    /// Sets the body to `len` bytes of `file` from `offset`.
    pub fn file(mut self, file: File, offset: u64, len: u64) -> Response {
        self.body = ResponseBody::File { file, offset, len };
        self
    }

    /// Sets the body to a stream of unknown length (sent chunked).
    pub fn reader(mut self, reader: impl Read + Send + 'static) -> Response {
        self.body = ResponseBody::Reader(Box::new(reader));
        self
    }

    /// Sets the body to a compressed stream (see [`Encoder`]); `Content-Encoding` is the
    /// caller's to set.
    pub(crate) fn encoded(mut self, encoder: Encoder) -> Response {
        self.body = ResponseBody::Encoded(Box::new(encoder));
        self
    }

    /// Sets the body to `pieces`, sent in order with their total length (see
    /// [`ResponseBody::Pieces`]).
    pub fn pieces(mut self, pieces: Vec<Piece>) -> Response {
        self.body = ResponseBody::Pieces(pieces);
        self
    }

    /// Compresses the body as it is sent, if `req` accepts a coding `settings` produces and
    /// the response is worth it: a `200` (or `404` page) whose `Content-Type` is
    /// [`compressible`](super::compressible), of at least the settings' minimum size, with a
    /// body in memory or from a file, not already encoded. The response then carries
    /// `Content-Encoding`, and `Vary: Accept-Encoding` in any case where it could have been
    /// compressed (caches must not hand one client's coding to another). A strong `ETag` gets
    /// the coding's name inside its quotes, as the bytes differ. For a service of your own:
    ///
    /// ```
    /// use socketserver::http::{self, Compression, Response, StatusCode};
    ///
    /// let settings = Compression::default();
    /// let service = move |req: &mut http::Request<'_>| {
    ///     let report = "a long report\n".repeat(500);
    ///     Response::text(StatusCode::OK, report).compress(req, &settings)
    /// };
    /// # let _ = service;
    /// ```
    pub fn compress(self, req: &Request<'_>, settings: &Compression) -> Response {
        if !self.may_compress(settings) {
            return self;
        }
        let accepted = Encoding::negotiate(req.header("accept-encoding"));
        let response = self.vary_accept_encoding();
        match settings.on_the_fly(&accepted) {
            Some((encoding, level)) => response.encode(encoding, level),
            None => response,
        }
    }

    /// Whether [`compress`](Self::compress) would consider this response (before asking
    /// what the client accepts).
    pub(crate) fn may_compress(&self, settings: &Compression) -> bool {
        let len = match &self.body {
            ResponseBody::Bytes(b) => b.len() as u64,
            ResponseBody::File { len, .. } => *len,
            _ => return false,
        };
        matches!(self.status, StatusCode::OK | StatusCode::NOT_FOUND)
            && len >= settings.min_size_of()
            && self.header_value("content-encoding").is_none()
            && self.header_value("content-range").is_none()
            && self
                .header_value("content-type")
                .is_some_and(compress::compressible)
    }

    /// Adds `Accept-Encoding` to `Vary` (once).
    pub(crate) fn vary_accept_encoding(mut self) -> Response {
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case("vary"))
        {
            Some((_, value)) => {
                if !value
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case("accept-encoding"))
                {
                    value.to_mut().push_str(", Accept-Encoding");
                }
            }
            None => self
                .headers
                .push((Cow::Borrowed("Vary"), Cow::Borrowed("Accept-Encoding"))),
        }
        self
    }

    /// Compresses the body with `encoding` at `level`: `Content-Encoding` set, `ETag` marked
    /// with the coding. A body that is neither bytes nor a file range is left as it is.
    pub(crate) fn encode(mut self, encoding: Encoding, level: i32) -> Response {
        let encoder = match std::mem::replace(&mut self.body, ResponseBody::Empty) {
            ResponseBody::Bytes(b) => Encoder::bytes(b, encoding, level),
            ResponseBody::File { file, offset, len } => {
                Encoder::file(file, offset, len, encoding, level)
            }
            other => {
                self.body = other;
                return self;
            }
        };
        match encoder {
            Ok(encoder) => {
                self.body = ResponseBody::Encoded(Box::new(encoder));
                self.encoded_as(encoding)
            }
            // The coding could not start (out of memory in libzstd): an error page rather
            // than a body that lies about its coding.
            Err(e) => {
                log::warn!("compression with {} failed to start: {e}", encoding.token());
                Response::error(StatusCode::INTERNAL_SERVER_ERROR, "")
            }
        }
    }

    /// Marks the response as encoded with `encoding`: `Content-Encoding`, and the coding's
    /// name inside a strong `ETag`'s quotes.
    pub(crate) fn encoded_as(mut self, encoding: Encoding) -> Response {
        for (name, value) in &mut self.headers {
            if name.eq_ignore_ascii_case("etag") {
                *value = Cow::Owned(compress::tag_for(value, encoding));
            }
        }
        self.set("Content-Encoding", encoding.token())
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

/// How the connection goes on after a response.
pub(crate) struct Sent {
    /// Body bytes written (for the access log).
    pub(crate) bytes: u64,
    /// Body bytes of a compressed body, counted as they are made (for the access log, read
    /// once the body has gone out).
    pub(crate) streamed: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The body's end was marked by closing the connection (HTTP/1.0, unknown length).
    pub(crate) close_delimited: bool,
}

/// File bodies up to this size are read and written with the head instead of sent with
/// `sendfile(2)` after it.
const SMALL_FILE: u64 = 16 * 1024;

const FRAMING: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

/// Writes `response` to `out`. `head_only` for HEAD (the head says what GET would send).
/// `http11`: the client speaks HTTP/1.1 (chunked encoding is allowed). `keep_alive`: whether
/// the connection stays open after this response.
pub(crate) fn write_response(
    out: &mut dyn super::wire::Wire,
    response: Response,
    head_only: bool,
    http11: bool,
    keep_alive: bool,
    server: &str,
    always: &[(String, String)],
) -> io::Result<Sent> {
    let Response {
        status,
        headers,
        body,
    } = response;
    // A static file's head is 300-400 bytes: room for it at once, no growing.
    let mut head = String::with_capacity(512);
    write_head(
        &mut head,
        format_args!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.reason()),
    );
    head.push_str("Date: ");
    super::dates::push_now(&mut head, super::dates::Form::Http);
    head.push_str("\r\nServer: ");
    head.push_str(server);
    head.push_str("\r\n");
    for (name, value) in &headers {
        if FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f))
            || name.eq_ignore_ascii_case("date")
            || name.eq_ignore_ascii_case("server")
        {
            continue;
        }
        if name.is_empty() || has_line_break(name) || has_line_break(value) {
            log::warn!("dropped a response header with a line break or an empty name: {name:?}");
            continue;
        }
        write_head(&mut head, format_args!("{name}: {value}\r\n"));
    }
    // The server's own headers (`Http::header`, CORS), unless the response set its own.
    for (name, value) in always {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            write_head(&mut head, format_args!("{name}: {value}\r\n"));
        }
    }
    let no_body = status.forbids_body();
    let mut close_delimited = false;
    if !no_body {
        match &body {
            ResponseBody::Empty => head.push_str("Content-Length: 0\r\n"),
            ResponseBody::Bytes(b) => {
                write_head(&mut head, format_args!("Content-Length: {}\r\n", b.len()))
            }
            ResponseBody::File { len, .. } => {
                write_head(&mut head, format_args!("Content-Length: {len}\r\n"))
            }
            ResponseBody::Pieces(pieces) => write_head(
                &mut head,
                format_args!(
                    "Content-Length: {}\r\n",
                    pieces.iter().map(Piece::len).sum::<u64>()
                ),
            ),
            ResponseBody::Reader(_) | ResponseBody::Encoded(_) if http11 => {
                head.push_str("Transfer-Encoding: chunked\r\n")
            }
            ResponseBody::Reader(_) | ResponseBody::Encoded(_) => close_delimited = !head_only,
        }
    }
    if !keep_alive || close_delimited {
        head.push_str("Connection: close\r\n");
    } else if !http11 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let mut bytes = 0;
    let mut streamed = None;
    if !head_only && !no_body {
        match body {
            ResponseBody::Empty => {}
            ResponseBody::Bytes(b) => {
                out.write_all(&b)?;
                bytes = b.len() as u64;
            }
            ResponseBody::File { file, offset, len } if len <= SMALL_FILE => {
                // One write with the head beats a second system call (and packet) for a
                // few bytes: read them, into a buffer the thread keeps (neither allocated
                // nor zeroed per request).
                read_small(&file, offset, len, out)?;
                bytes = len;
            }
            ResponseBody::File { file, offset, len } => {
                out.send_file(file, offset, len)?;
                bytes = len;
            }
            ResponseBody::Pieces(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Bytes(b) => {
                            out.write_all(&b)?;
                            bytes += b.len() as u64;
                        }
                        Piece::File { file, offset, len } => {
                            out.send_file(file, offset, len)?;
                            bytes += len;
                        }
                    }
                }
            }
            ResponseBody::Encoded(encoder) => {
                streamed = Some(encoder.produced());
                out.send_stream(Box::new(Framed {
                    encoder: *encoder,
                    chunked: http11,
                    piece: Vec::new(),
                }))?;
            }
            ResponseBody::Reader(mut reader) => {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if http11 {
                        out.write_all(format!("{n:x}\r\n").as_bytes())?;
                        out.write_all(&buf[..n])?;
                        out.write_all(b"\r\n")?;
                    } else {
                        out.write_all(&buf[..n])?;
                    }
                    bytes += n as u64;
                }
                if http11 {
                    out.write_all(b"0\r\n\r\n")?;
                }
            }
        }
    }
    out.flush()?;
    Ok(Sent {
        bytes,
        streamed,
        close_delimited,
    })
}

/// A compressed body with its framing: chunks of what each step made (HTTP/1.1), or the bytes
/// as they are (HTTP/1.0, until the connection closes).
struct Framed {
    encoder: Encoder,
    chunked: bool,
    piece: Vec<u8>,
}

impl Produce for Framed {
    fn produce(&mut self, out: &mut Vec<u8>) -> io::Result<Produced> {
        if !self.chunked {
            let stepped = self.encoder.step(out)?;
            return Ok(Produced {
                work: stepped.work,
                done: stepped.done,
            });
        }
        self.piece.clear();
        let stepped = self.encoder.step(&mut self.piece)?;
        if !self.piece.is_empty() {
            use std::io::Write as _;
            let _ = write!(out, "{:x}\r\n", self.piece.len());
            out.extend_from_slice(&self.piece);
            out.extend_from_slice(b"\r\n");
        }
        if stepped.done {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(Produced {
            work: stepped.work,
            done: stepped.done,
        })
    }
}

/// Writes `len` (at most [`SMALL_FILE`]) bytes of `file` from `offset` to `out`, read into a
/// buffer the thread keeps.
fn read_small(
    file: &File,
    offset: u64,
    len: u64,
    out: &mut dyn super::wire::Wire,
) -> io::Result<()> {
    use std::cell::RefCell;
    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let len = usize::try_from(len.min(SMALL_FILE)).unwrap_or(0);
    let mut copy = |buf: &mut Vec<u8>| -> io::Result<()> {
        if buf.len() < len {
            buf.resize(SMALL_FILE as usize, 0);
        }
        std::os::unix::fs::FileExt::read_exact_at(file, &mut buf[..len], offset)?;
        out.write_all(&buf[..len])
    };
    match BUF.try_with(|buf| buf.try_borrow_mut().map(|mut b| copy(&mut b))) {
        Ok(Ok(done)) => done,
        // The thread is ending (its buffer is gone) or the buffer is in use: one of its own.
        _ => copy(&mut Vec::new()),
    }
}

/// Appends to the response head without a temporary `String` per line.
fn write_head(head: &mut String, line: std::fmt::Arguments<'_>) {
    use std::fmt::Write as _;
    // Writing into a `String` cannot fail.
    let _ = head.write_fmt(line);
}

fn has_line_break(text: &str) -> bool {
    text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}
