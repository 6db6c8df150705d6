//! The per-connection loop: read a head, run the service, write the response, repeat.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::parse::{self, Framing, HeadLimits, Parse};
use super::request::{Body, Method, Pace, Request, Version};
use super::response::{Response, write_response};
use super::wire::{ConnIo, Source, Wire};
use super::{Service, StatusCode};
use crate::Address;

/// HTTP limits. Each has its own setting, as Go's `http.Server` has them; defaults in
/// parentheses.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Total time to receive a request head, from the connection's start (first request) or
    /// from the first byte of the request (later ones). A client trickling one byte at a time
    /// is cut off when it runs out, unlike a per-read timeout. (30 s)
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request; also the per-read
    /// timeout while a service reads a body, and the grace a body has before
    /// [`min_body_rate`](Self::min_body_rate) applies. (30 s)
    pub idle_timeout: Duration,
    /// How long the client may make a response wait without taking 64 KiB of it: a client
    /// that stops reading, or reads a byte now and then, is cut off this long after it
    /// stalled. (30 s)
    pub write_timeout: Duration,
    /// The least average rate, in bytes a second, at which a request body must arrive once
    /// `idle_timeout` has passed since its first byte was awaited: a body's deadline is that
    /// start, plus `idle_timeout`, plus one second per `min_body_rate` bytes received (as
    /// Apache's `mod_reqtimeout` `MinRate`). A client trickling a body cannot hold a worker
    /// longer than that. 0 sets no rate (only `idle_timeout` between reads). (1024)
    pub min_body_rate: u64,
    /// Longest request line; longer gets `414 URI Too Long`. (8 KiB)
    pub max_request_line: usize,
    /// Largest request head; larger gets `431 Request Header Fields Too Large`. (64 KiB)
    pub max_head: usize,
    /// Most header fields; more gets `431`. (100)
    pub max_headers: usize,
    /// Largest request body a service may read; a larger `Content-Length` gets `413` at once,
    /// a larger chunked body fails the read. (16 MiB)
    pub max_body: u64,
    /// Whether to wait for further requests on a connection. When `false`, requests already
    /// received (pipelined) are still answered, but the connection closes once the server
    /// would have to wait: the right setting for `Mode::Sync`, where an idle keep-alive
    /// connection would hold the only worker. (true)
    pub keep_alive: bool,
}

impl Limits {
    /// The pace a request body must keep (see [`min_body_rate`](Self::min_body_rate)), the
    /// same on a worker and on the event loop.
    pub(crate) fn body_pace(&self) -> Pace {
        Pace {
            grace: self.idle_timeout,
            rate: self.min_body_rate,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            max_request_line: 8 * 1024,
            max_head: 64 * 1024,
            max_headers: 100,
            max_body: 16 * 1024 * 1024,
            keep_alive: true,
        }
    }
}

/// Serves HTTP/1.1 with a [`Service`]: a [`Handler`](crate::Handler) for any stream
/// transport and mode.
///
/// ```
/// use socketserver::http::{Http, Limits, StaticFiles};
/// use std::time::Duration;
///
/// let mut limits = Limits::default();
/// limits.header_timeout = Duration::from_secs(10);
/// let handler = Http::new(StaticFiles::new(".")?).limits(limits).access_log(false);
/// # let _ = handler;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Http<S> {
    // Shared with the event loop's sessions, one clone per connection.
    pub(crate) service: Arc<S>,
    pub(crate) config: Arc<Config>,
}

/// The counters requests are counted in (see [`Http::metrics`]).
type Counters = Option<Arc<crate::metrics::Metrics>>;

/// Everything but the service, shared by every connection.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) limits: Limits,
    access_log: bool,
    server: String,
    /// The health check's path (see [`Http::health`]).
    health: Option<String>,
    /// Where requests are counted (see [`Http::metrics`]).
    metrics: Counters,
    /// Headers on every response (see [`Http::header`] and [`Http::cors`]).
    always: Vec<(String, String)>,
    /// Answer CORS preflight requests (see [`Http::cors`]).
    cors: bool,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<super::tls_config::TlsConfig>,
}

impl Config {
    pub(crate) fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_request_line: self.limits.max_request_line,
            max_head: self.limits.max_head,
            max_headers: self.limits.max_headers,
        }
    }
}

