//! Integration tests of the `socketserver` binary against its command-line contract
//! (`shared/cli-contract.md`): services, transports, modes, limits, signals and errors.
//!
//! Every server listens on port 0 or on socket paths inside a temporary directory, and its real
//! addresses come from its `listening on URL` lines. Servers are killed by a guard whatever the
//! outcome; client sockets carry timeouts.

mod common;

use std::fs;
use std::io::{self, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Addr, Dgram, Server, Stream, assert_one_line_error, assert_same_bytes, children_of, exchange,
    is_timeout, payload, run, send_all_and_read_to_eof, stream_exchange, unix_url, unixgram_url,
    wait_until_refused,
};
use tempfile::tempdir;

const TCP: &str = "tcp://127.0.0.1:0";
const UDP: &str = "udp://127.0.0.1:0";

/// A server on all four transports: tcp, unix, udp, unixgram (in that order).
fn start_everywhere(service: &str, extra: &[&str], dir: &Path) -> io::Result<Server> {
    let unix = unix_url(&dir.join("server.sock"));
    let gram = unixgram_url(&dir.join("server.gram"));
    let mut args = vec![
        service, "--listen", TCP, "--listen", &unix, "--listen", UDP, "--listen", &gram,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

// ---------------------------------------------------------------------------------------------
// 1. echo
// ---------------------------------------------------------------------------------------------

fn echo_is_byte_exact_everywhere(mode: &str) -> io::Result<()> {
    echo_is_byte_exact_with(&["--mode", mode])
}

fn echo_is_byte_exact_with(args: &[&str]) -> io::Result<()> {
    let mode = args.join(" ");
    let dir = tempdir()?;
    let server = start_everywhere("echo", args, dir.path())?;
    let big = payload(1 << 20);
    let all_bytes: Vec<u8> = (0..=255).collect();
    for addr in &server.addrs[..2] {
        for data in [&b""[..], b"hello\n", &all_bytes, &big] {
            let echoed = stream_exchange(addr, data)?;
            assert_same_bytes(
                &echoed,
                data,
                &format!("{mode}: echo of {} bytes over {addr:?}", data.len()),
            );
        }
    }
    let large = payload(60_000);
    for addr in &server.addrs[2..] {
        let client = Dgram::new(addr, dir.path())?;
        for data in [&b"ping"[..], &all_bytes, &large, b""] {
            let echoed = client.exchange(data)?;
            assert_same_bytes(
                &echoed,
                data,
                &format!(
                    "{mode}: echo of a {}-byte datagram over {addr:?}",
                    data.len()
                ),
            );
        }
    }
    Ok(())
}

#[test]
fn echo_is_byte_exact_over_every_transport_in_sync_mode() -> io::Result<()> {
    echo_is_byte_exact_everywhere("sync")
}

#[test]
fn echo_is_byte_exact_over_every_transport_in_threading_mode() -> io::Result<()> {
    echo_is_byte_exact_everywhere("threading")
}

#[test]
fn echo_is_byte_exact_over_every_transport_in_pool_mode() -> io::Result<()> {
    echo_is_byte_exact_everywhere("pool")
}

#[test]
fn echo_is_byte_exact_over_every_transport_in_fork_mode() -> io::Result<()> {
    echo_is_byte_exact_everywhere("fork")
}

#[test]
fn echo_is_byte_exact_over_every_transport_in_async_mode() -> io::Result<()> {
    echo_is_byte_exact_everywhere("async")
}

#[test]
fn echo_is_byte_exact_over_every_transport_with_every_async_accept() -> io::Result<()> {
    for accept in ["shared", "reuseport", "handoff"] {
        echo_is_byte_exact_with(&["--mode", "async", "--workers", "2", "--accept", accept])?;
    }
    Ok(())
}

#[test]
fn echo_serves_concurrent_large_streams_in_threading_mode() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere("echo", &[], dir.path())?;
    thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let addr = &server.addrs[i % 2];
                scope.spawn(move || -> io::Result<()> {
                    let data = payload(256 * 1024 + i);
                    let echoed = stream_exchange(addr, &data)?;
                    assert_same_bytes(&echoed, &data, &format!("client {i} over {addr:?}"));
                    Ok(())
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client thread panicked")?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// 2. upper
// ---------------------------------------------------------------------------------------------

#[test]
fn upper_replies_one_stripped_uppercased_line_then_closes() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere("upper", &[], dir.path())?;
    for addr in &server.addrs[..2] {
        // No shutdown(Write) from the client: the server must close after its reply.
        let mut conn = Stream::connect(addr)?;
        conn.write_all(b"  hello world \n")?;
        assert_eq!(conn.read_all()?, b"HELLO WORLD", "over {addr:?}");

        // Only the first line is answered.
        let mut conn = Stream::connect(addr)?;
        conn.write_all(b"one\ttwo\r\nthree\n")?;
        assert_eq!(conn.read_all()?, b"ONE\tTWO", "over {addr:?}");

        // A line without a newline is answered at end of file.
        let reply = stream_exchange(addr, b"  no newline here")?;
        assert_eq!(reply, b"NO NEWLINE HERE", "over {addr:?}");

        // Non-ASCII bytes pass through unchanged; only ASCII is upper-cased.
        let reply = stream_exchange(addr, "straße ok\n".as_bytes())?;
        assert_eq!(reply, "STRAßE OK".as_bytes(), "over {addr:?}");
    }
    Ok(())
}

#[test]
fn upper_answers_each_datagram_stripped_and_uppercased() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere("upper", &[], dir.path())?;
    for addr in &server.addrs[2..] {
        let client = Dgram::new(addr, dir.path())?;
        assert_eq!(client.exchange(b"  hello world \n")?, b"HELLO WORLD");
        // The whole datagram is the line: inner newlines stay.
        assert_eq!(client.exchange(b"a\nb\n")?, b"A\nB");
        assert_eq!(client.exchange(b"  \n")?, b"");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. threadname
// ---------------------------------------------------------------------------------------------

/// Splits a `threadname` reply into the worker name and the data, checking the data.
#[track_caller]
fn worker_of(reply: &[u8], data: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply).into_owned();
    let (name, rest) = text
        .split_once(": ")
        .unwrap_or_else(|| panic!("reply {text:?} is not `<name>: <data>`"));
    assert_eq!(rest.as_bytes(), data, "the data part of {text:?}");
    name.to_string()
}

/// Two connections open at once: the first is served (accepted and its worker waiting for
/// data) while the second one sends and gets its answer; then the first sends. Returns the two
/// worker names.
fn two_concurrent_names(addr: &Addr) -> io::Result<(String, String)> {
    let mut first = Stream::connect(addr)?;
    let mut second = Stream::connect(addr)?;
    second.write_all(b"second")?;
    let second_reply = second.read_all()?;
    first.write_all(b"first")?;
    let first_reply = first.read_all()?;
    Ok((
        worker_of(&first_reply, b"first"),
        worker_of(&second_reply, b"second"),
    ))
}

fn numbered(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.parse().ok()
}

#[test]
fn threadname_in_threading_mode_shows_a_different_thread_per_connection() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere("threadname", &["--mode", "threading"], dir.path())?;
    for addr in &server.addrs[..2] {
        let (a, b) = two_concurrent_names(addr)?;
        assert!(numbered(&a, "socketserver-conn-").is_some(), "{a:?}");
        assert!(numbered(&b, "socketserver-conn-").is_some(), "{b:?}");
        assert_ne!(a, b, "concurrent connections over {addr:?}");
    }
    Ok(())
}

#[test]
fn threadname_in_pool_mode_shows_distinct_pool_workers() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere(
        "threadname",
        &["--mode", "pool", "--workers", "2"],
        dir.path(),
    )?;
    for addr in &server.addrs[..2] {
        let (a, b) = two_concurrent_names(addr)?;
        for name in [&a, &b] {
            let n = numbered(name, "socketserver-worker-");
            assert!(matches!(n, Some(0 | 1)), "{name:?} is not one of 2 workers");
        }
        assert_ne!(a, b, "concurrent connections over {addr:?}");
    }
    Ok(())
}

#[test]
fn threadname_in_fork_mode_shows_a_different_child_pid_per_connection() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere("threadname", &["--mode", "fork"], dir.path())?;
    let parent = u64::from(server.pid());
    for addr in &server.addrs[..2] {
        let (a, b) = two_concurrent_names(addr)?;
        for name in [&a, &b] {
            let pid = numbered(name, "pid-");
            assert!(pid.is_some(), "{name:?} does not look like pid-<digits>");
            assert_ne!(
                pid,
                Some(parent),
                "{name:?} is the server itself, not a child"
            );
        }
        assert_ne!(a, b, "concurrent connections over {addr:?}");
    }
    Ok(())
}

