//! Compression of static files over real sockets: every coding decoded byte-exact, the
//! negotiation, validators per coding, ranges on the identity, precompressed siblings, the
//! cache, and the event loop's fairness while it compresses a large file.
#![cfg(feature = "http")]

mod common;

use std::io::{self, BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;
use socketserver::http::{Compression, Encoding, Http, StaticFiles};
use socketserver::{Address, Mode};

const HTTP_MODES: [Mode; 3] = [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC];

/// One event loop (and one worker): every connection shares it.
const ONE_LOOP: Mode = Mode::Async {
    loops: 1,
    workers: 1,
};

fn in_modes(test: impl Fn(Mode) -> io::Result<()>) -> io::Result<()> {
    for mode in HTTP_MODES {
        eprintln!("--- mode {mode}");
        test(mode).map_err(|e| io::Error::new(e.kind(), format!("{mode}: {e}")))?;
    }
    Ok(())
}

/// Text that compresses like source code does (about 4:1), `len` bytes.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i: u64 = 0;
    while out.len() < len {
        let word = ["serve", "socket", "loop", "file", "byte", "range", "peer"][(i % 7) as usize];
        out.extend_from_slice(
            format!(
                "fn {word}_{}(x: u64) -> u64 {{ x * {} + {} }}\n",
                i % 97,
                i % 13,
                i * 31 % 1009
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn decode(coding: &str, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match coding {
        "zstd" => {
            zstd::stream::read::Decoder::new(bytes)?.read_to_end(&mut out)?;
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out)?;
        }
        "gzip" => {
            flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected coding {other}"),
            ));
        }
    }
    Ok(out)
}

struct Site {
    server: TestServer,
    root: tempfile::TempDir,
}

impl Site {
    fn start(mode: Mode, configure: impl FnOnce(StaticFiles) -> StaticFiles) -> Site {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("app.js"), text(100 * 1024)).unwrap();
        std::fs::write(r.join("tiny.css"), text(500)).unwrap();
        std::fs::write(r.join("photo.png"), text(50 * 1024)).unwrap();
        std::fs::create_dir(r.join("dir")).unwrap();
        for i in 0..60 {
            std::fs::write(r.join(format!("dir/file-{i:03}.txt")), b"x").unwrap();
        }
        let files = configure(StaticFiles::new(r).unwrap());
        let handler = Http::new(files).access_log(false);
        let server = TestServer::start_with(Transport::Tcp, |b| b.mode(mode), handler);
        Site { server, root }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.root.path().join(name)
    }
}

/// One request on a fresh connection.
fn get(addr: &Address, method: &str, target: &str, headers: &str) -> io::Result<HttpReply> {
    let stream = Stream::connect(addr)?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    write!(
        w,
        "{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n"
    )?;
    read_reply(&mut r, method == "HEAD")
}

fn check(cond: bool, what: impl FnOnce() -> String) -> io::Result<()> {
    if cond {
        Ok(())
    } else {
        Err(io::Error::other(what()))
    }
}

