//! The handlers of Python's socketserver documentation, as library types.

use std::io::{self, Read, Write};

use crate::protocol::drive_blocking;
use crate::{Conn, Flow, Handler, Protocol, Request, Session};

/// Echoes every byte back. Stream: until the client closes its side, then closes. Datagram:
/// each datagram goes back to its sender unchanged (an empty one too).
///
/// ```
/// use socketserver::{Server, services::Echo};
/// use std::io::{Read, Write};
///
/// let server = Server::builder("tcp://127.0.0.1:0".parse()?).bind(Echo)?;
/// let addr = server.local_addr().socket_addr().unwrap();
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"ping")?;
/// client.shutdown(std::net::Shutdown::Write)?;
/// let mut echoed = Vec::new();
/// client.read_to_end(&mut echoed)?;
/// assert_eq!(echoed, b"ping");
///
/// stop.shutdown();
/// serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = req.read(&mut buf)?;
            if n == 0 {
                break;
            }
            req.write_all(&buf[..n])?;
        }
        req.flush()
    }

    fn session(&self) -> Option<Session> {
        Some(Session::new(EchoProtocol))
    }
}

/// [`Echo`] for the event loop.
struct EchoProtocol;

impl Protocol for EchoProtocol {
    fn data_received(&mut self, conn: &mut Conn<'_>) -> Flow {
        let n = conn.received().len();
        conn.output.write(&conn.input.bytes()[..n]);
        conn.consume(n);
        Flow::Continue
    }

    fn eof_received(&mut self, conn: &mut Conn<'_>) -> Flow {
        if conn.is_datagram() {
            // An empty datagram is echoed too.
            conn.write(b"");
        }
        Flow::Close
    }
}

/// The most bytes [`Upper`] reads as its line.
pub const UPPER_MAX_LINE: u64 = 64 * 1024;

/// Python's `MyTCPHandler`: reads one line (through `\n`, or to end of file when none comes; at
/// most 64 KiB), replies with it stripped of ASCII whitespace and upper-cased (ASCII), without a
/// newline, then closes. For a datagram the whole datagram is the line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Upper;

/// The blocking form is the protocol's, driven over the `Request` (as
/// [`ProtocolHandler`](crate::ProtocolHandler) does), so every mode answers alike.
impl Handler for Upper {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        drive_blocking(&mut UpperProtocol, req)
    }

    fn session(&self) -> Option<Session> {
        Some(Session::new(UpperProtocol))
    }
}

/// [`Upper`]: waits for the newline (or end of file, or the 64 KiB limit); a datagram is
/// answered whole at its end.
struct UpperProtocol;

impl UpperProtocol {
    fn reply(conn: &mut Conn<'_>, len: usize) -> Flow {
        let mut reply = conn.received()[..len].trim_ascii().to_vec();
        reply.make_ascii_uppercase();
        conn.write(&reply);
        conn.consume(len);
        Flow::Close
    }
}

impl Protocol for UpperProtocol {
    fn data_received(&mut self, conn: &mut Conn<'_>) -> Flow {
        if conn.is_datagram() {
            return Flow::Continue; // the whole datagram is the line: answered at its end
        }
        let limit = UPPER_MAX_LINE as usize;
        let window = &conn.received()[..conn.received().len().min(limit)];
        match window.iter().position(|&b| b == b'\n') {
            Some(end) => Self::reply(conn, end + 1),
            None if window.len() >= limit => Self::reply(conn, limit),
            None => Flow::Continue,
        }
    }

    fn eof_received(&mut self, conn: &mut Conn<'_>) -> Flow {
        let len = if conn.is_datagram() {
            conn.received().len()
        } else {
            conn.received().len().min(UPPER_MAX_LINE as usize)
        };
        Self::reply(conn, len)
    }
}

/// The most bytes [`ThreadName`] reads.
pub const THREADNAME_MAX: usize = 1024;

/// Python's `ThreadedTCPRequestHandler`: reads what arrives in one receive (at most 1024 bytes)
/// and replies `<worker name>: <data>`, then closes. The worker name is
/// [`worker_name`](crate::worker_name): the thread's name, or `pid-<pid>` in a forked child.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadName;

/// The blocking form is the protocol's, driven over the `Request`, so every mode answers
/// alike.
impl Handler for ThreadName {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        drive_blocking(&mut ThreadNameProtocol, req)
    }

    fn session(&self) -> Option<Session> {
        Some(Session::new(ThreadNameProtocol))
    }
}

/// [`ThreadName`]: answers the first receive (at most [`THREADNAME_MAX`] bytes of it).
struct ThreadNameProtocol;

impl ThreadNameProtocol {
    fn reply(conn: &mut Conn<'_>) -> Flow {
        let n = conn.received().len().min(THREADNAME_MAX);
        let mut reply = format!("{}: ", crate::worker_name()).into_bytes();
        reply.extend_from_slice(&conn.received()[..n]);
        conn.write(&reply);
        conn.consume(n);
        Flow::Close
    }
}

impl Protocol for ThreadNameProtocol {
    fn data_received(&mut self, conn: &mut Conn<'_>) -> Flow {
        Self::reply(conn)
    }

    fn eof_received(&mut self, conn: &mut Conn<'_>) -> Flow {
        Self::reply(conn)
    }
}
