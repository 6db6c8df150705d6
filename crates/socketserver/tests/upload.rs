//! Uploads (`PUT`) over real sockets, in every mode HTTP runs in: byte-exact with a length and
//! chunked; every refusal leaving the tree (and a directory outside it) exactly as it was; a
//! client that disconnects, stalls or sends too much leaving no file and no temporary file; a
//! reader that never sees half a file; two racing uploads of which exactly one wins.
#![cfg(feature = "http")]

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use socketserver::Mode;
use socketserver::http::{Http, Limits, StaticFiles};

const HTTP_MODES: [Mode; 3] = [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC];

struct Site {
    server: TestServer,
    root: tempfile::TempDir,
    outside: tempfile::TempDir,
}

fn site(mode: Mode, configure: impl FnOnce(StaticFiles) -> StaticFiles, limits: Limits) -> Site {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    std::fs::write(root.path().join("sub/old.txt"), "old\n").unwrap();
    std::fs::write(outside.path().join("sentinel"), "outside\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    let files = configure(StaticFiles::new(root.path()).unwrap());
    let mut limits = limits;
    limits.max_body = 1 << 30;
    let handler = Http::new(files).limits(limits).access_log(false);
    let server = TestServer::start_with(Transport::Tcp, |b| b.mode(mode), handler);
    Site {
        server,
        root,
        outside,
    }
}

/// Every file under `dir` (links not followed) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if kind.is_dir() {
                all.insert(format!("{name}/"), Vec::new());
                stack.push(path);
            } else if kind.is_symlink() {
                all.insert(format!("{name}@"), Vec::new());
            } else {
                all.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    all
}

fn put(site: &Site, target: &str, headers: &str, body: &[u8]) -> io::Result<HttpReply> {
    put_like(site, "PUT", target, headers, body)
}

fn put_chunked(site: &Site, target: &str, body: &[u8]) -> io::Result<HttpReply> {
    let stream = Stream::connect(&site.server.addr)?;
    let mut w = stream.try_clone()?;
    write!(
        w,
        "PUT {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    for piece in body.chunks(100_000) {
        let _ = write!(w, "{:x}\r\n", piece.len());
        let _ = w.write_all(piece);
        let _ = w.write_all(b"\r\n");
    }
    let _ = w.write_all(b"0\r\n\r\n");
    read_reply(&mut BufReader::new(stream), false)
}

fn random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// No temporary upload file anywhere under `dir`.
fn no_temporaries(dir: &Path) -> bool {
    snapshot(dir).keys().all(|k| !k.contains(".upload-"))
}

