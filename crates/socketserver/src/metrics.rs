//! Counters a server keeps for Prometheus: connections, datagrams, bytes, timeouts, errors,
//! and for HTTP the requests by status code and their durations.
//!
//! The counters are plain 64-bit atomics (`Relaxed` adds: nothing is ordered by them) in
//! shared memory, striped so that threads rarely write the same cache line: each thread adds
//! to one of [`STRIPES`] copies, and a [`Snapshot`] sums them. The memory is a shared mapping,
//! so the children of `Mode::Fork` count into the same block, and with
//! [`Metrics::shared`] a block another process maps ([`Metrics::from_fd`]): a supervisor
//! reads its workers' counters without asking them. [`encode`] writes a snapshot in the
//! Prometheus text format (0.0.4) with the `prometheus-client` crate.
//!
//! ```
//! use std::sync::Arc;
//! use socketserver::metrics::{self, Metrics};
//!
//! let metrics = Arc::new(Metrics::new()?);
//! let server = socketserver::Server::builder("tcp://127.0.0.1:0".parse()?)
//!     .metrics(Arc::clone(&metrics))
//!     .bind(socketserver::services::Echo)?;
//! // ... serve; then, from a scrape handler:
//! let text = metrics::encode(&metrics.snapshot(), false);
//! assert!(text.contains("socketserver_connections_accepted_total 0"));
//! # drop(server);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;

use crate::sys::SharedWords;

/// How many copies of the counters a block holds (threads spread over them).
pub const STRIPES: usize = 16;

/// The request-duration histogram's upper bounds, in seconds (`+Inf` is the count).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const ACCEPTED: usize = 0;
const CLOSED: usize = 1;
const DATAGRAMS: usize = 2;
const BYTES_IN: usize = 3;
const BYTES_OUT: usize = 4;
const TIMEOUTS: usize = 5; // header, idle, write
const HANDLER_ERRORS: usize = 8;
const ACCEPT_ERRORS: usize = 9;
const DURATION_COUNT: usize = 10;
const DURATION_SUM_MICROS: usize = 11;
const DURATION_BUCKETS: usize = 12;
const CODES: usize = DURATION_BUCKETS + BUCKETS.len();
/// Status codes 100 to 599, one counter each.
const CODE_COUNT: usize = 500;
/// Words per stripe: the counters, rounded up to whole cache lines.
const STRIPE: usize = (CODES + CODE_COUNT).div_ceil(8) * 8;
/// The block's first cache line: a mark of the layout, so a block of another version is
/// refused rather than misread.
const HEADER: usize = 8;
const LAYOUT: u64 = 0x736f_636b_6d65_7401; // "sockmet" + version 1
const WORDS: usize = HEADER + STRIPES * STRIPE;

/// Which kind of timeout ended a connection (or a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// A deadline for what the peer owed: a request head, a TLS handshake, a body's pace.
    Header,
    /// The peer sent nothing for the timeout (between requests, or a silent connection).
    Idle,
    /// The peer took too little of what was sent (a stalled write).
    Write,
}

/// A server's counters (see the module documentation). Share one between a
/// [`ServerBuilder`](crate::ServerBuilder) and, for HTTP, its
/// [`Http`](crate::http::Http) handler, behind an `Arc`.
pub struct Metrics {
    words: SharedWords,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Counters for this process (and the children `Mode::Fork` forks from it), all zero.
    /// Fails only when the system cannot map 68 KiB of memory.
    pub fn new() -> io::Result<Metrics> {
        Metrics::marked(SharedWords::anonymous(WORDS)?)
    }

    /// Counters in a memfd, with the descriptor: a process that inherits it reads and adds
    /// to the same counters through [`from_fd`](Self::from_fd) (a supervisor gives one to
    /// each worker, and sums them). The descriptor is close-on-exec; pass it on explicitly.
    pub fn shared() -> io::Result<(Metrics, OwnedFd)> {
        let (words, fd) = SharedWords::memfd(WORDS)?;
        Ok((Metrics::marked(words)?, fd))
    }

