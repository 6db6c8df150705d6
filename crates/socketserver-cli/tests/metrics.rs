//! `--metrics URL`: Prometheus text on a listener of its own, scraped before and after known
//! traffic, every counter exact; with `--processes`, summed over the workers and never going
//! down across a restart.

mod common;

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::{Addr, IO_TIMEOUT, Server, Stream};
use tempfile::tempdir;

/// Starts the server and reads its `metrics on` line.
fn start(args: &[&str]) -> io::Result<(Server, Addr)> {
    let server = Server::start(args)?;
    let line = server.next_stdout_line()?;
    let url = line
        .strip_prefix("metrics on ")
        .ok_or_else(|| common::other(format!("unexpected stdout line {line:?}")))?;
    let addr = Addr::parse(url)?;
    Ok((server, addr))
}

/// Scrapes `/metrics`: each sample line as `name{labels}` → value.
fn scrape(addr: &Addr) -> io::Result<HashMap<String, f64>> {
    let mut conn = Stream::connect(addr)?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")?;
    let reply = common::read_reply(&mut BufReader::new(&mut conn), false)?;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut samples = HashMap::new();
    for line in reply.text().lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| common::other(format!("sample line {line:?}")))?;
        let value = value
            .parse()
            .map_err(|_| common::other(format!("value in {line:?}")))?;
        samples.insert(name.to_string(), value);
    }
    Ok(samples)
}

