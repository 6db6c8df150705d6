//! Server lifecycle: shutdown, drain, forced close, limits, hooks, socket files, adopted fds.

mod common;

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socketserver::services::{Echo, Upper};
use socketserver::{Address, Error, Handler, Listener, Mode, Request, Server, ServerBuilder};

#[test]
fn shutdown_returns_promptly_when_idle() {
    for mode in all_modes() {
        for transport in TRANSPORTS {
            let server = TestServer::start(transport, mode, Echo);
            let started = Instant::now();
            server.shutdown().unwrap();
            // No poll interval: the waker ends the loop at once.
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{mode} {transport:?}: {:?}",
                started.elapsed()
            );
        }
    }
}

#[test]
fn shutdown_drains_in_flight_echo_byte_exact_and_refuses_new_connections() -> io::Result<()> {
    for mode in all_modes() {
        for transport in STREAMS {
            let server = TestServer::start(transport, mode, Echo);
            let mut stream = Stream::connect(&server.addr)?;
            let first = pattern(100_000);
            let mut writer = stream.try_clone()?;
            let sent = first.clone();
            let writing = thread::spawn(move || writer.write_all(&sent));
            let mut back = vec![0u8; first.len()];
            stream.read_exact(&mut back)?;
            writing.join().unwrap()?;
            assert_eq!(back, first);

            // The echo is in flight; stop the server.
            server.stop.shutdown();
            let addr = server.addr.clone();
            // Listeners close at once: a new client is refused.
            assert!(
                wait_until(|| Stream::connect(&addr).is_err()),
                "{mode} {transport:?}: still accepting"
            );

            // The in-flight connection still gets every byte it was promised.
            assert_in_flight_echo_completes(&mut stream, &format!("{mode} {transport:?}"))?;
            server.join().unwrap();
            if let Some(path) = addr.path() {
                assert!(!path.exists(), "socket file left behind");
            }
        }
    }
    Ok(())
}

#[test]
fn shutdown_closes_what_remains_after_the_deadline() -> io::Result<()> {
    for mode in all_modes() {
        let server = TestServer::start_with(
            Transport::Tcp,
            |b| b.mode(mode).shutdown_timeout(Duration::from_millis(300)),
            Echo,
        );
        let mut stuck = Stream::connect(&server.addr)?;
        stuck.write_all(b"ping")?;
        let mut four = [0u8; 4];
        stuck.read_exact(&mut four)?;
        let started = Instant::now();
        server.shutdown().unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{mode}: {took:?}"
        );
        // The server shut the connection down: the client reads end of file.
        let mut rest = Vec::new();
        assert_eq!(stuck.read_to_end(&mut rest).unwrap_or(0), 0);
    }
    Ok(())
}

