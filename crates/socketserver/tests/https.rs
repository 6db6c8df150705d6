//! HTTPS: a certificate generated here (rcgen), a rustls client, the handshake off the
//! accept loop and under the header timeout.
#![cfg(feature = "tls")]

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use socketserver::Mode;
use socketserver::http::{Http, Limits, StaticFiles, TlsConfig};

struct Pki {
    dir: tempfile::TempDir,
    cert_der: rustls::pki_types::CertificateDer<'static>,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    Pki {
        dir,
        cert_der: certified.cert.der().clone(),
    }
}

fn client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.cert_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn https_get(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> io::Result<Vec<u8>> {
    https_get_with(addr, config, path, "")
}

/// [`https_get`] with extra header lines (each ending in CRLF).
fn https_get_with(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
    headers: &str,
) -> io::Result<Vec<u8>> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn =
        rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
    )?;
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply)?;
    Ok(reply)
}

fn serve(pki: &Pki, root: &std::path::Path, mode: Mode, limits: Limits) -> TestServer {
    let tls = TlsConfig::from_pem_files(
        pki.dir.path().join("cert.pem"),
        pki.dir.path().join("key.pem"),
    )
    .unwrap();
    let handler = Http::new(StaticFiles::new(root).unwrap())
        .tls(tls)
        .limits(limits)
        .access_log(false);
    TestServer::start(Transport::Tcp, mode, handler)
}

#[test]
fn files_are_served_byte_exact_over_tls() -> io::Result<()> {
    let pki = pki();
    let root = tempfile::tempdir()?;
    let big = pattern(2 * 1024 * 1024 + 5);
    std::fs::write(root.path().join("big.bin"), &big)?;
    for mode in [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC] {
        let server = serve(&pki, root.path(), mode, Limits::default());
        let reply = https_get(
            server.addr.socket_addr().unwrap(),
            &client_config(&pki),
            "/big.bin",
        )?;
        assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"), "{mode}");
        let body = parse_whole_reply(&reply)?.body;
        assert!(body == big[..], "{mode}: {} body bytes", body.len());
    }
    Ok(())
}

#[test]
fn a_silent_client_neither_blocks_others_nor_outlives_the_header_timeout() -> io::Result<()> {
    let pki = pki();
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("x.txt"), b"secure")?;
    let mut limits = Limits::default();
    limits.header_timeout = Duration::from_millis(500);
    // In pool and async modes more silent clients than workers: they must hold none.
    for (mode, silents) in [
        (Mode::Threading, 1),
        (Mode::Pool { workers: 2 }, 8),
        (ASYNC, 8),
    ] {
        let server = serve(&pki, root.path(), mode, limits.clone());
        let addr = server.addr.socket_addr().unwrap();
        // Connect and never start the handshake, or stop half-way through a request head.
        let mut silent = Vec::new();
        for i in 0..silents {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            if i % 2 == 1 {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut conn = rustls::ClientConnection::new(client_config(&pki), name)
                    .map_err(io::Error::other)?;
                let mut tls = rustls::Stream::new(&mut conn, &mut s);
                tls.write_all(b"GET /x.txt HTTP/1.1\r\nHost: localhost\r\n")?;
            }
            silent.push(s);
        }
        let started = Instant::now();
        let reply = https_get(addr, &client_config(&pki), "/x.txt")?;
        assert!(reply.ends_with(b"secure"), "{mode}");
        assert!(
            started.elapsed() < Duration::from_millis(450),
            "{mode}: the handshake waited on the silent clients"
        );
        for mut s in silent {
            let mut buf = [0u8; 1024];
            // Cut off after the header timeout: end of file, or a TLS alert/408 then end.
            while s.read(&mut buf).unwrap_or(0) > 0 {}
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{mode}");
    }
    Ok(())
}

