//! Microbenchmarks of the hot paths: HTTP head parsing, chunked decoding, path resolution, an
//! HTTP round trip (parse + response head writing + socket I/O), and the pool's hand-off.
//!
//! `cargo bench -p socketserver --features bench-internals`; figures in bench/MICROBENCHMARKS.md.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use socketserver::__bench::{self, Parsed};
use socketserver::http::{self, Http, Response, StatusCode};
use socketserver::{Handler, Mode, Server, ShutdownHandle, services};

/// A typical browser GET head: 10 header fields, about 500 bytes.
const BROWSER_GET: &[u8] = b"GET /docs/guide/index.html?lang=en HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/docs/\r\n\
Connection: keep-alive\r\n\
Cookie: session=3f9a1c2b7d4; theme=dark; consent=yes\r\n\
Upgrade-Insecure-Requests: 1\r\n\
If-Modified-Since: Tue, 15 Oct 2024 07:28:00 GMT\r\n\
\r\n";

fn parsing(c: &mut Criterion) {
    assert_eq!(BROWSER_GET.len(), 500, "the head is meant to be 500 bytes");
    assert_eq!(__bench::parse_head(BROWSER_GET), Parsed::Complete);
    let mut g = c.benchmark_group("parse_head");
    g.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    g.bench_function("browser_get_500B", |b| {
        b.iter(|| __bench::parse_head(black_box(BROWSER_GET)))
    });
    // As a connection sees a head arriving in three reads: the buffer grows, reparsed each time.
    let (first, second) = (BROWSER_GET.len() / 3, 2 * BROWSER_GET.len() / 3);
    g.bench_function("browser_get_in_3_pieces", |b| {
        b.iter(|| {
            let a = __bench::parse_head(black_box(&BROWSER_GET[..first]));
            let b = __bench::parse_head(black_box(&BROWSER_GET[..second]));
            let c = __bench::parse_head(black_box(BROWSER_GET));
            assert_eq!(
                (a, b, c),
                (Parsed::Partial, Parsed::Partial, Parsed::Complete)
            );
        })
    });
    g.finish();
}

fn chunked(c: &mut Criterion) {
    const CHUNK: usize = 4096;
    const TOTAL: usize = 64 * 1024;
    let mut body = Vec::new();
    for i in 0..TOTAL / CHUNK {
        body.extend_from_slice(format!("{CHUNK:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, CHUNK));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut out = Vec::with_capacity(TOTAL);
    assert!(__bench::decode_chunked(&body, 8192, &mut out));
    assert_eq!(out.len(), TOTAL);

    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("decode_64KiB_4KiB_chunks_8KiB_reads", |b| {
        b.iter(|| __bench::decode_chunked(black_box(&body), 8192, &mut out))
    });
    g.finish();
}

fn resolving(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("docs/a/b")).unwrap();
    std::fs::write(root.join("docs/a/b/c.txt"), b"hello\n").unwrap();
    let traversal = "/docs/%2e%2e/%2e%2e/%2e%2e/etc/passwd";
    assert!(__bench::resolve(&root, "/docs/a/b/c.txt"));
    assert!(!__bench::resolve(&root, traversal));

    let mut g = c.benchmark_group("resolve");
    g.bench_function("file_4_deep", |b| {
        b.iter(|| __bench::resolve(black_box(&root), black_box("/docs/a/b/c.txt")))
    });
    g.bench_function("traversal_attempt", |b| {
        b.iter(|| __bench::resolve(black_box(&root), black_box(traversal)))
    });
    g.finish();
}

/// A server on a Unix socket in its own tempdir, serving on a thread until dropped.
struct Running {
    path: PathBuf,
    stop: ShutdownHandle,
    serving: Option<JoinHandle<socketserver::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(mode: Mode, handler: impl Handler) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let addr = format!("unix:{}", path.display()).parse().unwrap();
        let server = Server::builder(addr).mode(mode).bind(handler).unwrap();
        let stop = server.shutdown_handle();
        let serving = Some(std::thread::spawn(move || server.serve_forever()));
        Running {
            path,
            stop,
            serving,
            _dir: dir,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(serving) = self.serving.take() {
            serving.join().unwrap().unwrap();
        }
    }
}

/// Connect, send a line, read the reply to EOF: every request is a new connection handed to
/// the mode (a worker through the pool's channel, or a new thread).
fn connect_per_request(path: &Path, reply: &mut Vec<u8>) {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(b"hello\n").unwrap();
    reply.clear();
    s.read_to_end(reply).unwrap();
    assert_eq!(reply, b"HELLO");
}

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("connect_per_request_unix");
    let mut reply = Vec::new();
    for (name, mode) in [
        ("pool_2_workers", Mode::Pool { workers: 2 }),
        ("threading", Mode::Threading),
    ] {
        let server = Running::start(mode, services::Upper);
        g.bench_function(name, |b| {
            b.iter(|| connect_per_request(server.path(), &mut reply))
        });
    }
    g.finish();
}

/// One keep-alive HTTP/1.1 request and its whole response: head parsing, the service, response
/// head writing and two socket round trips' worth of syscalls.
fn http_round_trip(c: &mut Criterion) {
    let hello = |_: &mut http::Request<'_>| Response::text(StatusCode::OK, "ok");
    let server = Running::start(Mode::Threading, Http::new(hello));
    let mut s = UnixStream::connect(server.path()).unwrap();
    let mut buf = vec![0; 4096];
    let mut exchange = |s: &mut UnixStream| {
        s.write_all(b"GET /x HTTP/1.1\r\nHost: bench\r\nUser-Agent: hot_paths\r\n\r\n")
            .unwrap();
        let mut len = 0;
        while !buf[..len].ends_with(b"\r\n\r\nok") {
            let n = s.read(&mut buf[len..]).unwrap();
            assert!(n > 0, "server closed the connection");
            len += n;
        }
        assert!(buf.starts_with(b"HTTP/1.1 200 OK\r\n"));
    };
    exchange(&mut s);
    let mut g = c.benchmark_group("http_keepalive_unix");
    g.bench_function("get_200_text", |b| b.iter(|| exchange(&mut s)));
    g.finish();
    drop(s);
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = parsing, chunked, resolving, http_round_trip, handoff
}
criterion_main!(hot_paths);