#[test]
fn close_cuts_a_drain_short() -> io::Result<()> {
    for mode in all_modes() {
        let server = TestServer::start_with(
            Transport::Unix,
            |b| b.mode(mode).shutdown_timeout(Duration::from_secs(60)),
            Echo,
        );
        let mut stuck = Stream::connect(&server.addr)?;
        stuck.write_all(b"ping")?;
        let mut four = [0u8; 4];
        stuck.read_exact(&mut four)?;
        server.stop.shutdown();
        let started = Instant::now();
        server.stop.close();
        server.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{mode}: {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

#[test]
fn a_handler_can_shut_its_own_server_down() -> io::Result<()> {
    for mode in all_modes() {
        let handler = |req: &mut Request| {
            req.shutdown_handle().shutdown();
            req.write_all(b"bye")
        };
        let server = TestServer::start(Transport::Tcp, mode, handler);
        assert_eq!(exchange(&server.addr, b"")?, b"bye");
        server.join().unwrap();
    }
    Ok(())
}

#[test]
fn serve_forever_after_a_shutdown_reports_closed() {
    let server = Arc::new(Server::bind("tcp://127.0.0.1:0".parse().unwrap(), Echo).unwrap());
    let test = TestServer::serve(Arc::clone(&server), tempfile::tempdir().unwrap());
    test.shutdown().unwrap();
    assert!(matches!(server.serve_forever(), Err(Error::Closed)));
    assert!(matches!(server.handle_request(None), Err(Error::Closed)));
}

#[derive(Default)]
struct Timeouts {
    timeouts: AtomicUsize,
    actions: AtomicUsize,
}

impl Handler for Timeouts {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        req.write_all(b"handled")
    }

    fn on_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::SeqCst);
    }

    fn service_actions(&self) {
        self.actions.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn handle_request_waits_for_one_request_or_times_out() -> io::Result<()> {
    let counters = Arc::new(Timeouts::default());
    let server = Server::builder("tcp://127.0.0.1:0".parse().unwrap())
        .mode(Mode::Sync)
        .bind(Arc::clone(&counters))
        .unwrap();
    let started = Instant::now();
    assert!(
        !server
            .handle_request(Some(Duration::from_millis(100)))
            .unwrap()
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(counters.timeouts.load(Ordering::SeqCst), 1);

    let addr = server.local_addr().clone();
    let client = thread::spawn(move || exchange(&addr, b""));
    assert!(
        server
            .handle_request(Some(Duration::from_secs(10)))
            .unwrap()
    );
    assert_eq!(client.join().unwrap()?, b"handled");
    assert_eq!(counters.timeouts.load(Ordering::SeqCst), 1);
    assert!(counters.actions.load(Ordering::SeqCst) >= 1);
    Ok(())
}

#[test]
fn service_actions_run_at_the_interval_when_idle() {
    let counters = Arc::new(Timeouts::default());
    let server = TestServer::start_with(
        Transport::Tcp,
        |b| b.service_interval(Some(Duration::from_millis(10))),
        Arc::clone(&counters),
    );
    assert!(wait_until(|| counters.actions.load(Ordering::SeqCst) >= 5));
    server.shutdown().unwrap();
}

/// Records the most handlers running at once; each holds its connection until the client
/// sends a line.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    most: AtomicUsize,
    served: AtomicUsize,
}

impl Handler for Concurrency {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(5));
        let mut line = String::new();
        let result = req
            .read_line(&mut line)
            .and_then(|_| req.write_all(line.as_bytes()));
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::SeqCst);
        result
    }
}

fn flood(addr: &Address, clients: usize) {
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || {
                let line = format!("client {i}\n");
                assert_eq!(exchange(&addr, line.as_bytes()).unwrap(), line.as_bytes());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn max_connections_holds_under_a_flood() {
    for mode in [Mode::Threading, Mode::Pool { workers: 8 }] {
        for transport in STREAMS {
            let stats = Arc::new(Concurrency::default());
            let server = TestServer::start_with(
                transport,
                |b| b.mode(mode).max_connections(3),
                Arc::clone(&stats),
            );
            flood(&server.addr, 60);
            server.shutdown().unwrap();
            assert_eq!(
                stats.served.load(Ordering::SeqCst),
                60,
                "{mode} {transport:?}: every client served"
            );
            let most = stats.most.load(Ordering::SeqCst);
            assert!(
                (1..=3).contains(&most),
                "{mode} {transport:?}: {most} at once"
            );
        }
    }
}

#[test]
fn pool_runs_at_most_workers_handlers_at_once() {
    let stats = Arc::new(Concurrency::default());
    let server = TestServer::start(
        Transport::Tcp,
        Mode::Pool { workers: 2 },
        Arc::clone(&stats),
    );
    flood(&server.addr, 40);
    server.shutdown().unwrap();
    assert_eq!(stats.served.load(Ordering::SeqCst), 40);
    assert_eq!(stats.most.load(Ordering::SeqCst), 2);
}

#[test]
fn a_full_server_stops_accepting_until_a_connection_ends() -> io::Result<()> {
    for mode in [Mode::Threading, Mode::Pool { workers: 2 }] {
        let server =
            TestServer::start_with(Transport::Tcp, |b| b.mode(mode).max_connections(2), Echo);
        let mut held: Vec<Stream> = (0..2)
            .map(|_| Stream::connect(&server.addr))
            .collect::<io::Result<_>>()?;
        for s in &mut held {
            s.write_all(b"a")?;
            let mut one = [0u8; 1];
            s.read_exact(&mut one)?;
        }
        // The third connects (the kernel's queue takes it) but is not served yet.
        let mut third = Stream::connect(&server.addr)?;
        third.set_timeout(Some(Duration::from_millis(300)))?;
        third.write_all(b"b")?;
        let mut one = [0u8; 1];
        let err = third.read_exact(&mut one).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{mode}: {err}"
        );
        // One ends: the third is served.
        held.pop().unwrap().shutdown_write()?;
        third.set_timeout(Some(IO_TIMEOUT))?;
        third.read_exact(&mut one)?;
        assert_eq!(&one, b"b");
    }
    Ok(())
}

#[test]
fn a_slow_client_does_not_delay_others_except_in_sync_mode() -> io::Result<()> {
    for mode in thread_modes() {
        let server = TestServer::start(Transport::Tcp, mode, Upper);
        let mut slow = Stream::connect(&server.addr)?;
        slow.write_all(b"sl")?; // no newline yet: the handler waits for the rest
        assert!(wait_until(|| server.server.in_flight() == 1));
        let mut fast = Stream::connect(&server.addr)?;
        fast.set_timeout(Some(Duration::from_millis(500)))?;
        fast.write_all(b"fast\n")?;
        let mut reply = Vec::new();
        let answered = fast.read_to_end(&mut reply).is_ok();
        if mode == Mode::Sync {
            assert!(
                !answered,
                "sync mode served a second client while the first was busy"
            );
            slow.write_all(b"ow\n")?;
            fast.set_timeout(Some(IO_TIMEOUT))?;
            fast.read_to_end(&mut reply)?;
        } else {
            assert!(answered, "{mode}: the fast client waited for the slow one");
        }
        assert_eq!(reply, b"FAST", "{mode}");
        slow.write_all(b"ow\n")?;
    }
    Ok(())
}

#[test]
fn the_connection_timeout_closes_an_idle_client_and_is_reported() -> io::Result<()> {
    for mode in all_modes() {
        let errors = Errors::default();
        let handle = |req: &mut Request| socketserver::Handler::handle(&Echo, req);
        let server = TestServer::start_with(
            Transport::Tcp,
            |b| b.mode(mode).timeout(Some(Duration::from_millis(200))),
            Recording {
                handle,
                errors: errors.clone(),
            },
        );
        let mut idle = Stream::connect(&server.addr)?;
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = idle.read_to_end(&mut buf);
        assert!(started.elapsed() < Duration::from_secs(3), "{mode}");
        server.shutdown().unwrap();
        let lines = errors.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("timed out: the peer sent nothing for 0.2s"),
            "{lines:?}"
        );
    }
    Ok(())
}