#[test]
fn plain_http_on_a_tls_port_gets_a_readable_400() -> io::Result<()> {
    let pki = pki();
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("x.txt"), b"secure")?;
    for mode in [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC] {
        let server = serve(&pki, root.path(), mode, Limits::default());
        let addr = server.addr.socket_addr().unwrap();
        let mut plain = TcpStream::connect(addr)?;
        plain.set_read_timeout(Some(IO_TIMEOUT))?;
        plain.write_all(b"GET /x.txt HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut reply = Vec::new();
        let _ = plain.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{mode}: {text:?}"
        );
        assert!(text.contains("Connection: close\r\n"), "{mode}: {text:?}");
        assert!(
            text.ends_with("use https:// in the address.\n"),
            "{mode}: {text:?}"
        );
        assert!(!text.contains("secure"), "{mode}");
        assert!(https_get(addr, &client_config(&pki), "/x.txt")?.ends_with(b"secure"));
    }
    Ok(())
}

#[test]
fn alpn_offers_http_1_1_and_refuses_a_client_that_wants_only_h2() -> io::Result<()> {
    let pki = pki();
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("x.txt"), b"secure")?;
    let server = serve(&pki, root.path(), ASYNC, Limits::default());
    let addr = server.addr.socket_addr().unwrap();
    let handshake = |protocols: &[&[u8]]| -> io::Result<Option<Vec<u8>>> {
        let mut config = (*client_config(&pki)).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
        let mut sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(conn.alpn_protocol().map(<[u8]>::to_vec))
    };
    assert_eq!(
        handshake(&[b"h2", b"http/1.1"])?,
        Some(b"http/1.1".to_vec())
    );
    assert_eq!(handshake(&[])?, None);
    assert!(
        handshake(&[b"h2"]).is_err(),
        "an h2-only client must be refused"
    );
    Ok(())
}