fn get(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// Scrapes until `done` holds (the counters of a connection just closed are counted as
/// the server sees the close).
fn scrape_until(
    addr: &Addr,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> io::Result<HashMap<String, f64>> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let samples = scrape(addr)?;
        if done(&samples) || Instant::now() > deadline {
            return Ok(samples);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn http_counters_are_exact_before_and_after_known_traffic() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("a.txt"), "twelve bytes")?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    for mode in ["async", "pool", "threading", "fork"] {
        let (server, metrics) = start(&[
            "http",
            "--listen",
            "tcp://127.0.0.1:0",
            "--dir",
            dir,
            "--mode",
            mode,
            "--metrics",
            "tcp://127.0.0.1:0",
            "--timeout",
            "1",
            "--quiet",
        ])?;
        let before = scrape(&metrics)?;
        assert_eq!(
            get(&before, "socketserver_connections_accepted_total"),
            0.0,
            "{mode}"
        );
        assert_eq!(get(&before, "socketserver_bytes_sent_total"), 0.0, "{mode}");
        // Three hits and a miss on one keep-alive connection, then a stalled head.
        let request = b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n";
        let miss = b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        // Pipelined on one connection: what comes back is read whole, to the byte.
        let mut conn = Stream::connect(&server.addrs[0])?;
        let mut requests = request.repeat(3);
        requests.extend_from_slice(miss);
        let received = common::send_all_and_read_to_eof(&mut conn, &requests)?;
        let mut sent = requests.len();
        assert_eq!(
            String::from_utf8_lossy(&received)
                .matches("HTTP/1.1 200 OK\r\n")
                .count(),
            3,
            "{mode}"
        );
        let mut stalled = Stream::connect(&server.addrs[0])?;
        stalled.write_all(b"GET /a.txt HTTP/1.1\r\n")?;
        sent += b"GET /a.txt HTTP/1.1\r\n".len();
        let mut answer = Vec::new();
        stalled.read_to_end(&mut answer)?; // 408 after the 1 s header timeout
        assert!(answer.starts_with(b"HTTP/1.1 408"), "{mode}");
        let after = scrape_until(&metrics, |s| {
            get(s, "socketserver_connections_active") == 0.0
                && get(s, "socketserver_connections_accepted_total") == 2.0
        })?;
        let what = format!("{mode}: {after:?}");
        for (name, want) in [
            ("socketserver_connections_accepted_total", 2),
            ("socketserver_connections_active", 0),
            ("socketserver_http_requests_total{code=\"200\"}", 3),
            ("socketserver_http_requests_total{code=\"404\"}", 1),
            ("socketserver_http_requests_total{code=\"408\"}", 1),
            ("socketserver_http_request_duration_seconds_count", 4),
            ("socketserver_bytes_received_total", sent),
            // Every byte the clients read: three answers, the miss, the 408.
            (
                "socketserver_bytes_sent_total",
                received.len() + answer.len(),
            ),
            ("socketserver_timeouts_total{kind=\"header\"}", 1),
            ("socketserver_handler_errors_total", 0),
            ("socketserver_accept_errors_total", 0),
        ] {
            assert_eq!(get(&after, name), want as f64, "{name}: {what}");
        }
        drop(server);
    }
    Ok(())
}

#[test]
fn datagrams_and_stream_bytes_are_counted_exactly() -> io::Result<()> {
    let dir = tempdir()?;
    let (server, metrics) = start(&[
        "echo",
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        "tcp://127.0.0.1:0",
        "--metrics",
        "tcp://127.0.0.1:0",
    ])?;
    let client = common::Dgram::new(&server.addrs[0], dir.path())?;
    let mut total = 0;
    for n in [1usize, 100, 1000] {
        let data = vec![b'x'; n];
        client.send(&data)?;
        assert_eq!(client.recv()?, data);
        total += n;
    }
    let echoed = common::stream_exchange(&server.addrs[1], &[7u8; 70_000])?;
    assert_eq!(echoed.len(), 70_000);
    let after = scrape_until(&metrics, |s| {
        get(s, "socketserver_connections_active") == 0.0
            && get(s, "socketserver_connections_accepted_total") == 1.0
    })?;
    assert_eq!(
        get(&after, "socketserver_datagrams_total"),
        3.0,
        "{after:?}"
    );
    assert_eq!(
        get(&after, "socketserver_bytes_received_total"),
        (total + 70_000) as f64
    );
    assert_eq!(
        get(&after, "socketserver_bytes_sent_total"),
        (total + 70_000) as f64
    );
    assert!(!after.contains_key("socketserver_http_request_duration_seconds_count"));
    Ok(())
}

#[test]
fn with_several_processes_the_sum_is_exact_and_survives_a_restart() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("a.txt"), "x")?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let (server, metrics) = start(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--processes",
        "2",
        "--workers",
        "1",
        "--metrics",
        "tcp://127.0.0.1:0",
    ])?;
    let hit = |n: usize| -> io::Result<()> {
        for _ in 0..n {
            let reply = common::stream_exchange(
                &server.addrs[0],
                b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )?;
            assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"));
        }
        Ok(())
    };
    hit(10)?;
    let ok = "socketserver_http_requests_total{code=\"200\"}";
    let first = scrape_until(&metrics, |s| get(s, ok) == 10.0)?;
    assert_eq!(get(&first, ok), 10.0, "{first:?}");
    assert_eq!(get(&first, "socketserver_connections_accepted_total"), 10.0);
    server.signal("HUP")?;
    server.wait_stderr(IO_TIMEOUT, |e| e.contains("restart finished"))?;
    let across = scrape(&metrics)?;
    assert_eq!(
        get(&across, ok),
        10.0,
        "counted by workers now gone: {across:?}"
    );
    hit(5)?;
    let last = scrape_until(&metrics, |s| get(s, ok) == 15.0)?;
    assert_eq!(get(&last, ok), 15.0, "{last:?}");
    assert_eq!(get(&last, "socketserver_connections_accepted_total"), 15.0);
    assert_eq!(get(&last, "socketserver_connections_active"), 0.0);
    Ok(())
}

#[test]
fn a_metrics_listener_must_be_tcp() -> io::Result<()> {
    let out = common::run(&["echo", "--metrics", "udp://127.0.0.1:0"])?;
    common::assert_one_line_error(
        &out,
        2,
        &["--metrics udp://127.0.0.1:0: the metrics are served over TCP"],
    );
    Ok(())
}
