//! Every transport under every mode that runs in-process (sync, threading, pool and the
//! event-driven async mode): bytes exact, services, hooks. (Fork mode runs the same checks in
//! `fork.rs`.)

mod common;

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use socketserver::services::{Echo, ThreadName, Upper};
use socketserver::{Address, Mode, Request};

#[test]
fn echo_is_byte_exact_on_every_transport_and_mode() -> io::Result<()> {
    for mode in all_modes() {
        for transport in TRANSPORTS {
            let server = TestServer::start(transport, mode, Echo);
            let payload = if transport.is_stream() {
                pattern(4 * 1024 * 1024 + 7)
            } else {
                pattern(60 * 1024)
            };
            let echoed = exchange(&server.addr, &payload)?;
            assert!(
                echoed == payload,
                "{mode} {transport:?}: {} bytes back of {}",
                echoed.len(),
                payload.len()
            );
            server.shutdown().unwrap();
        }
    }
    Ok(())
}

#[test]
fn echo_of_one_byte_writes_is_byte_exact() -> io::Result<()> {
    for mode in all_modes() {
        for transport in STREAMS {
            let server = TestServer::start(transport, mode, Echo);
            let mut stream = Stream::connect(&server.addr)?;
            let payload = pattern(3000);
            // Read while writing: every 1-byte write is its own buffer in the kernel (a Unix
            // socket accounts ~1 KiB for it), so a client that only reads at the end fills
            // both directions' buffers and deadlocks against any echo server.
            let mut writer = stream.try_clone()?;
            let sent = payload.clone();
            let writing = std::thread::spawn(move || -> io::Result<()> {
                for byte in &sent {
                    writer.write_all(std::slice::from_ref(byte))?;
                }
                writer.shutdown_write()
            });
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed)?;
            writing.join().unwrap()?;
            assert_eq!(echoed, payload, "{mode} {transport:?}");
        }
    }
    Ok(())
}

#[test]
fn echo_answers_each_piece_before_the_client_sends_the_next() -> io::Result<()> {
    // Interactive use: the server's write buffer must be flushed before it waits for input.
    for mode in all_modes() {
        for transport in STREAMS {
            let server = TestServer::start(transport, mode, Echo);
            let mut stream = Stream::connect(&server.addr)?;
            for round in 0..20u8 {
                let piece = vec![round; 1 + round as usize * 100];
                stream.write_all(&piece)?;
                let mut back = vec![0u8; piece.len()];
                stream.read_exact(&mut back)?;
                assert_eq!(back, piece, "{mode} {transport:?} round {round}");
            }
        }
    }
    Ok(())
}

#[test]
fn datagram_echo_round_trips_sizes_up_to_64k_and_empty() -> io::Result<()> {
    for mode in all_modes() {
        for transport in DATAGRAMS {
            let server = TestServer::start(transport, mode, Echo);
            let client = Dgram::new(&server.addr)?;
            let max = if transport == Transport::Udp {
                65_507
            } else {
                65_536
            };
            for len in [0, 1, 1000, 60 * 1024, max] {
                let payload = pattern(len);
                client.send(&payload)?;
                assert_eq!(client.recv()?, payload, "{mode} {transport:?} len {len}");
            }
        }
    }
    Ok(())
}

#[test]
fn upper_replies_with_stripped_uppercased_line() -> io::Result<()> {
    for mode in all_modes() {
        for transport in TRANSPORTS {
            let server = TestServer::start(transport, mode, Upper);
            assert_eq!(
                exchange(&server.addr, b"  hello World \t\n")?,
                b"HELLO WORLD",
                "{mode} {transport:?}"
            );
            if transport.is_stream() {
                // Only the first line counts; without a newline the line ends at EOF.
                assert_eq!(exchange(&server.addr, b"one\ntwo\n")?, b"ONE");
                assert_eq!(exchange(&server.addr, b" no newline ")?, b"NO NEWLINE");
            }
        }
    }
    Ok(())
}