#[test]
fn a_stale_socket_file_is_replaced() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path)?); // leaves the file, nobody listening
    assert!(path.exists());
    let server = Server::bind(Address::Unix(path.clone()), Upper).unwrap();
    let server = TestServer::serve(Arc::new(server), dir);
    assert_eq!(exchange(&server.addr, b"fresh\n")?, b"FRESH");
    server.shutdown().unwrap();
    assert!(!path.exists(), "the server removes its own socket file");

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stale.dgram");
    drop(std::os::unix::net::UnixDatagram::bind(&path)?);
    drop(Server::bind(Address::UnixDatagram(path.clone()), Upper).unwrap());
    assert!(!path.exists());
    Ok(())
}

#[test]
fn a_live_socket_is_in_use_and_left_alone() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("live.sock");
    let live = std::os::unix::net::UnixListener::bind(&path)?;
    let err = Server::bind(Address::Unix(path.clone()), Upper).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // Still the live server's socket.
    std::os::unix::net::UnixStream::connect(&path)?;
    drop(live);

    let path = dir.path().join("live.dgram");
    let _live = std::os::unix::net::UnixDatagram::bind(&path)?;
    let err = Server::bind(Address::UnixDatagram(path.clone()), Upper).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(path.exists());
    Ok(())
}

#[test]
fn a_file_that_is_not_a_socket_is_never_touched() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, b"keep me")?;
    for addr in [
        Address::Unix(path.clone()),
        Address::UnixDatagram(path.clone()),
    ] {
        let err = Server::bind(addr, Upper).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path)?, b"keep me");
    }
    Ok(())
}

#[test]
fn a_failed_bind_leaves_nothing_behind() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let first = dir.path().join("first.sock");
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let err = ServerBuilder::new()
        .listen(Address::Unix(first.clone()))
        .listen(Address::tcp(taken.local_addr()?))
        .bind(Echo)
        .unwrap_err();
    assert!(err.to_string().contains("address already in use"), "{err}");
    assert!(
        err.to_string()
            .contains(&taken.local_addr()?.port().to_string()),
        "{err}"
    );
    assert!(
        !first.exists(),
        "the first listener's socket file was left behind"
    );

    let err = Server::bind(Address::Unix(dir.path().join("missing/dir/x.sock")), Echo).unwrap_err();
    assert!(err.to_string().starts_with("cannot bind unix:"), "{err}");
    Ok(())
}