impl<S> Clone for Http<S> {
    fn clone(&self) -> Http<S> {
        Http {
            service: Arc::clone(&self.service),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: Service> Http<S> {
    /// Serves `service` with the default [`Limits`] and the access log on.
    pub fn new(service: S) -> Http<S> {
        Http {
            service: Arc::new(service),
            config: Arc::new(Config {
                limits: Limits::default(),
                access_log: true,
                server: format!("socketserver/{}", env!("CARGO_PKG_VERSION")),
                health: None,
                metrics: None,
                always: Vec::new(),
                cors: false,
                #[cfg(feature = "tls")]
                tls: None,
            }),
        }
    }

    /// Serves HTTPS: every connection starts with a TLS handshake, run by the connection's
    /// worker (never the accept loop) under the header timeout.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: super::tls_config::TlsConfig) -> Self {
        Arc::make_mut(&mut self.config).tls = Some(config);
        self
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        Arc::make_mut(&mut self.config).limits = limits;
        self
    }

    /// Logs one line per request in the common log format, through the `log` crate at info
    /// level with target `socketserver::access` (control characters escaped, since a request
    /// line can carry them). Default: on.
    pub fn access_log(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.config).access_log = on;
        self
    }

    /// Answers `GET` and `HEAD` of `path` (the path alone: a query does not change it) itself,
    /// before the service sees anything: `200` with the body `ok\n` while serving, `503` from
    /// the moment a graceful stop begins, so a load balancer or a Kubernetes readiness probe
    /// takes the server out of rotation before it closes. Answers carry
    /// `Cache-Control: no-store`. Default: none (every path goes to the service).
    pub fn health(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).health = Some(path.into());
        self
    }

    /// Counts every answered request by status code, and its time from head to answer, into
    /// `metrics` (`socketserver_http_requests_total{code}`,
    /// `socketserver_http_request_duration_seconds`): the same value given to
    /// [`ServerBuilder::metrics`](crate::ServerBuilder::metrics). Health checks are counted
    /// too; serve the scrapes from another server. Default: none.
    pub fn metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Arc::make_mut(&mut self.config).metrics = Some(metrics);
        self
    }

    /// Adds `NAME: VALUE` to every response, errors and health checks included, unless the
    /// response sets that header itself (a `Content-Security-Policy`, say). A name that is
    /// not an HTTP token, or a value with a line break or NUL, is refused with an error that
    /// says so; the handler is unchanged then.
    pub fn header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, crate::Error> {
        let (name, value) = (name.into(), value.into());
        check_header(&name, &value).map_err(|reason| crate::Error::Unsupported {
            what: format!("the header {name:?}: {reason}"),
        })?;
        Arc::make_mut(&mut self.config).always.push((name, value));
        Ok(self)
    }

    /// Allows cross-origin requests from any origin: `Access-Control-Allow-Origin: *` on
    /// every response, and a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) answered `204` here with
    /// `Access-Control-Allow-Methods`, the `Access-Control-Allow-Headers` it asked for and
    /// `Access-Control-Max-Age: 86400`, before the service. Default: off.
    pub fn cors(mut self, on: bool) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.cors = on;
        config
            .always
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Access-Control-Allow-Origin"));
        if on {
            config
                .always
                .push(("Access-Control-Allow-Origin".into(), "*".into()));
        }
        self
    }

    /// The value of the `Server` header. Default: `socketserver/<version>`.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).server = name.into();
        self
    }
}

impl<S> fmt::Debug for Http<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("limits", &self.config.limits)
            .field("access_log", &self.config.access_log)
            .finish()
    }
}

/// What waiting for a head produced.
enum Next {
    Head(parse::Head),
    /// Answer with this error and close.
    Refuse(StatusCode, &'static str),
    /// Close quietly (client gone, idle timeout, shutdown).
    Close,
}

impl<S: Service> Http<S> {
    /// The request loop of one connection, over plain or TLS bytes.
    pub(crate) fn serve(
        &self,
        wire: &mut dyn Wire,
        peer: &Address,
        started: Instant,
    ) -> io::Result<()> {
        let mut io = ConnIo::new(wire);
        let mut first = true;
        loop {
            let head = match self.next_head(&mut io, first.then_some(started)) {
                Next::Head(head) => head,
                Next::Close => return Ok(()),
                Next::Refuse(status, detail) => {
                    return self.refuse(&mut io, peer, "-", status, detail, true);
                }
            };
            first = false;
            if !self.exchange(&mut io, head, peer, true, Instant::now())? {
                return Ok(());
            }
        }
    }
    /// Answers with a short error page and ends the connection (logged like any request).
    pub(crate) fn refuse(
        &self,
        io: &mut ConnIo<'_>,
        peer: &Address,
        request_line: &str,
        status: StatusCode,
        detail: &str,
        http11: bool,
    ) -> io::Result<()> {
        io.stream
            .set_write_timeout(Some(self.config.limits.write_timeout));
        let sent = write_response(
            io.stream,
            Response::error(status, detail),
            false,
            http11,
            false,
            &self.config.server,
            &self.config.always,
        );
        self.log(
            peer,
            request_line,
            status,
            sent.as_ref().map_or(0, |s| s.bytes),
        );
        if let Some(m) = &self.config.metrics {
            m.http_request(status.as_u16(), None);
        }
        sent.map(drop)
    }

