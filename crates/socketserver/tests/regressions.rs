//! Regressions found in review, one test per defect, each named after the behaviour it guards.

mod common;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socketserver::services::Echo;
use socketserver::{Address, Handler, Listener, Mode, Request, Server, ServerBuilder};

/// `verify` runs after accept and before the connection is counted: a stop landing there must
/// still get the sync-mode drain deadline.
#[test]
fn a_sync_stop_during_verify_still_keeps_the_drain_deadline() -> io::Result<()> {
    struct SlowVerify;
    impl Handler for SlowVerify {
        fn handle(&self, req: &mut Request) -> io::Result<()> {
            socketserver::Handler::handle(&Echo, req)
        }
        fn verify(&self, _: &Address) -> bool {
            thread::sleep(Duration::from_millis(300));
            true
        }
    }
    let server = TestServer::start_with(
        Transport::Tcp,
        |b| {
            b.mode(Mode::Sync)
                .shutdown_timeout(Duration::from_millis(300))
        },
        SlowVerify,
    );
    let _silent = Stream::connect(&server.addr)?;
    thread::sleep(Duration::from_millis(100)); // inside verify
    let started = Instant::now();
    server.shutdown().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

/// Deadlines are `now + timeout` with `checked_add`: a timeout too large for `Instant` (a
/// drain that may take forever, a `handle_request` wait) means "no deadline", never a panic.
#[test]
fn a_shutdown_timeout_or_wait_too_large_for_an_instant_means_no_deadline() -> io::Result<()> {
    let server =
        TestServer::start_with(Transport::Tcp, |b| b.shutdown_timeout(Duration::MAX), Echo);
    assert_eq!(exchange(&server.addr, b"still fine")?, b"still fine");
    server.shutdown().unwrap();
    let server = Server::bind("tcp://127.0.0.1:0".parse().unwrap(), Echo).unwrap();
    assert!(
        !server
            .handle_request(Some(Duration::from_millis(1)))
            .unwrap()
    );
    Ok(())
}

/// A socket handed to us (systemd socket activation) belongs to whoever bound it: stopping
/// must not shut it down for them.
#[test]
fn stopping_leaves_an_adopted_listener_usable_by_its_owner() -> io::Result<()> {
    let owner = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = owner.local_addr()?;
    let server = ServerBuilder::new()
        .listener(Listener::from_fd(owner.try_clone()?).unwrap())
        .bind(Echo)
        .unwrap();
    let server = TestServer::serve(Arc::new(server), tempfile::tempdir()?);
    assert_eq!(exchange(&Address::tcp(addr), b"adopted")?, b"adopted");
    server.shutdown().unwrap();
    // The owner's socket still listens.
    let client = std::net::TcpStream::connect(addr)?;
    owner.set_nonblocking(false)?;
    let (accepted, _) = owner.accept()?;
    drop((client, accepted));
    Ok(())
}

/// On Unix stream sockets, `shutdown(2)` refuses new connections but keeps the queue: the
/// queued clients must be dropped at once, not left waiting for a busy sync server.
#[test]
fn a_sync_stop_drops_unix_clients_queued_before_it() -> io::Result<()> {
    let server = TestServer::start_with(
        Transport::Unix,
        |b| b.mode(Mode::Sync).shutdown_timeout(Duration::from_secs(30)),
        Echo,
    );
    let mut busy = Stream::connect(&server.addr)?;
    busy.write_all(b"x")?;
    let mut one = [0u8; 1];
    busy.read_exact(&mut one)?; // the only worker is now in this echo
    let mut queued = Stream::connect(&server.addr)?;
    server.stop.shutdown();
    let started = Instant::now();
    let mut rest = Vec::new();
    assert_eq!(queued.read_to_end(&mut rest).unwrap_or(0), 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    busy.shutdown_write()?;
    server.join().unwrap();
    Ok(())
}

/// Checking whether a socket file is live must not hang on a live server whose queue is full.
#[test]
fn the_socket_file_in_use_check_does_not_hang_on_a_full_queue() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("busy.sock");
    let live = std::os::unix::net::UnixListener::bind(&path)?;
    // Never accepts: fill its queue (a Unix backlog holds a few more than asked).
    let mut held = Vec::new();
    for _ in 0..2000 {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        s.set_nonblocking(true)?;
        match s.connect(&socket2::SockAddr::unix(&path)?) {
            Ok(()) => held.push(s),
            Err(_) => break,
        }
    }
    let started = Instant::now();
    let err = Server::bind(Address::Unix(path.clone()), Echo).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop((live, held));
    Ok(())
}
