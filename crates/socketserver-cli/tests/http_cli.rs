//! Integration tests of the `http` service of the `socketserver` binary against its
//! command-line contract (`shared/cli-contract.md`: the `http` paragraph, Limits, Stopping,
//! Errors), driven the way people drive it: with the real `curl`, plus raw sockets wherever
//! byte-exactness or malformed input matters.
//!
//! Every server listens on port 0 (or a socket path in a temporary directory) and serves a
//! temporary directory; readiness comes from its `listening on URL` line, never from a sleep.
//! Every `curl` runs with `--max-time 10` and every raw socket has read and write timeouts, so
//! a hang fails one test instead of blocking the run. Servers are SIGKILLed by their guard
//! whatever the outcome.

mod common;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{
    Addr, HttpReply, IO_TIMEOUT, Server, Stream, assert_one_line_error, assert_same_bytes,
    is_timeout, payload, run, unix_url,
};
use tempfile::{TempDir, tempdir};

const TCP: &str = "tcp://127.0.0.1:0";

/// The text file every test fetches (13 bytes).
const HELLO: &[u8] = b"hello, world\n";
/// Size of the binary file.
const BIG: usize = 2 * 1024 * 1024;
/// The content of the file outside the served directory: must never be served by default.
const SECRET: &[u8] = b"TOP SECRET: outside the served directory\n";
/// The name the listing must escape.
const HOSTILE: &str = "<b>&\"x\".txt";
/// `a.txt`'s modification time: 1_000_000_000 s after the epoch.
const A_MTIME: &str = "Sun, 09 Sep 2001 01:46:40 GMT";
const AFTER_A_MTIME: &str = "Sun, 09 Sep 2001 02:00:00 GMT";
const BEFORE_A_MTIME: &str = "Sun, 09 Sep 2001 01:00:00 GMT";

// ---------------------------------------------------------------------------------------------
// The site: a served directory and a file beside it
// ---------------------------------------------------------------------------------------------

/// `tmp/www` is served; `tmp/outside/secret.txt` lies beside it.
///
/// ```text
/// www/a.txt               HELLO, modified at 1_000_000_000 s
/// www/big.bin             2 MiB of every byte value
/// www/.hidden.txt         a dot-file
/// www/escape.txt          -> tmp/outside/secret.txt (absolute symlink out of www)
/// www/inside.txt          -> a.txt (relative symlink inside www)
/// www/list/plain.txt      a listing without index.html, with a hostile name,
/// www/list/<b>&"x".txt    a hidden file and a subdirectory
/// www/list/.secret
/// www/list/inner/
/// www/site/index.html     a directory with an index
/// ```
struct Site {
    tmp: TempDir,
    root: PathBuf,
    big: Vec<u8>,
}

const INDEX: &[u8] = b"<!DOCTYPE html>\n<title>index</title>\n<p>the index page</p>\n";

fn site() -> io::Result<Site> {
    let tmp = tempdir()?;
    let root = tmp.path().join("www");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root)?;
    fs::create_dir(&outside)?;
    fs::write(outside.join("secret.txt"), SECRET)?;

    fs::write(root.join("a.txt"), HELLO)?;
    fs::File::options()
        .write(true)
        .open(root.join("a.txt"))?
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000_000))?;
    let big = payload(BIG);
    fs::write(root.join("big.bin"), &big)?;
    fs::write(root.join(".hidden.txt"), b"dot-file content\n")?;
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("escape.txt"))?;
    std::os::unix::fs::symlink("a.txt", root.join("inside.txt"))?;

    let list = root.join("list");
    fs::create_dir(&list)?;
    fs::write(list.join("plain.txt"), b"plain\n")?;
    fs::write(list.join(HOSTILE), b"hostile\n")?;
    fs::write(list.join(".secret"), b"hidden in a subdirectory\n")?;
    fs::create_dir(list.join("inner"))?;

    let with_index = root.join("site");
    fs::create_dir(&with_index)?;
    fs::write(with_index.join("index.html"), INDEX)?;
    Ok(Site { tmp, root, big })
}

impl Site {
    fn root(&self) -> &str {
        self.root.to_str().expect("temporary paths are UTF-8")
    }
}

/// The modes the HTTP behaviour is checked in: threading (the default), pool (where the
/// connections go through an event loop and the workers serve requests) and async.
const MODES: [&[&str]; 3] = [
    &[],
    &["--mode", "pool", "--workers", "2"],
    &["--mode", "async"],
];

/// Runs `test` with the extra arguments of each of [`MODES`], naming them on stderr (shown when
/// the test fails) and in a returned error.
fn in_modes(test: impl Fn(&[&str]) -> io::Result<()>) -> io::Result<()> {
    for extra in MODES {
        eprintln!("--- with {extra:?}");
        test(extra).map_err(|e| io::Error::new(e.kind(), format!("with {extra:?}: {e}")))?;
    }
    Ok(())
}

