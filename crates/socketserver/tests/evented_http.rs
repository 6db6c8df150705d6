//! HTTP in the event-driven mode (`Mode::Async`) and through the event loop of `Mode::Pool`:
//! thousands of idle connections on a few threads, trickling clients that hold nothing, the
//! loop's timers, shutdown.
//!
//! Some checks count process-wide resources (threads named `socketserver-*`), so every test
//! here takes one lock first: within this binary they run one at a time.
#![cfg(feature = "http")]

mod common;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socketserver::http::{Http, Limits, StaticFiles};
use socketserver::{Address, Mode, ServerBuilder};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const HELLO: &[u8] = b"hello, world\n";

/// An HTTP server of a temporary directory holding `hello.txt`, over TCP. Keep the directory
/// alive as long as the server.
fn http_server(
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    limits: Limits,
) -> (TestServer, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("hello.txt"), HELLO).unwrap();
    let handler = Http::new(StaticFiles::new(root.path()).unwrap())
        .limits(limits)
        .access_log(false);
    (
        TestServer::start_with(Transport::Tcp, configure, handler),
        root,
    )
}

/// Splits a whole response (read to the close) into its status and body.
fn parse_reply(reply: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let reply = parse_whole_reply(reply)?;
    Ok((reply.status, reply.body))
}

/// `GET path` with `Connection: close` on `stream`; the status and body.
fn get_on(stream: &mut impl ReadWrite, path: &str) -> io::Result<(u16, Vec<u8>)> {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    parse_reply(&reply)
}

/// `GET path` on a fresh connection.
fn get(addr: &Address, path: &str) -> io::Result<(u16, Vec<u8>)> {
    get_on(&mut Stream::connect(addr)?, path)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

// ---------------------------------------------------------------------------------------------
// Thousands of idle connections
// ---------------------------------------------------------------------------------------------

#[test]
fn five_thousand_idle_connections_take_no_thread_and_delay_no_one() -> io::Result<()> {
    let _serial = serial();
    const IDLE: usize = 5000;
    // Both ends of every connection live in this process.
    if raise_fd_limit(12_000).is_none() {
        return Ok(());
    }
    let (server, _root) = http_server(
        |b| b.mode(ASYNC).shutdown_timeout(Duration::from_secs(20)),
        Limits::default(),
    );
    let addr = server.addr.socket_addr().unwrap();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        idle.push(tcp(addr).map_err(|e| io::Error::other(format!("connection {i}: {e}")))?);
    }

    // A normal client is answered promptly, whatever the 5,000 others do (nothing).
    let asked = Instant::now();
    let (status, body) = get(&server.addr, "/hello.txt")?;
    let took = asked.elapsed();
    assert_eq!((status, body.as_slice()), (200, HELLO));
    assert!(
        took < Duration::from_secs(2),
        "a request beside {IDLE} idle connections took {took:?}"
    );
    // The idle connections are live: the first and the last one opened are served too.
    for i in [0, IDLE - 1] {
        let (status, body) = get_on(&mut idle[i], "/hello.txt")?;
        assert_eq!(
            (status, body.as_slice()),
            (200, HELLO),
            "idle connection {i}"
        );
    }

    // No thread per connection: the 2 loops, at most the 2 workers, nothing else (no signal
    // thread: handle_signals is off).
    let (loops, workers, others) = server_threads();
    assert_eq!(loops, 2, "loop threads with {IDLE} connections open");
    assert!(
        workers <= 2,
        "{workers} worker threads with {IDLE} connections open"
    );
    assert!(others.is_empty(), "other server threads: {others:?}");

    // A graceful stop closes every idle connection soon (never used, they are quiet: they
    // get a second for a first request that may be on its way), not after the shutdown
    // timeout. (The bound is loose: closing 5,000 sockets on a busy 2-core
    // machine takes a while; waiting for the drain would take 20 s.)
    let stopping = Instant::now();
    server.shutdown().unwrap();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "shutdown with {IDLE} idle connections took {took:?} (shutdown timeout 20 s)"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, stream) in idle.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if !is_timeout(&e) => {} // a reset is a close too
            other => panic!("idle connection {i} after the shutdown: {other:?}"),
        }
    }
    drop(idle);
    assert_no_server_thread_left("after 5,000 connections");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Trickling clients
// ---------------------------------------------------------------------------------------------

/// A request head that never ends: each trickler sends it one byte at a time.
fn endless_head(i: usize) -> u8 {
    const START: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    START.get(i).copied().unwrap_or(b'a')
}

