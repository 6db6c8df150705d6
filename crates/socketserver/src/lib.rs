//! # socketserver: Python's `socketserver`, in Rust
//!
//! Write one request handler, pick a transport and a way to run requests, and serve. The design
//! space is Python's (`Lib/socketserver.py`), with four independent axes:
//!
//! - **Transport**, from the [`Address`]: `tcp://HOST:PORT` (IPv4 and IPv6), `udp://HOST:PORT`,
//!   `unix:PATH`, `unixgram:PATH`; or an already bound socket ([`Listener::from_fd`]).
//! - **Handler**, a [`Handler`] (any `Fn(&mut Request) -> io::Result<()>` is one). The
//!   [`Request`] is buffered `BufRead + Write` for streams, and for datagrams reads the packet
//!   and collects the reply, so one handler serves TCP and UDP alike.
//! - **Mode**, a [`Mode`]: `Sync` (one request at a time), `Threading` (a thread per
//!   connection, the default), `Pool` (N workers, backpressure beyond), `Fork` (a process per
//!   connection), `Async` (event loops, no thread per connection). The handler does not change
//!   between modes; to run on the event loops rather than on `Async`'s worker threads it needs
//!   an event-driven form, a sans-IO [`Protocol`] (see [`ProtocolHandler`]).
//! - **Shutdown**, a [`ShutdownHandle`]: stop accepting at once, drain in-flight work within a
//!   deadline, close what remains; callable from any thread, a handler's included, and woken
//!   at once (there is no poll interval).
//!
//! ```
//! use socketserver::{Mode, Request, Server};
//! use std::io::{self, BufRead, Read, Write};
//!
//! fn upper(req: &mut Request) -> io::Result<()> {
//!     let mut line = String::new();
//!     req.read_line(&mut line)?;
//!     req.write_all(line.trim().to_uppercase().as_bytes())
//! }
//!
//! let server = Server::builder("tcp://127.0.0.1:0".parse()?)
//!     .mode(Mode::Threading)
//!     .bind(upper)?; // bound and listening: local_addr() has the real port
//! let stop = server.shutdown_handle();
//! println!("listening on {}", server.local_addr());
//! let addr = server.local_addr().socket_addr().unwrap();
//! let serving = std::thread::spawn(move || server.serve_forever());
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"hello\n")?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?;
//! assert_eq!(reply, "HELLO");
//!
//! stop.shutdown();
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Choosing a mode
//!
//! As Python's documentation warns, a synchronous server handles one request at a time: if one
//! client is slow, every other client waits ("deaf"). Threads share the handler's state, which
//! is convenient and needs locks; forked children get a copy of it, which isolates requests
//! (a crash or a leak dies with the child) but means a child's changes are lost when it exits.
//! A pool bounds the number of threads, so an overload makes clients wait in the kernel's queue
//! instead of exhausting the machine. Event loops ([`Mode::Async`]) keep an explicit table of
//! partly served connections and let epoll say which to work on next, the third way Python's
//! documentation describes: thousands of idle or slow clients then cost memory, not threads.
//! See [`Mode`] for the table.
//!
//! ## Python names and their counterparts
//!
//! | Python | Rust |
//! |---|---|
//! | `TCPServer`, `UDPServer`, `UnixStreamServer`, `UnixDatagramServer` | [`Server`] with an [`Address`] of that transport |
//! | `ThreadingMixIn`, `ForkingMixIn`, `ThreadingTCPServer`, ... | [`Mode::Threading`], [`Mode::Fork`] (and [`Mode::Pool`], [`Mode::Sync`]) |
//! | `BaseRequestHandler.handle()`, `setup()`, `finish()` | [`Handler::handle`]; setup is building the [`Request`], finish runs when it is dropped |
//! | `StreamRequestHandler.rfile` / `wfile` | [`Request`] as `BufRead` / `Write` |
//! | `DatagramRequestHandler`, `self.request[0]` | [`Request::packet`]; writes become the reply datagram |
//! | `self.client_address`, `self.server.server_address` | [`Request::peer`], [`Request::local`] |
//! | `server_address` after bind | [`Server::local_addr`], [`Server::local_addrs`] |
//! | `serve_forever(poll_interval)` | [`Server::serve_forever`] (no poll interval: woken on demand) |
//! | `shutdown()` | [`ShutdownHandle::shutdown`] (non-blocking, safe from any thread or handler) |
//! | `handle_request()`, `timeout`, `handle_timeout()` | [`Server::handle_request`], [`Handler::on_timeout`] |
//! | `server_close()` | [`Server::server_close`] or drop |
//! | `fileno()` | [`Server::fileno`] |
//! | `verify_request()` | [`Handler::verify`] |
//! | `handle_error()` | [`Handler::on_error`] (also for panics) |
//! | `service_actions()` | [`Handler::service_actions`] |
//! | `allow_reuse_address`, `allow_reuse_port`, `request_queue_size` | [`ServerBuilder::reuse_address`], [`ServerBuilder::reuse_port`], [`ServerBuilder::backlog`] |
//! | `block_on_close`, `daemon_threads` | [`ServerBuilder::block_on_close`] |
//! | `max_children` | `Mode::Fork { max_children }` |
//! | `max_packet_size` | [`ServerBuilder::max_packet_size`] (too large: reported, never truncated) |
//! | `StreamRequestHandler.timeout`, `disable_nagle_algorithm` | [`ServerBuilder::timeout`], [`ServerBuilder::nodelay`] |
//! | `server_bind()` / `server_activate()` | [`ServerBuilder::bind`] does both |
//! | asyncio's `Protocol` (`data_received`, `eof_received`, `connection_lost`) | [`Protocol`], driven by [`Mode::Async`]'s loops |
//! | the documentation's `MyTCPHandler`, `ThreadedTCPRequestHandler` | [`services::Upper`], [`services::ThreadName`] (and [`services::Echo`]) |
//!
//! Beyond Python: several listeners per server, a connection limit with backpressure
//! ([`ServerBuilder::max_connections`]), a graceful drain with a deadline, SIGINT/SIGTERM
//! handling ([`ServerBuilder::handle_signals`]), accept-error back-off, and inherited sockets.
//!
//! This crate supports Unix (Linux first); every transport and every mode are available there.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(not(unix))]
compile_error!("socketserver supports Unix platforms only for now");