    /// The counters of a block made by [`shared`](Self::shared), in this or another process.
    /// Fails with `InvalidData` when `fd` is not such a block (another size, another
    /// layout: a binary of another version).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Metrics> {
        let words = SharedWords::of_fd(&fd, WORDS)?;
        if words.words()[0].load(Relaxed) != LAYOUT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a metrics block of this version",
            ));
        }
        Ok(Metrics { words })
    }

    fn marked(words: SharedWords) -> io::Result<Metrics> {
        words.words()[0].store(LAYOUT, Relaxed);
        Ok(Metrics { words })
    }

    /// The values now, summed over the stripes.
    pub fn snapshot(&self) -> Snapshot {
        let words = self.words.words();
        let mut values = vec![0u64; STRIPE];
        for stripe in 0..STRIPES {
            let base = HEADER + stripe * STRIPE;
            for (i, v) in values.iter_mut().enumerate() {
                *v = v.wrapping_add(words[base + i].load(Relaxed));
            }
        }
        Snapshot { values }
    }

    fn add(&self, index: usize, n: u64) {
        let base = HEADER + STRIPE_OF_THREAD.with(|s| s.get()) * STRIPE;
        self.words.words()[base + index].fetch_add(n, Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.add(ACCEPTED, 1);
    }

    pub(crate) fn closed(&self) {
        self.add(CLOSED, 1);
    }

    pub(crate) fn datagram(&self) {
        self.add(DATAGRAMS, 1);
    }

    pub(crate) fn received(&self, bytes: usize) {
        if bytes > 0 {
            self.add(BYTES_IN, bytes as u64);
        }
    }

    pub(crate) fn sent(&self, bytes: usize) {
        if bytes > 0 {
            self.add(BYTES_OUT, bytes as u64);
        }
    }

    pub(crate) fn timed_out(&self, kind: Timeout) {
        self.add(TIMEOUTS + kind as usize, 1);
    }

    pub(crate) fn handler_error(&self) {
        self.add(HANDLER_ERRORS, 1);
    }

    pub(crate) fn accept_error(&self) {
        self.add(ACCEPT_ERRORS, 1);
    }

    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    /// One HTTP request answered with `code`, `took` from its head to its answer (`None`: a
    /// refusal before the head was whole, counted by code but not timed).
    pub(crate) fn http_request(&self, code: u16, took: Option<Duration>) {
        if let Some(i) = code.checked_sub(100).map(usize::from)
            && i < CODE_COUNT
        {
            self.add(CODES + i, 1);
        }
        let Some(took) = took else {
            return;
        };
        self.add(DURATION_COUNT, 1);
        self.add(
            DURATION_SUM_MICROS,
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
        let secs = took.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|&le| secs <= le) {
            self.add(DURATION_BUCKETS + bucket, 1);
        }
    }
}

/// Which stripe this thread adds to: given out in turn as threads first count.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE_OF_THREAD: Cell<usize> = Cell::new(NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES);
}

/// The counters' values at one moment (see [`Metrics::snapshot`]), or a sum of several
/// ([`add`](Self::add)): a supervisor sums its workers' and keeps the sum of those gone, so
/// its counters never go down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    values: Vec<u64>,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            values: vec![0; STRIPE],
        }
    }
}

impl Snapshot {
    /// Adds `other` to this one.
    pub fn add(&mut self, other: &Snapshot) {
        for (v, o) in self.values.iter_mut().zip(&other.values) {
            *v = v.wrapping_add(*o);
        }
    }

    /// The snapshot of a process that is gone: its counters stay, its connections do not.
    pub fn retired(mut self) -> Snapshot {
        self.values[CLOSED] = self.values[ACCEPTED];
        self
    }

    /// Stream connections accepted.
    pub fn connections_accepted(&self) -> u64 {
        self.values[ACCEPTED]
    }

    /// Stream connections open now.
    pub fn connections_active(&self) -> u64 {
        self.values[ACCEPTED].saturating_sub(self.values[CLOSED])
    }

    /// Datagrams received (and handed to the handler or dropped as too large).
    pub fn datagrams(&self) -> u64 {
        self.values[DATAGRAMS]
    }

    /// Bytes read from connections and datagrams (on the wire: TLS records, not plaintext).
    pub fn bytes_received(&self) -> u64 {
        self.values[BYTES_IN]
    }

    /// Bytes written to connections and datagrams (on the wire).
    pub fn bytes_sent(&self) -> u64 {
        self.values[BYTES_OUT]
    }

    /// Timeouts of one kind.
    pub fn timeouts(&self, kind: Timeout) -> u64 {
        self.values[TIMEOUTS + kind as usize]
    }

    /// Failed requests reported to `Handler::on_error`.
    pub fn handler_errors(&self) -> u64 {
        self.values[HANDLER_ERRORS]
    }