#[test]
fn several_listeners_share_one_server() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerBuilder::new()
        .listen("tcp://127.0.0.1:0".parse().unwrap())
        .listen("udp://127.0.0.1:0".parse().unwrap())
        .listen(Address::Unix(dir.path().join("s.sock")))
        .listen(Address::UnixDatagram(dir.path().join("s.dgram")))
        .bind(Upper)
        .unwrap();
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 4);
    assert_eq!(server.filenos().len(), 4);
    let server = TestServer::serve(Arc::new(server), dir);
    for addr in &addrs {
        assert_eq!(exchange(addr, b"shared\n")?, b"SHARED", "{addr}");
    }
    server.shutdown().unwrap();
    Ok(())
}

#[test]
fn a_descriptor_number_is_adopted_once_and_only_when_it_is_an_open_socket() -> io::Result<()> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    let file = std::fs::File::open("/dev/null")?;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = Address::tcp(tcp.local_addr()?);
    let fd = tcp.into_raw_fd();
    let listener = Listener::from_raw_fd(fd).unwrap();
    assert_eq!(listener.local_addr(), &addr);
    let twice = Listener::from_raw_fd(fd).unwrap_err();
    assert!(
        matches!(&twice, Error::Inherited { what, .. } if *what == format!("fd:{fd}")),
        "{twice:?}"
    );
    assert!(twice.to_string().contains("adopted already"), "{twice}");
    let server = ServerBuilder::new().listener(listener).bind(Upper).unwrap();
    let server = TestServer::serve(Arc::new(server), tempfile::tempdir()?);
    assert_eq!(exchange(&addr, b"by number\n")?, b"BY NUMBER");
    drop(server);
    // Not a socket: refused, and the descriptor stays its owner's.
    let refused = Listener::from_raw_fd(file.as_raw_fd()).unwrap_err();
    assert!(refused.to_string().contains("not a socket"), "{refused}");
    let closed = Listener::from_raw_fd(1 << 20).unwrap_err();
    assert!(closed.to_string().contains("not open"), "{closed}");
    Ok(())
}

#[test]
fn adopted_sockets_are_served_and_their_files_kept() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let tcp_addr = Address::tcp(tcp.local_addr()?);
    let path = dir.path().join("adopted.dgram");
    let dgram = std::os::unix::net::UnixDatagram::bind(&path)?;
    let server = ServerBuilder::new()
        .listener(Listener::from_fd(tcp).unwrap())
        .listener(Listener::from_fd(dgram).unwrap())
        .bind(Upper)
        .unwrap();
    assert_eq!(
        server.local_addrs(),
        &[tcp_addr.clone(), Address::UnixDatagram(path.clone())]
    );
    let server = TestServer::serve(Arc::new(server), tempfile::tempdir()?);
    assert_eq!(exchange(&tcp_addr, b"inherited\n")?, b"INHERITED");
    assert_eq!(
        exchange(&Address::UnixDatagram(path.clone()), b"too")?,
        b"TOO"
    );
    server.shutdown().unwrap();
    // Whoever bound an adopted socket owns its file.
    assert!(path.exists());
    drop(dir);
    Ok(())
}

#[test]
fn async_mode_parses_to_its_defaults_and_serves() -> io::Result<()> {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let parsed: Mode = "async".parse().unwrap();
    assert_eq!(parsed, Mode::evented());
    assert_eq!(
        parsed,
        Mode::Async {
            loops: cores,
            workers: 4 * cores
        }
    );
    assert_eq!(parsed.to_string(), "async");
    assert_eq!(ASYNC.to_string(), "async");

    let server = TestServer::start(Transport::Tcp, Mode::evented(), Upper);
    assert_eq!(exchange(&server.addr, b"evented\n")?, b"EVENTED");
    server.shutdown().unwrap();
    Ok(())
}

/// A stop asked for while a `Mode::Sync` drain is already ending must not start a drain timer
/// nobody cancels (its thread, holding the server's state and fds, outlived the server by
/// the whole shutdown timeout: seen once as a leak in `leaks.rs`).
#[test]
fn a_sync_mode_stop_leaves_no_drain_timer_behind() {
    for _ in 0..30 {
        let server = TestServer::start(Transport::Tcp, Mode::Sync, Echo);
        server.shutdown().unwrap();
    }
    assert!(
        wait_until(|| threads_named("socketserver-drain") == 0),
        "{} drain timer threads left",
        threads_named("socketserver-drain")
    );
}