/// 300 clients send a head one byte every 100 ms; the header timeout is 1 s. Meanwhile normal
/// clients are answered at once, and every trickler is cut off (408 or a close) after the
/// timeout, not before.
fn tricklers_hold_nothing_and_are_cut_off(mode: Mode) -> io::Result<()> {
    const TRICKLERS: usize = 300;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
    // Three descriptors per trickler in this process (two client ends, one server end).
    if raise_fd_limit(4 * TRICKLERS as u64 + 1000).is_none() {
        return Ok(());
    }
    let mut limits = Limits::default();
    limits.header_timeout = HEADER_TIMEOUT;
    let (server, _root) = http_server(|b| b.mode(mode), limits);
    let addr = server.addr.socket_addr().unwrap();

    let mut readers = Vec::with_capacity(TRICKLERS);
    let mut writers = Vec::with_capacity(TRICKLERS);
    for _ in 0..TRICKLERS {
        let stream = tcp(addr)?;
        writers.push(stream.try_clone()?);
        readers.push(stream);
    }
    let connected = Instant::now();

    // One thread trickles for everyone: a byte per connection every 100 ms, for 4 s at most.
    let stop = Arc::new(AtomicBool::new(false));
    let trickling = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut alive = vec![true; writers.len()];
            for i in 0..40 {
                if stop.load(SeqCst) || !alive.contains(&true) {
                    break;
                }
                for (writer, alive) in writers.iter_mut().zip(&mut alive) {
                    if *alive && writer.write_all(&[endless_head(i)]).is_err() {
                        *alive = false;
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // The first trickler is watched on its own: when is it cut off?
    let mut first = readers.remove(0);
    let watched = thread::spawn(move || {
        let mut got = Vec::new();
        let result = first.read_to_end(&mut got);
        (connected.elapsed(), result.map(drop), got)
    });

    // Normal clients meanwhile: answered at once, not after the tricklers' timeout.
    for round in 0..10 {
        let asked = Instant::now();
        let (status, body) = get(&server.addr, "/hello.txt")?;
        let took = asked.elapsed();
        assert_eq!(
            (status, body.as_slice()),
            (200, HELLO),
            "{mode} round {round}"
        );
        assert!(
            took < Duration::from_millis(700),
            "{mode}: a request beside {TRICKLERS} trickling clients took {took:?}"
        );
    }

    let (cut_after, result, got) = watched.join().unwrap();
    let check = |what: &str, result: io::Result<()>, got: &[u8]| match result {
        Err(e) if is_timeout(&e) => panic!("{mode}: {what} was never cut off"),
        _ => assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408 "),
            "{mode}: {what} got {:?}",
            String::from_utf8_lossy(got)
        ),
    };
    check("the watched trickler", result, &got);
    assert!(
        cut_after >= HEADER_TIMEOUT - Duration::from_millis(100),
        "{mode}: a trickler was cut off after {cut_after:?}, before the header timeout"
    );
    assert!(
        cut_after < HEADER_TIMEOUT + Duration::from_secs(3),
        "{mode}: a trickler was cut off only after {cut_after:?}"
    );
    for (i, reader) in readers.iter_mut().enumerate() {
        let left = (connected + HEADER_TIMEOUT + Duration::from_secs(4))
            .saturating_duration_since(Instant::now());
        reader.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut got = Vec::new();
        let result = reader.read_to_end(&mut got).map(drop);
        check(&format!("trickler {}", i + 1), result, &got);
    }
    stop.store(true, SeqCst);
    trickling.join().unwrap();
    server.shutdown().unwrap();
    Ok(())
}

#[test]
fn trickling_clients_hold_no_loop_and_get_408_after_the_header_timeout_in_async_mode()
-> io::Result<()> {
    let _serial = serial();
    tricklers_hold_nothing_and_are_cut_off(ASYNC)
}

#[test]
fn trickling_clients_hold_no_worker_in_pool_mode() -> io::Result<()> {
    let _serial = serial();
    tricklers_hold_nothing_and_are_cut_off(Mode::Pool { workers: 2 })
}

// ---------------------------------------------------------------------------------------------
// The loop's timers, shutdown
// ---------------------------------------------------------------------------------------------

/// Regression: the session made when the server is bound (to learn that the handler is
/// event-driven) serves the first connection; its header deadline must run from that
/// connection's start, not from the bind.
#[test]
fn the_first_connection_gets_its_whole_header_timeout_however_late_it_comes() -> io::Result<()> {
    let _serial = serial();
    for mode in [ASYNC, Mode::Pool { workers: 2 }] {
        let mut limits = Limits::default();
        limits.header_timeout = Duration::from_millis(300);
        let (server, _root) = http_server(|b| b.mode(mode), limits);
        thread::sleep(Duration::from_millis(600));
        // Connected, then a moment of silence well within the header timeout.
        let mut client = Stream::connect(&server.addr)?;
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            get_on(&mut client, "/hello.txt")?,
            (200, HELLO.to_vec()),
            "{mode}"
        );
        server.shutdown().unwrap();
    }
    Ok(())
}

/// Static files run on the loop and never read a body: a client that announces a big body and
/// trickles it gets its answer at once and is closed, holding no worker meanwhile.
#[test]
fn a_trickled_body_to_static_files_is_answered_at_once_and_closed() -> io::Result<()> {
    let _serial = serial();
    let (server, _root) = http_server(|b| b.mode(ASYNC), Limits::default());
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = Stream::connect(&server.addr)?;
        c.write_all(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nab")?;
        clients.push(c);
    }
    // More clients than workers (2): none waits for another.
    for mut c in clients {
        c.set_timeout(Some(Duration::from_secs(3)))?;
        let mut reply = Vec::new();
        c.read_to_end(&mut reply)?;
        let (status, _) = parse_reply(&reply)?;
        assert_eq!(status, 405, "{:?}", String::from_utf8_lossy(&reply));
        assert!(
            String::from_utf8_lossy(&reply).contains("Connection: close"),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_eq!(get(&server.addr, "/hello.txt")?, (200, HELLO.to_vec()));
    server.shutdown().unwrap();
    Ok(())
}

/// Answered before its body was read, a request whose client is still sending must not lose
/// its answer to a reset: the loop shuts its side down and discards the rest for a while.
#[test]
fn an_answer_before_the_body_survives_the_body_still_arriving() -> io::Result<()> {
    let _serial = serial();
    let (server, _root) = http_server(|b| b.mode(ASYNC), Limits::default());
    for _ in 0..5 {
        let mut client = Stream::connect(&server.addr)?;
        let mut writer = client.try_clone()?;
        let body = vec![b'x'; 4 << 20];
        let sending = thread::spawn(move || {
            let head = format!(
                "PUT /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            writer.write_all(head.as_bytes())?;
            // The server answers after the head: the body may be cut off, not the answer.
            let _ = writer.write_all(&body);
            io::Result::Ok(())
        });
        let mut reply = Vec::new();
        client.read_to_end(&mut reply)?;
        sending.join().unwrap()?;
        let (status, _) = parse_reply(&reply)?;
        assert_eq!(status, 405, "{:?}", String::from_utf8_lossy(&reply));
    }
    server.shutdown().unwrap();
    Ok(())
}

#[test]
fn async_http_idle_and_header_timers_close_connections() -> io::Result<()> {
    let _serial = serial();
    let mut limits = Limits::default();
    limits.idle_timeout = Duration::from_millis(400);
    limits.header_timeout = Duration::from_millis(400);
    let (server, _root) = http_server(|b| b.mode(ASYNC), limits);
    // Between requests: closed after the idle timeout.
    let mut idle = Stream::connect(&server.addr)?;
    write!(idle, "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut head = vec![0u8; 1];
    idle.read_exact(&mut head)?;
    let started = Instant::now();
    let mut rest = Vec::new();
    match idle.read_to_end(&mut rest) {
        Err(e) if is_timeout(&e) => panic!("an idle keep-alive connection was never closed"),
        _ => {}
    }
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(3)).contains(&took),
        "an idle keep-alive connection was closed after {took:?} (idle timeout 400 ms)"
    );
    let whole = [head, rest].concat();
    let (status, body) = parse_reply(&whole)?;
    assert_eq!((status, body.as_slice()), (200, HELLO));

    // Half a head: 408 after the header timeout.
    let mut half = Stream::connect(&server.addr)?;
    let started = Instant::now();
    half.write_all(b"GET /hello.txt HTTP/1.1\r\n")?;
    let mut got = Vec::new();
    let _ = half.read_to_end(&mut got);
    let took = started.elapsed();
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(3)).contains(&took),
        "half a head was cut off after {took:?} (header timeout 400 ms)"
    );
    server.shutdown().unwrap();
    Ok(())
}

#[test]
fn async_shutdown_closes_idle_http_at_once_and_returns_promptly() -> io::Result<()> {
    let _serial = serial();
    let (server, _root) = http_server(
        |b| b.mode(ASYNC).shutdown_timeout(Duration::from_secs(10)),
        Limits::default(),
    );
    let mut idle = Stream::connect(&server.addr)?;
    let mut reply = Vec::new();
    write!(idle, "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")?;
    while parse_reply(&reply).map_or(true, |(_, body)| body.len() < HELLO.len()) {
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf)?;
        assert_ne!(n, 0, "closed in the middle of a response");
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(parse_reply(&reply)?, (200, HELLO.to_vec()));
    let started = Instant::now();
    server.shutdown().unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "shutdown took {took:?} with one idle keep-alive connection (shutdown timeout 10 s)"
    );
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap_or(0), 0);
    Ok(())
}