    /// Failed `accept(2)` calls (the connection or the listener, not "nothing to accept").
    pub fn accept_errors(&self) -> u64 {
        self.values[ACCEPT_ERRORS]
    }

    /// HTTP requests answered with `code`.
    pub fn http_requests(&self, code: u16) -> u64 {
        match code.checked_sub(100).map(usize::from) {
            Some(i) if i < CODE_COUNT => self.values[CODES + i],
            _ => 0,
        }
    }

    /// HTTP requests timed by the duration histogram (all but refusals of unreadable heads).
    pub fn http_requests_timed(&self) -> u64 {
        self.values[DURATION_COUNT]
    }
}

/// The `Content-Type` of [`encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `snapshot` in the Prometheus text format (version 0.0.4); `http` adds the HTTP series
/// (`socketserver_http_requests_total{code=...}`, one per code seen, and the
/// `socketserver_http_request_duration_seconds` histogram).
pub fn encode(snapshot: &Snapshot, http: bool) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Collector {
        snapshot: snapshot.clone(),
        http,
    }));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct Collector {
    snapshot: Snapshot,
    http: bool,
}

struct Value(u64, MetricType);

impl EncodeMetric for Value {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        match self.1 {
            MetricType::Gauge => encoder.encode_gauge(&(self.0 as i64)),
            _ => encoder
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&self.0, None),
        }
    }

    fn metric_type(&self) -> MetricType {
        self.1
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let s = &self.snapshot;
        let simple = [
            (
                "socketserver_connections_accepted",
                "Stream connections accepted",
                s.connections_accepted(),
                MetricType::Counter,
            ),
            (
                "socketserver_connections_active",
                "Stream connections open now",
                s.connections_active(),
                MetricType::Gauge,
            ),
            (
                "socketserver_datagrams",
                "Datagrams received",
                s.datagrams(),
                MetricType::Counter,
            ),
            (
                "socketserver_bytes_received",
                "Bytes received from clients",
                s.bytes_received(),
                MetricType::Counter,
            ),
            (
                "socketserver_bytes_sent",
                "Bytes sent to clients",
                s.bytes_sent(),
                MetricType::Counter,
            ),
            (
                "socketserver_handler_errors",
                "Requests that failed in the handler",
                s.handler_errors(),
                MetricType::Counter,
            ),
            (
                "socketserver_accept_errors",
                "Failed accept calls",
                s.accept_errors(),
                MetricType::Counter,
            ),
        ];
        for (name, help, value, kind) in simple {
            let metric = encoder.encode_descriptor(name, help, None, kind)?;
            Value(value, kind).encode(metric)?;
        }
        let mut timeouts = encoder.encode_descriptor(
            "socketserver_timeouts",
            "Connections or requests cut off by a timeout, by kind",
            None,
            MetricType::Counter,
        )?;
        for (label, kind) in [
            ("header", Timeout::Header),
            ("idle", Timeout::Idle),
            ("write", Timeout::Write),
        ] {
            let labels = [("kind", label)];
            let family = timeouts.encode_family(&labels)?;
            Value(s.timeouts(kind), MetricType::Counter).encode(family)?;
        }
        if !self.http {
            return Ok(());
        }
        let mut requests = encoder.encode_descriptor(
            "socketserver_http_requests",
            "HTTP requests answered, by status code",
            None,
            MetricType::Counter,
        )?;
        for code in 100..600u16 {
            let n = s.http_requests(code);
            if n > 0 {
                let code = code.to_string();
                let labels = [("code", code.as_str())];
                let family = requests.encode_family(&labels)?;
                Value(n, MetricType::Counter).encode(family)?;
            }
        }
        // Per bucket, not cumulative: the encoder adds them up (and `+Inf` is what is left).
        let within: u64 = (0..BUCKETS.len())
            .map(|i| s.values[DURATION_BUCKETS + i])
            .sum();
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .enumerate()
            .map(|(i, &le)| (le, s.values[DURATION_BUCKETS + i]))
            .chain(std::iter::once((
                f64::INFINITY,
                s.values[DURATION_COUNT].saturating_sub(within),
            )))
            .collect();
        let mut histogram = encoder.encode_descriptor(
            "socketserver_http_request_duration_seconds",
            "From a request's head to the start of its answer",
            None,
            MetricType::Histogram,
        )?;
        histogram.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            s.values[DURATION_SUM_MICROS] as f64 / 1e6,
            s.values[DURATION_COUNT],
            &buckets,
            None,
        )
    }
}

