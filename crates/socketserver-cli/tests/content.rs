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
    Server::http(site.path(), mode, extra)
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

/// One part of a `multipart/byteranges` body: its fields and its bytes.
type Part = (Vec<(String, String)>, Vec<u8>);

/// The parts of a `multipart/byteranges` body.
fn parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    // Each part: "--B\r\nfields\r\n\r\nbytes\r\n", then "--B--\r\n" ends it.
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        rest = &rest[2..]; // CRLF after the delimiter
        let head_end = find(rest, b"\r\n\r\n").expect("a part's head ends");
        let fields = String::from_utf8_lossy(&rest[..head_end])
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        rest = &rest[head_end + 4..];
        let next = find(rest, format!("\r\n{delimiter}").as_bytes()).expect("a next delimiter");
        out.push((fields, rest[..next].to_vec()));
        rest = &rest[next + 2..];
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn several_ranges_get_multipart_byteranges_byte_exact() -> io::Result<()> {
    let site = tempdir()?;
    let data = common::payload(100_000);
    std::fs::write(site.path().join("data.bin"), &data)?;
    for mode in ["async", "threading", "pool"] {
        let server = start(&site, mode, &[])?;
        let addr = &server.addrs[0];
        let range = |spec: &str, method: &str| {
            ask(
                addr,
                &format!(
                    "{method} /data.bin HTTP/1.1\r\nHost: t\r\nRange: bytes={spec}\r\nConnection: close\r\n\r\n"
                ),
            )
        };
        let reply = range("0-9,50000-50999,99990-", "GET")?;
        assert_eq!(reply.status, 206, "{mode}");
        let kind = reply.header("Content-Type").expect("a type").to_string();
        let boundary = kind
            .strip_prefix("multipart/byteranges; boundary=")
            .expect("multipart/byteranges")
            .to_string();
        assert_eq!(
            reply.header("Content-Length"),
            Some(reply.body.len().to_string().as_str()),
            "{mode}"
        );
        let got = parts(&reply.body, &boundary);
        let want = [(0usize, 9usize), (50_000, 50_999), (99_990, 99_999)];
        assert_eq!(got.len(), want.len(), "{mode}");
        for ((fields, bytes), (start, end)) in got.iter().zip(want) {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(
                field("Content-Type"),
                Some("application/octet-stream"),
                "{mode}"
            );
            let expected_range = format!("bytes {start}-{end}/100000");
            assert_eq!(
                field("Content-Range"),
                Some(expected_range.as_str()),
                "{mode}"
            );
            assert!(
                bytes[..] == data[start..=end],
                "{mode}: part {start}-{end} byte-exact"
            );
        }
        // HEAD: the same head, no body.
        let head = range("0-9,50000-50999,99990-", "HEAD")?;
        assert_eq!(
            head.header("Content-Length"),
            reply.header("Content-Length"),
            "{mode}"
        );
        assert_eq!(
            head.header("Content-Type"),
            reply.header("Content-Type"),
            "{mode}"
        );
        // Overlapping ranges merge into one ordinary 206.
        let merged = range("0-9,5-19", "GET")?;
        assert_eq!(merged.status, 206);
        assert_eq!(merged.header("Content-Range"), Some("bytes 0-19/100000"));
        assert!(merged.body[..] == data[..20]);
        // Range amplification: 17 ranges, or more than the file in all, get the whole file.
        let seventeen = (0..17)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect::<Vec<_>>();
        let many = range(&seventeen.join(","), "GET")?;
        assert_eq!((many.status, many.body.len()), (200, 100_000), "{mode}");
        let over = range("0-99999,0-99999", "GET")?;
        assert_eq!((over.status, over.body.len()), (200, 100_000), "{mode}");
        let outside = range("200000-300000,400000-", "GET")?;
        assert_eq!(outside.status, 416, "{mode}");
    }
    Ok(())
}
