//! mio peer for bench/run: `mio_echo ADDR [echo|upper]`, one thread, one epoll loop.
//!
//! - `echo` (default): copy every byte back until EOF.
//! - `upper`: Python's documented MyTCPHandler: read one line, reply with it stripped and
//!   upper-cased (no newline), close.
//!
//! Edge-triggered: each readiness event is drained until `WouldBlock`. A reply that does not
//! fit in the socket buffer is kept and finished on the next writable event; reading from that
//! connection pauses meanwhile (backpressure).
//! Prints `listening on tcp://IP:PORT` on stdout, flushed.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
const MAX_LINE: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet written back (echo), or the line so far (upper).
    pending: Vec<u8>,
    /// How much of `pending` has been written (echo), or whether the reply is built (upper).
    written: usize,
    replying: bool,
}

/// What to do with a connection after handling an event.
enum Next {
    Keep,
    Close,
}

fn drive_echo(conn: &mut Conn, buf: &mut [u8]) -> Next {
    loop {
        // Finish a partial write first.
        while conn.written < conn.pending.len() {
            match conn.stream.write(&conn.pending[conn.written..]) {
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        conn.pending.clear();
        conn.written = 0;
        match conn.stream.read(buf) {
            Ok(0) => return Next::Close,
            Ok(n) => match conn.stream.write(&buf[..n]) {
                Ok(w) if w == n => {}
                Ok(w) => conn.pending.extend_from_slice(&buf[w..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    conn.pending.extend_from_slice(&buf[..n])
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    conn.pending.extend_from_slice(&buf[..n])
                }
                Err(_) => return Next::Close,
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

fn drive_upper(conn: &mut Conn, buf: &mut [u8]) -> Next {
    while !conn.replying {
        match conn.stream.read(buf) {
            Ok(0) => conn.replying = true,
            Ok(n) => {
                conn.pending.extend_from_slice(&buf[..n]);
                if let Some(i) = conn.pending.iter().position(|&b| b == b'\n') {
                    conn.pending.truncate(i + 1);
                    conn.replying = true;
                } else if conn.pending.len() >= MAX_LINE {
                    conn.pending.truncate(MAX_LINE);
                    conn.replying = true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
        if conn.replying {
            conn.pending = conn.pending.trim_ascii().to_ascii_uppercase();
        }
    }
    while conn.written < conn.pending.len() {
        match conn.stream.write(&conn.pending[conn.written..]) {
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
    Next::Close
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let kind = args.next().unwrap_or_else(|| "echo".into());
    let drive: fn(&mut Conn, &mut [u8]) -> Next = match kind.as_str() {
        "echo" => drive_echo,
        "upper" => drive_upper,
        other => {
            eprintln!("mio_echo: unknown kind {other:?} (echo, upper)");
            std::process::exit(2);
        }
    };
    let addr: std::net::SocketAddr = addr.parse().expect("ADDR must be IP:PORT");
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on tcp://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut free: Vec<usize> = Vec::new();
    let mut next_id = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let id = free.pop().unwrap_or_else(|| {
                                next_id += 1;
                                next_id - 1
                            });
                            poll.registry().register(
                                &mut stream,
                                Token(id),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            let mut conn = Conn {
                                stream,
                                pending: Vec::new(),
                                written: 0,
                                replying: false,
                            };
                            // Data may already be there: edge-triggered, so try now.
                            match drive(&mut conn, &mut buf) {
                                Next::Keep => {
                                    conns.insert(id, conn);
                                }
                                Next::Close => {
                                    let _ = poll.registry().deregister(&mut conn.stream);
                                    free.push(id);
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            eprintln!("mio_echo: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let id = event.token().0;
            let close = match conns.get_mut(&id) {
                Some(conn) => matches!(drive(conn, &mut buf), Next::Close),
                None => false,
            };
            if close {
                if let Some(mut conn) = conns.remove(&id) {
                    let _ = poll.registry().deregister(&mut conn.stream);
                    free.push(id);
                }
            }
        }
    }
}