#[test]
fn every_coding_decodes_byte_exact_with_vary_and_its_own_etag() -> io::Result<()> {
    in_modes(|mode| {
        let site = Site::start(mode, |f| f);
        let addr = site.server.addr.clone();
        let original = std::fs::read(site.path("app.js"))?;
        let plain = get(&addr, "GET", "/app.js", "")?;
        check(plain.body == original, || "identity body".into())?;
        check(plain.header("content-encoding").is_none(), || {
            plain.head.clone()
        })?;
        check(plain.header("vary") == Some("Accept-Encoding"), || {
            plain.head.clone()
        })?;
        let identity_tag = plain.header("etag").unwrap_or_default().to_owned();
        let mut tags = vec![identity_tag.clone()];
        for (accept, coding) in [
            ("zstd", "zstd"),
            ("br", "br"),
            ("gzip", "gzip"),
            ("gzip, deflate, br, zstd", "zstd"),
            ("gzip;q=1, br;q=0.5", "gzip"),
            ("*", "zstd"),
            ("zstd;q=0, br;q=0, *", "gzip"),
        ] {
            // Twice: the first is compressed as it is sent, the second may come from the cache.
            for round in 0..2 {
                let reply = get(
                    &addr,
                    "GET",
                    "/app.js",
                    &format!("Accept-Encoding: {accept}\r\n"),
                )?;
                check(reply.status == 200, || reply.head.clone())?;
                check(reply.header("content-encoding") == Some(coding), || {
                    format!("{accept}: {}", reply.head)
                })?;
                check(reply.header("vary") == Some("Accept-Encoding"), || {
                    reply.head.clone()
                })?;
                let decoded = decode(coding, &reply.body)?;
                check(decoded == original, || {
                    format!("{accept} round {round}: body differs")
                })?;
                check(reply.body.len() * 2 < original.len(), || {
                    format!("{coding}: {} bytes", reply.body.len())
                })?;
                let tag = reply.header("etag").unwrap_or_default().to_owned();
                check(tag.starts_with('"') && tag != identity_tag, || tag.clone())?;
                if round == 1 {
                    check(reply.header("content-length").is_some(), || {
                        format!("the cached body has its length: {}", reply.head)
                    })?;
                }
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        check(tags.len() == 4, || format!("one tag per coding: {tags:?}"))?;
        // Preferring identity, or nothing acceptable: the file as it is.
        for accept in [
            "identity",
            "gzip;q=0.5, identity",
            "gzip;q=0",
            "compress",
            "",
        ] {
            let reply = get(
                &addr,
                "GET",
                "/app.js",
                &format!("Accept-Encoding: {accept}\r\n"),
            )?;
            check(reply.header("content-encoding").is_none(), || {
                format!("{accept:?}: {}", reply.head)
            })?;
            check(reply.body == original, || accept.to_owned())?;
        }
        Ok(())
    })
}

#[test]
fn head_says_what_get_sends_and_validators_are_per_coding() -> io::Result<()> {
    in_modes(|mode| {
        let site = Site::start(mode, |f| {
            f.compression(Compression::default().cache_bytes(0))
        });
        let addr = site.server.addr.clone();
        let accept = "Accept-Encoding: br\r\n";
        let got = get(&addr, "GET", "/app.js", accept)?;
        let head = get(&addr, "HEAD", "/app.js", accept)?;
        let without_date = |r: &HttpReply| {
            r.headers
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
                .cloned()
                .collect::<Vec<_>>()
        };
        check(without_date(&got) == without_date(&head), || {
            format!("GET {}\nHEAD {}", got.head, head.head)
        })?;
        check(head.body.is_empty(), || "HEAD has no body".into())?;
        // The coding's tag validates the coded representation only.
        let tag = got.header("etag").unwrap_or_default().to_owned();
        let again = get(
            &addr,
            "GET",
            "/app.js",
            &format!("{accept}If-None-Match: {tag}\r\n"),
        )?;
        check(again.status == 304, || again.head.clone())?;
        check(again.header("etag") == Some(tag.as_str()), || {
            again.head.clone()
        })?;
        check(again.header("vary") == Some("Accept-Encoding"), || {
            again.head.clone()
        })?;
        let other = get(
            &addr,
            "GET",
            "/app.js",
            &format!("Accept-Encoding: gzip\r\nIf-None-Match: {tag}\r\n"),
        )?;
        check(other.status == 200, || other.head.clone())?;
        check(other.header("content-encoding") == Some("gzip"), || {
            other.head.clone()
        })?;
        let identity = get(
            &addr,
            "GET",
            "/app.js",
            &format!("If-None-Match: {tag}\r\n"),
        )?;
        check(identity.status == 200, || identity.head.clone())?;
        // HTTP/1.0 has no chunks: the compressed body ends with the connection.
        let stream = Stream::connect(&addr)?;
        let mut w = stream.try_clone()?;
        w.write_all(b"GET /app.js HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")?;
        let mut all = Vec::new();
        BufReader::new(stream).read_to_end(&mut all)?;
        let reply = parse_whole_reply(&all)?;
        check(reply.header("content-length").is_none(), || {
            reply.head.clone()
        })?;
        check(reply.header("connection") == Some("close"), || {
            reply.head.clone()
        })?;
        check(
            decode("gzip", &reply.body)? == std::fs::read(site.path("app.js"))?,
            || "HTTP/1.0 body".into(),
        )?;
        Ok(())
    })
}

#[test]
fn ranges_small_files_and_compressed_types_get_the_identity() -> io::Result<()> {
    in_modes(|mode| {
        let site = Site::start(mode, |f| f);
        let addr = site.server.addr.clone();
        let original = std::fs::read(site.path("app.js"))?;
        let accept = "Accept-Encoding: gzip, br, zstd\r\n";
        let part = get(
            &addr,
            "GET",
            "/app.js",
            &format!("{accept}Range: bytes=100-199\r\n"),
        )?;
        check(part.status == 206, || part.head.clone())?;
        check(part.header("content-encoding").is_none(), || {
            part.head.clone()
        })?;
        check(part.body == original[100..200], || "range bytes".into())?;
        check(part.header("vary") == Some("Accept-Encoding"), || {
            part.head.clone()
        })?;
        let parts = get(
            &addr,
            "GET",
            "/app.js",
            &format!("{accept}Range: bytes=0-9,500-509\r\n"),
        )?;
        check(parts.status == 206, || parts.head.clone())?;
        check(parts.header("content-encoding").is_none(), || {
            parts.head.clone()
        })?;
        for name in ["/tiny.css", "/photo.png"] {
            let reply = get(&addr, "GET", name, accept)?;
            check(reply.status == 200, || reply.head.clone())?;
            check(reply.header("content-encoding").is_none(), || {
                format!("{name}: {}", reply.head)
            })?;
            check(reply.header("vary").is_none(), || {
                format!("{name}: {}", reply.head)
            })?;
            check(reply.body == std::fs::read(site.path(&name[1..]))?, || {
                name.into()
            })?;
        }
        // The listing is a page like any other: compressed, HTML and JSON.
        for (target, kind) in [("/dir/", "text/html"), ("/dir/?json", "application/json")] {
            let reply = get(&addr, "GET", target, accept)?;
            check(reply.header("content-encoding") == Some("zstd"), || {
                reply.head.clone()
            })?;
            check(
                reply
                    .header("vary")
                    .is_some_and(|v| v.contains("Accept-Encoding")),
                || reply.head.clone(),
            )?;
            check(
                reply
                    .header("content-type")
                    .is_some_and(|t| t.starts_with(kind)),
                || reply.head.clone(),
            )?;
            let page = String::from_utf8(decode("zstd", &reply.body)?).unwrap_or_default();
            check(page.contains("file-059.txt"), || page.clone())?;
        }
        Ok(())
    })
}

#[test]
fn precompressed_siblings_are_served_as_they_are() -> io::Result<()> {
    in_modes(|mode| {
        let site = Site::start(mode, |f| f);
        let addr = site.server.addr.clone();
        let original = std::fs::read(site.path("app.js"))?;
        // Siblings made at the highest levels, as a build step would.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&original)?;
        let gz = gz.finish()?;
        let br = {
            let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 11, 22);
            w.write_all(&original)?;
            w.into_inner()
        };
        std::fs::write(site.path("app.js.gz"), &gz)?;
        std::fs::write(site.path("app.js.br"), &br)?;
        for (accept, coding, bytes) in [("gzip", "gzip", &gz), ("br, gzip", "br", &br)] {
            for method in ["GET", "HEAD"] {
                let reply = get(
                    &addr,
                    method,
                    "/app.js",
                    &format!("Accept-Encoding: {accept}\r\n"),
                )?;
                check(reply.header("content-encoding") == Some(coding), || {
                    reply.head.clone()
                })?;
                check(
                    reply.header("content-length") == Some(bytes.len().to_string().as_str()),
                    || reply.head.clone(),
                )?;
                check(
                    reply
                        .header("content-type")
                        .is_some_and(|t| t.contains("javascript")),
                    || reply.head.clone(),
                )?;
                check(reply.header("vary") == Some("Accept-Encoding"), || {
                    reply.head.clone()
                })?;
                if method == "GET" {
                    check(&reply.body == bytes, || {
                        format!("{coding}: the sibling as it is")
                    })?;
                }
            }
        }
        // zstd has no sibling: a sibling of another coding the client likes is preferred to
        // work on the fly.
        let reply = get(&addr, "GET", "/app.js", "Accept-Encoding: zstd, gzip\r\n")?;
        check(reply.header("content-encoding") == Some("gzip"), || {
            reply.head.clone()
        })?;
        // A sibling older than its file is stale: never served.
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(site.path("app.js.gz"))?
            .set_modified(old)?;
        let reply = get(&addr, "GET", "/app.js", "Accept-Encoding: gzip\r\n")?;
        check(reply.header("content-encoding") == Some("gzip"), || {
            reply.head.clone()
        })?;
        check(reply.body != gz, || "the stale sibling was served".into())?;
        check(decode("gzip", &reply.body)? == original, || {
            "on the fly instead".into()
        })?;
        // A sibling that leads out of the root is refused like the file would be.
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("evil.gz"), b"SENTINEL")?;
        std::os::unix::fs::symlink(outside.path().join("evil.gz"), site.path("tiny.css.gz"))?;
        let reply = get(&addr, "GET", "/tiny.css", "Accept-Encoding: gzip\r\n")?;
        check(
            reply.status == 200 && !reply.text().contains("SENTINEL"),
            || reply.head.clone(),
        )?;
        check(reply.header("content-encoding").is_none(), || {
            reply.head.clone()
        })?;
        // No coding accepted: the file itself.
        let reply = get(&addr, "GET", "/app.js", "")?;
        check(reply.body == original, || "identity".into())?;
        Ok(())
    })
}