#[test]
fn uploads_arrive_byte_exact_with_a_length_and_chunked() -> io::Result<()> {
    let data = random(5 * 1024 * 1024 + 7);
    let modes = [
        Mode::Threading,
        Mode::Pool { workers: 2 },
        ASYNC,
        Mode::Sync,
        Mode::Fork { max_children: 4 },
    ];
    for mode in modes {
        let began = Instant::now();
        eprintln!("--- {mode}");
        let site = site(
            mode,
            |f| f.upload(true).max_upload_bytes(16 << 20),
            Limits::default(),
        );
        let reply = put(&site, "/sub/a.bin", "", &data)?;
        assert_eq!(reply.status, 201, "{mode}: {}", reply.head);
        assert_eq!(reply.header("location"), Some("/sub/a.bin"));
        assert!(
            std::fs::read(site.root.path().join("sub/a.bin"))? == data,
            "{mode}"
        );
        let reply = put_chunked(&site, "/b%20c.bin", &data)?;
        assert_eq!(reply.status, 201, "{mode}: {}", reply.head);
        assert!(
            std::fs::read(site.root.path().join("b c.bin"))? == data,
            "{mode}"
        );
        // `Expect: 100-continue` is answered once the upload is allowed, and it works.
        let stream = Stream::connect(&site.server.addr)?;
        let mut w = stream.try_clone()?;
        let mut r = BufReader::new(stream);
        w.write_all(b"PUT /sub/small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")?;
        let interim = read_reply(&mut r, false)?;
        assert_eq!(interim.status, 100, "{mode}: {}", interim.head);
        w.write_all(b"hello")?;
        let reply = read_reply(&mut r, false)?;
        assert_eq!(reply.status, 201, "{mode}: {}", reply.head);
        assert_eq!(
            std::fs::read(site.root.path().join("sub/small.txt"))?,
            b"hello"
        );
        // A form, chunked.
        let body = form(BOUNDARY, &[("form.bin", &data)]);
        let stream = Stream::connect(&site.server.addr)?;
        let mut w = stream.try_clone()?;
        write!(
            w,
            "POST /sub/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{FORM}Transfer-Encoding: chunked\r\n\r\n"
        )?;
        for piece in body.chunks(70_000) {
            write!(w, "{:x}\r\n", piece.len())?;
            w.write_all(piece)?;
            w.write_all(b"\r\n")?;
        }
        w.write_all(b"0\r\n\r\n")?;
        let reply = read_reply(&mut BufReader::new(stream), false)?;
        assert_eq!(reply.status, 201, "{mode}: {}", reply.head);
        assert!(
            std::fs::read(site.root.path().join("sub/form.bin"))? == data,
            "{mode}"
        );
        assert!(no_temporaries(site.root.path()), "{mode}");
        // What was stored is served.
        let stream = Stream::connect(&site.server.addr)?;
        let mut w = stream.try_clone()?;
        w.write_all(b"GET /sub/a.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
        let got = read_reply(&mut BufReader::new(stream), false)?;
        assert!(got.body == data, "{mode}: served back");
        eprintln!("{mode}: {:?}", began.elapsed());
    }
    Ok(())
}

#[test]
fn every_refusal_leaves_everything_as_it_was() -> io::Result<()> {
    for mode in HTTP_MODES {
        // Without uploads: nothing is written, whatever is asked.
        let off = site(mode, |f| f, Limits::default());
        let before = (snapshot(off.root.path()), snapshot(off.outside.path()));
        let reply = put(&off, "/new.txt", "", b"data")?;
        assert_eq!(reply.status, 405, "{mode}: {}", reply.head);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        assert_eq!(
            (snapshot(off.root.path()), snapshot(off.outside.path())),
            before
        );
        drop(off);

        let site = site(
            mode,
            |f| f.upload(true).max_upload_bytes(1000),
            Limits::default(),
        );
        let before = (snapshot(site.root.path()), snapshot(site.outside.path()));
        let cases: &[(&str, u16)] = &[
            ("/sub/old.txt", 409),
            ("/missing/x.txt", 409),
            ("/sub", 409),
            ("/sub/", 400),
            ("/.env", 400),
            ("/sub/.hidden", 400),
            ("/.git/config", 400),
            ("/sub/a%2fb", 400),
            ("/sub/a%5cb", 400),
            ("/sub/a%00b", 400),
            ("/sub/a%0ab", 400),
            ("/sub/%2e%2e", 400),
            ("/sub/..", 400),
            ("/escape/x.txt", 403),
            ("/escape/sentinel", 403),
            ("/../x.txt", 201), // `..` is dropped, as for reads: /x.txt, inside the root
        ];
        for &(target, status) in cases {
            if status == 201 {
                continue;
            }
            let reply = put(&site, target, "", b"data")?;
            assert_eq!(reply.status, status, "{mode} {target}: {}", reply.head);
        }
        // Too large: refused before the body when announced, and chunked as it comes.
        let reply = put(&site, "/big.bin", "Expect: 100-continue\r\n", &random(1001))?;
        assert_eq!(reply.status, 413, "{mode}: {}", reply.head);
        let reply = put_chunked(&site, "/big.bin", &random(5000))?;
        assert_eq!(reply.status, 413, "{mode}: {}", reply.head);
        assert_eq!(
            (snapshot(site.root.path()), snapshot(site.outside.path())),
            before,
            "{mode}"
        );
        // `..` never leaves the root: it is dropped.
        let reply = put(&site, "/../x.txt", "", b"data")?;
        assert_eq!(reply.status, 201, "{mode}: {}", reply.head);
        assert!(site.root.path().join("x.txt").is_file());
        assert_eq!(snapshot(site.outside.path()), before.1);
    }
    Ok(())
}

#[test]
fn an_interrupted_or_stalled_upload_leaves_nothing() -> io::Result<()> {
    for mode in HTTP_MODES {
        let mut limits = Limits::default();
        limits.idle_timeout = Duration::from_secs(1);
        limits.header_timeout = Duration::from_secs(1);
        let site = site(mode, |f| f.upload(true), limits);
        let before = snapshot(site.root.path());
        // Gone halfway: announced 1 MiB, sent 300 KiB.
        {
            let stream = Stream::connect(&site.server.addr)?;
            let mut w = stream.try_clone()?;
            write!(
                w,
                "PUT /gone.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n"
            )?;
            w.write_all(&random(300 * 1024))?;
        }
        // Stalled: a few bytes, then silence past the timeout.
        let stalled = Stream::connect(&site.server.addr)?;
        let mut w = stalled.try_clone()?;
        write!(
            w,
            "PUT /stalled.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
        )?;
        w.write_all(b"just a few")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut now = snapshot(site.root.path());
        while now != before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            now = snapshot(site.root.path());
        }
        // The stalled one is cut off by its deadline (a few seconds at most).
        let mut rest = Vec::new();
        stalled.set_read_timeout(Some(Duration::from_secs(10)))?;
        let _ = BufReader::new(stalled).read_to_end(&mut rest);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            snapshot(site.root.path()),
            before,
            "{mode}: something was left"
        );
    }
    Ok(())
}