/// Issue 9, item 4: a handshake trickled a byte at a time (each read well within any per-read
/// timeout) is cut off at the header timeout in every mode, and others are served meanwhile.
#[test]
fn a_trickled_handshake_is_cut_off_at_the_header_timeout() -> io::Result<()> {
    let pki = pki();
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("x.txt"), b"secure")?;
    let mut limits = Limits::default();
    limits.header_timeout = Duration::from_millis(600);
    limits.idle_timeout = Duration::from_millis(600);
    for mode in [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC] {
        let server = serve(&pki, root.path(), mode, limits.clone());
        let addr = server.addr.socket_addr().unwrap();
        // A real ClientHello, sent one byte every 100 ms.
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn =
            rustls::ClientConnection::new(client_config(&pki), name).map_err(io::Error::other)?;
        let mut hello = Vec::new();
        conn.write_tls(&mut hello)?;
        let mut tricklers = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..4 {
            let s = TcpStream::connect(addr)?;
            let mut w = s.try_clone()?;
            let hello = hello.clone();
            threads.push(std::thread::spawn(move || {
                for b in hello {
                    if w.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
            tricklers.push(s);
        }
        let started = Instant::now();
        assert!(https_get(addr, &client_config(&pki), "/x.txt")?.ends_with(b"secure"));
        for s in &tricklers {
            let left = Duration::from_secs(3).saturating_sub(started.elapsed());
            assert!(
                released_within(s, left).is_some(),
                "{mode}: a trickled handshake still held its connection after {:?}",
                started.elapsed()
            );
        }
        drop(tricklers);
        for t in threads {
            t.join().unwrap();
        }
    }
    Ok(())
}

#[test]
fn bad_certificate_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = TlsConfig::from_pem_files(&missing, &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = TlsConfig::from_pem_files(&junk, &junk)
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.pem"), "{err}");
    let pki = pki();
    let other = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
    let wrong_key = dir.path().join("wrong-key.pem");
    std::fs::write(&wrong_key, other.signing_key.serialize_pem()).unwrap();
    let err = TlsConfig::from_pem_files(pki.dir.path().join("cert.pem"), &wrong_key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be used together"), "{err}");
}

/// A body uploaded over TLS arrives whole and in order in every mode: in pool and async modes
/// the loop has read (and maybe decrypted) part of it before a worker takes the request over.
#[test]
fn uploads_over_tls_arrive_whole_in_every_mode() -> io::Result<()> {
    use socketserver::http::{Response, StatusCode};
    let pki = pki();
    let tls = TlsConfig::from_pem_files(
        pki.dir.path().join("cert.pem"),
        pki.dir.path().join("key.pem"),
    )
    .unwrap();
    let body = pattern(3 * 1024 * 1024 + 7);
    for mode in [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC] {
        let digest = |req: &mut socketserver::http::Request<'_>| match req.read_body() {
            Ok(bytes) => {
                let sum = bytes.iter().enumerate().fold(0u64, |acc, (i, b)| {
                    acc.wrapping_mul(31).wrapping_add(*b as u64 ^ i as u64)
                });
                Response::text(StatusCode::OK, format!("{} {sum}", bytes.len()))
            }
            Err(e) => Response::text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let handler = Http::new(digest).tls(tls.clone()).access_log(false);
        let server = TestServer::start(Transport::Tcp, mode, handler);
        let addr = server.addr.socket_addr().unwrap();
        let want = body.iter().enumerate().fold(0u64, |acc, (i, b)| {
            acc.wrapping_mul(31).wrapping_add(*b as u64 ^ i as u64)
        });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn =
            rustls::ClientConnection::new(client_config(&pki), name).map_err(io::Error::other)?;
        let mut sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        // Two requests on the connection, the first one's body written in uneven pieces.
        for round in 0..2 {
            write!(
                tls,
                "POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n{}\r\n",
                body.len(),
                if round == 1 {
                    "Connection: close\r\n"
                } else {
                    ""
                }
            )?;
            for piece in body.chunks(if round == 0 { 5000 } else { 64 * 1024 }) {
                tls.write_all(piece)?;
            }
            tls.flush()?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                tls.read_exact(&mut byte)?;
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{mode}: {head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            let mut answer = vec![0u8; len];
            tls.read_exact(&mut answer)?;
            assert_eq!(
                String::from_utf8_lossy(&answer),
                format!("{} {want}", body.len()),
                "{mode}: round {round}"
            );
        }
    }
    Ok(())
}

/// Issue 9, item 3: HTTPS clients that ask for a large file and read nothing, more of them
/// than there are workers, hold no worker: the loop encrypts as each socket drains. A normal
/// HTTPS client is answered promptly meanwhile, and each stalled one is dropped at the write
/// timeout (plus a margin for the lingering close and a loaded machine).
#[test]
fn https_non_readers_past_the_worker_count_starve_no_one() -> io::Result<()> {
    let pki = pki();
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("x.txt"), b"secure")?;
    std::fs::File::create(root.path().join("huge.bin"))?.set_len(64 * 1024 * 1024)?;
    let mut limits = Limits::default();
    limits.write_timeout = Duration::from_millis(500);
    for mode in [Mode::Pool { workers: 2 }, ASYNC] {
        let server = serve(&pki, root.path(), mode, limits.clone());
        let addr = server.addr.socket_addr().unwrap();
        let mut stalled = Vec::new();
        for _ in 0..6 {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(client_config(&pki), name)
                .map_err(io::Error::other)?;
            let mut sock = TcpStream::connect(addr)?;
            sock.set_read_timeout(Some(IO_TIMEOUT))?;
            while conn.is_handshaking() {
                conn.complete_io(&mut sock)?;
            }
            conn.writer()
                .write_all(b"GET /huge.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
            while conn.wants_write() {
                conn.write_tls(&mut sock)?;
            }
            // And never read again.
            stalled.push((sock, conn));
        }
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert!(https_get(addr, &client_config(&pki), "/x.txt")?.ends_with(b"secure"));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{mode}: an HTTPS client waited {took:?} behind non-readers"
        );
        for (sock, _) in &stalled {
            let left = Duration::from_secs(4).saturating_sub(started.elapsed());
            assert!(
                released_within(sock, left).is_some(),
                "{mode}: a non-reading HTTPS client still held its connection after {:?}",
                started.elapsed()
            );
        }
    }
    Ok(())
}

/// The loop's encrypting pump sends a large file whole and byte-exact, and a connection that
/// closes after it (`Connection: close`) gets close_notify only after the last byte.
#[test]
fn large_files_over_tls_arrive_whole_through_the_pump() -> io::Result<()> {
    let pki = pki();
    let root = tempfile::tempdir()?;
    let data = pattern(5 * 1024 * 1024 + 123);
    std::fs::write(root.path().join("big.bin"), &data)?;
    for mode in [Mode::Pool { workers: 2 }, ASYNC, Mode::Threading] {
        let server = serve(&pki, root.path(), mode, Limits::default());
        let addr = server.addr.socket_addr().unwrap();
        let reply = https_get(addr, &client_config(&pki), "/big.bin")?;
        let body = parse_whole_reply(&reply)?.body;
        assert_eq!(body.len(), data.len(), "{mode}");
        assert!(body == data[..], "{mode}: bytes differ");
    }
    Ok(())
}

/// A body compressed as it is sent goes through the encrypting pump a bounded step at a time:
/// text and a file of zeros (a thousandfold smaller, so steps make few bytes), byte-exact.
#[test]
fn compressed_bodies_over_tls_arrive_whole_in_every_mode() -> io::Result<()> {
    use std::io::Read as _;
    let pki = pki();
    let root = tempfile::tempdir()?;
    let text: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("line {i} of {}\n", i % 977).into_bytes())
        .collect();
    let zeros = vec![0u8; 8 << 20];
    std::fs::write(root.path().join("text.txt"), &text)?;
    std::fs::write(root.path().join("zeros.txt"), &zeros)?;
    for mode in [ASYNC, Mode::Pool { workers: 2 }, Mode::Threading] {
        let server = serve(&pki, root.path(), mode, Limits::default());
        let addr = server.addr.socket_addr().unwrap();
        for (name, data) in [("/text.txt", &text), ("/zeros.txt", &zeros)] {
            for coding in ["zstd", "gzip"] {
                let reply = https_get_with(
                    addr,
                    &client_config(&pki),
                    name,
                    &format!("Accept-Encoding: {coding}\r\n"),
                )?;
                let reply = parse_whole_reply(&reply)?;
                assert_eq!(
                    reply.header("content-encoding"),
                    Some(coding),
                    "{mode} {name}"
                );
                let mut body = Vec::new();
                if coding == "zstd" {
                    zstd::stream::read::Decoder::new(&reply.body[..])?.read_to_end(&mut body)?;
                } else {
                    flate2::read::GzDecoder::new(&reply.body[..]).read_to_end(&mut body)?;
                }
                assert!(
                    body == data[..],
                    "{mode} {name} {coding}: {} bytes",
                    body.len()
                );
            }
        }
    }
    Ok(())
}

/// A PROXY header comes before the TLS handshake (HAProxy's `send-proxy-v2` to an HTTPS
/// backend): the loop or the blocking path strips it, and the handshake sees only its bytes.
#[test]
fn a_proxy_header_before_the_handshake_names_the_client() -> io::Result<()> {
    let pki = pki();
    let tls = || {
        TlsConfig::from_pem_files(
            pki.dir.path().join("cert.pem"),
            pki.dir.path().join("key.pem"),
        )
        .unwrap()
    };
    for mode in [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC] {
        let handler = Http::new(|req: &mut socketserver::http::Request<'_>| {
            socketserver::http::Response::text(
                socketserver::http::StatusCode::OK,
                format!("{}", req.peer()),
            )
        })
        .tls(tls())
        .access_log(false);
        let server = TestServer::start_with(
            Transport::Tcp,
            |b| b.mode(mode).proxy_protocol(Some(Duration::from_secs(5))),
            handler,
        );
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn =
            rustls::ClientConnection::new(client_config(&pki), name).map_err(io::Error::other)?;
        let mut sock = TcpStream::connect(server.addr.socket_addr().unwrap())?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4433 443\r\n")?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply)?;
        let body = parse_whole_reply(&reply)?.body;
        assert_eq!(body, b"tcp://203.0.113.9:4433", "{mode}");
    }
    Ok(())
}