/// `socketserver http --listen tcp://127.0.0.1:0 --dir SITE EXTRA...`.
fn start(site: &Site, extra: &[&str]) -> io::Result<Server> {
    let mut args = vec!["http", "--listen", TCP, "--dir", site.root()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn tcp_addr(server: &Server) -> std::net::SocketAddr {
    match &server.addrs[0] {
        Addr::Tcp(a) => *a,
        other => panic!("expected a TCP listener, got {other:?}"),
    }
}

/// `http://127.0.0.1:PORT` + `path`.
fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", tcp_addr(server))
}

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

/// How one `curl` run went.
#[derive(Debug)]
struct CurlRun {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl CurlRun {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `curl ARGS...` (after `-q --noproxy '*' --max-time 10`: no `.curlrc`, no proxy from
/// the environment, bounded time). Fails the test with a clear message when curl is missing.
fn curl(args: &[&str]) -> io::Result<CurlRun> {
    let output = common::curl_output(args)?;
    Ok(CurlRun {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A response as curl saw it.
#[derive(Debug)]
struct Reply {
    /// `%{http_code}` (of the last response, after redirects with `-L`).
    code: u16,
    /// Every header block received (`-D`), status lines included.
    head: String,
    body: Vec<u8>,
}

impl Reply {
    /// The value of the last `name` header in the last header block.
    fn header(&self, name: &str) -> Option<String> {
        let last_block = self
            .head
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .last()
            .unwrap_or("");
        header_in_block(last_block, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The value of the last header `name` (case-insensitive) in a header block as curl wrote it.
fn header_in_block(block: &str, name: &str) -> Option<String> {
    block
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .last()
}

/// `curl -s ARGS... URL` with the body and headers captured in files and the status code
/// from `-w`. A transport failure (curl's exit status other than 0 and 22) fails.
fn fetch(args: &[&str], url: &str) -> io::Result<Reply> {
    let out = tempdir()?;
    let body = out.path().join("body");
    let head = out.path().join("head");
    let (body_arg, head_arg) = (path_str(&body), path_str(&head));
    let mut all = vec![
        "-s",
        "-S",
        "-o",
        body_arg.as_str(),
        "-D",
        head_arg.as_str(),
        "-w",
        "%{http_code}",
    ];
    all.extend_from_slice(args);
    all.push(url);
    let run = curl(&all)?;
    let code = run.text().trim().parse::<u16>().map_err(|_| {
        common::other(format!(
            "curl {all:?} wrote no status code: {run:?} (stdout {:?})",
            run.text()
        ))
    })?;
    if !matches!(run.status.code(), Some(0) | Some(22)) || code == 0 {
        return Err(common::other(format!("curl {all:?} failed: {run:?}")));
    }
    Ok(Reply {
        code,
        head: fs::read_to_string(&head).unwrap_or_default(),
        body: fs::read(&body).unwrap_or_default(),
    })
}

fn get(url: &str) -> io::Result<Reply> {
    fetch(&[], url)
}

fn path_str(path: &Path) -> String {
    path.to_str()
        .expect("temporary paths are UTF-8")
        .to_string()
}

/// `curl -sf URL`'s stdout, asserting success.
#[track_caller]
fn curl_sf(extra: &[&str], url: &str) -> Vec<u8> {
    let mut args = vec!["-sf"];
    args.extend_from_slice(extra);
    args.push(url);
    let run = curl(&args).expect("curl runs");
    assert!(
        run.status.success(),
        "curl {args:?}: {}, stderr {:?}, stdout {:?}",
        run.status,
        run.stderr,
        run.text()
    );
    run.stdout
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP over a socket
// ---------------------------------------------------------------------------------------------

/// One parsed response (the tests' shared parser, `common::parse_reply`).
type Raw = HttpReply;

/// Parses one response at the start of `bytes` (see `common::parse_reply`), on a connection
/// that may still send more.
fn parse_response(bytes: &[u8], head_only: bool) -> io::Result<Option<(Raw, usize)>> {
    common::parse_reply(bytes, head_only, false)
}

/// Reads until the server closes the connection. A reset after the server's last bytes counts
/// as the close: a server refusing a request closes without reading all of it, and the kernel
/// then answers our unread bytes with a reset, but only after what the server sent.
fn read_until_close(conn: &mut Stream) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match conn.read_once(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(got),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{e} while waiting for the server to close; got so far: {:?}",
                        String::from_utf8_lossy(&got)
                    ),
                ));
            }
        }
    }
}

/// Sends `request` on a new connection (without closing our side) and reads until the server
/// closes. Write errors are ignored: a server may refuse and close before reading everything.
fn raw_exchange(addr: &Addr, request: &[u8]) -> io::Result<Vec<u8>> {
    let mut conn = Stream::connect(addr)?;
    let _ = conn.write_all(request);
    read_until_close(&mut conn)
}

/// [`raw_exchange`] expecting exactly one response, and the connection closed after it.
fn raw_one(addr: &Addr, request: &[u8], head_only: bool) -> io::Result<Raw> {
    let bytes = raw_exchange(addr, request)?;
    let (raw, used) = parse_response(&bytes, head_only)?.ok_or_else(|| {
        common::other(format!(
            "incomplete response to {:?}: {:?}",
            String::from_utf8_lossy(&request[..request.len().min(200)]),
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    assert_eq!(
        used,
        bytes.len(),
        "extra bytes after the response: {:?}",
        String::from_utf8_lossy(&bytes[used..])
    );
    Ok(raw)
}

/// Reads one response from a connection that stays open; more bytes than that one response
/// are an error.
fn read_response(conn: &mut Stream, head_only: bool) -> io::Result<Raw> {
    let mut reader = std::io::BufReader::new(conn);
    let raw = common::read_reply(&mut reader, head_only)?;
    if !reader.buffer().is_empty() {
        return Err(common::other("more bytes than one response"));
    }
    Ok(raw)
}

/// True when `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// 1. Files: byte-exact, headers, ranges, conditionals
// ---------------------------------------------------------------------------------------------

#[test]
fn files_are_served_byte_exact() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        assert_eq!(curl_sf(&[], &url(&server, "/a.txt")), HELLO);
        assert_same_bytes(
            &curl_sf(&[], &url(&server, "/big.bin")),
            &site.big,
            "curl -sf /big.bin",
        );
        // A symlink inside the root is served like its target.
        assert_eq!(curl_sf(&[], &url(&server, "/inside.txt")), HELLO);
        // A missing file fails `curl -f` with a 404.
        let missing = get(&url(&server, "/no-such-file"))?;
        assert_eq!(missing.code, 404, "{missing:?}");
        Ok(())
    })
}

#[test]
fn head_shows_type_length_and_validators() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let head = String::from_utf8_lossy(&curl_sf(&["-I"], &url(&server, "/a.txt"))).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        for (name, want) in [
            ("Content-Length", "13"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Last-Modified", A_MTIME),
            ("Accept-Ranges", "bytes"),
        ] {
            assert_eq!(
                header_in_block(&head, name).as_deref(),
                Some(want),
                "{head}"
            );
        }
        let etag = header_in_block(&head, "ETag").unwrap_or_default();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "a strong ETag: {head}"
        );

        let head =
            String::from_utf8_lossy(&curl_sf(&["-I"], &url(&server, "/big.bin"))).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(
            header_in_block(&head, "Content-Length").as_deref(),
            Some(BIG.to_string().as_str()),
            "{head}"
        );
        assert_eq!(
            header_in_block(&head, "Content-Type").as_deref(),
            Some("application/octet-stream"),
            "{head}"
        );

        // If-None-Match with the ETag: 304, no body.
        let again = fetch(
            &["-H", &format!("If-None-Match: {etag}")],
            &url(&server, "/a.txt"),
        )?;
        assert_eq!(again.code, 304, "{again:?}");
        assert!(again.body.is_empty(), "{again:?}");
        Ok(())
    })
}

#[test]
fn byte_ranges_give_206_and_416() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let first = fetch(&["-f", "-r", "0-99"], &url(&server, "/big.bin"))?;
        assert_eq!(first.code, 206, "{:?}", first.head);
        assert_same_bytes(&first.body, &site.big[..100], "-r 0-99");
        assert_eq!(
            first.header("Content-Range").as_deref(),
            Some(format!("bytes 0-99/{BIG}").as_str())
        );

        let middle = fetch(&["-f", "-r", "1000000-1000009"], &url(&server, "/big.bin"))?;
        assert_eq!(middle.code, 206, "{:?}", middle.head);
        assert_same_bytes(
            &middle.body,
            &site.big[1_000_000..1_000_010],
            "a middle range",
        );

        let tail = fetch(&["-f", "-r", "-5"], &url(&server, "/a.txt"))?;
        assert_eq!((tail.code, tail.body.as_slice()), (206, &b"orld\n"[..]));

        // Past the end: 416 with the length.
        let past = fetch(&["-r", "999999999-"], &url(&server, "/a.txt"))?;
        assert_eq!(past.code, 416, "{past:?}");
        assert_eq!(past.header("Content-Range").as_deref(), Some("bytes */13"));

        // If-Range: the range only while the validator still matches.
        let etag = get(&url(&server, "/a.txt"))?
            .header("ETag")
            .ok_or_else(|| common::other("no ETag"))?;
        let if_range = format!("If-Range: {etag}");
        let matching = fetch(&["-r", "0-4", "-H", &if_range], &url(&server, "/a.txt"))?;
        assert_eq!(
            (matching.code, matching.body.as_slice()),
            (206, &b"hello"[..])
        );
        let stale = fetch(
            &["-r", "0-4", "-H", "If-Range: \"not-the-etag\""],
            &url(&server, "/a.txt"),
        )?;
        assert_eq!((stale.code, stale.body.as_slice()), (200, HELLO));

        // Several ranges: one multipart answer, as curl receives it.
        let multi = fetch(&["-f", "-r", "0-1,5-6"], &url(&server, "/a.txt"))?;
        assert_eq!(multi.code, 206);
        let text = String::from_utf8_lossy(&multi.body);
        assert!(
            text.contains("Content-Range: bytes 0-1/13\r\n\r\nhe\r\n")
                && text.contains("Content-Range: bytes 5-6/13\r\n\r\n, \r\n"),
            "{text:?}"
        );
        // More than the file in all: the whole file, 200.
        let over = fetch(&["-f", "-r", "0-12,0-12"], &url(&server, "/a.txt"))?;
        assert_eq!((over.code, over.body.as_slice()), (200, HELLO));
        Ok(())
    })
}