#[test]
fn off_means_off_and_an_edited_file_is_never_answered_from_the_cache() -> io::Result<()> {
    let site = Site::start(ASYNC, |f| f.compression(Compression::off()));
    std::fs::write(site.path("app.js.gz"), b"precompressed")?;
    let reply = get(
        &site.server.addr,
        "GET",
        "/app.js",
        "Accept-Encoding: gzip, br, zstd\r\n",
    )?;
    check(reply.header("content-encoding").is_none(), || {
        reply.head.clone()
    })?;
    check(reply.header("vary").is_none(), || reply.head.clone())?;
    check(reply.body == std::fs::read(site.path("app.js"))?, || {
        "identity".into()
    })?;
    drop(site);

    let site = Site::start(ASYNC, |f| {
        f.compression(Compression::default().level(Encoding::Zstd, None))
    });
    let addr = site.server.addr.clone();
    for round in 0..3 {
        let content = text(20_000 + round * 1000);
        std::fs::write(site.path("app.js"), &content)?;
        for _ in 0..2 {
            let reply = get(&addr, "GET", "/app.js", "Accept-Encoding: zstd, br\r\n")?;
            check(reply.header("content-encoding") == Some("br"), || {
                reply.head.clone()
            })?;
            check(decode("br", &reply.body)? == content, || {
                format!("round {round}")
            })?;
        }
    }
    Ok(())
}