#[test]
fn threadname_in_sync_mode_shows_the_serving_thread() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere("threadname", &["--mode", "sync"], dir.path())?;
    for addr in &server.addrs[..2] {
        let mut conn = Stream::connect(addr)?;
        conn.write_all(b"hi")?;
        assert_eq!(conn.read_all()?, b"main: hi", "over {addr:?}");
    }
    Ok(())
}

#[test]
fn upper_and_threadname_in_async_mode_over_every_transport() -> io::Result<()> {
    let dir = tempdir()?;
    let upper = start_everywhere("upper", &["--mode", "async"], dir.path())?;
    for addr in &upper.addrs[..2] {
        // No shutdown(Write): the server closes after its one line.
        let mut conn = Stream::connect(addr)?;
        conn.write_all(b"  hello world \n")?;
        assert_eq!(conn.read_all()?, b"HELLO WORLD", "over {addr:?}");
        let reply = stream_exchange(addr, b"  no newline here")?;
        assert_eq!(reply, b"NO NEWLINE HERE", "over {addr:?}");
    }
    for addr in &upper.addrs[2..] {
        let client = Dgram::new(addr, dir.path())?;
        assert_eq!(client.exchange(b"  hello world \n")?, b"HELLO WORLD");
        assert_eq!(client.exchange(b"a\nb\n")?, b"A\nB");
    }

    let dir = tempdir()?;
    let threadname = start_everywhere("threadname", &["--mode", "async"], dir.path())?;
    for addr in &threadname.addrs[..2] {
        // Connections run on the event loops; two at once may share one.
        let (a, b) = two_concurrent_names(addr)?;
        for name in [&a, &b] {
            assert!(
                numbered(name, "socketserver-loop-").is_some(),
                "{name:?} over {addr:?}"
            );
        }
    }
    for addr in &threadname.addrs[2..] {
        // Datagrams are served by the thread that serves the listeners: `main`.
        let client = Dgram::new(addr, dir.path())?;
        assert_eq!(worker_of(&client.exchange(b"ping")?, b"ping"), "main");
        let long = payload(3000);
        let reply = client.exchange(&long)?;
        assert!(reply.starts_with(b"main: "), "{addr:?}");
        assert_same_bytes(&reply[6..], &long[..1024], "async: a 3000-byte datagram");
    }
    Ok(())
}