mod accept;
mod addr;
mod deadline;
mod error;
mod handler;
#[cfg(feature = "http")]
pub mod http;
pub mod metrics;
mod mode;
mod notify;
mod protocol;
pub mod proxy;
mod request;
mod server;
pub mod services;
mod shutdown;
#[cfg(unix)]
mod signals;
mod sys;
mod transport;

pub use addr::Address;
pub use error::{Error, Result};
pub use handler::Handler;
pub use mode::{AsyncAccept, Mode, worker_name};
pub use protocol::{Conn, Flow, Protocol, ProtocolHandler, Session};
pub use request::Request;
pub use server::{Server, ServerBuilder};
pub use shutdown::ShutdownHandle;
pub use transport::Listener;

/// Thin wrappers over crate-private hot paths and parsers, for the criterion benches in
/// `benches/hot_paths.rs` and the fuzz targets in `fuzz/` only.
///
/// **Not part of the API**: hidden from the documentation, compiled only with the non-default
/// `bench-internals` feature, and free to change or disappear in any release.
#[cfg(all(feature = "bench-internals", feature = "http"))]
#[doc(hidden)]
pub mod __bench {
    use std::path::Path;

    use crate::http::{self, ChunkedDecoder, FileOptions, HeadLimits, Parse};

    /// The outcome of [`parse_head`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Parsed {
        /// The head is not complete yet.
        Partial,
        /// A complete head parsed.
        Complete,
        /// The head was refused (malformed or over a limit).
        Refused,
    }

    /// `data` compressed with `encoding` at `level` the way a response body is, step by step.
    pub fn compress(data: &[u8], encoding: http::Encoding, level: i32) -> Vec<u8> {
        let mut encoder = match http::Encoder::bytes(data.to_vec(), encoding, level) {
            Ok(encoder) => encoder,
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::with_capacity(data.len() / 2);
        while let Ok(stepped) = encoder.step(&mut out) {
            if stepped.done {
                break;
            }
        }
        out
    }

    /// Parses the request head at the start of `buf` with the default [`http::Limits`].
    pub fn parse_head(buf: &[u8]) -> Parsed {
        let defaults = http::Limits::default();
        let limits = HeadLimits {
            max_request_line: defaults.max_request_line,
            max_head: defaults.max_head,
            max_headers: defaults.max_headers,
        };
        match http::parse_head(buf, &limits) {
            Ok(Parse::Complete(_)) => Parsed::Complete,
            Ok(Parse::Partial) => Parsed::Partial,
            Err(_) => Parsed::Refused,
        }
    }

    /// Decodes the chunked body `body`, fed to one decoder in slices of `read_size` bytes (as
    /// socket reads would deliver it), appending the data to `out` (cleared first).
    ///
    /// Returns whether the body was well formed and complete.
    pub fn decode_chunked(body: &[u8], read_size: usize, out: &mut Vec<u8>) -> bool {
        out.clear();
        let mut decoder = ChunkedDecoder::new();
        for piece in body.chunks(read_size.max(1)) {
            match decoder.decode(piece, out) {
                Ok((_, true)) => return true,
                Ok((_, false)) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Resolves the request path `raw_path` (still percent-encoded) under the canonical
    /// directory `root` with the default file options (no symlinks out of the root, no hidden
    /// files). Returns whether it maps to something servable.
    pub fn resolve(root: &Path, raw_path: &str) -> bool {
        http::resolve(root, raw_path, None, &FileOptions::default()).is_ok()
    }

    /// [`resolve`], giving the path a file or directory resolves to (`None` for a refusal or
    /// a redirect): a fuzz target checks it never leaves `root`.
    pub fn resolved_path(root: &Path, raw_path: &str) -> Option<std::path::PathBuf> {
        match http::resolve(root, raw_path, None, &FileOptions::default()) {
            Ok(http::Resolved::File { path, .. } | http::Resolved::Directory { path, .. }) => {
                Some(path)
            }
            _ => None,
        }
    }

    /// Interprets the `Range` header `header` against `len` bytes: the first and last byte
    /// of a partial answer, `None` for a full or unsatisfiable one.
    pub fn parse_range(header: &[u8], len: u64) -> Option<(u64, u64)> {
        match http::parse_range(Some(header), len) {
            http::RangeSpec::Partial { start, end } => Some((start, end)),
            _ => None,
        }
    }
}

/// The README's Rust example is compiled as a doctest, so it cannot drift from the API.
#[cfg(all(doctest, feature = "http"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
