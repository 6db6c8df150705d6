//! The PROXY protocol (`ServerBuilder::proxy_protocol`): the header's client address becomes
//! the peer in every mode, over TCP and Unix streams, whether the loop or a blocking handler
//! reads it; a missing, malformed or late header closes the connection without an answer.

mod common;

use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socketserver::{Conn, Flow, Mode, Protocol, ProtocolHandler, Request};

/// Answers `peer=<peer>\n`, then echoes what follows the header.
#[derive(Default)]
struct PeerEcho {
    greeted: bool,
}

impl Protocol for PeerEcho {
    fn data_received(&mut self, conn: &mut Conn<'_>) -> Flow {
        if !self.greeted {
            self.greeted = true;
            let line = format!("peer={}\n", conn.peer());
            conn.write(line.as_bytes());
        }
        let data = conn.received().to_vec();
        conn.write(&data);
        conn.consume(data.len());
        Flow::Continue
    }
}

/// The same from a blocking handler (in async mode it runs on a worker, which then reads the
/// header itself).
fn peer_echo_blocking(req: &mut Request) -> io::Result<()> {
    let line = format!("peer={}\n", req.peer());
    req.write_all(line.as_bytes())?;
    req.flush()?;
    // Until the client closes (a reset or timeout ends it as well).
    let _ = io::copy(req, &mut io::sink());
    Ok(())
}

const WITHIN: Duration = Duration::from_secs(2);

fn v1(source: &str, port: u16) -> Vec<u8> {
    let family = if source.contains(':') { "TCP6" } else { "TCP4" };
    let dest = if source.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {source} {dest} {port} 80\r\n").into_bytes()
}

fn v2_ipv4(source: [u8; 4], port: u16, local: bool) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(if local { 0x20 } else { 0x21 });
    out.push(if local { 0x00 } else { 0x11 });
    let tlv = [0x04u8, 0, 2, 7, 7]; // a NOOP TLV: part of the header, skipped
    let body_len: u16 = if local { 0 } else { 12 + tlv.len() as u16 };
    out.extend_from_slice(&body_len.to_be_bytes());
    if !local {
        out.extend_from_slice(&source);
        out.extend_from_slice(&[127, 0, 0, 1]);
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&80u16.to_be_bytes());
        out.extend_from_slice(&tlv);
    }
    out
}

/// Sends `parts` (with a pause between them), then reads the first line and `echo_len` more
/// bytes.
fn exchange_parts(
    addr: &socketserver::Address,
    parts: &[&[u8]],
    echo_len: usize,
) -> io::Result<(String, Vec<u8>)> {
    let mut conn = Stream::connect(addr)?;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            thread::sleep(Duration::from_millis(30));
        }
        conn.write_all(part)?;
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        if conn.read(&mut byte)? == 0 {
            return Err(io::Error::other(format!(
                "closed after {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
        line.push(byte[0]);
    }
    let mut echoed = vec![0u8; echo_len];
    conn.read_exact(&mut echoed)?;
    Ok((
        String::from_utf8_lossy(&line).trim_end().to_string(),
        echoed,
    ))
}

/// Reads to the end: what a refused connection gets (nothing), and how long it took.
fn refused(addr: &socketserver::Address, send: &[u8]) -> io::Result<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut conn = Stream::connect(addr)?;
    conn.write_all(send)?;
    let mut got = Vec::new();
    match conn.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(e),
    }
    Ok((got, start.elapsed()))
}

fn modes() -> Vec<Mode> {
    all_modes().into_iter().collect()
}

