//! The handler trait: what runs for each request, plus the hooks Python puts on its server class.

use std::io;

use crate::{Address, Error, Request, Session};

/// What a server runs for each request: Python's `RequestHandlerClass.handle()` plus the server
/// methods Python lets you override (`verify_request`, `handle_error`, `handle_timeout`,
/// `service_actions`), as defaulted methods on one trait.
///
/// One value is shared by every request (behind an `Arc`), under every [`Mode`](crate::Mode):
/// per-request state lives in local variables, shared state in the handler's fields (use
/// atomics or a `Mutex` for what changes). In [`Mode::Fork`](crate::Mode::Fork) each child gets a
/// *copy* of the handler: changes a child makes are invisible to the server and to other
/// requests, exactly as with Python's `ForkingMixIn`.
///
/// Any `Fn(&mut Request) -> io::Result<()>` is a handler:
///
/// ```
/// use socketserver::Request;
/// use std::io::{self, BufRead, Write};
///
/// fn upper(req: &mut Request) -> io::Result<()> {
///     let mut line = String::new();
///     req.read_line(&mut line)?;
///     req.write_all(line.trim().to_uppercase().as_bytes())
/// }
/// # fn is_handler<H: socketserver::Handler>(_: H) {}
/// # is_handler(upper);
/// ```
///
/// Methods that may be overridden (all but `handle` have defaults):
///
/// | Method | Python | Called | Default |
/// |---|---|---|---|
/// | [`handle`](Handler::handle) | `handle()` | for each request, under the mode's concurrency | (required) |
/// | [`verify`](Handler::verify) | `verify_request()` | in the serving loop, before dispatch | accept all |
/// | [`on_error`](Handler::on_error) | `handle_error()` | when `handle` fails or panics, once per request | log at error level |
/// | [`on_timeout`](Handler::on_timeout) | `handle_timeout()` | when `handle_request` waited its timeout in vain | nothing |
/// | [`service_actions`](Handler::service_actions) | `service_actions()` | by the serving loop after every wake-up | nothing |
pub trait Handler: Send + Sync + 'static {
    /// Serves one request. Returning an error (or panicking) reports it through
    /// [`on_error`](Handler::on_error) and closes only this connection; the server goes on.
    fn handle(&self, request: &mut Request) -> io::Result<()>;

    /// Access control: `false` closes the connection (or drops the datagram) before it reaches
    /// [`handle`](Handler::handle). Runs on the serving loop, so keep it quick.
    fn verify(&self, peer: &Address) -> bool {
        let _ = peer;
        true
    }

    /// Reports a failed request: `error` is [`Error::Handler`] for an error `handle` returned
    /// (or finishing the request hit), [`Error::Panicked`] for a panic, and
    /// [`Error::DatagramTooLarge`] / [`Error::Accept`] for requests that never reached
    /// `handle`. Called once per failed request; the default logs one line with the `log`
    /// crate at error level.
    fn on_error(&self, peer: &Address, error: &Error) {
        log::error!("{peer}: {error}");
    }

    /// Called by [`Server::handle_request`](crate::Server::handle_request) when no request
    /// arrived within its timeout.
    fn on_timeout(&self) {}

    /// Called by the serving loop after every wake-up (accepted connections, finished work,
    /// and at least every `service_interval` when one is set); runs on the serving thread.
    fn service_actions(&self) {}

    /// The event-driven form of this handler, for [`Mode::Async`](crate::Mode::Async): a
    /// fresh [`Session`] per connection (or datagram), driven by an event loop without a
    /// thread of its own. `None` (the default) means the handler only has the blocking form:
    /// in `Async` mode its connections then run on the worker threads, one per worker at a
    /// time. See [`Protocol`](crate::Protocol) and [`ProtocolHandler`](crate::ProtocolHandler).
    fn session(&self) -> Option<Session> {
        None
    }

    /// Whether this handler's sessions serve requests rather than connections (the HTTP
    /// server), so that `Mode::Pool` waits for requests on an event loop and its workers
    /// serve one request at a time. Not meant to be overridden outside this crate.
    #[doc(hidden)]
    fn serves_requests(&self) -> bool {
        false
    }
}

impl<F> Handler for F
where
    F: Fn(&mut Request) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, request: &mut Request) -> io::Result<()> {
        self(request)
    }
}

/// Runs one request to the end: `handle`, then `finish`, reporting the first failure once.
/// Python's `finish_request` + `shutdown_request`, with `handle_error` for failures.
pub(crate) fn run(handler: &dyn Handler, mut request: Request) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    if let Err(reason) = request.read_proxy_header() {
        log::warn!("{}: closed: {reason}", request.peer());
        return;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut request)));
    let finished = request.finish();
    let error = match outcome {
        Ok(Ok(())) => finished.err().map(Error::Handler),
        Ok(Err(e)) => Some(Error::Handler(e)),
        Err(payload) => Some(Error::Panicked {
            message: panic_message(payload.as_ref()),
        }),
    };
    if let Some(error) = error {
        if let Some(m) = request.shutdown_ref().shared.metrics() {
            m.handler_error();
        }
        report(handler, request.peer(), &error);
    }
}

/// Calls `on_error`, shielding the server from a panicking error hook.
pub(crate) fn report(handler: &dyn Handler, peer: &Address, error: &Error) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let _ = catch_unwind(AssertUnwindSafe(|| handler.on_error(peer, error)));
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// A shared handler is a handler: keep an `Arc` to read the handler's state (counters, caches)
/// while the server runs.
impl<H: Handler + ?Sized> Handler for std::sync::Arc<H> {
    fn handle(&self, request: &mut Request) -> io::Result<()> {
        (**self).handle(request)
    }

    fn verify(&self, peer: &Address) -> bool {
        (**self).verify(peer)
    }

    fn on_error(&self, peer: &Address, error: &Error) {
        (**self).on_error(peer, error)
    }

    fn on_timeout(&self) {
        (**self).on_timeout()
    }

    fn service_actions(&self) {
        (**self).service_actions()
    }

    fn session(&self) -> Option<Session> {
        (**self).session()
    }

    fn serves_requests(&self) -> bool {
        (**self).serves_requests()
    }
}