/// Names of the threads of process `pid`, as the kernel keeps them (15 bytes at most).
fn thread_names_of(pid: u32) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Ok(comm) = fs::read_to_string(task?.path().join("comm")) {
            names.push(comm.trim_end().to_string());
        }
    }
    Ok(names)
}

#[test]
fn workers_sets_the_number_of_event_loops_in_async_mode() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere(
        "threadname",
        &["--mode", "async", "--workers", "3"],
        dir.path(),
    )?;
    // Open connections do not add threads: the loops serve them all.
    let held: Vec<Stream> = (0..20)
        .map(|_| Stream::connect(&server.addrs[0]))
        .collect::<io::Result<_>>()?;
    for i in 0..12 {
        let data = format!("request {i}");
        let name = worker_of(
            &stream_exchange(&server.addrs[i % 2], data.as_bytes())?,
            data.as_bytes(),
        );
        assert!(
            matches!(numbered(&name, "socketserver-loop-"), Some(0..=2)),
            "{name:?} is not one of 3 loops"
        );
    }
    let names = thread_names_of(server.pid())?;
    let loops = names
        .iter()
        .filter(|n| n.starts_with("socketserver-lo"))
        .count();
    assert_eq!(loops, 3, "--workers 3 --mode async: threads {names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("socketserver-co")),
        "a thread per connection in async mode: {names:?}"
    );
    drop(held);
    Ok(())
}

