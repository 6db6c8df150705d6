//! The `http: content` flags that shape answers: `--header`, `--cache-control`, `--cors`,
//! `--fallback`, `--not-found`, `--no-listing`, and `index.htm` after `index.html`, in the
//! event loop and in a blocking mode.

mod common;

use std::io::{self, BufReader, Write};

use common::{Addr, HttpReply, Server, Stream, assert_one_line_error, run};
use tempfile::{TempDir, tempdir};

const MODES: [&str; 2] = ["async", "threading"];

fn site() -> io::Result<TempDir> {
    let site = tempdir()?;
    let r = site.path();
    std::fs::write(r.join("index.html"), "<p>app</p>")?;
    std::fs::write(r.join("a.txt"), "a file\n")?;
    std::fs::write(r.join("404.html"), "<h1>nothing here</h1>")?;
    std::fs::write(r.join(".secret"), "hidden")?;
    std::fs::create_dir(r.join("old"))?;
    std::fs::write(r.join("old/index.htm"), "<p>old index</p>")?;
    std::fs::create_dir(r.join("plain"))?;
    std::fs::write(r.join("plain/b.txt"), "b")?;
    Ok(site)
}

fn start(site: &TempDir, mode: &str, extra: &[&str]) -> io::Result<Server> {
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let mut args = vec![
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--mode",
        mode,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn ask(addr: &Addr, request: &str) -> io::Result<HttpReply> {
    let mut conn = Stream::connect(addr)?;
    conn.write_all(request.as_bytes())?;
    common::read_reply(&mut BufReader::new(&mut conn), request.starts_with("HEAD"))
}

fn get(addr: &Addr, path: &str) -> io::Result<HttpReply> {
    ask(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn extra_headers_go_on_every_answer_and_a_malformed_one_is_refused() -> io::Result<()> {
    let site = site()?;
    for mode in MODES {
        let server = start(
            &site,
            mode,
            &[
                "--header",
                "X-Frame-Options: DENY",
                "--header",
                "Content-Security-Policy: default-src 'self'",
                "--health",
                "/healthz",
            ],
        )?;
        let addr = &server.addrs[0];
        for (path, status) in [
            ("/a.txt", 200),
            ("/nope", 404),
            ("/healthz", 200),
            ("/plain/", 200),
        ] {
            let reply = get(addr, path)?;
            assert_eq!(reply.status, status, "{mode} {path}");
            assert_eq!(
                reply.header("X-Frame-Options"),
                Some("DENY"),
                "{mode} {path}"
            );
            assert_eq!(
                reply.header("Content-Security-Policy"),
                Some("default-src 'self'"),
                "{mode} {path}"
            );
        }
        let bad = ask(addr, "GET /a.txt HTTP/1.1\r\n\r\n")?; // no Host: a refusal
        assert_eq!(bad.status, 400);
        assert_eq!(
            bad.header("X-Frame-Options"),
            Some("DENY"),
            "{mode}: refusals too"
        );
    }
    let dir = site.path().to_str().expect("UTF-8 temp path");
    for bad in ["NoColon", "Bad Name: x", ": empty"] {
        let out = run(&["http", "--dir", dir, "--header", bad])?;
        assert_one_line_error(&out, 2, &["--header"]);
    }
    let out = run(&["echo", "--header", "X-A: b"])?;
    assert_one_line_error(&out, 2, &["--header applies to the http service only"]);
    Ok(())
}

#[test]
fn cache_control_goes_on_file_answers() -> io::Result<()> {
    let site = site()?;
    for mode in MODES {
        let server = start(&site, mode, &["--cache-control", "max-age=3600"])?;
        let addr = &server.addrs[0];
        let file = get(addr, "/a.txt")?;
        assert_eq!(file.header("Cache-Control"), Some("max-age=3600"), "{mode}");
        let etag = file.header("ETag").expect("an ETag").to_string();
        let again = ask(
            addr,
            &format!(
                "GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
            ),
        )?;
        assert_eq!(again.status, 304);
        assert_eq!(
            again.header("Cache-Control"),
            Some("max-age=3600"),
            "{mode}: 304"
        );
        let listing = get(addr, "/plain/")?;
        assert_eq!(listing.header("Cache-Control"), None, "{mode}: not a file");
    }
    Ok(())
}

#[test]
fn cors_allows_any_origin_and_answers_preflights() -> io::Result<()> {
    let site = site()?;
    for mode in MODES {
        let server = start(&site, mode, &["--cors"])?;
        let addr = &server.addrs[0];
        for path in ["/a.txt", "/nope"] {
            let reply = get(addr, path)?;
            assert_eq!(
                reply.header("Access-Control-Allow-Origin"),
                Some("*"),
                "{mode} {path}"
            );
        }
        let preflight = ask(
            addr,
            "OPTIONS /a.txt HTTP/1.1\r\nHost: t\r\nOrigin: https://example.test\r\n\
             Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: x-token, content-type\r\n\
             Connection: close\r\n\r\n",
        )?;
        assert_eq!(preflight.status, 204, "{mode}");
        assert_eq!(preflight.header("Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(
            preflight.header("Access-Control-Allow-Methods"),
            Some("GET, HEAD, OPTIONS")
        );
        assert_eq!(
            preflight.header("Access-Control-Allow-Headers"),
            Some("x-token, content-type")
        );
        assert_eq!(preflight.header("Access-Control-Max-Age"), Some("86400"));
        // Not a preflight: the file server's own answer.
        let plain = ask(
            addr,
            "OPTIONS /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )?;
        assert_eq!(plain.status, 405, "{mode}");
    }
    // Without --cors, nothing of it.
    let server = start(&site, "async", &[])?;
    assert_eq!(
        get(&server.addrs[0], "/a.txt")?.header("Access-Control-Allow-Origin"),
        None
    );
    Ok(())
}

#[test]
fn a_fallback_serves_missing_paths_and_refusals_stay() -> io::Result<()> {
    let site = site()?;
    for mode in MODES {
        let server = start(&site, mode, &["--fallback", "index.html"])?;
        let addr = &server.addrs[0];
        let app = get(addr, "/some/client/route")?;
        assert_eq!(
            (app.status, app.text().as_str()),
            (200, "<p>app</p>"),
            "{mode}"
        );
        assert_eq!(app.header("Content-Type"), Some("text/html; charset=utf-8"));
        let head = ask(
            addr,
            "HEAD /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )?;
        assert_eq!(head.status, 200, "{mode}: HEAD too");
        assert_eq!(
            get(addr, "/a.txt")?.text(),
            "a file\n",
            "{mode}: files are files"
        );
        // A dot-file is refused as before, not replaced by the app.
        let secret = get(addr, "/.secret")?;
        assert_eq!(secret.status, 404, "{mode}");
        assert!(!secret.text().contains("app"), "{mode}");
        let up = get(addr, "/%2e%2e/%2e%2e/etc/passwd")?;
        assert!(!up.text().contains("root:"), "{mode}");
    }
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let out = run(&["http", "--dir", dir, "--fallback", "missing.html"])?;
    assert_one_line_error(&out, 2, &["--fallback missing.html", "no such file"]);
    Ok(())
}

#[test]
fn a_not_found_page_is_the_body_of_404s() -> io::Result<()> {
    let site = site()?;
    for mode in MODES {
        let server = start(&site, mode, &["--not-found", "404.html"])?;
        let addr = &server.addrs[0];
        let missing = get(addr, "/nope")?;
        assert_eq!(
            (missing.status, missing.text().as_str()),
            (404, "<h1>nothing here</h1>"),
            "{mode}"
        );
        assert_eq!(
            missing.header("Content-Type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(get(addr, "/a.txt")?.status, 200, "{mode}");
    }
    Ok(())
}

#[test]
fn no_listing_refuses_directories_without_an_index_and_index_htm_is_one() -> io::Result<()> {
    let site = site()?;
    for mode in MODES {
        let server = start(&site, mode, &["--no-listing"])?;
        let addr = &server.addrs[0];
        let plain = get(addr, "/plain/")?;
        assert_eq!(plain.status, 403, "{mode}");
        assert!(
            !plain.text().contains("b.txt"),
            "{mode}: nothing of its contents"
        );
        let old = get(addr, "/old/")?;
        assert_eq!(
            (old.status, old.text().as_str()),
            (200, "<p>old index</p>"),
            "{mode}"
        );
        assert_eq!(
            get(addr, "/plain/b.txt")?.status,
            200,
            "{mode}: its files are served"
        );
    }
    let server = start(&site, "async", &[])?;
    assert!(
        get(&server.addrs[0], "/plain/")?.text().contains("b.txt"),
        "a listing by default"
    );
    Ok(())
}

#[test]
fn the_listing_sorts_and_has_a_json_form_with_the_same_entries() -> io::Result<()> {
    let site = tempdir()?;
    let r = site.path();
    std::fs::write(r.join("big.bin"), vec![0u8; 3000])?;
    std::fs::write(r.join("a.txt"), "six b\n")?;
    std::fs::create_dir(r.join("zeta"))?;
    for mode in MODES {
        let server = start(&site, mode, &[])?;
        let addr = &server.addrs[0];
        let json = ask(
            addr,
            "GET / HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        )?;
        assert_eq!(json.status, 200, "{mode}");
        assert_eq!(json.header("Content-Type"), Some("application/json"));
        assert_eq!(json.header("Vary"), Some("Accept"));
        let text = json.text();
        // Directories first, then files by name; sizes exact, times in UTC.
        let names: Vec<&str> = text
            .split("\"name\":\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap_or(0)])
            .collect();
        assert_eq!(names, ["zeta", "a.txt", "big.bin"], "{mode}: {text}");
        assert!(text.starts_with("{\"path\":\"/\""), "{text}");
        assert!(
            text.contains("\"name\":\"a.txt\",\"size\":6") || text.contains("\"size\":6"),
            "{text}"
        );
        assert!(text.contains("\"size\":3000"), "{text}");
        assert!(text.contains("Z\""), "RFC 3339 UTC times: {text}");
        // ?json says the same; ?sort=size&order=desc reorders the files, not the directory.
        let by_size = get(addr, "/?json&sort=size&order=desc")?.text();
        let names: Vec<&str> = by_size
            .split("\"name\":\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap_or(0)])
            .collect();
        assert_eq!(names, ["zeta", "big.bin", "a.txt"], "{mode}");
        let page = get(addr, "/?sort=size&order=desc")?.text();
        let big = page.find("big.bin\">big.bin").expect("big.bin listed");
        let small = page.find("a.txt\">a.txt").expect("a.txt listed");
        assert!(big < small, "{mode}: the page in the same order");
        assert!(
            page.contains("title=\"3000 bytes\">2.9 KiB</data>"),
            "{mode}"
        );
    }
    Ok(())
}