/// While the loop compresses a large file for one client, another client's small requests on
/// the same loop are answered between its steps, not after the whole file. One loop, gzip at
/// its slowest level, a file that takes the loop a good second to compress.
#[test]
fn a_large_compressed_download_does_not_hold_up_the_loop() -> io::Result<()> {
    let site = Site::start(ONE_LOOP, |f| {
        f.compression(
            Compression::default()
                .level(Encoding::Zstd, None)
                .level(Encoding::Brotli, None)
                .level(Encoding::Gzip, Some(9))
                .cache_bytes(0),
        )
    });
    let huge = text(48 << 20);
    std::fs::write(site.path("huge.txt"), &huge)?;
    let addr = site.server.addr.clone();

    let big = Stream::connect(&addr)?;
    big.set_timeout(Some(Duration::from_secs(60)))?;
    let mut w = big.try_clone()?;
    w.write_all(
        b"GET /huge.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )?;
    let started = Instant::now();
    let download = std::thread::spawn(move || -> io::Result<(Vec<u8>, Instant)> {
        let mut all = Vec::new();
        BufReader::new(big).read_to_end(&mut all)?;
        Ok((all, Instant::now()))
    });
    // The download is under way: its first bytes have surely been made by now.
    std::thread::sleep(Duration::from_millis(200));

    let small = Stream::connect(&addr)?;
    small.set_timeout(Some(Duration::from_secs(30)))?;
    let mut sw = small.try_clone()?;
    let mut sr = BufReader::new(small);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        sw.write_all(b"GET /tiny.css HTTP/1.1\r\nHost: t\r\n\r\n")?;
        let reply = read_reply(&mut sr, false)?;
        check(reply.status == 200, || reply.head.clone())?;
        slowest = slowest.max(asked.elapsed());
    }
    let small_done = Instant::now();
    let (all, big_done) = download.join().expect("the download thread")?;
    let reply = parse_whole_reply(&all)?;
    check(reply.header("content-encoding") == Some("gzip"), || {
        reply.head.clone()
    })?;
    check(decode("gzip", &reply.body)? == huge, || {
        "the large body, byte-exact".into()
    })?;
    eprintln!(
        "download {:?}; 20 small requests done {:?} after it started, the slowest in {slowest:?}",
        big_done - started,
        small_done - started
    );
    check(small_done < big_done, || {
        format!(
            "the small requests waited for the download: done {:?}, download {:?}",
            small_done - started,
            big_done - started
        )
    })?;
    Ok(())
}