#[test]
fn threadname_answers_datagrams_with_worker_and_at_most_1024_bytes() -> io::Result<()> {
    for (mode, prefix) in [
        ("threading", "socketserver-conn-"),
        ("pool", "socketserver-worker-"),
        ("fork", "pid-"),
    ] {
        let dir = tempdir()?;
        let server = start_everywhere("threadname", &["--mode", mode], dir.path())?;
        for addr in &server.addrs[2..] {
            let client = Dgram::new(addr, dir.path())?;
            let name = worker_of(&client.exchange(b"ping")?, b"ping");
            assert!(numbered(&name, prefix).is_some(), "{mode}: {name:?}");
            // One receive of at most 1024 bytes: a longer datagram is answered with its head.
            let long = payload(3000);
            let reply = client.exchange(&long)?;
            let split = reply
                .windows(2)
                .position(|w| w == b": ")
                .unwrap_or_else(|| panic!("{mode}: no `<name>: ` in the reply"));
            let name = String::from_utf8_lossy(&reply[..split]);
            assert!(numbered(&name, prefix).is_some(), "{mode}: {name:?}");
            assert_same_bytes(
                &reply[split + 2..],
                &long[..1024],
                &format!("{mode}: the data part of the reply to a 3000-byte datagram"),
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. several listeners
// ---------------------------------------------------------------------------------------------

#[test]
fn several_listeners_print_one_line_each_in_order_and_all_serve() -> io::Result<()> {
    let dir = tempdir()?;
    let unix = dir.path().join("a.sock");
    let gram = dir.path().join("b.gram");
    let (unix_arg, gram_arg) = (unix_url(&unix), unixgram_url(&gram));
    let mut server = Server::start(&[
        "echo", "--listen", &unix_arg, "--listen", TCP, "--listen", &gram_arg, "--listen", UDP,
        "--listen", TCP,
    ])?;
    let addrs = server.addrs.clone();
    assert_eq!(addrs.len(), 5, "{addrs:?}");
    assert_eq!(addrs[0], Addr::Unix(unix.clone()));
    assert!(
        matches!(addrs[1], Addr::Tcp(a) if a.port() != 0),
        "{addrs:?}"
    );
    assert_eq!(addrs[2], Addr::UnixGram(gram.clone()));
    assert!(
        matches!(addrs[3], Addr::Udp(a) if a.port() != 0),
        "{addrs:?}"
    );
    assert!(
        matches!(addrs[4], Addr::Tcp(a) if a.port() != 0),
        "{addrs:?}"
    );
    assert_ne!(addrs[1], addrs[4], "two tcp listeners got the same port");
    for (i, addr) in addrs.iter().enumerate() {
        let data = format!("listener {i}\n");
        assert_eq!(
            exchange(addr, data.as_bytes(), dir.path())?,
            data.as_bytes(),
            "{addr:?}"
        );
    }
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(5))?.success());
    assert_eq!(
        server.rest_of_stdout(),
        Vec::<String>::new(),
        "stdout carries only the listening lines"
    );
    Ok(())
}

#[test]
fn host_names_are_resolved_and_ipv6_hosts_print_in_brackets() -> io::Result<()> {
    let dir = tempdir()?;
    let server = Server::start(&["upper", "--listen", "tcp://localhost:0"])?;
    // `Addr::parse` only accepts a numeric address: the printed line never shows the name.
    assert!(
        matches!(server.addrs[0], Addr::Tcp(a) if a.ip().is_loopback() && a.port() != 0),
        "{:?}",
        server.addrs
    );
    assert_eq!(stream_exchange(&server.addrs[0], b"local\n")?, b"LOCAL");
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipping the [::1] part");
        return Ok(());
    }
    let server = Server::start(&[
        "upper",
        "--listen",
        "tcp://[::1]:0",
        "--listen",
        "udp://[::1]:0",
    ])?;
    for addr in &server.addrs {
        let ip = match addr {
            Addr::Tcp(a) | Addr::Udp(a) => a.ip(),
            other => panic!("{other:?}"),
        };
        assert_eq!(ip, std::net::Ipv6Addr::LOCALHOST, "{addr:?}");
        assert_eq!(exchange(addr, b"six", dir.path())?, b"SIX", "{addr:?}");
    }
    Ok(())
}

#[test]
fn relative_unix_paths_are_relative_to_the_working_directory() -> io::Result<()> {
    let dir = tempdir()?;
    let server = Server::start_in(
        &[
            "upper",
            "--listen",
            "unix:rel.sock",
            "--listen",
            "unixgram:rel.gram",
        ],
        Some(dir.path()),
    )?;
    assert_eq!(
        server.addrs,
        vec![
            Addr::Unix("rel.sock".into()),
            Addr::UnixGram("rel.gram".into())
        ]
    );
    let stream = Addr::Unix(dir.path().join("rel.sock"));
    assert_eq!(stream_exchange(&stream, b"rel\n")?, b"REL");
    let gram = Addr::UnixGram(dir.path().join("rel.gram"));
    assert_eq!(exchange(&gram, b"gram", dir.path())?, b"GRAM");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. signals
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_and_sigint_exit_zero_promptly_and_remove_socket_files() -> io::Result<()> {
    for mode in ["sync", "threading", "pool", "fork", "async"] {
        for signal in ["TERM", "INT"] {
            let dir = tempdir()?;
            let mut server = start_everywhere("echo", &["--mode", mode], dir.path())?;
            // Serve one request first, so the server is not merely fresh.
            assert_eq!(stream_exchange(&server.addrs[0], b"x")?, b"x");
            let files: Vec<_> = server
                .addrs
                .iter()
                .filter_map(|a| a.path().map(Path::to_path_buf))
                .collect();
            assert!(files.iter().all(|f| f.exists()), "{files:?}");
            let started = Instant::now();
            server.signal(signal)?;
            let status = server.wait_exit(Duration::from_secs(5))?;
            let took = started.elapsed();
            assert_eq!(status.code(), Some(0), "{mode} SIG{signal}: {status}");
            assert!(
                took < Duration::from_secs(3),
                "{mode} SIG{signal}: took {took:?}"
            );
            for file in &files {
                assert!(
                    !file.exists(),
                    "{mode} SIG{signal}: {} left behind",
                    file.display()
                );
            }
        }
    }
    Ok(())
}

/// One echo connection in flight (accepted, half sent, its first part echoed), then SIGTERM:
/// new connections are refused, the in-flight one finishes byte-exact, the process exits 0.
fn sigterm_drains_in_flight_echo(mode: &str) -> io::Result<()> {
    let dir = tempdir()?;
    let unix = dir.path().join("drain.sock");
    let unix_arg = unix_url(&unix);
    let mut server = Server::start(&[
        "echo", "--mode", mode, "--listen", TCP, "--listen", &unix_arg,
    ])?;
    let tcp = server.addrs[0].clone();
    let data = payload(1 << 20);
    let (head, tail) = data.split_at(100_000);

    let mut in_flight = Stream::connect(&tcp)?;
    in_flight.write_all(head)?;
    let echoed_head = in_flight.read_n(head.len())?;
    assert_same_bytes(&echoed_head, head, "echo before the signal");

    server.signal("TERM")?;
    wait_until_refused(&tcp, Duration::from_secs(3))
        .map_err(|e| common::other(format!("{mode}: {e}")))?;
    wait_until_refused(&Addr::Unix(unix.clone()), Duration::from_secs(3))?;
    assert!(
        server.is_running()?,
        "{mode}: the server exited before its in-flight connection finished"
    );

    let echoed_tail = send_all_and_read_to_eof(&mut in_flight, tail)?;
    assert_same_bytes(
        &echoed_tail,
        tail,
        &format!("{mode}: echo after the signal"),
    );
    let status = server.wait_exit(Duration::from_secs(5))?;
    assert_eq!(status.code(), Some(0), "{mode}: {status}");
    assert!(!unix.exists(), "{mode}: socket file left behind");
    Ok(())
}

#[test]
fn sigterm_refuses_new_connections_but_lets_in_flight_echo_finish_in_threading_mode()
-> io::Result<()> {
    sigterm_drains_in_flight_echo("threading")
}

#[test]
fn sigterm_refuses_new_connections_but_lets_in_flight_echo_finish_in_pool_mode() -> io::Result<()> {
    sigterm_drains_in_flight_echo("pool")
}

#[test]
fn sigterm_refuses_new_connections_but_lets_in_flight_echo_finish_in_fork_mode() -> io::Result<()> {
    sigterm_drains_in_flight_echo("fork")
}

#[test]
fn sigterm_refuses_new_connections_but_lets_in_flight_echo_finish_in_sync_mode() -> io::Result<()> {
    sigterm_drains_in_flight_echo("sync")
}

#[test]
fn sigterm_refuses_new_connections_but_lets_in_flight_echo_finish_in_async_mode() -> io::Result<()>
{
    sigterm_drains_in_flight_echo("async")
}

#[test]
fn sigterm_refuses_connections_still_waiting_to_be_accepted() -> io::Result<()> {
    let mut server = Server::start(&["echo", "--max-connections", "1", "--listen", TCP])?;
    let tcp = server.addrs[0].clone();
    let mut served = Stream::connect(&tcp)?;
    served.write_all(b"a")?;
    assert_eq!(served.read_n(1)?, b"a");
    // At the limit: the next connection waits in the kernel's queue, never accepted.
    let mut waiting = Stream::connect(&tcp)?;
    waiting.write_all(b"w")?;
    assert_not_served(&mut waiting, "a connection beyond --max-connections 1")?;

    server.signal("TERM")?;
    wait_until_refused(&tcp, Duration::from_secs(3))?;
    let mut buf = [0u8; 8];
    match waiting.read_once(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("a connection not yet accepted at the signal was not refused: {other:?}"),
    }
    assert_eq!(send_all_and_read_to_eof(&mut served, b"end")?, b"end");
    let status = server.wait_exit(Duration::from_secs(5))?;
    assert_eq!(status.code(), Some(0), "{status}");
    Ok(())
}

#[test]
fn ctrl_c_to_the_whole_process_group_lets_forked_requests_finish() -> io::Result<()> {
    // A terminal's Ctrl-C reaches every process of the group: the forked children too.
    let mut server = Server::start_in_own_group(&["echo", "--mode", "fork", "--listen", TCP])?;
    let tcp = server.addrs[0].clone();
    let data = payload(300_000);
    let (head, tail) = data.split_at(1000);
    let mut conn = Stream::connect(&tcp)?;
    conn.write_all(head)?;
    assert_same_bytes(&conn.read_n(head.len())?, head, "echo before Ctrl-C");
    server.signal_group("INT")?;
    wait_until_refused(&tcp, Duration::from_secs(3))?;
    let rest = send_all_and_read_to_eof(&mut conn, tail)?;
    assert_same_bytes(&rest, tail, "echo after Ctrl-C to the process group");
    let status = server.wait_exit(Duration::from_secs(5))?;
    assert_eq!(status.code(), Some(0), "{status}");
    Ok(())
}

/// A stuck client (connected, partly sent, never finishing) in flight, then SIGTERM. Returns
/// the server, the stuck connection and the instant the signal was sent.
fn stuck_client_then_sigterm(
    mode: &str,
    shutdown_timeout: &str,
) -> io::Result<(Server, Stream, Instant)> {
    let server = Server::start(&[
        "echo",
        "--mode",
        mode,
        "--shutdown-timeout",
        shutdown_timeout,
        "--listen",
        TCP,
    ])?;
    let mut stuck = Stream::connect(&server.addrs[0])?;
    stuck.write_all(b"partial")?;
    assert_eq!(
        stuck.read_n(7)?,
        b"partial",
        "{mode}: echo before the signal"
    );
    let signalled = Instant::now();
    server.signal("TERM")?;
    Ok((server, stuck, signalled))
}

/// The stuck connection was closed by the server: end of file or a reset, not a timeout.
#[track_caller]
fn assert_cut(stuck: &mut Stream, what: &str) {
    let mut buf = [0u8; 64];
    match stuck.read_once(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: unexpected {n} bytes on the stuck connection"),
        Err(e) if is_timeout(&e) => panic!("{what}: the stuck connection was never closed"),
        Err(_) => {}
    }
}

#[test]
fn second_signal_while_draining_exits_at_once() -> io::Result<()> {
    for mode in ["threading", "pool", "fork", "sync", "async"] {
        let (mut server, mut stuck, _) = stuck_client_then_sigterm(mode, "30")?;
        // The first signal must have been delivered before the second is sent, or the kernel
        // could merge the two into one pending signal.
        server.wait_signals_delivered()?;
        wait_until_refused(&server.addrs[0], Duration::from_secs(3))?;
        let second = Instant::now();
        server.signal("TERM")?;
        let status = server.wait_exit(Duration::from_secs(5))?;
        let took = second.elapsed();
        assert_eq!(status.code(), Some(0), "{mode}: {status}");
        assert!(
            took < Duration::from_secs(3),
            "{mode}: the second signal took {took:?} to stop the server (shutdown timeout 30 s)"
        );
        assert_cut(&mut stuck, mode);
    }
    Ok(())
}

fn shutdown_timeout_cuts_stuck_client(mode: &str) -> io::Result<()> {
    let (mut server, mut stuck, signalled) = stuck_client_then_sigterm(mode, "1")?;
    let status = server.wait_exit(Duration::from_secs(5))?;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{mode}: {status}");
    assert!(
        took >= Duration::from_millis(900),
        "{mode}: in-flight work was cut after {took:?}, before --shutdown-timeout 1"
    );
    assert!(
        took <= Duration::from_secs(3),
        "{mode}: exit took {took:?} with --shutdown-timeout 1"
    );
    assert_cut(&mut stuck, mode);
    Ok(())
}

#[test]
fn shutdown_timeout_bounds_the_drain_of_a_stuck_client_in_threading_mode() -> io::Result<()> {
    shutdown_timeout_cuts_stuck_client("threading")
}

#[test]
fn shutdown_timeout_bounds_the_drain_of_a_stuck_client_in_pool_mode() -> io::Result<()> {
    shutdown_timeout_cuts_stuck_client("pool")
}

#[test]
fn shutdown_timeout_bounds_the_drain_of_a_stuck_client_in_fork_mode() -> io::Result<()> {
    shutdown_timeout_cuts_stuck_client("fork")
}

#[test]
fn shutdown_timeout_bounds_the_drain_of_a_stuck_client_in_async_mode() -> io::Result<()> {
    shutdown_timeout_cuts_stuck_client("async")
}

#[test]
fn shutdown_timeout_bounds_the_drain_of_a_stuck_client_in_sync_mode() -> io::Result<()> {
    shutdown_timeout_cuts_stuck_client("sync")
}

// ---------------------------------------------------------------------------------------------
// 6. bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_command_lines_are_one_line_and_exit_2() -> io::Result<()> {
    let cases: &[(&[&str], &[&str])] = &[
        (&["bogus"], &["bogus"]),
        (&["echo", "--mode", "turbo"], &["turbo"]),
        (&["echo", "--listen", "tcp://x"], &["tcp://x"]),
        (&["echo", "--listen", "http://x:1"], &["http://x:1"]),
        (&["echo", "--listen", "unix:"], &["unix:"]),
        (&["echo", "--listen", "tcp://127.0.0.1:99999"], &["99999"]),
        (&["echo", "--listen", "udp://[::1:0"], &["udp://[::1:0"]),
        (&["echo", "--timeout=-1"], &["-1"]),
        (&["echo", "--timeout", "-1"], &["-1"]),
        (&["echo", "--shutdown-timeout", "soon"], &["soon"]),
        (&["echo", "--frobnicate"], &["--frobnicate"]),
        (
            &["http", "--listen", TCP, "--dir", "/no/such/dir"],
            &["/no/such/dir"],
        ),
        (
            &["http", "--listen", "udp://127.0.0.1:0"],
            &["udp://127.0.0.1:0"],
        ),
        (
            &["http", "--listen", TCP, "--tls-cert", "/no/cert.pem"],
            &["--tls-key"],
        ),
        (
            &[
                "http",
                "--listen",
                TCP,
                "--tls-cert",
                "/no/cert.pem",
                "--tls-key",
                "/no/key.pem",
            ],
            &["/no/cert.pem"],
        ),
        (
            &["echo", "--mode", "pool", "--workers", "0"],
            &["--workers 0"],
        ),
        (&["echo", "--workers", "3"], &["--workers"]),
        (
            &["echo", "--mode", "sync", "--workers", "3"],
            &["--workers"],
        ),
        (
            &["echo", "--mode", "async", "--workers", "0"],
            &["--workers 0"],
        ),
        (
            &["echo", "--max-connections", "0"],
            &["--max-connections 0"],
        ),
        (
            &["echo", "--max-children", "0", "--mode", "fork"],
            &["--max-children 0"],
        ),
        // HTTP-only flags on another service would be ignored silently (issue 9: a TLS
        // certificate on echo started a plaintext server).
        (
            &["echo", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
            &["--tls-cert", "http", "echo"],
        ),
        (&["upper", "--dir", "/tmp"], &["--dir", "upper"]),
        (&["threadname", "--hidden"], &["--hidden", "threadname"]),
        (
            &["echo", "--max-headers", "100"],
            &["--max-headers", "echo"],
        ),
        (
            &["echo", "--write-timeout", "5"],
            &["--write-timeout", "echo"],
        ),
        (
            &["http", "--listen", TCP, "--write-timeout", "-3"],
            &["-3", "negative"],
        ),
        (
            &["http", "--listen", TCP, "--min-body-rate", "fast"],
            &["fast"],
        ),
    ];
    for (args, needles) in cases {
        let finished = run(args)?;
        assert_one_line_error(&finished, 2, needles);
    }
    // A Unix path longer than sockaddr_un can hold is a bad URL, not a bind failure.
    let long = format!("unix:/tmp/{}", "a".repeat(200));
    let finished = run(&["echo", "--listen", &long])?;
    assert_one_line_error(&finished, 2, &[&long, "at most"]);
    Ok(())
}

#[test]
fn refused_mode_or_service_leaves_no_socket_file() -> io::Result<()> {
    let dir = tempdir()?;
    let path = dir.path().join("never.sock");
    let url = unix_url(&path);
    let finished = run(&["echo", "--mode", "turbo", "--listen", &url])?;
    assert_one_line_error(&finished, 2, &["turbo"]);
    let finished = run(&["http", "--listen", &url, "--dir", "/no/such/dir"])?;
    assert_one_line_error(&finished, 2, &["/no/such/dir"]);
    let finished = run(&[
        "http",
        "--listen",
        &url,
        "--tls-cert",
        "/no/c.pem",
        "--tls-key",
        "/no/k.pem",
    ])?;
    assert_one_line_error(&finished, 2, &["/no/c.pem"]);
    assert!(!path.exists(), "a refused command line created {path:?}");
    Ok(())
}

#[test]
fn port_in_use_is_one_line_and_exit_1() -> io::Result<()> {
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("tcp://{}", taken.local_addr()?);
    let finished = run(&["echo", "--listen", &url])?;
    assert_one_line_error(&finished, 1, &[&url, "in use"]);

    let taken_udp = UdpSocket::bind("127.0.0.1:0")?;
    let url = format!("udp://{}", taken_udp.local_addr()?);
    let finished = run(&["echo", "--listen", &url])?;
    assert_one_line_error(&finished, 1, &[&url, "in use"]);
    Ok(())
}

#[test]
fn unix_path_in_a_missing_directory_is_one_line_and_exit_1() -> io::Result<()> {
    let dir = tempdir()?;
    let path = dir.path().join("missing").join("s.sock");
    let url = unix_url(&path);
    let finished = run(&["echo", "--listen", &url])?;
    assert_one_line_error(&finished, 1, &[&url]);
    assert!(!dir.path().join("missing").exists());
    Ok(())
}

#[test]
fn failing_second_listener_removes_the_first_ones_socket_file() -> io::Result<()> {
    let dir = tempdir()?;
    let first = dir.path().join("first.sock");
    let first_gram = dir.path().join("first.gram");
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let taken_url = format!("tcp://{}", taken.local_addr()?);
    let (first_arg, gram_arg) = (unix_url(&first), unixgram_url(&first_gram));
    let finished = run(&[
        "echo", "--listen", &first_arg, "--listen", &gram_arg, "--listen", &taken_url,
    ])?;
    assert_one_line_error(&finished, 1, &[&taken_url, "in use"]);
    let missing = unix_url(&dir.path().join("missing").join("x.sock"));
    let finished = run(&["echo", "--listen", &gram_arg, "--listen", &missing])?;
    assert_one_line_error(&finished, 1, &[&missing]);
    let left: Vec<_> = fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. Unix socket files
// ---------------------------------------------------------------------------------------------

#[test]
fn stale_socket_files_are_replaced_and_served() -> io::Result<()> {
    let dir = tempdir()?;
    let stream = dir.path().join("stale.sock");
    let gram = dir.path().join("stale.gram");
    drop(UnixListener::bind(&stream)?);
    drop(UnixDatagram::bind(&gram)?);
    assert!(stream.exists() && gram.exists(), "the stale files stay");
    let (stream_arg, gram_arg) = (unix_url(&stream), unixgram_url(&gram));
    let mut server = Server::start(&["echo", "--listen", &stream_arg, "--listen", &gram_arg])?;
    for addr in server.addrs.clone() {
        assert_eq!(exchange(&addr, b"fresh", dir.path())?, b"fresh", "{addr:?}");
    }
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(5))?.success());
    assert!(!stream.exists() && !gram.exists());
    Ok(())
}

#[test]
fn live_socket_is_in_use_exit_1_and_left_alone() -> io::Result<()> {
    let dir = tempdir()?;
    let stream = dir.path().join("live.sock");
    let gram = dir.path().join("live.gram");
    let listener = UnixListener::bind(&stream)?;
    let datagram = UnixDatagram::bind(&gram)?;
    datagram.set_read_timeout(Some(common::IO_TIMEOUT))?;
    let inode = |p: &Path| fs::symlink_metadata(p).map(|m| m.ino());
    let (stream_ino, gram_ino) = (inode(&stream)?, inode(&gram)?);
    // Same type, and the other type at the path (a live socket all the same).
    for url in [
        unix_url(&stream),
        unixgram_url(&gram),
        unixgram_url(&stream),
        unix_url(&gram),
    ] {
        let finished = run(&["echo", "--listen", &url])?;
        assert_one_line_error(&finished, 1, &[&url, "in use"]);
    }
    assert_eq!(
        inode(&stream)?,
        stream_ino,
        "the live stream socket was replaced"
    );
    assert_eq!(
        inode(&gram)?,
        gram_ino,
        "the live datagram socket was replaced"
    );
    // And they still work.
    let _client = std::os::unix::net::UnixStream::connect(&stream)?;
    listener.set_nonblocking(false)?;
    let (_accepted, _) = common::retry(|| listener.accept())?;
    UnixDatagram::unbound()?.send_to(b"still here", &gram)?;
    let mut buf = [0u8; 32];
    let n = common::retry(|| datagram.recv(&mut buf))?;
    assert_eq!(&buf[..n], b"still here");
    Ok(())
}

#[test]
fn non_socket_files_at_the_path_are_never_touched() -> io::Result<()> {
    let dir = tempdir()?;
    let regular = dir.path().join("regular");
    fs::write(&regular, b"precious data")?;
    let directory = dir.path().join("a-directory");
    fs::create_dir(&directory)?;
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&regular, &link)?;
    for path in [&regular, &directory, &link] {
        for url in [unix_url(path), unixgram_url(path)] {
            let finished = run(&["echo", "--listen", &url])?;
            assert_one_line_error(&finished, 1, &[&path.display().to_string()]);
        }
    }
    assert_eq!(fs::read(&regular)?, b"precious data");
    assert!(directory.is_dir());
    assert_eq!(fs::read_link(&link)?, regular);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 8-9. limits
// ---------------------------------------------------------------------------------------------

/// Reads from `conn` for 300 ms and asserts nothing comes: the connection is not being served
/// (it waits in the kernel's queue).
#[track_caller]
fn assert_not_served(conn: &mut Stream, what: &str) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = [0u8; 1];
    match conn.read_once(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        other => panic!("{what} was served while the limit was reached: {other:?}"),
    }
    conn.set_read_timeout(Some(common::IO_TIMEOUT))
}

