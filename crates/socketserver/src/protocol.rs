//! Event-driven handlers: asyncio's `Protocol`, sans-IO.
//!
//! In [`Mode::Async`](crate::Mode::Async) no thread waits on a connection. An event loop reads
//! whatever arrived, hands it to the connection's [`Protocol`] together with an output buffer,
//! and the protocol answers with a [`Flow`]: go on, close after the output is sent, or close
//! now. The loop owns every buffer, every partial write and the backpressure: it stops
//! reading a connection whose output is not draining, so a client that does not read its
//! answers costs bounded memory.
//!
//! A protocol never touches a socket, so the same code also runs under every blocking mode:
//! [`ProtocolHandler`] turns a protocol factory into a [`Handler`] that drives it over the
//! blocking [`Request`] in `Sync`, `Threading`, `Pool` and `Fork` modes, and on the loops in
//! `Async` mode.
//!
//! ```
//! use socketserver::{Conn, Flow, Mode, Protocol, ProtocolHandler, Server};
//! use std::io::{Read, Write};
//!
//! /// Answers each line with its length.
//! #[derive(Default)]
//! struct LineLengths;
//!
//! impl Protocol for LineLengths {
//!     fn data_received(&mut self, conn: &mut Conn<'_>) -> Flow {
//!         while let Some(end) = conn.received().iter().position(|&b| b == b'\n') {
//!             conn.write(format!("{end}\n").as_bytes());
//!             conn.consume(end + 1);
//!         }
//!         Flow::Continue
//!     }
//! }
//!
//! let server = Server::builder("tcp://127.0.0.1:0".parse()?)
//!     .mode(Mode::Async { loops: 1, workers: 1 })
//!     .bind(ProtocolHandler::new(LineLengths::default))?;
//! let addr = server.local_addr().socket_addr().unwrap();
//! let stop = server.shutdown_handle();
//! let serving = std::thread::spawn(move || server.serve_forever());
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"hello\nhi\n")?;
//! client.shutdown(std::net::Shutdown::Write)?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?;
//! assert_eq!(reply, "5\n2\n");
//!
//! stop.shutdown();
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{self, Read, Write};

use crate::mode::engine::{Driver, INPUT_LIMIT, Input, Output, Step};
use crate::{Address, Handler, Request, ShutdownHandle};

/// What a [`Protocol`] wants after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep the connection open and call again when more bytes arrive.
    Continue,
    /// Send everything written so far, then close the connection.
    Close,
    /// Close the connection now; output not yet sent is dropped.
    Abort,
}

/// A connection's handler for the event loop: asyncio's `Protocol`, without the I/O.
///
/// Each connection gets its own value (see [`Session::new`] and [`ProtocolHandler`]), so a
/// protocol keeps its per-connection state in `self`. Calls never overlap for one connection
/// and run on an event-loop thread: they must not block (no sleeping, no blocking I/O), or
/// every connection of that loop waits.
///
/// Datagram transports deliver each datagram as a connection of its own: `data_received`
/// with the whole datagram, then `eof_received`; what the protocol wrote is the reply
/// datagram (none when nothing was written).
pub trait Protocol: Send + 'static {
    /// Bytes arrived: they are in [`Conn::received`]. Consume what was used with
    /// [`Conn::consume`]; the rest is offered again, after more bytes, on the next call. A
    /// connection whose protocol leaves 64 KiB unconsumed is closed (nothing could progress),
    /// so a protocol with bigger messages must keep its own buffer.
    fn data_received(&mut self, conn: &mut Conn<'_>) -> Flow;

    /// The peer closed its side: no more bytes will come (unconsumed ones are still in
    /// [`Conn::received`]). The default closes once the output is sent.
    fn eof_received(&mut self, conn: &mut Conn<'_>) -> Flow {
        let _ = conn;
        Flow::Close
    }

    /// The connection is gone (closed by either side, timed out, or the server stopped).
    /// Called once, last.
    fn connection_lost(&mut self) {}
}

/// What a [`Protocol`] sees of its connection during a call: the bytes received and not yet
/// consumed, the output buffer, and who is at the other end.
pub struct Conn<'a> {
    pub(crate) input: &'a mut Input,
    pub(crate) output: &'a mut Output,
    pub(crate) peer: &'a Address,
    pub(crate) local: &'a Address,
    pub(crate) datagram: bool,
    pub(crate) shutdown: &'a ShutdownHandle,
    /// Whether complete requests may run on the loop (`Mode::Async`) rather than always on a
    /// worker (`Mode::Pool`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) inline: bool,
}

impl Conn<'_> {
    /// Bytes received and not consumed yet.
    pub fn received(&self) -> &[u8] {
        self.input.bytes()
    }

    /// Marks the first `n` received bytes as used (at most all of them).
    pub fn consume(&mut self, n: usize) {
        self.input.consume(n);
    }

    /// Queues bytes to send. The loop sends them as the peer takes them; while more than
    /// 64 KiB are waiting it stops reading this connection.
    pub fn write(&mut self, bytes: &[u8]) {
        self.output.write(bytes);
    }

    /// Bytes written and not sent yet.
    pub fn pending(&self) -> usize {
        self.output.bytes
    }

    /// The peer's address.
    pub fn peer(&self) -> &Address {
        self.peer
    }

    /// The address of the listener the connection came in on.
    pub fn local(&self) -> &Address {
        self.local
    }

    /// True when this "connection" is one datagram.
    pub fn is_datagram(&self) -> bool {
        self.datagram
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }
}