#[test]
fn upper_reads_at_most_64k() -> io::Result<()> {
    for mode in [Mode::Threading, ASYNC] {
        let server = TestServer::start(Transport::Tcp, mode, Upper);
        let mut line = vec![b'a'; 100 * 1024];
        line.push(b'\n');
        let mut stream = Stream::connect(&server.addr)?;
        stream.write_all(&line)?;
        let mut reply = Vec::new();
        // The server replies after 64 KiB and closes; the rest of our line may meet a reset.
        let _ = stream.read_to_end(&mut reply);
        assert_eq!(reply.len(), 64 * 1024, "{mode}");
        assert!(reply.iter().all(|&b| b == b'A'), "{mode}");
    }
    Ok(())
}

#[test]
fn threadname_names_the_worker_of_each_mode() -> io::Result<()> {
    for (mode, prefix) in [
        (Mode::Sync, SERVING_THREAD),
        (Mode::Threading, "socketserver-conn-"),
        (Mode::Pool { workers: 2 }, "socketserver-worker-"),
        (ASYNC, "socketserver-loop-"),
    ] {
        for transport in TRANSPORTS {
            // Async mode runs connections on its loops, datagram protocols on the thread that
            // calls serve_forever.
            let prefix = if mode == ASYNC && !transport.is_stream() {
                SERVING_THREAD
            } else {
                prefix
            };
            let server = TestServer::start(transport, mode, ThreadName);
            let reply = String::from_utf8(exchange(&server.addr, b"Hello World")?).unwrap();
            let (name, data) = reply.split_once(": ").unwrap();
            assert!(name.starts_with(prefix), "{mode} {transport:?}: {reply}");
            assert_eq!(data, "Hello World");
        }
    }
    Ok(())
}

#[test]
fn threading_and_pool_serve_concurrent_requests_on_different_threads() -> io::Result<()> {
    for mode in [Mode::Threading, Mode::Pool { workers: 3 }] {
        let server = TestServer::start(Transport::Tcp, mode, ThreadName);
        // Both connections are open (and accepted) before either sends: each holds a worker.
        let mut a = Stream::connect(&server.addr)?;
        let mut b = Stream::connect(&server.addr)?;
        assert!(
            wait_until(|| server.server.in_flight() == 2),
            "{mode}: both connections accepted"
        );
        for s in [&mut a, &mut b] {
            s.write_all(b"x")?;
            s.shutdown_write()?;
        }
        let mut ra = String::new();
        let mut rb = String::new();
        a.read_to_string(&mut ra)?;
        b.read_to_string(&mut rb)?;
        assert_ne!(ra, rb, "{mode}");
    }
    Ok(())
}

#[test]
fn threadname_reads_one_receive_of_at_most_1024_bytes() -> io::Result<()> {
    for mode in [Mode::Threading, ASYNC] {
        let server = TestServer::start(Transport::Tcp, mode, ThreadName);
        let reply = exchange(&server.addr, &[b'z'; 4000])?;
        let text = String::from_utf8(reply).unwrap();
        let (_, data) = text.split_once(": ").unwrap();
        assert!(
            !data.is_empty() && data.len() <= 1024 && data.bytes().all(|b| b == b'z'),
            "{mode}: {} bytes",
            data.len()
        );
    }
    Ok(())
}

#[test]
fn oversized_datagram_is_reported_never_truncated() -> io::Result<()> {
    for (mode, transport) in [Mode::Threading, ASYNC]
        .into_iter()
        .flat_map(|mode| DATAGRAMS.map(|transport| (mode, transport)))
    {
        let errors = Errors::default();
        let handler = Recording {
            handle: |req: &mut Request| socketserver::Handler::handle(&Echo, req),
            errors: errors.clone(),
        };
        let server =
            TestServer::start_with(transport, |b| b.mode(mode).max_packet_size(1000), handler);
        let client = Dgram::new(&server.addr)?;
        client.send(&pattern(1001))?;
        client.send(&pattern(1000))?;
        // Only the datagram that fits comes back.
        assert_eq!(client.recv()?, pattern(1000), "{mode} {transport:?}");
        let lines = errors.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("dropped a datagram of 1001 bytes: the limit is 1000"),
            "{lines:?}"
        );
    }
    Ok(())
}