#[test]
fn if_modified_since_gives_304_for_an_unmodified_file() -> io::Result<()> {
    let site = site()?;
    let server = start(&site, &[])?;
    let target = url(&server, "/a.txt");

    let newer = fetch(&["-z", AFTER_A_MTIME], &target)?;
    assert_eq!(newer.code, 304, "-z with a date after the mtime: {newer:?}");
    assert!(newer.body.is_empty(), "{newer:?}");

    let older = fetch(&["-z", BEFORE_A_MTIME], &target)?;
    assert_eq!(
        (older.code, older.body.as_slice()),
        (200, HELLO),
        "-z with a date before the mtime"
    );

    // `-z FILE` uses the file's modification time.
    let reference = site.tmp.path().join("reference");
    fs::write(&reference, b"")?;
    let stamp = |secs| -> io::Result<()> {
        fs::File::options()
            .write(true)
            .open(&reference)?
            .set_modified(UNIX_EPOCH + Duration::from_secs(secs))
    };
    stamp(1_000_003_600)?;
    let by_file = fetch(&["-z", &path_str(&reference)], &target)?;
    assert_eq!(by_file.code, 304, "-z with a newer file: {by_file:?}");
    stamp(999_996_400)?;
    let by_file = fetch(&["-z", &path_str(&reference)], &target)?;
    assert_eq!(by_file.code, 200, "-z with an older file: {by_file:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Directories, dot-files, symlinks
// ---------------------------------------------------------------------------------------------

#[test]
fn directory_listing_escapes_names_and_index_html_wins() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let page = String::from_utf8_lossy(&curl_sf(&[], &url(&server, "/list/"))).into_owned();
        for name in ["plain.txt", "inner/", "../"] {
            assert!(page.contains(name), "listing lacks {name}: {page}");
        }
        assert!(
            page.contains("&lt;b&gt;&amp;&quot;x&quot;.txt"),
            "the hostile name is escaped: {page}"
        );
        assert!(
            !page.contains("<b>"),
            "the hostile name is never raw: {page}"
        );
        assert!(
            page.contains("href=\"%3Cb%3E%26%22x%22.txt\""),
            "the hostile link is percent-encoded: {page}"
        );
        // The link leads back to exactly that file.
        assert_eq!(
            curl_sf(&[], &url(&server, "/list/%3Cb%3E%26%22x%22.txt")),
            b"hostile\n"
        );
        let listing = get(&url(&server, "/list/"))?;
        assert_eq!(
            listing.header("Content-Type").as_deref(),
            Some("text/html; charset=utf-8")
        );

        // The root's listing.
        let root = String::from_utf8_lossy(&curl_sf(&[], &url(&server, "/"))).into_owned();
        for name in ["a.txt", "big.bin", "list/", "site/"] {
            assert!(root.contains(name), "root listing lacks {name}: {root}");
        }

        // index.html is served for its directory.
        assert_eq!(curl_sf(&[], &url(&server, "/site/")), INDEX);
        Ok(())
    })
}

