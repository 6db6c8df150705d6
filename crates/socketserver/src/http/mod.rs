//! HTTP/1.1 on the core framework, and a static-file service: `python -m http.server`, done
//! right.
//!
//! [`Http`] turns a [`Service`] (any `Fn(&mut http::Request<'_>) -> Response`) into a
//! [`Handler`](crate::Handler), so an HTTP server runs under every [`Mode`](crate::Mode) and
//! over TCP or Unix stream sockets like any other handler. Per connection it reads request
//! heads with a sans-IO parser (`httparse` underneath), frames bodies (Content-Length or
//! chunked, refusing the ambiguous combinations request smuggling relies on), answers
//! `Expect: 100-continue`, keeps connections alive by the HTTP/1.0 and 1.1 rules, answers
//! pipelined requests in order, and writes responses with `Date`, `Server` and a correct
//! `Content-Length` (or chunked encoding when the length is unknown).
//!
//! Every limit has its own setting with a stated default (see [`Limits`]): a total deadline
//! for receiving a request head (a client trickling one byte at a time is cut off), an idle
//! keep-alive timeout, a write timeout, and sizes for the request line, the head, the number
//! of header fields and bodies.
//!
//! ```
//! use socketserver::http::{self, Http, Response, StatusCode};
//! use socketserver::Server;
//! use std::io::{Read, Write};
//!
//! let hello = |req: &mut http::Request<'_>| {
//!     Response::text(StatusCode::OK, format!("hello from {}\n", req.path()))
//! };
//! let server = Server::builder("tcp://127.0.0.1:0".parse()?).bind(Http::new(hello))?;
//! let addr = server.local_addr().socket_addr().unwrap();
//! let stop = server.shutdown_handle();
//! let serving = std::thread::spawn(move || server.serve_forever());
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"GET /world HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
//! let mut reply = String::new();
//! client.read_to_string(&mut reply)?;
//! assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(reply.ends_with("hello from /world\n"));
//!
//! stop.shutdown();
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod compress;
mod conditional;
mod conn;
mod dates;
mod files;
mod handler;
mod listing;
mod multipart;
mod parse;
mod request;
mod response;
mod session;
mod static_files;
mod status;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
mod tls_config;
mod upload;
mod wire;

// For `crate::__bench` only (not part of the API).
#[cfg(feature = "bench-internals")]
pub(crate) use {
    conditional::{RangeSpec, parse_range},
    files::{FileOptions, Resolved, resolve},
    parse::{ChunkedDecoder, HeadLimits, Parse, parse_head},
};

pub use auth::{AuthError, BasicAuth, CHALLENGE, REMEMBERED, Secret, Users};
pub use compress::{Compression, Encoder, Encoding, compressible};
pub use conn::{Http, Limits};
pub use request::{Body, Method, Request, Version};
pub use response::{Piece, Response, ResponseBody};
pub use static_files::StaticFiles;
pub use status::StatusCode;
#[cfg(feature = "tls")]
pub use tls_config::{TlsConfig, TlsError};

/// An HTTP application: turns a request into a response. Python's `BaseHTTPRequestHandler`
/// with its `do_GET`/`do_HEAD`/... methods becomes one `match` on
/// [`Request::method`].
///
/// Runs once per request, under the server's mode. A panic becomes a `500` and closes the
/// connection; the server goes on.
pub trait Service: Send + Sync + 'static {
    /// Answers one request. The body, if any, is read from [`Request::body`]; whatever the
    /// service leaves unread is discarded (or the connection closed) by the server.
    fn call(&self, request: &mut Request<'_>) -> Response;

    /// Whether `call` is quick, never waits for anything but the local file system (no
    /// network, no locks held by others, no sleeping) and never needs a request body, so
    /// that in [`Mode::Async`](crate::Mode::Async) the event loop calls it directly. Such a
    /// service reads every body as empty; a request that came with a body is answered and
    /// its connection then closed. Otherwise (the default) each request runs on a worker
    /// thread, body and all. [`StaticFiles`] says yes.
    fn runs_inline(&self) -> bool {
        false
    }

    /// [`runs_inline`](Self::runs_inline) for one request's method: a service that answers
    /// reads inline but must read the bodies of writes (uploads) says `false` for those.
    /// The default is `runs_inline()` for every method.
    fn runs_inline_for(&self, method: &Method) -> bool {
        let _ = method;
        self.runs_inline()
    }
}

impl<F> Service for F
where
    F: Fn(&mut Request<'_>) -> Response + Send + Sync + 'static,
{
    fn call(&self, request: &mut Request<'_>) -> Response {
        self(request)
    }
}

impl<S: Service + ?Sized> Service for std::sync::Arc<S> {
    fn call(&self, request: &mut Request<'_>) -> Response {
        (**self).call(request)
    }

    fn runs_inline(&self) -> bool {
        (**self).runs_inline()
    }

    fn runs_inline_for(&self, method: &Method) -> bool {
        (**self).runs_inline_for(method)
    }
}