impl fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("received", &self.input.bytes().len())
            .field("pending", &self.output.bytes)
            .finish()
    }
}

/// How the event loop drives one connection: made from a [`Protocol`] with [`Session::new`],
/// and returned by [`Handler::session`].
pub struct Session(pub(crate) Box<dyn Driver>);

impl Session {
    /// A session driving `protocol`.
    pub fn new(protocol: impl Protocol) -> Session {
        Session(Box::new(Proto(protocol)))
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Session")
    }
}

struct Proto<P>(P);

impl<P: Protocol> Driver for Proto<P> {
    fn data(&mut self, conn: &mut Conn<'_>) -> Step {
        self.0.data_received(conn).into()
    }
    fn eof(&mut self, conn: &mut Conn<'_>) -> Step {
        self.0.eof_received(conn).into()
    }
    fn datagram(&mut self, conn: &mut Conn<'_>) -> Option<Flow> {
        Some(datagram_calls(&mut self.0, conn))
    }
    fn lost(&mut self) {
        self.0.connection_lost();
    }
}

/// A [`Handler`] made of a [`Protocol`] factory: the protocol runs on the event loops in
/// [`Mode::Async`](crate::Mode::Async), and over the blocking [`Request`] in every other mode,
/// so one implementation serves everywhere.
///
/// In blocking modes it reads up to 16 KiB at a time, calls the protocol, writes what it
/// queued, and stops on [`Flow::Close`], [`Flow::Abort`] or after `eof_received`.
pub struct ProtocolHandler<F> {
    factory: F,
}

impl<F, P> ProtocolHandler<F>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: Protocol,
{
    /// Serves each connection with a fresh protocol from `factory`.
    pub fn new(factory: F) -> ProtocolHandler<F> {
        ProtocolHandler { factory }
    }
}

impl<F> fmt::Debug for ProtocolHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProtocolHandler")
    }
}

impl<F, P> Handler for ProtocolHandler<F>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: Protocol,
{
    fn handle(&self, request: &mut Request) -> io::Result<()> {
        drive_blocking(&mut (self.factory)(), request)
    }

    fn session(&self) -> Option<Session> {
        Some(Session::new((self.factory)()))
    }
}

/// Runs `protocol` over a blocking request until it closes.
pub(crate) fn drive_blocking<P: Protocol + ?Sized>(
    protocol: &mut P,
    request: &mut Request,
) -> io::Result<()> {
    let result = drive_blocking_inner(protocol, request);
    protocol.connection_lost();
    result
}

fn drive_blocking_inner<P: Protocol + ?Sized>(
    protocol: &mut P,
    request: &mut Request,
) -> io::Result<()> {
    let peer = request.peer().clone();
    let local = request.local().clone();
    let shutdown = request.shutdown_handle();
    let mut input = Input::default();
    let mut output = Output::default();
    if let Some(packet) = request.packet() {
        input = Input::from_vec(packet.to_vec());
        let flow = datagram_calls(
            protocol,
            &mut Conn {
                input: &mut input,
                output: &mut output,
                peer: &peer,
                local: &local,
                datagram: true,
                shutdown: &shutdown,
                inline: true,
            },
        );
        if flow == Flow::Abort {
            return Ok(());
        }
        let touched = output.touched;
        output.drain_into(request)?;
        return if touched { request.flush() } else { Ok(()) };
    }
    loop {
        if input.len() >= INPUT_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the protocol left {} received bytes unconsumed",
                    input.len()
                ),
            ));
        }
        let n = {
            let spare = input.spare(16 * 1024);
            let offered = spare.len();
            let got = request.read(spare);
            input.commit(offered, *got.as_ref().unwrap_or(&0));
            got?
        };
        let mut conn = Conn {
            input: &mut input,
            output: &mut output,
            peer: &peer,
            local: &local,
            datagram: false,
            shutdown: &shutdown,
            inline: false,
        };
        let flow = if n == 0 {
            protocol.eof_received(&mut conn)
        } else {
            protocol.data_received(&mut conn)
        };
        if flow == Flow::Abort {
            return Ok(());
        }
        output.drain_into(request)?;
        request.flush()?;
        if flow == Flow::Close || n == 0 {
            return Ok(());
        }
    }
}

/// One datagram (`conn` holds all of it): `data_received` when it is not empty, then
/// `eof_received`.
fn datagram_calls<P: Protocol + ?Sized>(protocol: &mut P, conn: &mut Conn<'_>) -> Flow {
    if !conn.received().is_empty() {
        let flow = protocol.data_received(conn);
        if flow != Flow::Continue {
            return flow;
        }
    }
    match protocol.eof_received(conn) {
        Flow::Abort => Flow::Abort,
        _ => Flow::Close,
    }
}