#[test]
fn directory_without_slash_is_redirected() -> io::Result<()> {
    let site = site()?;
    let server = start(&site, &[])?;
    let moved = get(&url(&server, "/list"))?;
    assert_eq!(moved.code, 301, "{moved:?}");
    assert_eq!(moved.header("Location").as_deref(), Some("/list/"));

    let with_query = get(&url(&server, "/site?x=1"))?;
    assert_eq!(with_query.code, 301, "{with_query:?}");
    assert_eq!(with_query.header("Location").as_deref(), Some("/site/?x=1"));

    // Never `//host` (an open redirect): `//list` is the local /list.
    let addr = server.addrs[0].clone();
    let raw = raw_one(
        &addr,
        b"GET //list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    )?;
    assert_eq!(raw.status, 301, "{raw:?}");
    assert_eq!(raw.header("Location"), Some("/list/"));

    // curl -L follows to the listing, and to the index.
    let followed = fetch(&["-f", "-L"], &url(&server, "/list"))?;
    assert_eq!(followed.code, 200, "{followed:?}");
    assert!(followed.text().contains("plain.txt"), "{followed:?}");
    assert_eq!(curl_sf(&["-L"], &url(&server, "/site")), INDEX);
    Ok(())
}

#[test]
fn dot_files_are_hidden_unless_asked_for() -> io::Result<()> {
    let site = site()?;
    let plain = start(&site, &[])?;
    let root = String::from_utf8_lossy(&curl_sf(&[], &url(&plain, "/"))).into_owned();
    assert!(
        !root.contains(".hidden.txt"),
        "listed without --hidden: {root}"
    );
    let list = String::from_utf8_lossy(&curl_sf(&[], &url(&plain, "/list/"))).into_owned();
    assert!(!list.contains(".secret"), "listed without --hidden: {list}");
    for path in ["/.hidden.txt", "/list/.secret", "/%2ehidden.txt"] {
        let reply = get(&url(&plain, path))?;
        assert_eq!(reply.code, 404, "{path} without --hidden: {reply:?}");
        assert!(!reply.text().contains("content"), "{reply:?}");
    }

    let hidden = start(&site, &["--hidden"])?;
    let root = String::from_utf8_lossy(&curl_sf(&[], &url(&hidden, "/"))).into_owned();
    assert!(
        root.contains(".hidden.txt"),
        "not listed with --hidden: {root}"
    );
    let list = String::from_utf8_lossy(&curl_sf(&[], &url(&hidden, "/list/"))).into_owned();
    assert!(list.contains(".secret"), "not listed with --hidden: {list}");
    assert_eq!(
        curl_sf(&[], &url(&hidden, "/.hidden.txt")),
        b"dot-file content\n"
    );
    assert_eq!(
        curl_sf(&[], &url(&hidden, "/list/.secret")),
        b"hidden in a subdirectory\n"
    );
    Ok(())
}

#[test]
fn symlinks_out_of_the_root_need_follow_symlinks() -> io::Result<()> {
    let site = site()?;
    let plain = start(&site, &[])?;
    let refused = get(&url(&plain, "/escape.txt"))?;
    assert!(
        matches!(refused.code, 403 | 404),
        "a symlink out of --dir: {refused:?}"
    );
    assert!(!contains(&refused.body, SECRET), "{refused:?}");

    let follow = start(&site, &["--follow-symlinks"])?;
    assert_eq!(curl_sf(&[], &url(&follow, "/escape.txt")), SECRET);
    Ok(())
}

#[test]
fn nothing_outside_the_directory_is_ever_served() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let addr = server.addrs[0].clone();
        let targets = [
            "/../outside/secret.txt",
            "/%2e%2e/outside/secret.txt",
            "/%2E%2E%2Foutside%2Fsecret.txt",
            "/..%2foutside%2fsecret.txt",
            "/list/../../outside/secret.txt",
            "/list/%2e%2e/%2e%2e/outside/secret.txt",
            "/..\\outside\\secret.txt",
            "/%5c..%5coutside%5csecret.txt",
            "//../outside/secret.txt",
            "/%252e%252e/outside/secret.txt",
            "/a.txt%00",
            "/a.txt%00.html",
            "/%00/../outside/secret.txt",
            "http://x/../outside/secret.txt",
        ];
        for target in targets {
            let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let raw = raw_one(&addr, request.as_bytes(), false)?;
            assert!(
                matches!(raw.status, 400 | 404),
                "GET {target}: 400 or 404, got {raw:?}"
            );
            assert!(!contains(&raw.body, b"SECRET"), "GET {target}: {raw:?}");
            assert!(!contains(&raw.body, HELLO), "GET {target}: {raw:?}");
        }
        // curl without its own normalisation.
        let reply = fetch(&["--path-as-is"], &url(&server, "/../outside/secret.txt"))?;
        assert!(matches!(reply.code, 400 | 404), "{reply:?}");
        assert!(!contains(&reply.body, SECRET), "{reply:?}");
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Defaults
// ---------------------------------------------------------------------------------------------

#[test]
fn dir_defaults_to_the_working_directory() -> io::Result<()> {
    let site = site()?;
    let server = Server::start_in(&["http", "--listen", TCP], Some(&site.root))?;
    assert_eq!(curl_sf(&[], &url(&server, "/a.txt")), HELLO);
    let root = String::from_utf8_lossy(&curl_sf(&[], &url(&server, "/"))).into_owned();
    assert!(root.contains("big.bin"), "{root}");
    Ok(())
}

#[test]
fn help_names_the_http_defaults() -> io::Result<()> {
    // The default listener (tcp://127.0.0.1:8000) is only read here, never bound: the port may
    // be taken on the machine running the tests.
    let finished = run(&["--help"])?;
    assert_eq!(finished.status.code(), Some(0), "{finished:?}");
    assert!(
        finished.stdout.contains("tcp://127.0.0.1:8000 for http"),
        "{}",
        finished.stdout
    );
    for word in [
        "--dir",
        "--hidden",
        "--follow-symlinks",
        "--tls-cert",
        "--tls-key",
        "--quiet",
    ] {
        assert!(finished.stdout.contains(word), "--help lacks {word}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. TLS
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for `localhost`: (cert.pem, key.pem) in `dir`.
fn self_signed(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| common::other(format!("rcgen: {e}")))?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    fs::write(&cert, certified.cert.pem())?;
    fs::write(&key, certified.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// Issue 9, item 2: `--timeout` covers a client that reads nothing of a large response, in
/// every mode (it once changed nothing: the blocking modes kept such a client ~2 minutes).
#[test]
fn timeout_cuts_off_a_client_that_stops_reading_in_every_mode() -> io::Result<()> {
    use std::io::Read;
    let site = site()?;
    let huge: u64 = 64 * 1024 * 1024;
    fs::File::create(site.root.join("huge.bin"))?.set_len(huge)?;
    for mode in ["async", "pool", "threading", "fork"] {
        let server = start(&site, &["--mode", mode, "--timeout", "1", "--quiet"])?;
        let mut s = std::net::TcpStream::connect(tcp_addr(&server))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")?;
        // Read nothing for well past the timeout, then take what is there.
        thread::sleep(Duration::from_millis(3500));
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        assert!(
            got < huge,
            "{mode}: all {huge} bytes arrived: the stalled reader was never cut off"
        );
    }
    Ok(())
}

/// Issue 9, item 4: a TLS handshake trickled a byte at a time is cut off at `--timeout` in
/// the blocking modes too (40 of them once blocked fork mode completely), and curl is served
/// meanwhile.
#[test]
fn a_trickled_tls_handshake_is_cut_off_in_fork_and_threading_modes() -> io::Result<()> {
    use std::io::Read;
    let site = site()?;
    let (cert, key) = self_signed(site.tmp.path())?;
    let (cert, key) = (path_str(&cert), path_str(&key));
    for mode in ["fork", "threading"] {
        let server = start(
            &site,
            &[
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--mode",
                mode,
                "--timeout",
                "1",
                "--max-children",
                "2",
            ],
        )?;
        let addr = tcp_addr(&server);
        // More tricklers than fork mode's children: a TLS record header announcing 255
        // bytes, then one byte every 100 ms.
        let mut tricklers = Vec::new();
        for _ in 0..3 {
            let s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut w = s.try_clone()?;
            w.write_all(&[0x16, 0x03, 0x01, 0x00, 0xff])?;
            let t = thread::spawn(move || {
                for _ in 0..255 {
                    if w.write_all(&[0]).is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            });
            tricklers.push((s, t));
        }
        let started = Instant::now();
        for (s, _) in &mut tricklers {
            // The server closes: end of file (or a reset, or an alert then end of file).
            let mut buf = [0u8; 256];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{mode}: trickled handshakes were held for {took:?}"
        );
        let port = addr.port();
        let resolve = format!("localhost:{port}:127.0.0.1");
        let tls = ["--cacert", cert.as_str(), "--resolve", resolve.as_str()];
        assert_eq!(
            curl_sf(&tls, &format!("https://localhost:{port}/a.txt")),
            HELLO,
            "{mode}"
        );
        for (s, t) in tricklers {
            drop(s);
            t.join().unwrap();
        }
    }
    Ok(())
}

/// HTTPS in async and pool modes: TLS and request heads on the event loop, several requests
/// on one TLS connection, byte-exact files.
#[test]
fn https_in_async_and_pool_modes_keeps_connections_alive() -> io::Result<()> {
    let site = site()?;
    let (cert, key) = self_signed(site.tmp.path())?;
    let (cert, key) = (path_str(&cert), path_str(&key));
    for mode in ["async", "pool"] {
        let server = start(
            &site,
            &["--tls-cert", &cert, "--tls-key", &key, "--mode", mode],
        )?;
        let port = tcp_addr(&server).port();
        let resolve = format!("localhost:{port}:127.0.0.1");
        let https = |path: &str| format!("https://localhost:{port}{path}");
        let tls = ["--cacert", cert.as_str(), "--resolve", resolve.as_str()];
        assert_eq!(curl_sf(&tls, &https("/a.txt")), HELLO, "{mode}");
        assert_same_bytes(
            &curl_sf(&tls, &https("/big.bin")),
            &site.big,
            &format!("{mode}: big.bin over TLS"),
        );
        let mut both = tls.to_vec();
        both.extend([
            "-w",
            "%{num_connects}\n",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
        ]);
        let second = https("/list/");
        both.push(second.as_str());
        let connects = String::from_utf8_lossy(&curl_sf(&both, &https("/a.txt"))).into_owned();
        assert_eq!(
            connects, "1\n0\n",
            "{mode}: one TLS connection for two URLs"
        );
    }
    Ok(())
}

#[test]
fn https_with_a_pem_certificate() -> io::Result<()> {
    let site = site()?;
    let (cert, key) = self_signed(site.tmp.path())?;
    let (cert, key) = (path_str(&cert), path_str(&key));
    let server = start(&site, &["--tls-cert", &cert, "--tls-key", &key])?;
    // The stdout line is `listening on tcp://127.0.0.1:PORT` (start parsed it as Tcp).
    let addr = tcp_addr(&server);
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let port = addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let tls = ["--cacert", &cert, "--resolve", &resolve];
    let https = |path: &str| format!("https://localhost:{port}{path}");

    assert_eq!(curl_sf(&tls, &https("/a.txt")), HELLO);
    assert_same_bytes(
        &curl_sf(&tls, &https("/big.bin")),
        &site.big,
        "curl -sf https://localhost/big.bin",
    );
    let mut ranged = tls.to_vec();
    ranged.extend(["-r", "0-99"]);
    assert_same_bytes(
        &curl_sf(&ranged, &https("/big.bin")),
        &site.big[..100],
        "a range over TLS",
    );
    // Two URLs, one TLS connection.
    let mut both = tls.to_vec();
    both.extend([
        "-w",
        "%{num_connects}\n",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
    ]);
    let (first, second) = (https("/a.txt"), https("/list/"));
    both.extend([first.as_str(), second.as_str()]);
    let connects = String::from_utf8_lossy(&curl_sf(&both, &https("/site/"))).into_owned();
    assert_eq!(
        connects, "1\n0\n0\n",
        "one connection for three URLs over TLS"
    );

    // Without trusting the certificate, curl refuses; plain HTTP gets no file.
    let untrusted = curl(&["-sf", "--resolve", &resolve, &https("/a.txt")])?;
    assert!(!untrusted.status.success(), "{untrusted:?}");
    let plain = curl(&["-sf", &url(&server, "/a.txt")])?;
    assert!(!plain.status.success(), "{plain:?}");
    assert!(!contains(&plain.stdout, HELLO), "{plain:?}");

    // People are told the https:// URL.
    let wanted = format!("https://127.0.0.1:{port}/");
    server.wait_stderr(IO_TIMEOUT, |text| text.contains(&wanted))?;
    Ok(())
}

#[test]
fn unusable_certificates_are_one_line_and_exit_2() -> io::Result<()> {
    let site = site()?;
    let (cert, key) = self_signed(site.tmp.path())?;
    let (cert, key) = (path_str(&cert), path_str(&key));
    let missing = path_str(&site.tmp.path().join("missing-cert.pem"));
    let garbage = site.tmp.path().join("garbage.pem");
    fs::write(&garbage, b"this is not PEM\n")?;
    let garbage = path_str(&garbage);
    let missing_key = path_str(&site.tmp.path().join("missing-key.pem"));
    let cases = [
        (missing.as_str(), key.as_str(), missing.as_str()),
        (garbage.as_str(), key.as_str(), garbage.as_str()),
        (cert.as_str(), missing_key.as_str(), missing_key.as_str()),
        (cert.as_str(), garbage.as_str(), garbage.as_str()),
    ];
    for (cert, key, named) in cases {
        let finished = run(&[
            "http",
            "--listen",
            TCP,
            "--dir",
            site.root(),
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ])?;
        assert_one_line_error(&finished, 2, &[named]);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Access log
// ---------------------------------------------------------------------------------------------

/// A common-log-format line: `HOST - - [DATE] "REQUEST" STATUS SIZE`.
#[derive(Debug, PartialEq, Eq)]
struct Clf {
    host: String,
    request: String,
    status: u16,
    size: String,
}

fn parse_clf(line: &str) -> Option<Clf> {
    let (host, rest) = line.split_once(" - - [")?;
    let (date, rest) = rest.split_once("] \"")?;
    // 21/Nov/2026:13:53:09 +0000
    let date_ok = date.len() == 26
        && date.ends_with(" +0000")
        && date.as_bytes()[2] == b'/'
        && date.as_bytes()[6] == b'/'
        && date.as_bytes()[11] == b':';
    if !date_ok {
        return None;
    }
    let (request, rest) = rest.rsplit_once("\" ")?;
    let (status, size) = rest.split_once(' ')?;
    Some(Clf {
        host: host.to_string(),
        request: request.to_string(),
        status: status.parse().ok()?,
        size: size.to_string(),
    })
}

fn access_lines(stderr: &str) -> Vec<Clf> {
    stderr.lines().filter_map(parse_clf).collect()
}

/// Issue 9, item 6: a file that shrinks while it is sent still gets its access line, with
/// no size since the bytes sent are not known: in the blocking modes it once got none, on
/// the event loop it claimed the whole announced length.
#[test]
fn a_file_that_shrinks_mid_transfer_still_gets_an_honest_access_line() -> io::Result<()> {
    use std::io::Read;
    for mode in ["threading", "fork", "async", "pool"] {
        let site = site()?;
        let huge = site.root.join("shrinks.bin");
        fs::File::create(&huge)?.set_len(64 * 1024 * 1024)?;
        let mut server = start(&site, &["--mode", mode])?;
        let mut s = std::net::TcpStream::connect(tcp_addr(&server))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(b"GET /shrinks.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = s.read(&mut buf)?;
        // The server is mid-file: cut the file short, then read what still comes.
        fs::File::options()
            .write(true)
            .open(&huge)?
            .set_len(1024 * 1024)?;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        assert!(
            got < 64 * 1024 * 1024,
            "{mode}: the whole announced length came"
        );
        server.signal("TERM")?;
        server.wait_exit(Duration::from_secs(5))?;
        let stderr = server.stderr_at_exit(IO_TIMEOUT)?;
        let lines = access_lines(&stderr);
        let cut: Vec<&Clf> = lines
            .iter()
            .filter(|l| l.request == "GET /shrinks.bin HTTP/1.1")
            .collect();
        assert_eq!(
            cut.len(),
            1,
            "{mode}: one access line for the cut answer in {stderr:?}"
        );
        assert_eq!(cut[0].status, 200, "{mode}");
        assert_eq!(cut[0].size, "-", "{mode}: the size of an answer cut short");
    }
    Ok(())
}

/// Forked children share stderr: each log line must be one write, never interleaved with
/// another child's (they once came out as `socketserver: socketserver: tcp://…tcp…`).
#[test]
fn concurrent_children_write_whole_log_lines() -> io::Result<()> {
    let site = site()?;
    let mut server = start(&site, &["--mode", "fork", "--max-children", "16"])?;
    let addr = tcp_addr(&server);
    let clients: Vec<_> = (0..48)
        .map(|i| {
            thread::spawn(move || -> io::Result<()> {
                use std::io::Read;
                let mut s = std::net::TcpStream::connect(addr)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                let path = if i % 2 == 0 { "/a.txt" } else { "/missing" };
                write!(
                    s,
                    "GET {path}?n={i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )?;
                let mut reply = Vec::new();
                s.read_to_end(&mut reply)?;
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap()?;
    }
    server.signal("TERM")?;
    server.wait_exit(Duration::from_secs(5))?;
    let stderr = server.stderr_at_exit(IO_TIMEOUT)?;
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("?n=")).collect();
    assert_eq!(lines.len(), 48, "{stderr}");
    for line in lines {
        let clf = parse_clf(line);
        assert!(
            clf.as_ref()
                .is_some_and(|c| c.request.starts_with("GET /")
                    && c.request.matches("HTTP/1.1").count() == 1),
            "a broken log line: {line:?}"
        );
    }
    Ok(())
}

/// An event loop writes its access lines in batches (one write per turn of the loop), not
/// at exit: every request of many concurrent keep-alive clients has one whole line, there
/// while the server still runs, each request once.
#[test]
fn event_loop_access_lines_are_whole_prompt_and_each_once() -> io::Result<()> {
    const CLIENTS: usize = 8;
    const EACH: usize = 60;
    let site = site()?;
    let server = start(&site, &["--mode", "async", "--workers", "1"])?;
    let addr = tcp_addr(&server);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || -> io::Result<()> {
                use std::io::Read;
                let mut s = std::net::TcpStream::connect(addr)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                for i in 0..EACH {
                    write!(s, "GET /a.txt?c={c}&i={i} HTTP/1.1\r\nHost: x\r\n\r\n")?;
                    // The head, then the 13-byte body.
                    let mut got = Vec::new();
                    let mut byte = [0u8; 1];
                    while !got.ends_with(b"\r\n\r\n") {
                        s.read_exact(&mut byte)?;
                        got.push(byte[0]);
                    }
                    let mut body = [0u8; 13];
                    s.read_exact(&mut body)?;
                    assert_eq!(&body, HELLO);
                }
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap()?;
    }
    // The loop is idle now: what it logged went out before it began to wait.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut stderr = server.stderr();
    while access_lines(&stderr).len() < CLIENTS * EACH && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        stderr = server.stderr();
    }
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("?c=")).collect();
    assert_eq!(lines.len(), CLIENTS * EACH, "{stderr}");
    let mut seen = std::collections::HashSet::new();
    for line in lines {
        let clf = parse_clf(line).unwrap_or_else(|| panic!("a broken log line: {line:?}"));
        assert_eq!((clf.status, clf.size.as_str()), (200, "13"), "{line:?}");
        assert!(seen.insert(clf.request.clone()), "logged twice: {line:?}");
    }
    Ok(())
}

#[test]
fn access_log_has_one_common_log_line_per_request() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let mut server = start(&site, extra)?;
        assert_eq!(curl_sf(&[], &url(&server, "/a.txt")), HELLO);
        assert_eq!(get(&url(&server, "/nothing-here"))?.code, 404);
        curl_sf(&["-I"], &url(&server, "/a.txt"));
        // Two requests on one connection: two lines.
        let run = curl(&[
            "-sf",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &url(&server, "/a.txt"),
            &url(&server, "/list/"),
        ])?;
        assert!(run.status.success(), "{run:?}");

        server.signal("TERM")?;
        let status = server.wait_exit(Duration::from_secs(5))?;
        assert_eq!(status.code(), Some(0));
        let stderr = server.stderr_at_exit(IO_TIMEOUT)?;
        let lines = access_lines(&stderr);
        // Four connections, which an event loop per core may answer side by side, each loop
        // writing its lines in batches: in order within a connection, not across them.
        let mut summary: Vec<(&str, u16, &str)> = lines
            .iter()
            .map(|l| (l.request.as_str(), l.status, l.size.as_str()))
            .collect();
        let list = summary
            .iter()
            .position(|(r, _, _)| *r == "GET /list/ HTTP/1.1")
            .map(|i| summary.remove(i));
        // The size is the body's, `-` for none.
        assert!(
            list.is_some_and(
                |(_, status, size)| status == 200 && size.parse::<u64>().is_ok_and(|n| n > 0)
            ),
            "{stderr}"
        );
        summary.sort_unstable();
        assert_eq!(
            summary,
            [
                ("GET /a.txt HTTP/1.1", 200, "13"),
                ("GET /a.txt HTTP/1.1", 200, "13"),
                ("GET /nothing-here HTTP/1.1", 404, "14"),
                ("HEAD /a.txt HTTP/1.1", 200, "-"),
            ],
            "{stderr}"
        );
        // The two requests of one connection, in their order.
        let a = lines
            .iter()
            .rposition(|l| l.request == "GET /a.txt HTTP/1.1");
        let list = lines
            .iter()
            .position(|l| l.request == "GET /list/ HTTP/1.1");
        assert!(a < list, "{stderr}");
        assert!(lines.iter().all(|l| l.host == "127.0.0.1"), "{stderr}");
        // stdout carries the `listening on` line only.
        assert_eq!(server.rest_of_stdout(), Vec::<String>::new());
        // Every line that is not an access line is a `socketserver: ` message.
        for line in stderr.lines().filter(|l| parse_clf(l).is_none()) {
            assert!(line.starts_with("socketserver: "), "{line:?} in {stderr}");
        }
        Ok(())
    })
}

#[test]
fn access_log_escapes_control_characters() -> io::Result<()> {
    let site = site()?;
    let mut server = start(&site, &[])?;
    let addr = server.addrs[0].clone();
    // A raw ESC is not allowed in a request target: 400 with a real status line.
    let esc = raw_one(
        &addr,
        b"GET /\x1b[31mred\x1b[0m HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    )?;
    assert!(esc.status_line.starts_with("HTTP/1.1 400 "), "{esc:?}");
    // A C1 control (CSI, U+009B, as UTF-8) is allowed by the grammar: 404, logged escaped.
    let csi = raw_one(
        &addr,
        "GET /\u{9b}31mred HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".as_bytes(),
        false,
    )?;
    assert_eq!(csi.status, 404, "{csi:?}");
    // A quote would end the quoted request line early.
    let quote = raw_one(
        &addr,
        b"GET /q\"uote HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    )?;
    assert_eq!(quote.status, 404, "{quote:?}");
    // Request bytes that are not UTF-8.
    let latin1 = raw_one(
        &addr,
        b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    )?;
    assert!(matches!(latin1.status, 400 | 404), "{latin1:?}");

    server.signal("TERM")?;
    assert_eq!(server.wait_exit(Duration::from_secs(5))?.code(), Some(0));
    let stderr = server.stderr_at_exit(IO_TIMEOUT)?;
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{9b}'),
        "a raw control character reached stderr: {stderr:?}"
    );
    let lines = access_lines(&stderr);
    assert_eq!(lines.len(), 4, "one line per request: {stderr:?}");
    // Each request came on a connection of its own, which loops may answer side by side
    // (each writing its lines in batches): the lines are matched by content, not order.
    let refused: Vec<&Clf> = lines.iter().filter(|l| l.status == 400).collect();
    assert!(!refused.is_empty(), "{stderr:?}");
    assert!(
        refused.iter().all(|l| !l.request.contains('\u{1b}')),
        "{refused:?}"
    );
    let found = |request: &str| {
        lines
            .iter()
            .find(|l| l.request == request)
            .map(|l| l.status)
    };
    assert_eq!(
        found("GET /\\xc2\\x9b31mred HTTP/1.1"),
        Some(404),
        "{stderr:?}"
    );
    assert_eq!(found("GET /q\\x22uote HTTP/1.1"), Some(404), "{stderr:?}");
    Ok(())
}

#[test]
fn quiet_prints_no_access_lines() -> io::Result<()> {
    let site = site()?;
    let mut server = start(&site, &["--quiet"])?;
    assert_eq!(curl_sf(&[], &url(&server, "/a.txt")), HELLO);
    assert_eq!(get(&url(&server, "/nothing-here"))?.code, 404);
    let bad = raw_one(&server.addrs[0], b"GET /\r\n", false)?;
    assert_eq!(bad.status, 400);
    server.signal("TERM")?;
    assert_eq!(server.wait_exit(Duration::from_secs(5))?.code(), Some(0));
    let stderr = server.stderr_at_exit(IO_TIMEOUT)?;
    assert!(access_lines(&stderr).is_empty(), "--quiet: {stderr:?}");
    assert!(!stderr.contains("GET"), "--quiet: {stderr:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. Unix sockets
// ---------------------------------------------------------------------------------------------

#[test]
fn http_over_a_unix_socket() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let socket = site.tmp.path().join("http.sock");
        let listen = unix_url(&socket);
        let mut args = vec!["http", "--listen", &listen, "--dir", site.root()];
        args.extend_from_slice(extra);
        let mut server = Server::start(&args)?;
        assert_eq!(server.addrs, [Addr::Unix(socket.clone())]);
        let path = path_str(&socket);
        let unix = ["--unix-socket", path.as_str()];
        assert_eq!(curl_sf(&unix, "http://localhost/a.txt"), HELLO);
        assert_same_bytes(
            &curl_sf(&unix, "http://localhost/big.bin"),
            &site.big,
            "curl --unix-socket /big.bin",
        );
        let page = String::from_utf8_lossy(&curl_sf(&unix, "http://localhost/list/")).into_owned();
        assert!(page.contains("plain.txt"), "{page}");

        server.signal("TERM")?;
        assert_eq!(server.wait_exit(Duration::from_secs(5))?.code(), Some(0));
        assert!(!socket.exists(), "the socket file is removed at exit");
        let stderr = server.stderr_at_exit(IO_TIMEOUT)?;
        let lines = access_lines(&stderr);
        assert_eq!(lines.len(), 3, "{stderr}");
        assert!(lines.iter().all(|l| l.host == "unix"), "{stderr}");
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// 7. Limits and malformed requests, over raw sockets
// ---------------------------------------------------------------------------------------------

#[test]
fn request_line_over_8_kib_gets_414() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let addr = &server.addrs[0];
        // "GET /" + name + " HTTP/1.1" is 8192 bytes: accepted (no such file).
        let name = "a".repeat(8192 - "GET / HTTP/1.1".len());
        let request = format!("GET /{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let at_limit = raw_one(addr, request.as_bytes(), false)?;
        assert_eq!(at_limit.status, 404, "a request line of 8192 bytes");

        let request = format!("GET /{name}a HTTP/1.1\r\nHost: x\r\n\r\n");
        let over = raw_one(addr, request.as_bytes(), false)?;
        assert!(
            over.status_line.starts_with("HTTP/1.1 414 "),
            "a request line of 8193 bytes: {over:?}"
        );
        let request = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "b".repeat(100_000));
        let way_over = raw_one(addr, request.as_bytes(), false)?;
        assert_eq!(way_over.status, 414, "{way_over:?}");
        Ok(())
    })
}

#[test]
fn header_section_over_64_kib_or_over_100_fields_gets_431() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let addr = &server.addrs[0];

        let fine = format!(
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(60_000)
        );
        let ok = raw_one(addr, fine.as_bytes(), false)?;
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (200, HELLO),
            "a 60 KB head"
        );

        let big = format!(
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(70_000)
        );
        let too_big = raw_one(addr, big.as_bytes(), false)?;
        assert!(
            too_big.status_line.starts_with("HTTP/1.1 431 "),
            "a 70 KB header: {too_big:?}"
        );
        assert!(!contains(&too_big.body, HELLO));

        let fields = |n: usize| {
            let mut request =
                String::from("GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
            for i in 2..n {
                request.push_str(&format!("X-Field-{i}: {i}\r\n"));
            }
            request.push_str("\r\n");
            request
        };
        let hundred = raw_one(addr, fields(100).as_bytes(), false)?;
        assert_eq!(hundred.status, 200, "100 header fields: {hundred:?}");
        let too_many = raw_one(addr, fields(101).as_bytes(), false)?;
        assert!(
            too_many.status_line.starts_with("HTTP/1.1 431 "),
            "101 header fields: {too_many:?}"
        );
        Ok(())
    })
}

#[test]
fn ambiguous_body_framing_gets_400_and_closes() -> io::Result<()> {
    let site = site()?;
    let server = start(&site, &[])?;
    let addr = &server.addrs[0];
    let cases: [&[u8]; 4] = [
        // Content-Length with Transfer-Encoding, followed by what a smuggler would hide.
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ];
    for request in cases {
        // One response, then the server closes (raw_one reads to the close and checks that
        // nothing follows the 400).
        let raw = raw_one(addr, request, false)?;
        assert!(
            raw.status_line.starts_with("HTTP/1.1 400 "),
            "{:?}: {raw:?}",
            String::from_utf8_lossy(request)
        );
        assert_eq!(raw.header("Connection"), Some("close"), "{raw:?}");
    }
    Ok(())
}

#[test]
fn http_0_9_and_garbage_get_a_real_400_status_line() -> io::Result<()> {
    let site = site()?;
    let server = start(&site, &[])?;
    let addr = &server.addrs[0];
    for request in [
        &b"GET /\r\n"[..],
        b"GET /a.txt\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
    ] {
        let raw = raw_one(addr, request, false)?;
        assert!(
            raw.status_line.starts_with("HTTP/1.1 400 "),
            "{:?}: {raw:?}",
            String::from_utf8_lossy(request)
        );
        assert!(!contains(&raw.body, HELLO));
    }
    Ok(())
}

#[test]
fn methods_other_than_get_and_head_are_refused() -> io::Result<()> {
    let site = site()?;
    let server = start(&site, &[])?;
    let addr = &server.addrs[0];
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let request = format!(
            "{method} /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        );
        let raw = raw_one(addr, request.as_bytes(), false)?;
        assert_eq!(raw.status, 405, "{method}: {raw:?}");
        assert_eq!(raw.header("Allow"), Some("GET, HEAD"), "{raw:?}");
    }
    let raw = raw_one(
        addr,
        b"BREW /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    )?;
    assert_eq!(raw.status, 501, "{raw:?}");

    // The same through curl.
    let post = fetch(&["-X", "POST", "-d", "x=1"], &url(&server, "/a.txt"))?;
    assert_eq!(post.code, 405, "{post:?}");
    assert_eq!(post.header("Allow").as_deref(), Some("GET, HEAD"));
    let brew = fetch(&["-X", "BREW"], &url(&server, "/a.txt"))?;
    assert_eq!(brew.code, 501, "{brew:?}");
    Ok(())
}

/// What happened to a client trickling its head one byte at a time.
#[derive(Debug)]
enum Trickle {
    /// The server answered (these bytes) and closed.
    Answered(Vec<u8>),
    /// The server closed or reset the connection without an answer.
    Closed,
    /// Still open after this long: the server never cut the client off.
    NeverCut,
}

/// Connects, sends `GET /a.txt HTTP/1.1\r\n` (then tells `connected`), then one byte every
/// 300 ms, never ending the head, until the server answers or closes (or `give_up` has passed
/// since `started`). Returns what happened and when, measured from `started`.
fn trickle(
    addr: &Addr,
    started: Instant,
    give_up: Duration,
    connected: std::sync::mpsc::Sender<()>,
) -> io::Result<(Trickle, Duration)> {
    let mut conn = Stream::connect(addr)?;
    conn.write_all(b"GET /a.txt HTTP/1.1\r\n")?;
    let _ = connected.send(());
    conn.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = [0u8; 4096];
    loop {
        if started.elapsed() > give_up {
            return Ok((Trickle::NeverCut, started.elapsed()));
        }
        match conn.read_once(&mut buf) {
            Ok(0) => return Ok((Trickle::Closed, started.elapsed())),
            Ok(n) => {
                let cut = started.elapsed();
                let mut answer = buf[..n].to_vec();
                conn.set_read_timeout(Some(IO_TIMEOUT))?;
                answer.extend(read_until_close(&mut conn)?);
                return Ok((Trickle::Answered(answer), cut));
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return Ok((Trickle::Closed, started.elapsed())),
        }
        if conn.write_all(b"X").is_err() {
            return Ok((Trickle::Closed, started.elapsed()));
        }
    }
}

/// With `--timeout 1`, a client trickling its head is cut off (408 or a close) after about
/// 1 s, and another client is served meanwhile, before that happens.
fn trickling_client_is_cut_off(extra: &[&str]) -> io::Result<()> {
    let site = site()?;
    let mut args = vec!["--timeout", "1"];
    args.extend_from_slice(extra);
    let server = start(&site, &args)?;
    let addr = server.addrs[0].clone();
    let started = Instant::now();
    let (connected_tx, connected) = std::sync::mpsc::channel();
    let trickler =
        thread::spawn(move || trickle(&addr, started, Duration::from_secs(6), connected_tx));
    // The trickler is connected and has started its head before the other client comes.
    let _ = connected.recv_timeout(IO_TIMEOUT);
    let asked = Instant::now();
    assert_eq!(curl_sf(&[], &url(&server, "/a.txt")), HELLO);
    let served_at = started.elapsed();
    let took = asked.elapsed();
    let (outcome, cut_after) = trickler.join().expect("the trickler panicked")?;
    match &outcome {
        Trickle::Answered(bytes) => assert!(
            bytes.starts_with(b"HTTP/1.1 408 "),
            "{extra:?}: {:?}",
            String::from_utf8_lossy(bytes)
        ),
        Trickle::Closed => {}
        Trickle::NeverCut => panic!("{extra:?}: the trickling client was never cut off"),
    }
    assert!(
        cut_after < Duration::from_secs(3),
        "{extra:?}: cut off after {cut_after:?} ({outcome:?}); --timeout 1 allows 1 s for a head"
    );
    assert!(
        cut_after >= Duration::from_millis(900),
        "{extra:?}: cut off after only {cut_after:?}"
    );
    assert!(
        took < Duration::from_secs(2) && served_at < cut_after,
        "{extra:?}: another client's file took {took:?} (served {served_at:?} after the \
         trickler connected, which was cut off after {cut_after:?}): it waited for the trickler"
    );
    Ok(())
}

#[test]
fn timeout_cuts_off_a_trickling_client_in_threading_mode() -> io::Result<()> {
    trickling_client_is_cut_off(&[])
}

#[test]
fn timeout_cuts_off_a_trickling_client_in_pool_mode_with_one_worker() -> io::Result<()> {
    trickling_client_is_cut_off(&["--mode", "pool", "--workers", "1"])
}

#[test]
fn timeout_cuts_off_a_trickling_client_in_async_mode_with_one_loop() -> io::Result<()> {
    trickling_client_is_cut_off(&["--mode", "async", "--workers", "1"])
}

/// An idle keep-alive connection holds nothing a request needs: with one worker (or one loop)
/// another client is served at once, and the idle connection stays usable.
fn idle_keep_alive_connection_holds_nothing(extra: &[&str]) -> io::Result<()> {
    let site = site()?;
    let mut args = vec!["--timeout", "5"];
    args.extend_from_slice(extra);
    let server = start(&site, &args)?;
    let mut holder = Stream::connect(&server.addrs[0])?;
    holder.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let first = read_response(&mut holder, false)?;
    assert_eq!((first.status, first.body.as_slice()), (200, HELLO));
    // The holder now idles between requests; the only worker must be free for others.
    let asked = Instant::now();
    assert_eq!(curl_sf(&[], &url(&server, "/a.txt")), HELLO);
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "{extra:?}: a file took {took:?} while another connection idled between requests"
    );
    // And the idle connection is still usable.
    holder.write_all(b"GET /list/plain.txt HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let second = read_response(&mut holder, false)?;
    assert_eq!(
        (second.status, second.body.as_slice()),
        (200, &b"plain\n"[..])
    );
    Ok(())
}

#[test]
fn pool_mode_idle_keep_alive_connection_holds_no_worker() -> io::Result<()> {
    idle_keep_alive_connection_holds_nothing(&["--mode", "pool", "--workers", "1"])
}

#[test]
fn async_mode_idle_keep_alive_connection_holds_no_loop() -> io::Result<()> {
    idle_keep_alive_connection_holds_nothing(&["--mode", "async", "--workers", "1"])
}

// ---------------------------------------------------------------------------------------------
// 8. Keep-alive and pipelining
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let bytes = raw_exchange(
            &server.addrs[0],
            b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /list/plain.txt HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /missing HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n",
        )?;
        let mut rest = bytes.as_slice();
        let mut responses = Vec::new();
        for head_only in [false, true, false, false, false] {
            let (raw, used) = parse_response(rest, head_only)?.ok_or_else(|| {
                common::other(format!(
                    "response {} incomplete: {:?}",
                    responses.len() + 1,
                    String::from_utf8_lossy(rest)
                ))
            })?;
            responses.push(raw);
            rest = &rest[used..];
        }
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(rest));
        let summary: Vec<(u16, &[u8])> = responses
            .iter()
            .map(|r| (r.status, r.body.as_slice()))
            .collect();
        assert_eq!(summary[0], (200, HELLO));
        assert_eq!(summary[1], (200, &b""[..]));
        assert_eq!(
            responses[1].header("Content-Length"),
            Some(BIG.to_string().as_str())
        );
        assert_eq!(summary[2], (200, &b"plain\n"[..]));
        assert_eq!(summary[3].0, 404);
        assert_eq!(summary[4], (206, &site.big[10..20]));
        assert_eq!(responses[4].header("Connection"), Some("close"));
        Ok(())
    })
}

#[test]
fn many_pipelined_requests_in_one_write_are_all_answered() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let mut request = Vec::new();
        for i in 0..100 {
            let path = if i % 2 == 0 {
                "/a.txt"
            } else {
                "/list/plain.txt"
            };
            request.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
        request.extend_from_slice(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let bytes = raw_exchange(&server.addrs[0], &request)?;
        let mut rest = bytes.as_slice();
        for i in 0..101 {
            let (raw, used) = parse_response(rest, false)?
                .ok_or_else(|| common::other(format!("response {i} missing or incomplete")))?;
            let want: &[u8] = if i % 2 == 0 { HELLO } else { b"plain\n" };
            assert_eq!(
                (raw.status, raw.body.as_slice()),
                (200, want),
                "response {i}"
            );
            rest = &rest[used..];
        }
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(rest));
        Ok(())
    })
}

