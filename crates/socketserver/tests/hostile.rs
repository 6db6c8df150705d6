//! Hostile clients, as issue 9 tried them: more stalled readers and body tricklers than there
//! are workers, in every in-process mode. A normal client is answered within a second
//! throughout, and each hostile connection is dropped within its deadline plus a margin.
#![cfg(feature = "http")]

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socketserver::Mode;
use socketserver::http::{self, Http, Limits, Response, StaticFiles, StatusCode};

/// Workers in pool mode (the async mode of these tests has 2 as well): fewer than the hostile
/// clients, so one worker per hostile client would starve everyone.
const POOL: Mode = Mode::Pool { workers: 2 };
const HOSTILE: usize = 6;
/// How late a deadline may be met: a lingering close (up to 2 s, so an answer is not lost to
/// a reset) and a loaded 2-core machine running tests in parallel.
const MARGIN: Duration = Duration::from_secs(4);
/// A file far larger than the socket buffers of both ends can hold.
const HUGE: u64 = 64 * 1024 * 1024;

fn site(mode: Mode, limits: Limits) -> (TestServer, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("hello.txt"), b"hello\n").unwrap();
    // Sparse: costs no disk, reads as zeros.
    std::fs::File::create(root.path().join("huge.bin"))
        .unwrap()
        .set_len(HUGE)
        .unwrap();
    let handler = Http::new(StaticFiles::new(root.path()).unwrap())
        .limits(limits)
        .access_log(false);
    (TestServer::start(Transport::Tcp, mode, handler), root)
}

fn tcp_to(server: &TestServer) -> io::Result<TcpStream> {
    let s = TcpStream::connect(server.addr.socket_addr().unwrap())?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// A normal client's GET, timed: status and how long it took.
fn timed_get(server: &TestServer, path: &str) -> io::Result<(u16, Duration)> {
    let started = Instant::now();
    let mut s = tcp_to(server)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let status = line.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, started.elapsed()))
}

fn assert_answered_promptly(server: &TestServer, mode: Mode, what: &str) -> io::Result<()> {
    let (status, took) = timed_get(server, "/hello.txt")?;
    assert_eq!(status, 200, "{mode}: {what}");
    assert!(
        took < Duration::from_secs(1),
        "{mode}: a normal client waited {took:?} behind {what}"
    );
    Ok(())
}

const MODES: [Mode; 3] = [Mode::Threading, POOL, ASYNC];

/// Issue 9, item 2: clients that ask for a large file and read nothing are dropped within
/// the write timeout (plus a margin), not after minutes; the pool and the loops stay free.
#[test]
fn stalled_readers_are_dropped_at_the_write_timeout_and_starve_no_one() -> io::Result<()> {
    for mode in MODES {
        eprintln!("--- mode {mode}");
        let mut limits = Limits::default();
        limits.write_timeout = Duration::from_millis(500);
        let (server, _root) = site(mode, limits.clone());
        let mut stalled = Vec::new();
        for _ in 0..HOSTILE {
            let mut s = tcp_to(&server)?;
            write!(s, "GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")?;
            stalled.push(s);
        }
        let started = Instant::now();
        assert_answered_promptly(&server, mode, "stalled readers")?;
        for s in &stalled {
            let left = (limits.write_timeout + MARGIN).saturating_sub(started.elapsed());
            assert!(
                released_within(s, left).is_some(),
                "{mode}: a client that reads nothing still held its connection after {:?}",
                started.elapsed()
            );
        }
        // What arrived is a prefix of the answer, cut: never the whole file.
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut s = stalled.remove(0);
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        assert!(got < HUGE, "{mode}: the whole file arrived");
        assert_answered_promptly(&server, mode, "nothing")?;
    }
    Ok(())
}