    /// Waits for and parses the next request head. `first` carries the connection's start for
    /// its first request (the header deadline runs from there).
    fn next_head(&self, io: &mut ConnIo<'_>, first: Option<Instant>) -> Next {
        let limits = self.config.head_limits();
        // `None` also when the deadline is past what `Instant` holds: then the per-read
        // idle timeout is the only bound.
        let mut deadline =
            first.and_then(|start| start.checked_add(self.config.limits.header_timeout));
        loop {
            if !io.buffered().is_empty() {
                if deadline.is_none() {
                    // The first byte of a new request: its head must arrive in time.
                    deadline = Instant::now().checked_add(self.config.limits.header_timeout);
                }
                io.stream.set_idle(false);
                match parse::parse_head(io.buffered(), &limits) {
                    Ok(Parse::Complete(head)) => {
                        io.consume(head.len);
                        io.stream.set_read_deadline(None);
                        return Next::Head(head);
                    }
                    Ok(Parse::Partial) => {}
                    Err(e) => return Next::Refuse(e.status(), "the request could not be parsed"),
                }
            } else if first.is_none() {
                // Between requests: nothing in flight, so a shutdown may close us at once.
                if !io.stream.set_idle(true) {
                    return Next::Close;
                }
                if !self.config.limits.keep_alive {
                    return Next::Close;
                }
            } else {
                // A new connection is not idle: its first request may be on its way (sent as
                // the client connected), and a graceful stop must answer it, not drop it. It
                // is quiet: a stop gives it `QUIET_GRACE`, then closes it.
                io.stream.set_quiet();
            }
            let wait = match crate::deadline::time_left(deadline) {
                Ok(left) => left.unwrap_or(self.config.limits.idle_timeout),
                Err(_) => return self.timed_out(io),
            };
            if io.buffered().is_empty() && first.is_none() && io.stream.must_poll_when_idle() {
                // Idle in a forked child: wait for the first byte, or for a shutdown (the
                // child learns of it only this way).
                match io.stream.wait_readable(Some(wait)) {
                    Ok(true) => {}
                    Ok(false) => return Next::Close,
                    Err(_) if deadline.is_some() => return self.timed_out(io),
                    Err(_) => return Next::Close,
                }
            }
            if io.stream.set_timeout(Some(wait)).is_err() {
                return Next::Close;
            }
            // The head's deadline as such, so that running out of it counts as a header
            // timeout (the per-read wait alone would look like an idle peer).
            io.stream.set_read_deadline(deadline);
            match io.fill() {
                Ok(0) => return Next::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut && deadline.is_some() => {
                    return self.timed_out(io);
                }
                Err(_) => return Next::Close,
            }
        }
    }

    fn timed_out(&self, io: &ConnIo<'_>) -> Next {
        if io.buffered().is_empty() {
            // Never started a request: nothing to answer.
            Next::Close
        } else {
            Next::Refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the request head did not arrive in time",
            )
        }
    }