#[test]
fn max_connections_holds_a_third_connection_until_one_closes() -> io::Result<()> {
    let dir = tempdir()?;
    let unix_arg = unix_url(&dir.path().join("limit.sock"));
    let server = Server::start(&[
        "echo",
        "--mode",
        "threading",
        "--max-connections",
        "2",
        "--listen",
        TCP,
        "--listen",
        &unix_arg,
    ])?;
    let (tcp, unix) = (&server.addrs[0], &server.addrs[1]);
    // Two connections, across both listeners, each proven served.
    let mut a = Stream::connect(tcp)?;
    a.write_all(b"a")?;
    assert_eq!(a.read_n(1)?, b"a");
    let mut b = Stream::connect(unix)?;
    b.write_all(b"b")?;
    assert_eq!(b.read_n(1)?, b"b");

    // The third waits in the kernel's queue: connected, but not served.
    let mut c = Stream::connect(tcp)?;
    c.write_all(b"c")?;
    assert_not_served(&mut c, "a third connection")?;

    // Closing `a` (with `b` still open) lets `c` in.
    assert_eq!(send_all_and_read_to_eof(&mut a, b"")?, b"");
    drop(a);
    assert_eq!(c.read_n(1)?, b"c", "the third connection after one closed");

    // `b` and `c` are served now: a connection on the other listener waits in turn.
    let mut d = Stream::connect(unix)?;
    d.write_all(b"d")?;
    assert_not_served(&mut d, "a connection on the unix listener")?;
    assert_eq!(send_all_and_read_to_eof(&mut b, b"")?, b"");
    assert_eq!(send_all_and_read_to_eof(&mut d, b"")?, b"d");
    assert_eq!(send_all_and_read_to_eof(&mut c, b"")?, b"");
    Ok(())
}