/// Datagrams that queue up while the server is busy (a burst, as a batched receive would
/// take it): each gets its own answer, to its own sender, byte for byte, and one too large
/// among them is dropped alone.
#[test]
fn a_burst_of_queued_datagrams_is_answered_each_to_its_sender() -> io::Result<()> {
    let modes = [Mode::Sync, Mode::Threading, ASYNC];
    for (mode, transport) in modes
        .into_iter()
        .flat_map(|mode| DATAGRAMS.map(|transport| (mode, transport)))
    {
        let what = format!("{mode} {transport:?}");
        let errors = Errors::default();
        let handler = Recording {
            handle: |req: &mut Request| {
                if req.packet() == Some(b"wait".as_slice()) {
                    // Holds a sync server while the burst queues up behind it.
                    std::thread::sleep(Duration::from_millis(300));
                }
                socketserver::Handler::handle(&Echo, req)
            },
            errors: errors.clone(),
        };
        let server =
            TestServer::start_with(transport, |b| b.mode(mode).max_packet_size(1000), handler);
        burst(&server, &what)?;
        let lines = errors.lines();
        assert_eq!(lines.len(), 1, "{what}: {lines:?}");
        assert!(
            lines[0].contains("dropped a datagram of 1001 bytes"),
            "{lines:?}"
        );
    }
    // The event loop's own datagram path (a protocol session per datagram).
    for transport in DATAGRAMS {
        let server =
            TestServer::start_with(transport, |b| b.mode(ASYNC).max_packet_size(1000), Echo);
        burst(&server, &format!("async, evented, {transport:?}"))?;
    }
    Ok(())
}

/// Sends "wait", then 8 datagrams from each of 4 clients (and one of 1,001 bytes), and
/// checks that every client gets exactly its own 8 back. (A Unix datagram socket queues at
/// most `net.unix.max_dgram_qlen` datagrams, 10 by default: a client's 8 answers fit.)
fn burst(server: &TestServer, what: &str) -> io::Result<()> {
    let waiter = Dgram::new(&server.addr)?;
    waiter.send(b"wait")?;
    std::thread::sleep(Duration::from_millis(50));
    let clients = (0..4)
        .map(|_| Dgram::new(&server.addr))
        .collect::<io::Result<Vec<_>>>()?;
    let message = |c: usize, i: usize| {
        let mut m = format!("client {c} datagram {i} ").into_bytes();
        m.resize(m.len() + (c * 37 + i * 71) % 900, b'a' + i as u8);
        m
    };
    for i in 0..8 {
        for (c, client) in clients.iter().enumerate() {
            client
                .send(&message(c, i))
                .map_err(|e| io::Error::new(e.kind(), format!("{what}: send {c}/{i}: {e}")))?;
            if c == 2 && i == 5 {
                client
                    .send(&pattern(1001))
                    .map_err(|e| io::Error::new(e.kind(), format!("{what}: send 1001: {e}")))?;
            }
        }
    }
    let waited = waiter
        .recv()
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: the waiter's answer: {e}")))?;
    assert_eq!(waited, b"wait", "{what}");
    for (c, client) in clients.iter().enumerate() {
        let mut got = Vec::new();
        for k in 0..8 {
            let answer = client.recv().map_err(|e| {
                io::Error::new(e.kind(), format!("{what}: client {c}, answer {k}: {e}"))
            })?;
            got.push(answer);
        }
        let mut sent: Vec<Vec<u8>> = (0..8).map(|i| message(c, i)).collect();
        // Threads may answer out of order; each answer is whole and goes to its sender.
        got.sort();
        sent.sort();
        assert_eq!(got, sent, "{what}: client {c}");
    }
    Ok(())
}