#[test]
fn the_headers_client_is_the_peer_in_every_mode_and_stream_transport() -> io::Result<()> {
    for transport in STREAMS {
        for mode in modes() {
            for blocking in [false, true] {
                let configure =
                    |b: socketserver::ServerBuilder| b.mode(mode).proxy_protocol(Some(WITHIN));
                let server = if blocking {
                    TestServer::start_with(transport, configure, peer_echo_blocking)
                } else {
                    TestServer::start_with(
                        transport,
                        configure,
                        ProtocolHandler::new(PeerEcho::default),
                    )
                };
                let what = format!("{transport:?} {mode} blocking={blocking}");
                let echo = if blocking { 0 } else { 5 };
                // v1, the header and the first bytes in one write.
                let mut first = v1("203.0.113.7", 51234);
                first.extend_from_slice(b"hello");
                let (line, echoed) = exchange_parts(&server.addr, &[&first], echo)?;
                assert_eq!(line, "peer=tcp://203.0.113.7:51234", "{what}");
                assert_eq!(echoed, &b"hello"[..echo], "{what}");
                // v1 over IPv6, cut in three pieces across the header.
                let header = v1("2001:db8::9", 4000);
                let (a, b) = header.split_at(9);
                let (b, c) = b.split_at(12);
                let mut c = c.to_vec();
                c.extend_from_slice(b"world");
                let (line, echoed) = exchange_parts(&server.addr, &[a, b, &c], echo)?;
                assert_eq!(line, "peer=tcp://[2001:db8::9]:4000", "{what}");
                assert_eq!(echoed, &b"world"[..echo], "{what}");
                // v2 with a TLV, then the data in a second write.
                let header = v2_ipv4([198, 51, 100, 20], 60001, false);
                let (line, echoed) = exchange_parts(&server.addr, &[&header, b"again"], echo)?;
                assert_eq!(line, "peer=tcp://198.51.100.20:60001", "{what}");
                assert_eq!(echoed, &b"again"[..echo], "{what}");
                // v2 LOCAL (a balancer's own health check): the socket's peer stays.
                let header = v2_ipv4([0; 4], 0, true);
                let (line, _) = exchange_parts(&server.addr, &[&header, b"x"], 0)?;
                let expected = match transport {
                    Transport::Tcp => "peer=tcp://127.0.0.1:",
                    _ => "peer=unix:",
                };
                assert!(line.starts_with(expected), "{what}: {line}");
                server.shutdown().map_err(io::Error::other)?;
            }
        }
    }
    Ok(())
}

#[test]
fn a_connection_without_a_valid_header_is_closed_without_an_answer() -> io::Result<()> {
    for transport in STREAMS {
        for mode in modes() {
            let server = TestServer::start_with(
                transport,
                |b| b.mode(mode).proxy_protocol(Some(WITHIN)),
                ProtocolHandler::new(PeerEcho::default),
            );
            let what = format!("{transport:?} {mode}");
            for bad in [
                &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                b"PROXY TCP4 1.2.3.400 127.0.0.1 1 2\r\nhello",
                b"\r\n\r\n\0\r\nQUIT\n\x13\x11\0\x0chello-world!",
            ] {
                let (got, took) = refused(&server.addr, bad)
                    .map_err(|e| io::Error::other(format!("{what}: {bad:?}: {e}")))?;
                assert!(got.is_empty(), "{what}: {bad:?} got {got:?}");
                assert!(
                    took < WITHIN,
                    "{what}: {bad:?} refused at once, not at the deadline"
                );
            }
            // A header that never ends: refused at its bound, not buffered without end.
            let mut endless = b"PROXY TCP4 ".to_vec();
            endless.resize(300, b'1');
            let (got, _) = refused(&server.addr, &endless)?;
            assert!(got.is_empty(), "{what}: endless header");
            // The server still serves.
            let (line, _) = exchange_parts(&server.addr, &[&v1("192.0.2.5", 7), b"x"], 1)?;
            assert_eq!(line, "peer=tcp://192.0.2.5:7", "{what}");
            server.shutdown().map_err(io::Error::other)?;
        }
    }
    Ok(())
}

#[test]
fn a_header_that_does_not_come_in_time_closes_the_connection_and_holds_no_one_else()
-> io::Result<()> {
    let within = Duration::from_millis(400);
    for mode in modes() {
        let server = TestServer::start_with(
            Transport::Tcp,
            |b| b.mode(mode).proxy_protocol(Some(within)),
            ProtocolHandler::new(PeerEcho::default),
        );
        // A partial header, then silence; another client meanwhile is served (except in sync
        // mode, which serves one connection at a time by design).
        let start = Instant::now();
        let mut silent = Stream::connect(&server.addr)?;
        silent.write_all(b"PROXY TCP4 10.0.0.")?;
        if mode != Mode::Sync {
            let (line, _) = exchange_parts(&server.addr, &[&v1("192.0.2.6", 8), b"x"], 1)?;
            assert_eq!(line, "peer=tcp://192.0.2.6:8", "{mode}");
        }
        let mut got = Vec::new();
        silent
            .read_to_end(&mut got)
            .map_err(|e| io::Error::other(format!("{mode}: {e}")))?;
        let took = start.elapsed();
        assert!(got.is_empty(), "{mode}: {got:?}");
        assert!(
            took >= within && took < within + Duration::from_secs(3),
            "{mode}: closed after {took:?}"
        );
        server.shutdown().map_err(io::Error::other)?;
    }
    Ok(())
}

#[test]
fn without_the_option_a_proxy_header_is_just_data() -> io::Result<()> {
    let server = TestServer::start(
        Transport::Tcp,
        ASYNC,
        ProtocolHandler::new(PeerEcho::default),
    );
    let header = v1("203.0.113.7", 1);
    let (line, echoed) = exchange_parts(&server.addr, &[&header], header.len())?;
    assert!(line.starts_with("peer=tcp://127.0.0.1:"), "{line}");
    assert_eq!(echoed, header);
    Ok(())
}
