//! The handlers of Python's socketserver documentation, as library types.

use std::io::{self, BufRead, Read, Write};

use crate::{Handler, Request};

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
}

/// The most bytes [`Upper`] reads as its line.
pub const UPPER_MAX_LINE: u64 = 64 * 1024;

/// Python's `MyTCPHandler`: reads one line (through `\n`, or to end of file when none comes; at
/// most 64 KiB), replies with it stripped of ASCII whitespace and upper-cased (ASCII), without a
/// newline, then closes. For a datagram the whole datagram is the line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Upper;

impl Handler for Upper {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        let mut line = Vec::new();
        if req.is_datagram() {
            req.read_to_end(&mut line)?;
        } else {
            Read::take(&mut *req, UPPER_MAX_LINE).read_until(b'\n', &mut line)?;
        }
        let mut reply = line.trim_ascii().to_vec();
        reply.make_ascii_uppercase();
        req.write_all(&reply)?;
        req.flush()
    }
}

/// The most bytes [`ThreadName`] reads.
pub const THREADNAME_MAX: usize = 1024;

/// Python's `ThreadedTCPRequestHandler`: reads what arrives in one receive (at most 1024 bytes)
/// and replies `<worker name>: <data>`, then closes. The worker name is
/// [`worker_name`](crate::worker_name): the thread's name, or `pid-<pid>` in a forked child.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadName;

impl Handler for ThreadName {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        let mut data = [0u8; THREADNAME_MAX];
        let n = req.read(&mut data)?;
        let mut reply = format!("{}: ", crate::worker_name()).into_bytes();
        reply.extend_from_slice(&data[..n]);
        req.write_all(&reply)?;
        req.flush()
    }
}