#[test]
fn request_knows_peer_and_local_addresses() -> io::Result<()> {
    let handler = |req: &mut Request| {
        let text = format!("{} {}", req.peer(), req.local());
        req.write_all(text.as_bytes())
    };
    for mode in [Mode::Threading, ASYNC] {
        let server = TestServer::start(Transport::Tcp, mode, handler);
        let mut stream = Stream::connect(&server.addr)?;
        let me = stream.local_addr_string();
        stream.shutdown_write()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        assert_eq!(reply, format!("{me} {}", server.addr));

        let server = TestServer::start(Transport::Udp, mode, handler);
        let client = Dgram::new(&server.addr)?;
        client.send(b"?")?;
        let reply = String::from_utf8(client.recv()?).unwrap();
        let Dgram::Udp(socket, _) = &client else {
            unreachable!()
        };
        assert_eq!(
            reply,
            format!("udp://{} {}", socket.local_addr()?, server.addr)
        );
    }
    Ok(())
}

#[test]
fn ipv6_loopback_works_when_available() -> io::Result<()> {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return Ok(());
    }
    for url in ["tcp://[::1]:0", "udp://[::1]:0"] {
        let server = socketserver::Server::builder(url.parse().unwrap())
            .bind(Upper)
            .unwrap();
        assert!(
            server.local_addr().to_string().starts_with(&url[..10]),
            "{}",
            server.local_addr()
        );
        assert_ne!(server.local_addr().port(), Some(0));
        let server = TestServer::serve(Arc::new(server), tempfile::tempdir()?);
        let reply = if url.starts_with("tcp") {
            exchange(&server.addr, b"six\n")?
        } else {
            let socket = std::net::UdpSocket::bind("[::1]:0")?;
            socket.set_read_timeout(Some(IO_TIMEOUT))?;
            socket.send_to(b"six", server.addr.socket_addr().unwrap())?;
            let mut buf = [0u8; 16];
            let n = socket.recv(&mut buf)?;
            buf[..n].to_vec()
        };
        assert_eq!(reply, b"SIX");
    }
    Ok(())
}

#[test]
fn host_names_are_resolved_and_the_bound_address_shown() {
    let server = socketserver::Server::bind("tcp://localhost:0".parse().unwrap(), Echo).unwrap();
    let shown = server.local_addr().to_string();
    assert!(
        shown == format!("tcp://127.0.0.1:{}", server.local_addr().port().unwrap())
            || shown.starts_with("tcp://[::1]:"),
        "{shown}"
    );
    assert_ne!(server.local_addr().port(), Some(0));
}

struct Denying {
    handled: Arc<AtomicUsize>,
}

