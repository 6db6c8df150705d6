//! `Response`: status, headers and a body, and how it goes on the wire.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};

use super::StatusCode;

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
    pub(crate) headers: Vec<(String, String)>,
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
        self.headers.push((name.into(), value.into()));
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

    /// Sets the body to `pieces`, sent in order with their total length (see
    /// [`ResponseBody::Pieces`]).
    pub fn pieces(mut self, pieces: Vec<Piece>) -> Response {
        self.body = ResponseBody::Pieces(pieces);
        self
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
            .map(|(_, v)| v.as_str())
    }
}

/// How the connection goes on after a response.
pub(crate) struct Sent {
    /// Body bytes written (for the access log).
    pub(crate) bytes: u64,
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
    let mut head = String::with_capacity(256);
    write_head(
        &mut head,
        format_args!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.reason()),
    );
    write_head(
        &mut head,
        format_args!(
            "Date: {}\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        ),
    );
    write_head(&mut head, format_args!("Server: {server}\r\n"));
    for (name, value) in &headers {
        let lower = name.to_ascii_lowercase();
        if FRAMING.contains(&lower.as_str()) || lower == "date" || lower == "server" {
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
            ResponseBody::Reader(_) if http11 => head.push_str("Transfer-Encoding: chunked\r\n"),
            ResponseBody::Reader(_) => close_delimited = !head_only,
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
    if !head_only && !no_body {
        match body {
            ResponseBody::Empty => {}
            ResponseBody::Bytes(b) => {
                out.write_all(&b)?;
                bytes = b.len() as u64;
            }
            ResponseBody::File { file, offset, len } if len <= SMALL_FILE => {
                // One write with the head beats a second system call (and packet) for a
                // few bytes: read them.
                let mut data = vec![0; usize::try_from(len).unwrap_or(0)];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, offset)?;
                out.write_all(&data)?;
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
        close_delimited,
    })
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
