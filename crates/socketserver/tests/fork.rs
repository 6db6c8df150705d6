//! `Mode::Fork`: the transport matrix, reaping, `max_children`, the drain.
//!
//! A forked child inherits every file descriptor of the test process, so these tests run one
//! at a time (`SERIAL`) and in their own test binary: a child must never hold a copy of another
//! test's sockets.

mod common;

use std::io::{self, BufRead, Read, Write};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socketserver::services::{Echo, ThreadName, Upper};
use socketserver::{Mode, Request};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The children of this process, with their state letter (`Z` for a zombie).
fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me {
            found.push((pid, state));
        }
    }
    found
}

#[test]
fn fork_serves_every_transport_byte_exact() -> io::Result<()> {
    let _serial = serial();
    for transport in TRANSPORTS {
        let server = TestServer::start(transport, Mode::fork(), Echo);
        let payload = if transport.is_stream() {
            pattern(4 * 1024 * 1024 + 3)
        } else {
            pattern(60 * 1024)
        };
        let echoed = exchange(&server.addr, &payload)?;
        assert!(
            echoed == payload,
            "{transport:?}: {} bytes back of {}",
            echoed.len(),
            payload.len()
        );

        let server = TestServer::start(transport, Mode::fork(), Upper);
        assert_eq!(
            exchange(&server.addr, b" forked \n")?,
            b"FORKED",
            "{transport:?}"
        );

        let server = TestServer::start(transport, Mode::fork(), ThreadName);
        let reply = String::from_utf8(exchange(&server.addr, b"hi")?).unwrap();
        let (name, data) = reply.split_once(": ").unwrap();
        let pid: u32 = name
            .strip_prefix("pid-")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{reply}"));
        assert_ne!(pid, std::process::id(), "the request ran in the parent");
        assert_eq!(data, "hi");
    }
    Ok(())
}

#[test]
fn concurrent_requests_run_in_different_children() -> io::Result<()> {
    let _serial = serial();
    let server = TestServer::start(Transport::Tcp, Mode::fork(), ThreadName);
    let mut a = Stream::connect(&server.addr)?;
    let mut b = Stream::connect(&server.addr)?;
    assert!(wait_until(|| server.server.in_flight() == 2));
    let mut names = Vec::new();
    for s in [&mut a, &mut b] {
        s.write_all(b"x")?;
        s.shutdown_write()?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        names.push(reply);
    }
    assert_ne!(names[0], names[1]);
    Ok(())
}