/// A client that asks for a large compressed file and reads nothing costs the loop a bounded
/// buffer, not the compressed file, and no one else waits for it.
#[test]
fn a_compressed_download_nobody_reads_is_bounded_and_resumes() -> io::Result<()> {
    let site = Site::start(ONE_LOOP, |f| {
        f.compression(Compression::default().cache_bytes(0))
    });
    let huge = text(24 << 20);
    std::fs::write(site.path("huge.txt"), &huge)?;
    let addr = site.server.addr.clone();
    let stalled = Stream::connect(&addr)?;
    stalled.set_timeout(Some(Duration::from_secs(30)))?;
    let mut w = stalled.try_clone()?;
    w.write_all(
        b"GET /huge.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: zstd\r\nConnection: close\r\n\r\n",
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib();
    for _ in 0..5 {
        let reply = get(&addr, "GET", "/tiny.css", "")?;
        check(reply.status == 200, || reply.head.clone())?;
    }
    std::thread::sleep(Duration::from_millis(200));
    // Well under the compressed size (several MiB) plus the file: buffers only.
    let grown = rss_kib().saturating_sub(rss_before);
    check(grown < 8 * 1024, || {
        format!("the server grew by {grown} KiB")
    })?;
    let mut all = Vec::new();
    BufReader::new(stalled).read_to_end(&mut all)?;
    let reply = parse_whole_reply(&all)?;
    check(decode("zstd", &reply.body)? == huge, || {
        "byte-exact after the stall".into()
    })?;
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