/// A reader that takes a byte now and then keeps nothing either: each write timeout must see
/// 64 KiB taken.
#[test]
fn a_reader_taking_a_byte_now_and_then_is_dropped_too() -> io::Result<()> {
    for mode in [Mode::Threading, Mode::Sync, POOL, ASYNC] {
        eprintln!("--- mode {mode}");
        let mut limits = Limits::default();
        limits.write_timeout = Duration::from_millis(500);
        let (server, _root) = site(mode, limits.clone());
        let mut s = tcp_to(&server)?;
        write!(s, "GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")?;
        // Let the buffers fill, then sip a byte every 100 ms.
        thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let mut released = None;
        while started.elapsed() < limits.write_timeout * 4 + MARGIN {
            if !server_holds(&s) {
                released = Some(started.elapsed());
                break;
            }
            let _ = s.read(&mut byte);
            thread::sleep(Duration::from_millis(100));
        }
        assert!(
            released.is_some(),
            "{mode}: a sipping reader kept its connection for {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// A service that reads the whole body, then answers with its length.
fn count_body(req: &mut http::Request<'_>) -> Response {
    match req.read_body() {
        Ok(body) => Response::text(StatusCode::OK, format!("{}\n", body.len())),
        Err(e) => Response::error(StatusCode::REQUEST_TIMEOUT, &e.to_string()),
    }
}

fn body_site(mode: Mode, limits: Limits) -> TestServer {
    let service = |req: &mut http::Request<'_>| {
        if req.path() == "/hello.txt" {
            Response::text(StatusCode::OK, "hello\n")
        } else {
            count_body(req)
        }
    };
    TestServer::start(
        Transport::Tcp,
        mode,
        Http::new(service).limits(limits).access_log(false),
    )
}

/// Sends a head announcing `len` body bytes, then one byte every 50 ms until `stop`.
fn trickle(mut s: TcpStream, len: usize, stop: Arc<Mutex<bool>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        if write!(
            s,
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
        for _ in 0..len {
            if *stop.lock().unwrap() || s.write_all(b"x").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Issue 9, item 1: more body tricklers than workers. Small bodies are received by the loop
/// (pool, async), so they hold no worker at all; in every mode the body must keep the
/// minimum rate after its grace, so each trickler is cut off within the grace plus a margin.
#[test]
fn body_tricklers_are_cut_at_the_minimum_rate_and_starve_no_one() -> io::Result<()> {
    for mode in MODES {
        for len in [4096, 1 << 20] {
            eprintln!("--- mode {mode}, body of {len} bytes");
            let mut limits = Limits::default();
            limits.idle_timeout = Duration::from_millis(500);
            limits.min_body_rate = 1000;
            let server = body_site(mode, limits.clone());
            let stop = Arc::new(Mutex::new(false));
            let mut clients = Vec::new();
            let mut threads = Vec::new();
            for _ in 0..HOSTILE {
                let s = tcp_to(&server)?;
                threads.push(trickle(s.try_clone()?, len, Arc::clone(&stop)));
                clients.push(s);
            }
            let started = Instant::now();
            thread::sleep(Duration::from_millis(100));
            if len <= 64 * 1024 || mode == Mode::Threading {
                // Large bodies are read by the workers (the service reads them), so they may
                // delay others until they are cut; small ones never do.
                assert_answered_promptly(&server, mode, "body tricklers")?;
            }
            for s in &clients {
                // 20 bytes a second earns 20 ms a second: the grace is what counts.
                let left = (limits.idle_timeout + MARGIN).saturating_sub(started.elapsed());
                assert!(
                    released_within(s, left).is_some(),
                    "{mode}: a body trickler still held its connection after {:?}",
                    started.elapsed()
                );
            }
            *stop.lock().unwrap() = true;
            for t in threads {
                t.join().unwrap();
            }
            assert_answered_promptly(&server, mode, "nothing")?;
        }
    }
    Ok(())
}

/// A body sent at a fair pace is received whole, however long it takes overall: sized, and
/// chunked (whose first 64 KiB the loop receives before a worker reads the rest: those bytes
/// earn their time too).
#[test]
fn a_body_at_a_fair_pace_is_received_whole() -> io::Result<()> {
    for mode in MODES {
        for chunked in [false, true] {
            let mut limits = Limits::default();
            limits.idle_timeout = Duration::from_millis(300);
            limits.min_body_rate = 10_000;
            let server = body_site(mode, limits);
            let mut s = tcp_to(&server)?;
            if chunked {
                write!(
                    s,
                    "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
            } else {
                write!(
                    s,
                    "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                )?;
            }
            // 20 kB/s, twice the minimum, for 5 s: longer than any single timeout.
            for _ in 0..50 {
                if chunked {
                    s.write_all(b"7d0\r\n")?;
                }
                s.write_all(&[b'y'; 2000])?;
                if chunked {
                    s.write_all(b"\r\n")?;
                }
                thread::sleep(Duration::from_millis(100));
            }
            if chunked {
                s.write_all(b"0\r\n\r\n")?;
            }
            let mut reply = String::new();
            BufReader::new(s).read_to_string(&mut reply).ok();
            assert!(
                reply.starts_with("HTTP/1.1 200"),
                "{mode} chunked={chunked}: {reply:?}"
            );
            assert!(
                reply.ends_with("\n100000\n"),
                "{mode} chunked={chunked}: {reply:?}"
            );
        }
    }
    Ok(())
}

/// A reader that takes 4 KiB every 100 ms (far under 64 KiB per write timeout) through a
/// small receive buffer is cut off in every mode: the loop keeps the same stall window as
/// the blocking side.
#[test]
fn a_reader_taking_little_through_a_small_window_is_dropped() -> io::Result<()> {
    for mode in MODES {
        let mut limits = Limits::default();
        limits.write_timeout = Duration::from_millis(500);
        let (server, _root) = site(mode, limits.clone());
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.set_recv_buffer_size(4096)?;
        sock.connect(&server.addr.socket_addr().unwrap().into())?;
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        write!(s, "GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")?;
        thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        let mut released = false;
        while started.elapsed() < limits.write_timeout * 4 + MARGIN {
            if !server_holds(&s) {
                released = true;
                break;
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    released = true;
                    break;
                }
                Ok(_) => {}
            }
            thread::sleep(Duration::from_millis(100));
        }
        assert!(
            released,
            "{mode}: a reader taking 40 KiB/s kept its connection"
        );
    }
    Ok(())
}

/// On the loop, a small body that never completes gets 408 when its deadline passes.
#[test]
fn a_small_body_that_stops_gets_408_on_the_loop() -> io::Result<()> {
    for mode in [POOL, ASYNC] {
        let mut limits = Limits::default();
        limits.idle_timeout = Duration::from_millis(300);
        let server = body_site(mode, limits);
        let mut s = tcp_to(&server)?;
        write!(
            s,
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
        )?;
        let started = Instant::now();
        let mut reply = String::new();
        BufReader::new(s).read_to_string(&mut reply).ok();
        assert!(reply.starts_with("HTTP/1.1 408"), "{mode}: {reply:?}");
        assert!(started.elapsed() < Duration::from_millis(300) + MARGIN);
    }
    Ok(())
}

/// Issue 9, item 5: in pool mode the requests of many connections go through one worker in
/// turn, one at a time, all answered. (Past the queue's bound, `64 × workers`, requests wait
/// parked on their loop: that mechanism has its unit test beside `Busy`.)
#[test]
fn many_requests_on_one_pool_worker_are_all_answered_in_turn() -> io::Result<()> {
    let running = Arc::new(Mutex::new((0usize, 0usize))); // (now, most)
    let service = {
        let running = Arc::clone(&running);
        move |_: &mut http::Request<'_>| {
            {
                let mut r = running.lock().unwrap();
                r.0 += 1;
                r.1 = r.1.max(r.0);
            }
            thread::sleep(Duration::from_millis(50));
            running.lock().unwrap().0 -= 1;
            Response::text(StatusCode::OK, "done\n")
        }
    };
    let server = TestServer::start(
        Transport::Tcp,
        Mode::Pool { workers: 1 },
        Http::new(service).access_log(false),
    );
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let s = tcp_to(&server);
            thread::spawn(move || -> io::Result<String> {
                let mut s = s?;
                write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                let mut reply = String::new();
                s.read_to_string(&mut reply)?;
                Ok(reply)
            })
        })
        .collect();
    for c in clients {
        let reply = c.join().unwrap()?;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
        assert!(reply.ends_with("done\n"), "{reply:?}");
    }
    assert_eq!(
        running.lock().unwrap().1,
        1,
        "one worker runs one request at a time"
    );
    Ok(())
}

/// A large answer already in memory (`Response::bytes`) is queued for the loop like a file:
/// clients that do not read it hold no worker, even with a single one.
#[test]
fn large_in_memory_answers_to_non_readers_hold_no_worker() -> io::Result<()> {
    let big = Arc::new(vec![b'z'; 8 << 20]);
    let service = move |req: &mut http::Request<'_>| {
        if req.path() == "/big" {
            Response::new(StatusCode::OK).body(big.to_vec())
        } else {
            Response::text(StatusCode::OK, "hello\n")
        }
    };
    let mut limits = Limits::default();
    limits.write_timeout = Duration::from_secs(20);
    let server = TestServer::start(
        Transport::Tcp,
        Mode::Pool { workers: 1 },
        Http::new(service).limits(limits).access_log(false),
    );
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = tcp_to(&server)?;
        write!(s, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")?;
        stalled.push(s);
    }
    thread::sleep(Duration::from_millis(300));
    let (status, took) = timed_get(&server, "/hello.txt")?;
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(1),
        "a normal client waited {took:?}: a worker is writing to a non-reader"
    );
    Ok(())
}