    /// Serves one request whose head was read. Returns whether the connection stays open.
    /// `drain`: whether to wait for the part of a body the service left unread (so the
    /// connection can carry on); without it only what already arrived is dropped, and the
    /// connection closes after the answer unless that was all (the event loop then drains
    /// the rest in its lingering close, without a worker). `received`: when the head was
    /// complete (the body is due from then, however long the request waited for a worker).
    pub(crate) fn exchange(
        &self,
        io: &mut ConnIo<'_>,
        head: parse::Head,
        peer: &Address,
        drain: bool,
        received: Instant,
    ) -> io::Result<bool> {
        // Sized at once: `format!` would grow it two or three times.
        let mut request_line = String::with_capacity(head.method.len() + head.target.len() + 10);
        request_line.push_str(&head.method);
        request_line.push(' ');
        request_line.push_str(&head.target);
        request_line.push_str(if head.minor_version == 0 {
            " HTTP/1.0"
        } else {
            " HTTP/1.1"
        });
        let version = if head.minor_version == 0 {
            Version::Http10
        } else {
            Version::Http11
        };
        let http11 = version == Version::Http11;
        let refuse = |io: &mut ConnIo<'_>, status: StatusCode, detail: &str| {
            self.refuse(io, peer, &request_line, status, detail, http11)
                .map(|()| false)
        };
        let framing = match parse::framing(&head) {
            Ok(framing) => framing,
            Err(e) => {
                return refuse(
                    io,
                    e.status(),
                    "the request's body framing is invalid or ambiguous",
                );
            }
        };
        if let Err(reason) = parse::check_host(&head) {
            return refuse(io, StatusCode::BAD_REQUEST, reason);
        }
        if let Framing::Length(n) = framing
            && n > self.config.limits.max_body
        {
            return refuse(
                io,
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than this server accepts",
            );
        }
        let Some(target) = origin_form(&head.target) else {
            return refuse(
                io,
                StatusCode::BAD_REQUEST,
                "the request target is not a path",
            );
        };
        let path_len = target.find('?').unwrap_or(target.len());
        let header = |name: &str| -> Option<&[u8]> { head.headers.get(name) };
        let mut expect_continue = false;
        if let Some(expect) = header("expect") {
            if http11 && expect.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return refuse(
                    io,
                    StatusCode::EXPECTATION_FAILED,
                    "only Expect: 100-continue is supported",
                );
            }
        }
        // Every Connection field counts: they are one list (a `close` in a second field
        // must end the connection as surely as in the first).
        let mut keep_alive = if http11 {
            !parse::connection_has(&head, "close")
        } else {
            parse::connection_has(&head, "keep-alive")
        };
        let method = Method::parse(&head.method);
        let head_only = method == Method::Head;
        let health = matches!(method, Method::Get | Method::Head)
            && self.config.health.as_deref() == Some(&target[..path_len]);
        let stopping = io.stream.is_shutting_down();

        io.stream
            .set_timeout(Some(self.config.limits.idle_timeout))?;
        let (response, body_complete, continue_owed) = {
            let source: &mut dyn Source = io;
            let mut request = Request {
                method,
                target,
                path_len,
                version,
                headers: head.headers,
                peer: peer.clone(),
                body: Body::new(
                    source,
                    framing,
                    expect_continue,
                    self.config.limits.max_body,
                    self.config.limits.body_pace(),
                    received,
                ),
            };
            let preflight = self.config.cors
                && *request.method() == Method::Options
                && request.header("origin").is_some()
                && request.header("access-control-request-method").is_some();
            let outcome = if health {
                Ok(health_answer(stopping))
            } else if preflight {
                Ok(preflight_answer(&request))
            } else {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.service.call(&mut request)
                }))
            };
            let response = match outcome {
                Ok(response) => response,
                Err(payload) => {
                    log::error!(
                        "{peer}: HTTP service panicked: {}",
                        crate::handler::panic_message(payload.as_ref())
                    );
                    keep_alive = false;
                    Response::error(StatusCode::INTERNAL_SERVER_ERROR, "")
                }
            };
            // Whatever the service left of the body is read and dropped (up to a bound), so
            // the next request starts at the right byte; otherwise the connection closes.
            let complete = request.body.discard(64 * 1024, drain);
            (response, complete, request.body.continue_pending())
        };
        if !body_complete || continue_owed {
            keep_alive = false;
        }
        if io.stream.is_shutting_down() {
            keep_alive = false;
        }
        // Without idle keep-alive (sync mode) the connection ends once nothing else is already
        // buffered: say so, so the client does not count on it (RFC 9112 §9.6).
        if !self.config.limits.keep_alive && io.buffered().is_empty() {
            keep_alive = false;
        }
        let status = response.status();
        if let Some(m) = &self.config.metrics {
            m.http_request(status.as_u16(), Some(received.elapsed()));
        }
        // The body's deadline is over; the response has its own clock.
        io.stream.set_read_deadline(None);
        io.stream
            .set_write_timeout(Some(self.config.limits.write_timeout));
        let sent = match write_response(
            io.stream,
            response,
            head_only,
            http11,
            keep_alive,
            &self.config.server,
            &self.config.always,
        ) {
            Ok(sent) => sent,
            Err(e) => {
                // The request is logged all the same (a file that shrank, a client gone),
                // with no size: how much of the body went out is not known. The error itself
                // is reported by the server's `on_error`.
                self.log(peer, &request_line, status, 0);
                return Err(e);
            }
        };
        // Logged once the answer has really gone out (on an event loop that is later than
        // now), with no size if the connection ended first (a file that shrank, a client
        // gone).
        if let Some(line) = self.access_line(peer, &request_line, status) {
            let bytes = sent.bytes;
            let streamed = sent.streamed.clone();
            io.stream.log_when_sent(Box::new(move |sent| {
                let made = streamed.map_or(0, |n| n.load(std::sync::atomic::Ordering::Relaxed));
                emit_access(&line, if sent { bytes + made } else { 0 });
            }));
        }
        Ok(keep_alive && !sent.close_delimited)
    }

    fn log(&self, peer: &Address, request_line: &str, status: StatusCode, bytes: u64) {
        if let Some(line) = self.access_line(peer, request_line, status) {
            emit_access(&line, bytes);
        }
    }

    /// The access line of a request without its size (`None` with the access log off).
    ///
    /// Made once per request, on the hot path: one allocation (the line itself), the date
    /// formatted once a second per thread (see [`push_now`](super::dates::push_now)), the request line copied as is
    /// unless it holds something to escape.
    fn access_line(
        &self,
        peer: &Address,
        request_line: &str,
        status: StatusCode,
    ) -> Option<String> {
        use std::fmt::Write as _;
        if !self.config.access_log {
            return None;
        }
        let mut line = String::with_capacity(request_line.len() + 64);
        match peer {
            Address::Tcp { host, .. } | Address::Udp { host, .. } => line.push_str(host),
            Address::Unix(_) | Address::UnixDatagram(_) => line.push_str("unix"),
        }
        line.push_str(" - - [");
        super::dates::push_now(&mut line, super::dates::Form::Clf);
        line.push_str("] \"");
        if request_line.chars().any(|c| c.is_control() || c == '"') {
            line.push_str(&crate::error::escape_control(request_line).replace('"', "\\x22"));
        } else {
            line.push_str(request_line);
        }
        let _ = write!(line, "\" {}", status.as_u16());
        Some(line)
    }
}