#[test]
fn a_reader_never_sees_half_a_file_and_one_of_two_racers_wins() -> io::Result<()> {
    for mode in [Mode::Threading, Mode::Pool { workers: 2 }, ASYNC] {
        let site = site(mode, |f| f.upload(true).overwrite(false), Limits::default());
        let target = site.root.path().join("slow.bin");
        let data = random(200_000);
        // Two uploads of one name, both past the checks, trickled side by side.
        let mut conns = Vec::new();
        for _ in 0..2 {
            let stream = Stream::connect(&site.server.addr)?;
            let mut w = stream.try_clone()?;
            write!(
                w,
                "PUT /slow.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                data.len()
            )?;
            conns.push((stream, w));
        }
        for piece in data.chunks(20_000) {
            for (_, w) in &mut conns {
                w.write_all(piece)?;
            }
            std::thread::sleep(Duration::from_millis(20));
            // The target is absent or whole, never a part.
            if let Ok(seen) = std::fs::read(&target) {
                assert!(seen == data, "{mode}: a reader saw {} bytes", seen.len());
            }
        }
        let mut statuses = Vec::new();
        for (stream, _) in conns {
            statuses.push(read_reply(&mut BufReader::new(stream), false)?.status);
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "{mode}");
        assert!(std::fs::read(&target)? == data, "{mode}");
        assert!(no_temporaries(site.root.path()), "{mode}");
        // With overwrite, the second replaces the first: 204.
        drop(site);
        let site = site_with_overwrite(mode)?;
        let reply = put(&site, "/sub/old.txt", "", b"new\n")?;
        assert_eq!(reply.status, 204, "{mode}: {}", reply.head);
        assert_eq!(
            std::fs::read(site.root.path().join("sub/old.txt"))?,
            b"new\n"
        );
    }
    Ok(())
}

fn site_with_overwrite(mode: Mode) -> io::Result<Site> {
    Ok(site(
        mode,
        |f| f.upload(true).overwrite(true),
        Limits::default(),
    ))
}

