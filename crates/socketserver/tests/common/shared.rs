//! Test support shared by the library's tests and the binary's (`tests/common/mod.rs` of both
//! include this file): a stream client for TCP or Unix, and the one HTTP/1.1 response parser
//! the tests read answers with. Each crate adds its own `Stream::connect` for its address type.
// Each test binary uses part of it.
#![allow(dead_code)]

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A stream client: TCP or Unix.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Read and write timeouts (`None`: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Ends the request: the server reads end of file.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// The client's own address as the server's log shows a peer (`unix:` for Unix).
    pub fn local_addr_string(&self) -> String {
        match self {
            Stream::Tcp(s) => match s.local_addr() {
                Ok(addr) => format!("tcp://{addr}"),
                Err(e) => format!("tcp://(unknown: {e})"),
            },
            Stream::Unix(_) => "unix:".into(),
        }
    }

    /// One `read`, retried on `EINTR` (`read_exact` and `read_to_end` retry by themselves).
    pub fn read_once(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads until the server closes.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One HTTP/1.1 response as received.
#[derive(Debug)]
pub struct HttpReply {
    /// The first line, without its line end.
    pub status_line: String,
    pub status: u16,
    /// The head as text (status line and fields), without the blank line.
    pub head: String,
    /// The fields in order, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The value of the last field `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The value of the last field `name` (case-insensitive) among `headers`.
pub fn header_in<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

/// Parses one response at the start of `bytes`; `head_only` for an answer to `HEAD`; `closed`
/// when nothing more will come (then a body without a length runs to the end, and an
/// incomplete response is an error). Returns the response and how many bytes it took, or
/// `None` while it is incomplete. The body is framed by `Content-Length` or chunked coding.
pub fn parse_reply(
    bytes: &[u8],
    head_only: bool,
    closed: bool,
) -> io::Result<Option<(HttpReply, usize)>> {
    let incomplete = |what: &str| {
        if closed {
            Err(bad(format!(
                "the server closed in the middle of a response ({what}): {:?}",
                shown(bytes)
            )))
        } else {
            Ok(None)
        }
    };
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return incomplete("no complete head");
    };
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("not an HTTP/1.1 status line: {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?} in {head:?}")))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let start = end + 4;
    let rest = &bytes[start..];
    let mut reply = HttpReply {
        status_line,
        status,
        head,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 304 || status == 204 || (100..200).contains(&status) {
        return Ok(Some((reply, start)));
    }
    if let Some(len) = reply.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad Content-Length in {:?}", reply.head)))?;
        if rest.len() < len {
            return incomplete("a shorter body than its Content-Length");
        }
        reply.body = rest[..len].to_vec();
        return Ok(Some((reply, start + len)));
    }
    if reply
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        let mut at = 0;
        loop {
            let Some(line_end) = rest[at..].windows(2).position(|w| w == b"\r\n") else {
                return incomplete("no complete chunk size line");
            };
            let line = String::from_utf8_lossy(&rest[at..at + line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
            let data = at + line_end + 2;
            if size == 0 {
                // No trailers are sent by the servers under test: the last chunk's CRLF ends it.
                if rest.len() < data + 2 {
                    return incomplete("no end of the chunked body");
                }
                return Ok(Some((reply, start + data + 2)));
            }
            if rest.len() < data + size + 2 {
                return incomplete("a partial chunk");
            }
            reply.body.extend_from_slice(&rest[data..data + size]);
            at = data + size + 2;
        }
    }
    if !closed {
        return Ok(None); // delimited by the close
    }
    reply.body = rest.to_vec();
    Ok(Some((reply, bytes.len())))
}

/// Reads one response from `r`, taking from it exactly that response's bytes (a pipelined
/// next one stays in `r`); `head_only` for an answer to `HEAD`.
pub fn read_reply(r: &mut impl BufRead, head_only: bool) -> io::Result<HttpReply> {
    let mut got = Vec::new();
    loop {
        let available = r.fill_buf()?;
        let n = available.len();
        got.extend_from_slice(available);
        match parse_reply(&got, head_only, n == 0)? {
            Some((reply, used)) => {
                // What this read added beyond the response stays in `r`.
                r.consume(n.saturating_sub(got.len() - used));
                return Ok(reply);
            }
            None => r.consume(n),
        }
    }
}

/// A whole response read up to the server's close, which must hold exactly one response.
pub fn parse_whole_reply(bytes: &[u8]) -> io::Result<HttpReply> {
    let (reply, used) = parse_reply(bytes, false, true)?
        .ok_or_else(|| bad(format!("no response in {:?}", shown(bytes))))?;
    if used != bytes.len() {
        return Err(bad(format!(
            "{} bytes after the response: {:?}",
            bytes.len() - used,
            shown(&bytes[used..])
        )));
    }
    Ok(reply)
}