/// Logs an access line with its size (`-` for none: no body, or not known to have gone out).
fn emit_access(line: &str, bytes: u64) {
    if bytes == 0 {
        log::info!(target: "socketserver::access", "{line} -");
    } else {
        log::info!(target: "socketserver::access", "{line} {bytes}");
    }
}

/// The target in origin form (`/path?query`): as sent when it already is (or is `*`), the
/// path and query of an absolute URI (`http://host/path`, which servers must accept, RFC 9112
/// The health check's answer: `200 ok` while serving, `503` once stopping.
fn health_answer(stopping: bool) -> Response {
    let (status, body) = if stopping {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ok\n")
    };
    Response::text(status, body).header("Cache-Control", "no-store")
}

/// §3.2.2), `None` for anything else.
fn origin_form(target: &str) -> Option<String> {
    if target == "*" || target.starts_with('/') {
        return Some(target.to_string());
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let skip = if lower.starts_with("http://") {
        7
    } else if lower.starts_with("https://") {
        8
    } else {
        return None;
    };
    let rest = target.get(skip..)?;
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => Some(rest[i..].to_string()),
        Some(i) => Some(format!("/{}", &rest[i..])),
        None => Some("/".to_string()),
    }
}

/// Why `NAME: VALUE` cannot be a response header, if it cannot: the name must be an HTTP
/// token (RFC 9110 §5.6.2), the value free of line breaks and NUL.
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(tchar) {
        return Err("the name must be a token: letters, digits and !#$%&'*+-.^_`|~".into());
    }
    if value.chars().any(|c| matches!(c, '\r' | '\n' | '\0')) {
        return Err("the value must not hold a line break or NUL".into());
    }
    Ok(())
}

/// The answer to a CORS preflight: every method a file server takes, the headers asked for.
fn preflight_answer(request: &Request<'_>) -> Response {
    let mut response = Response::new(StatusCode::NO_CONTENT)
        .header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        .header("Access-Control-Max-Age", "86400");
    if let Some(asked) = request.header("access-control-request-headers") {
        response = response.header("Access-Control-Allow-Headers", asked.to_string());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_become_origin_form() {
        assert_eq!(origin_form("/a/b?x=1").as_deref(), Some("/a/b?x=1"));
        assert_eq!(origin_form("*").as_deref(), Some("*"));
        assert_eq!(origin_form("http://host:8/x?y").as_deref(), Some("/x?y"));
        assert_eq!(origin_form("HTTP://host").as_deref(), Some("/"));
        assert_eq!(origin_form("http://host?q").as_deref(), Some("/?q"));
        assert_eq!(origin_form("relative"), None);
        assert_eq!(origin_form("ftp://host/x"), None);
    }
}