#[test]
fn timeout_closes_an_idle_connection_but_not_an_active_one() -> io::Result<()> {
    timeout_closes_idle_but_not_active("threading")
}

#[test]
fn timeout_closes_an_idle_connection_but_not_an_active_one_in_async_mode() -> io::Result<()> {
    timeout_closes_idle_but_not_active("async")
}

fn timeout_closes_idle_but_not_active(mode: &str) -> io::Result<()> {
    let dir = tempdir()?;
    let unix_arg = unix_url(&dir.path().join("idle.sock"));
    let server = Server::start(&[
        "echo",
        "--mode",
        mode,
        "--timeout",
        "1",
        "--listen",
        TCP,
        "--listen",
        &unix_arg,
    ])?;
    thread::scope(|scope| {
        let idle: Vec<_> = server
            .addrs
            .iter()
            .map(|addr| {
                scope.spawn(move || -> io::Result<Duration> {
                    let mut conn = Stream::connect(addr)?;
                    let started = Instant::now();
                    let mut buf = [0u8; 16];
                    match conn.read_once(&mut buf) {
                        Ok(0) => {}
                        Ok(n) => panic!("{n} unexpected bytes on an idle connection"),
                        Err(e) if is_timeout(&e) => {
                            panic!("{mode} {addr:?}: the idle connection was not closed within 5 s")
                        }
                        Err(_) => {}
                    }
                    Ok(started.elapsed())
                })
            })
            .collect();
        // Meanwhile a connection that keeps talking every 0.4 s outlives the timeout.
        let mut active = Stream::connect(&server.addrs[0])?;
        for round in 0..5u8 {
            thread::sleep(Duration::from_millis(400));
            active.write_all(&[round])?;
            assert_eq!(
                active.read_n(1)?,
                [round],
                "round {round} of an active connection"
            );
        }
        assert_eq!(send_all_and_read_to_eof(&mut active, b"end")?, b"end");
        for handle in idle {
            let took = handle.join().expect("idle client panicked")?;
            assert!(
                took >= Duration::from_millis(800) && took <= Duration::from_secs(3),
                "{mode}: an idle connection with --timeout 1 was closed after {took:?}"
            );
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// fork housekeeping
// ---------------------------------------------------------------------------------------------

#[test]
fn fork_mode_leaves_no_zombie_children() -> io::Result<()> {
    let dir = tempdir()?;
    let server = start_everywhere("echo", &["--mode", "fork"], dir.path())?;
    for i in 0..10u8 {
        for addr in &server.addrs {
            assert_eq!(exchange(addr, &[i], dir.path())?, [i], "{addr:?}");
        }
    }
    // Children exit after their reply; the server reaps each as soon as it exits.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let children = children_of(server.pid());
        if children.is_empty() {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "children of the idle server 3 s after the last request: {children:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fork_mode_max_children_holds_further_connections() -> io::Result<()> {
    let server = Server::start(&[
        "echo",
        "--mode",
        "fork",
        "--max-children",
        "1",
        "--listen",
        TCP,
    ])?;
    let addr = &server.addrs[0];
    let mut a = Stream::connect(addr)?;
    a.write_all(b"a")?;
    assert_eq!(a.read_n(1)?, b"a");
    let mut b = Stream::connect(addr)?;
    b.write_all(b"b")?;
    assert_not_served(&mut b, "a second connection with --max-children 1")?;
    assert_eq!(send_all_and_read_to_eof(&mut a, b"")?, b"");
    assert_eq!(send_all_and_read_to_eof(&mut b, b"")?, b"b");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 10. help
// ---------------------------------------------------------------------------------------------

#[test]
fn help_exits_0_with_usage_on_stdout() -> io::Result<()> {
    let finished = run(&["--help"])?;
    assert_eq!(finished.status.code(), Some(0), "{finished:?}");
    assert!(
        finished.stdout.contains("Usage: socketserver"),
        "{finished:?}"
    );
    for word in ["--listen", "--mode", "--timeout", "--shutdown-timeout"] {
        assert!(finished.stdout.contains(word), "--help lacks {word}");
    }
    assert_eq!(finished.stderr, "", "{finished:?}");

    let finished = run(&["--version"])?;
    assert_eq!(finished.status.code(), Some(0), "{finished:?}");
    assert!(finished.stdout.starts_with("socketserver "), "{finished:?}");
    Ok(())
}