#[test]
fn no_zombie_remains_after_load() -> io::Result<()> {
    let _serial = serial();
    let server = TestServer::start_with(
        Transport::Tcp,
        |b| b.mode(Mode::Fork { max_children: 8 }),
        Echo,
    );
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let addr = server.addr.clone();
            thread::spawn(move || -> io::Result<()> {
                for i in 0..40 {
                    let line = format!("client {c} request {i}");
                    assert_eq!(exchange(&addr, line.as_bytes())?, line.as_bytes());
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap()?;
    }
    // Children are reaped as they exit (SIGCHLD), not at the next request or at close.
    assert!(
        wait_until(|| server.server.in_flight() == 0),
        "children still counted"
    );
    assert!(
        wait_until(|| children().is_empty()),
        "children left: {:?}",
        children()
    );
    server.shutdown().unwrap();
    assert!(children().is_empty());
    Ok(())
}

#[test]
fn max_children_holds_and_the_next_client_waits_its_turn() -> io::Result<()> {
    let _serial = serial();
    let server = TestServer::start_with(
        Transport::Tcp,
        |b| b.mode(Mode::Fork { max_children: 2 }),
        Echo,
    );
    let mut held: Vec<Stream> = (0..2)
        .map(|_| Stream::connect(&server.addr))
        .collect::<io::Result<_>>()?;
    for s in &mut held {
        s.write_all(b"a")?;
        let mut one = [0u8; 1];
        s.read_exact(&mut one)?;
    }
    assert_eq!(children().len(), 2);
    let mut third = Stream::connect(&server.addr)?;
    third.set_timeout(Some(Duration::from_millis(300)))?;
    third.write_all(b"b")?;
    let mut one = [0u8; 1];
    assert!(
        third.read_exact(&mut one).is_err(),
        "a third child ran beside two at max_children 2"
    );
    assert_eq!(children().len(), 2);
    held.pop().unwrap().shutdown_write()?;
    third.set_timeout(Some(IO_TIMEOUT))?;
    third.read_exact(&mut one)?;
    assert_eq!(&one, b"b");
    Ok(())
}

#[test]
fn shutdown_drains_children_then_kills_what_remains() -> io::Result<()> {
    let _serial = serial();
    // Drain: an in-flight child finishes its echo after the stop.
    let server = TestServer::start(Transport::Unix, Mode::fork(), Echo);
    let mut stream = Stream::connect(&server.addr)?;
    stream.write_all(b"before ")?;
    let mut seven = [0u8; 7];
    stream.read_exact(&mut seven)?;
    server.stop.shutdown();
    let addr = server.addr.clone();
    assert!(
        wait_until(|| Stream::connect(&addr).is_err()),
        "still accepting after shutdown"
    );
    stream.write_all(b"after")?;
    stream.shutdown_write()?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    assert_eq!(rest, b"after");
    server.join().unwrap();
    assert!(children().is_empty());

    // Deadline: a stuck child is killed and reaped when the shutdown timeout passes.
    let server = TestServer::start_with(
        Transport::Tcp,
        |b| {
            b.mode(Mode::fork())
                .shutdown_timeout(Duration::from_millis(300))
        },
        Echo,
    );
    let mut stuck = Stream::connect(&server.addr)?;
    stuck.write_all(b"x")?;
    let mut one = [0u8; 1];
    stuck.read_exact(&mut one)?;
    let started = Instant::now();
    server.shutdown().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(children().is_empty(), "{:?}", children());
    let mut rest = Vec::new();
    assert_eq!(stuck.read_to_end(&mut rest).unwrap_or(0), 0);
    Ok(())
}

#[test]
fn a_panicking_child_leaves_the_server_serving() -> io::Result<()> {
    let _serial = serial();
    let handler = |req: &mut Request| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        if line.starts_with("panic") {
            panic!("child panics");
        }
        req.write_all(b"fine")
    };
    let server = TestServer::start(Transport::Tcp, Mode::fork(), handler);
    assert_eq!(exchange(&server.addr, b"panic\n").unwrap_or_default(), b"");
    assert_eq!(exchange(&server.addr, b"again\n")?, b"fine");
    assert!(wait_until(|| children().is_empty()));
    Ok(())
}

#[test]
fn a_handler_in_a_child_can_stop_the_server() -> io::Result<()> {
    let _serial = serial();
    let handler = |req: &mut Request| {
        req.write_all(b"stopping")?;
        // Runs in the child: the request must reach the parent's loop.
        req.shutdown_handle().shutdown();
        Ok(())
    };
    let server = TestServer::start(Transport::Tcp, Mode::fork(), handler);
    assert_eq!(exchange(&server.addr, b"")?, b"stopping");
    let started = Instant::now();
    server.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(children().is_empty());
    Ok(())
}

#[test]
fn a_child_can_cut_the_drain_short_with_close() -> io::Result<()> {
    let _serial = serial();
    let handler = |req: &mut Request| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        req.shutdown_handle().close();
        req.write_all(b"closing")
    };
    let server = TestServer::start_with(
        Transport::Tcp,
        |b| {
            b.mode(Mode::fork())
                .shutdown_timeout(Duration::from_secs(60))
        },
        handler,
    );
    let mut client = Stream::connect(&server.addr)?;
    assert!(wait_until(|| server.server.in_flight() == 1));
    server.stop.shutdown();
    let started = Instant::now();
    client.write_all(b"stop now\n")?;
    server.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(children().is_empty());
    Ok(())
}
