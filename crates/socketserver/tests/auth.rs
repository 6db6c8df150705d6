//! HTTP Basic authentication in front of the file service, over real sockets, in every mode
//! HTTP runs in: the exact challenge, every way to fail, the three kinds of secret, the health
//! check left open, and nothing of a refused request reaching the service.
#![cfg(feature = "http")]

mod common;

use std::io::{self, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use socketserver::Mode;
use socketserver::http::{
    self, BasicAuth, CHALLENGE, Http, Response, StaticFiles, StatusCode, Users,
};

const HTTP_MODES: [Mode; 3] = [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC];

/// "s3cret" hashed with argon2id (m=19456, t=2, p=1).
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$k8RGCVgK+7qGSNAd0kjisJ/jWx/aj+AR5aR8IJzkIeo";

fn users() -> Users {
    Users::new()
        .with("alice:wonderland")
        .and_then(|u| {
            // "password"
            u.with("bob:sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8")
        })
        .and_then(|u| u.with(&format!("carol:{PHC}")))
        .expect("valid users")
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

fn ask(server: &TestServer, request: &str) -> io::Result<HttpReply> {
    let stream = Stream::connect(&server.addr)?;
    let mut w = stream.try_clone()?;
    w.write_all(request.as_bytes())?;
    read_reply(&mut BufReader::new(stream), false)
}

fn get(server: &TestServer, path: &str, headers: &str) -> io::Result<HttpReply> {
    ask(
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n"),
    )
}

#[test]
fn only_known_users_with_their_password_get_in_whatever_the_secret() -> io::Result<()> {
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("a.txt"), "the file\n")?;
    for mode in HTTP_MODES {
        eprintln!("--- {mode}");
        let files = StaticFiles::new(root.path())?;
        let handler = Http::new(BasicAuth::new(files, users()))
            .access_log(false)
            .health("/healthz");
        let server = TestServer::start_with(Transport::Tcp, |b| b.mode(mode), handler);
        for (user, password) in [
            ("alice", "wonderland"),
            ("bob", "password"),
            ("carol", "s3cret"),
        ] {
            // Twice: the second time from the remembered credentials.
            for _ in 0..2 {
                let reply = get(&server, "/a.txt", &basic(user, password))?;
                assert_eq!(reply.status, 200, "{mode} {user}: {}", reply.head);
                assert_eq!(reply.text(), "the file\n");
            }
        }
        let refused = [
            String::new(),
            basic("alice", "Wonderland"),
            basic("alice", "wonderland "),
            basic("alice", ""),
            basic("mallory", "wonderland"),
            basic("carol", "s3cre"),
            basic(
                "bob",
                "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
            ),
            "Authorization: Basic\r\n".to_owned(),
            "Authorization: Basic !!!not-base64\r\n".to_owned(),
            "Authorization: Basic YWxpY2U=\r\n".to_owned(), // "alice", no colon
            "Authorization: Bearer wonderland\r\n".to_owned(),
        ];
        for headers in &refused {
            let reply = get(&server, "/a.txt", headers)?;
            assert_eq!(reply.status, 401, "{mode} {headers:?}: {}", reply.head);
            assert_eq!(reply.header("www-authenticate"), Some(CHALLENGE), "{mode}");
            assert!(!reply.text().contains("the file"), "{mode} {headers:?}");
        }
        // A listing is refused as well, and the health check stays open.
        assert_eq!(get(&server, "/", "")?.status, 401, "{mode}");
        let health = get(&server, "/healthz", "")?;
        assert_eq!(
            (health.status, health.text().as_str()),
            (200, "ok\n"),
            "{mode}"
        );
    }
    Ok(())
}

/// A request that is refused never reaches the service, and its body is never asked for:
/// `100 Continue` is not sent to a client that waits for it.
#[test]
fn a_refused_request_reaches_nothing_and_gets_no_100_continue() -> io::Result<()> {
    for mode in HTTP_MODES {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let service = move |req: &mut http::Request<'_>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut body = Vec::new();
            let _ = std::io::Read::read_to_end(req.body(), &mut body);
            Response::text(StatusCode::OK, format!("{} bytes\n", body.len()))
        };
        let handler = Http::new(BasicAuth::new(service, users())).access_log(false);
        let server = TestServer::start_with(Transport::Tcp, |b| b.mode(mode), handler);
        let stream = Stream::connect(&server.addr)?;
        let mut w = stream.try_clone()?;
        w.write_all(
            b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )?;
        let mut r = BufReader::new(stream);
        let reply = read_reply(&mut r, false)?;
        assert_eq!(reply.status, 401, "{mode}: {}", reply.head);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{mode}: the service was called"
        );
        // Allowed, the same request is answered and its body read.
        let reply = ask(
            &server,
            &format!(
                "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n{}\r\nhello",
                basic("alice", "wonderland")
            ),
        )?;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "5 bytes\n"),
            "{mode}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{mode}");
    }
    Ok(())
}