/// An HTTP service answering `GET /metrics` with [`encode`] of what `snapshot` returns (and
/// `HEAD` alike; `404` elsewhere, `405` for other methods). Serve it with a server of its own,
/// without metrics, so that scrapes are not counted.
///
/// ```
/// use std::sync::Arc;
/// use socketserver::http::Http;
/// use socketserver::metrics::{Metrics, Scrape};
///
/// let metrics = Arc::new(Metrics::new()?);
/// let counted = Arc::clone(&metrics);
/// let page = Http::new(Scrape::new(move || counted.snapshot(), true)).access_log(false);
/// let scrapes = socketserver::Server::bind("tcp://127.0.0.1:0".parse()?, page)?;
/// # drop(scrapes);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "http")]
pub struct Scrape<F> {
    snapshot: F,
    http: bool,
}

#[cfg(feature = "http")]
impl<F> fmt::Debug for Scrape<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").field("http", &self.http).finish()
    }
}

#[cfg(feature = "http")]
impl<F: Fn() -> Snapshot + Send + Sync + 'static> Scrape<F> {
    /// Serves `snapshot()` at `/metrics`; `http` adds the HTTP series.
    pub fn new(snapshot: F, http: bool) -> Scrape<F> {
        Scrape { snapshot, http }
    }
}

#[cfg(feature = "http")]
impl<F: Fn() -> Snapshot + Send + Sync + 'static> crate::http::Service for Scrape<F> {
    fn call(&self, request: &mut crate::http::Request<'_>) -> crate::http::Response {
        use crate::http::{Method, Response, StatusCode};
        if request.path() != "/metrics" {
            return Response::error(StatusCode::NOT_FOUND, "the metrics are at /metrics");
        }
        if !matches!(request.method(), Method::Get | Method::Head) {
            return Response::error(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics")
                .header("Allow", "GET, HEAD");
        }
        Response::new(StatusCode::OK)
            .header("Content-Type", CONTENT_TYPE)
            .header("Cache-Control", "no-store")
            .body(encode(&(self.snapshot)(), self.http))
    }

    fn runs_inline(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_threads_and_blocks_sum_and_encode() {
        let metrics = std::sync::Arc::new(Metrics::new().unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = std::sync::Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.accepted();
                        m.sent(10);
                    }
                    m.closed();
                    m.http_request(200, Some(Duration::from_millis(3)));
                    m.http_request(404, Some(Duration::from_secs(20)));
                    m.http_request(400, None);
                    m.timed_out(Timeout::Write);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = metrics.snapshot();
        assert_eq!(s.connections_accepted(), 4000);
        assert_eq!(s.connections_active(), 3996);
        assert_eq!(s.bytes_sent(), 40_000);
        assert_eq!((s.http_requests(200), s.http_requests(404)), (4, 4));
        assert_eq!((s.http_requests(400), s.http_requests_timed()), (4, 8));
        assert_eq!(s.timeouts(Timeout::Write), 4);
        let text = encode(&s, true);
        for line in [
            "# TYPE socketserver_connections_accepted_total counter",
            "socketserver_connections_accepted_total 4000",
            "socketserver_connections_active 3996",
            "socketserver_timeouts_total{kind=\"write\"} 4",
            "socketserver_http_requests_total{code=\"200\"} 4",
            "socketserver_http_requests_total{code=\"404\"} 4",
            "socketserver_http_request_duration_seconds_bucket{le=\"0.005\"} 4",
            "socketserver_http_request_duration_seconds_bucket{le=\"10\"} 4",
            "socketserver_http_request_duration_seconds_bucket{le=\"+Inf\"} 8",
            "socketserver_http_request_duration_seconds_count 8",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // A second process's block, through its descriptor; then retired into a sum.
        let (theirs, fd) = Metrics::shared().unwrap();
        theirs.accepted();
        let mapped_again = Metrics::from_fd(fd).unwrap();
        assert_eq!(mapped_again.snapshot().connections_accepted(), 1);
        let mut sum = s.clone();
        sum.add(&mapped_again.snapshot().retired());
        assert_eq!(sum.connections_accepted(), 4001);
        assert_eq!(
            sum.connections_active(),
            3996,
            "a retired block holds none open"
        );
    }
}