impl socketserver::Handler for Denying {
    fn handle(&self, _req: &mut Request) -> io::Result<()> {
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn verify(&self, _peer: &Address) -> bool {
        false
    }
}

#[test]
fn denied_requests_never_reach_the_handler() -> io::Result<()> {
    for mode in all_modes() {
        for transport in TRANSPORTS {
            let handled = Arc::new(AtomicUsize::new(0));
            let server = TestServer::start(
                transport,
                mode,
                Denying {
                    handled: Arc::clone(&handled),
                },
            );
            if transport.is_stream() {
                let mut stream = Stream::connect(&server.addr)?;
                let mut buf = Vec::new();
                // Closed without a byte (a reset is also a close).
                let n = stream.read_to_end(&mut buf).unwrap_or(0);
                assert_eq!(n, 0, "{mode} {transport:?}");
            } else {
                let client = Dgram::new(&server.addr)?;
                client.set_timeout(Some(Duration::from_millis(200)))?;
                client.send(b"let me in")?;
                assert!(
                    client.recv().is_err(),
                    "{mode} {transport:?}: a denied datagram got a reply"
                );
            }
            server.shutdown().unwrap();
            assert_eq!(handled.load(Ordering::SeqCst), 0, "{mode} {transport:?}");
        }
    }
    Ok(())
}

#[test]
fn a_panicking_handler_is_reported_once_and_the_server_keeps_serving() -> io::Result<()> {
    for mode in all_modes() {
        for transport in TRANSPORTS {
            let errors = Errors::default();
            let handle = |req: &mut Request| {
                let mut line = String::new();
                req.read_line(&mut line)?;
                if line.starts_with("panic") {
                    panic!("asked to panic");
                }
                req.write_all(b"fine")
            };
            let server = TestServer::start_with(
                transport,
                |b| b.mode(mode),
                Recording {
                    handle,
                    errors: errors.clone(),
                },
            );
            if transport.is_stream() {
                let reply = exchange(&server.addr, b"panic\n").unwrap_or_default();
                assert_eq!(reply, b"", "{mode} {transport:?}");
            } else {
                let client = Dgram::new(&server.addr)?;
                client.set_timeout(Some(Duration::from_millis(300)))?;
                client.send(b"panic")?;
                // The reply of a panicking datagram handler is still sent (finish runs), empty.
                let _ = client.recv();
            }
            assert_eq!(
                exchange(&server.addr, b"again\n")?,
                b"fine",
                "{mode} {transport:?}"
            );
            server.shutdown().unwrap();
            let lines = errors.lines();
            assert_eq!(lines.len(), 1, "{mode} {transport:?}: {lines:?}");
            assert!(
                lines[0].contains("handler panicked: asked to panic"),
                "{lines:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_failing_handler_is_reported_with_the_client_address() -> io::Result<()> {
    let errors = Errors::default();
    let handle = |_: &mut Request| Err(io::Error::other("no such thing"));
    let server = TestServer::start_with(
        Transport::Tcp,
        |b| b,
        Recording {
            handle,
            errors: errors.clone(),
        },
    );
    let mut stream = Stream::connect(&server.addr)?;
    let me = stream.local_addr_string();
    stream.shutdown_write()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    server.shutdown().unwrap();
    assert_eq!(errors.lines(), vec![format!("{me}: no such thing")]);
    Ok(())
}

#[test]
fn a_blocking_closure_handler_runs_on_the_workers_in_async_mode() -> io::Result<()> {
    // A plain `Handler` has no session: async mode runs it on its worker threads, one
    // connection at a time per worker, so one connection blocked in the handler leaves the
    // other worker free.
    let handler = |req: &mut Request| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        let reply = format!("{}: {}", socketserver::worker_name(), line.trim());
        req.write_all(reply.as_bytes())
    };
    for transport in STREAMS {
        let server = TestServer::start(transport, ASYNC, handler);
        let mut slow = Stream::connect(&server.addr)?;
        slow.write_all(b"sl")?; // no newline yet: its worker waits for the rest
        let mut fast = Stream::connect(&server.addr)?;
        fast.set_timeout(Some(Duration::from_secs(2)))?;
        fast.write_all(b"fast\n")?;
        let answered_by_a_worker = |stream: &mut Stream, want: &str| -> io::Result<()> {
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            let (name, data) = reply
                .split_once(": ")
                .unwrap_or_else(|| panic!("{transport:?}: {reply:?}"));
            assert!(
                name.starts_with("socketserver-worker-"),
                "{transport:?}: {reply}"
            );
            assert_eq!(data, want, "{transport:?}");
            Ok(())
        };
        answered_by_a_worker(&mut fast, "fast")?;
        slow.write_all(b"ow\n")?;
        answered_by_a_worker(&mut slow, "slow")?;
        server.shutdown().unwrap();
    }
    // Datagrams reach a blocking handler in async mode too.
    for transport in DATAGRAMS {
        let server = TestServer::start(transport, ASYNC, handler);
        let reply = String::from_utf8(exchange(&server.addr, b"dgram\n")?).unwrap();
        assert!(reply.ends_with(": dgram"), "{transport:?}: {reply}");
        server.shutdown().unwrap();
    }
    Ok(())
}