#[test]
fn curl_reuses_one_connection_for_several_urls() -> io::Result<()> {
    in_modes(|extra| {
        let site = site()?;
        let server = start(&site, extra)?;
        let run = curl(&[
            "-sf",
            "-w",
            "%{http_code} %{num_connects}\n",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &url(&server, "/a.txt"),
            &url(&server, "/big.bin"),
            &url(&server, "/list/"),
        ])?;
        assert!(run.status.success(), "{run:?}");
        assert_eq!(run.text(), "200 1\n200 0\n200 0\n", "{run:?}");
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// 9. Graceful stop
// ---------------------------------------------------------------------------------------------

/// Asserts that the server closed `conn` (end of file or reset) without sending anything.
#[track_caller]
fn assert_closed_silently(conn: &mut Stream, what: &str) {
    let mut buf = [0u8; 1024];
    match conn.read_once(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!(
            "{what}: got {:?} instead of the close",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("{what}: not closed: {e}"),
    }
}

fn sigterm_closes_idle_connections_at_once(extra: &[&str]) -> io::Result<()> {
    let site = site()?;
    let mut args = vec!["--shutdown-timeout", "10"];
    args.extend_from_slice(extra);
    let mut server = start(&site, &args)?;
    let addr = server.addrs[0].clone();
    // A keep-alive connection that has had a response and now waits between requests.
    let mut idle = Stream::connect(&addr)?;
    idle.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let first = read_response(&mut idle, false)?;
    assert_eq!((first.status, first.body.as_slice()), (200, HELLO));
    assert_eq!(first.header("Connection"), None, "kept alive: {first:?}");
    // A second one, after two requests.
    let mut idle2 = Stream::connect(&addr)?;
    for _ in 0..2 {
        idle2.write_all(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")?;
        assert_eq!(read_response(&mut idle2, true)?.status, 200);
    }

    let signalled = Instant::now();
    server.signal("TERM")?;
    let status = server.wait_exit(Duration::from_secs(5))?;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{extra:?}: {}", server.stderr());
    assert!(
        took < Duration::from_millis(2500),
        "{extra:?}: exit took {took:?} with idle keep-alive connections open; they must be \
         closed at once, not waited on for --shutdown-timeout"
    );
    assert_closed_silently(&mut idle, "the idle connection");
    assert_closed_silently(&mut idle2, "the second idle connection");
    Ok(())
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once_in_threading_mode() -> io::Result<()> {
    sigterm_closes_idle_connections_at_once(&[])
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once_in_pool_mode() -> io::Result<()> {
    sigterm_closes_idle_connections_at_once(&["--mode", "pool", "--workers", "2"])
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once_in_async_mode() -> io::Result<()> {
    sigterm_closes_idle_connections_at_once(&["--mode", "async"])
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once_in_fork_mode() -> io::Result<()> {
    sigterm_closes_idle_connections_at_once(&["--mode", "fork"])
}

// ---------------------------------------------------------------------------------------------
// 10. Sync mode
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_mode_closes_instead_of_idling_so_others_are_served() -> io::Result<()> {
    let site = site()?;
    let server = start(&site, &["--mode", "sync"])?;
    let addr = server.addrs[0].clone();
    // A client that would keep its connection for more requests and holds it open.
    let mut holder = Stream::connect(&addr)?;
    holder.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let first = read_response(&mut holder, false)?;
    assert_eq!((first.status, first.body.as_slice()), (200, HELLO));

    // The server is not deaf: another client gets its file promptly.
    let asked = Instant::now();
    assert_same_bytes(
        &curl_sf(&[], &url(&server, "/big.bin")),
        &site.big,
        "sync mode, with another connection held open",
    );
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "sync mode: a file took {took:?} while another client held an idle connection"
    );
    // The held connection was closed by the server.
    assert_closed_silently(&mut holder, "sync mode's finished keep-alive connection");

    // Pipelined requests that arrived together are still all answered, then the connection
    // closes.
    let bytes = raw_exchange(
        &addr,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /list/plain.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    )?;
    let (one, used) = parse_response(&bytes, false)?.ok_or_else(|| common::other("no response"))?;
    let (two, used2) =
        parse_response(&bytes[used..], false)?.ok_or_else(|| common::other("one response"))?;
    assert_eq!((one.status, one.body.as_slice()), (200, HELLO));
    assert_eq!((two.status, two.body.as_slice()), (200, &b"plain\n"[..]));
    assert_eq!(used + used2, bytes.len());
    Ok(())
}

#[test]
fn sync_mode_announces_the_close() -> io::Result<()> {
    let site = site()?;
    let server = start(&site, &["--mode", "sync"])?;
    for request in [
        &b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ] {
        // raw_one reads to the close: the server does close after one response.
        let raw = raw_one(&server.addrs[0], request, false)?;
        assert_eq!((raw.status, raw.body.as_slice()), (200, HELLO));
        assert_eq!(
            raw.header("Connection"),
            Some("close"),
            "{:?}: the server closes after this response, so it must say so: {raw:?}",
            String::from_utf8_lossy(request)
        );
    }
    Ok(())
}

/// `http` runs in async mode unless told otherwise (the contract's "Modes"), and the TLS
/// library's own warnings (rustls: "Illegal SNI extension" for every client that connects by
/// IP address, as curl and wrk do) never reach stderr, with or without `--quiet` (issue 9).
#[test]
fn http_defaults_to_async_and_library_chatter_stays_off_stderr() -> io::Result<()> {
    let site = site()?;
    let (cert, key) = self_signed(site.tmp.path())?;
    let (cert, key) = (path_str(&cert), path_str(&key));
    let server = start(&site, &["--tls-cert", &cert, "--tls-key", &key])?;
    let addr = tcp_addr(&server);
    let by_ip = format!("https://{addr}/a.txt");
    for _ in 0..3 {
        assert_eq!(curl_sf(&["-k"], &by_ip), HELLO);
    }
    let mut server = server;
    server.signal("TERM")?;
    assert_eq!(server.wait_exit(Duration::from_secs(5))?.code(), Some(0));
    let stderr = server.stderr_at_exit(IO_TIMEOUT)?;
    assert!(stderr.contains("async mode"), "{stderr}");
    assert!(!stderr.contains("SNI"), "{stderr}");
    assert_eq!(
        stderr.matches("\"GET /a.txt HTTP/1.1\" 200").count(),
        3,
        "{stderr}"
    );
    Ok(())
}