/// A `multipart/form-data` body of `files` (name, bytes) and one plain field.
fn form(boundary: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n")
            .as_bytes(),
    );
    for (name, data) in files {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn post(site: &Site, target: &str, headers: &str, body: &[u8]) -> io::Result<HttpReply> {
    put_like(site, "POST", target, headers, body)
}

fn put_like(
    site: &Site,
    method: &str,
    target: &str,
    headers: &str,
    body: &[u8],
) -> io::Result<HttpReply> {
    let stream = Stream::connect(&site.server.addr)?;
    let mut w = stream.try_clone()?;
    write!(
        w,
        "{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )?;
    let _ = w.write_all(body);
    read_reply(&mut BufReader::new(stream), false)
}

const FORM: &str = "Content-Type: multipart/form-data; boundary=----formBoundary7MA4YWxk\r\n";
const BOUNDARY: &str = "----formBoundary7MA4YWxk";

#[test]
fn forms_store_every_file_byte_exact_or_nothing() -> io::Result<()> {
    let big = random(5 * 1024 * 1024 + 3);
    // Bytes that look like a boundary inside a file (but are not a delimiter, which a client
    // never sends inside a part: it picks a boundary the data does not hold).
    let tricky = format!("x--{BOUNDARY}\r\n-{BOUNDARY}\r\n--{}", &BOUNDARY[..10]).into_bytes();
    for mode in HTTP_MODES {
        let site = site(
            mode,
            |f| f.upload(true).max_upload_bytes(8 << 20),
            Limits::default(),
        );
        let body = form(
            BOUNDARY,
            &[("big.bin", &big), ("C:\\Users\\me\\tricky.txt", &tricky)],
        );
        let reply = post(&site, "/sub/", FORM, &body)?;
        assert_eq!(reply.status, 201, "{mode}: {}", reply.head);
        assert_eq!(reply.text(), "big.bin\ntricky.txt\n", "{mode}");
        assert!(
            std::fs::read(site.root.path().join("sub/big.bin"))? == big,
            "{mode}"
        );
        assert_eq!(
            std::fs::read(site.root.path().join("sub/tricky.txt"))?,
            tricky,
            "{mode}"
        );
        // A browser is sent back to the listing, which has the form.
        let reply = post(
            &site,
            "/sub",
            &format!("{FORM}Accept: text/html\r\n"),
            &form(BOUNDARY, &[("c.txt", b"c")]),
        )?;
        assert_eq!(reply.status, 303, "{mode}: {}", reply.head);
        assert_eq!(reply.header("location"), Some("/sub/"));
        let listing = {
            let stream = Stream::connect(&site.server.addr)?;
            let mut w = stream.try_clone()?;
            w.write_all(b"GET /sub/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
            read_reply(&mut BufReader::new(stream), false)?.text()
        };
        assert!(
            listing.contains("<form method=\"post\" enctype=\"multipart/form-data\""),
            "{mode}"
        );
        assert!(listing.contains("c.txt"), "{mode}");

        // Refusals store nothing, not even the files before the refused one.
        let before = (snapshot(site.root.path()), snapshot(site.outside.path()));
        let refusals: Vec<(Vec<u8>, &str, u16)> = vec![
            (
                form(BOUNDARY, &[("ok1.txt", b"1"), (".env", b"2")]),
                "/sub/",
                400,
            ),
            (
                form(BOUNDARY, &[("ok2.txt", b"1"), ("big.bin", b"2")]),
                "/sub/",
                409,
            ),
            (
                form(BOUNDARY, &[("ok3.txt", b"1"), ("ok3.txt", b"2")]),
                "/sub/",
                400,
            ),
            (form(BOUNDARY, &[("ok4.txt", b"1")]), "/missing/", 409),
            (form(BOUNDARY, &[("ok5.txt", b"1")]), "/escape/", 403),
            (
                form(BOUNDARY, &[("huge.bin", &random(9 << 20))]),
                "/sub/",
                413,
            ),
            (form(BOUNDARY, &[("", b"")]), "/sub/", 400),
            (b"not a form at all".to_vec(), "/sub/", 400),
        ];
        for (body, target, status) in &refusals {
            let reply = post(&site, target, FORM, body)?;
            assert_eq!(reply.status, *status, "{mode} {target}: {}", reply.head);
        }
        let reply = post(&site, "/sub/", "Content-Type: text/plain\r\n", b"x")?;
        assert_eq!(reply.status, 400, "{mode}: {}", reply.head);
        // Cut off in the middle of the second file.
        {
            let body = form(
                BOUNDARY,
                &[("cut1.txt", b"whole"), ("cut2.bin", &random(500_000))],
            );
            let stream = Stream::connect(&site.server.addr)?;
            let mut w = stream.try_clone()?;
            write!(
                w,
                "POST /sub/ HTTP/1.1\r\nHost: t\r\n{FORM}Content-Length: {}\r\n\r\n",
                body.len()
            )?;
            w.write_all(&body[..300_000])?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while snapshot(site.root.path()) != before.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            (snapshot(site.root.path()), snapshot(site.outside.path())),
            before,
            "{mode}"
        );
    }
    Ok(())
}
