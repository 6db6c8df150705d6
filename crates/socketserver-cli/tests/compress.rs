//! Compression through the binary, as curl sees it: `--compressed` and without, every coding
//! curl decodes, precompressed siblings, `--no-compress` (flag and environment) and its bad
//! values, in the event loop and in a blocking mode.

mod common;

use std::io;
use std::process::Command;

use common::{Server, assert_one_line_error, run, socketserver};
use tempfile::{TempDir, tempdir};

const MODES: [&str; 2] = ["async", "threading"];

/// 100 KiB of text, as a site's JavaScript would be.
fn script() -> Vec<u8> {
    let mut text = Vec::new();
    let mut i = 0u32;
    while text.len() < 100 * 1024 {
        text.extend_from_slice(
            format!("export function f{i}(x) {{ return x * {}; }}\n", i % 89).as_bytes(),
        );
        i += 1;
    }
    text.truncate(100 * 1024);
    text
}

fn site() -> io::Result<TempDir> {
    let site = tempdir()?;
    std::fs::write(site.path().join("app.js"), script())?;
    std::fs::write(site.path().join("page.html"), script())?;
    // A precompressed sibling, as a build step makes it.
    let status = Command::new("gzip")
        .args(["-k", "-9"])
        .arg(site.path().join("page.html"))
        .status()?;
    assert!(status.success(), "gzip -k -9 page.html");
    Ok(site)
}

fn start(site: &TempDir, mode: &str, extra: &[&str]) -> io::Result<Server> {
    Server::http(site.path(), mode, extra)
}

/// `curl -s -D HEADERS ARGS URL`: the head (lowercase names) and the body curl wrote.
fn curl(args: &[&str], url: &str) -> io::Result<(String, Vec<u8>)> {
    let dir = tempdir()?;
    let head = dir.path().join("head");
    let head_path = head.to_str().expect("UTF-8 temp path");
    let mut all = vec!["-sS", "-D", head_path];
    all.extend_from_slice(args);
    all.push(url);
    let output = common::curl_output(&all)?;
    assert!(
        output.status.success(),
        "curl {args:?} {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((
        std::fs::read_to_string(head)?.to_ascii_lowercase(),
        output.stdout,
    ))
}

fn field<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim())
}

#[test]
fn curl_compressed_and_not_gets_the_same_bytes_in_every_coding() -> io::Result<()> {
    let site = site()?;
    let original = std::fs::read(site.path().join("app.js"))?;
    for mode in MODES {
        let server = start(&site, mode, &[])?;
        let target = server.url("/app.js");
        // Without --compressed curl asks for nothing: the file as it is.
        let (head, body) = curl(&[], &target)?;
        assert_eq!(field(&head, "content-encoding"), None, "{mode}: {head}");
        assert_eq!(
            field(&head, "vary"),
            Some("accept-encoding"),
            "{mode}: {head}"
        );
        assert!(body == original, "{mode}: identity body");
        // With it, curl decodes: one coding after the other, as the server prefers.
        for (accept, coding) in [
            ("zstd", "zstd"),
            ("br", "br"),
            ("gzip", "gzip"),
            ("gzip, deflate, br, zstd", "zstd"),
        ] {
            for _ in 0..2 {
                let (head, body) = curl(
                    &["--compressed", "-H", &format!("Accept-Encoding: {accept}")],
                    &target,
                )?;
                assert_eq!(
                    field(&head, "content-encoding"),
                    Some(coding),
                    "{mode} {accept}: {head}"
                );
                assert!(body == original, "{mode} {accept}: decoded body differs");
            }
        }
        // HEAD says what GET sends.
        let (head, _) = curl(&["-I", "--compressed"], &target)?;
        assert!(field(&head, "content-encoding").is_some(), "{mode}: {head}");
    }
    Ok(())
}

#[test]
fn a_precompressed_sibling_goes_out_as_it_is() -> io::Result<()> {
    let site = site()?;
    let original = std::fs::read(site.path().join("page.html"))?;
    let sibling = std::fs::read(site.path().join("page.html.gz"))?;
    for mode in MODES {
        let server = start(&site, mode, &[])?;
        let target = server.url("/page.html");
        let (head, body) = curl(&["-H", "Accept-Encoding: gzip"], &target)?;
        assert_eq!(
            field(&head, "content-encoding"),
            Some("gzip"),
            "{mode}: {head}"
        );
        assert_eq!(
            field(&head, "content-length"),
            Some(sibling.len().to_string().as_str()),
            "{mode}: {head}"
        );
        assert!(
            field(&head, "content-type").is_some_and(|t| t.starts_with("text/html")),
            "{mode}: {head}"
        );
        assert!(body == sibling, "{mode}: the sibling byte for byte");
        let (_, decoded) = curl(&["--compressed", "-H", "Accept-Encoding: gzip"], &target)?;
        assert!(decoded == original, "{mode}: decodes to the file");
    }
    Ok(())
}

#[test]
fn no_compress_turns_both_off_from_the_flag_or_the_environment() -> io::Result<()> {
    let site = site()?;
    for mode in MODES {
        let server = start(&site, mode, &["--no-compress"])?;
        for path in ["/app.js", "/page.html"] {
            let (head, body) = curl(&["--compressed"], &server.url(path))?;
            assert_eq!(
                field(&head, "content-encoding"),
                None,
                "{mode} {path}: {head}"
            );
            assert_eq!(field(&head, "vary"), None, "{mode} {path}: {head}");
            assert!(
                body == std::fs::read(site.path().join(&path[1..]))?,
                "{mode} {path}"
            );
        }
    }
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let server = Server::http_env(
        site.path(),
        &[("SOCKETSERVER_NO_COMPRESS", "1")],
        "SOCKETSERVER_NO_COMPRESS=1",
    )?;
    let (head, _) = curl(&["--compressed"], &server.url("/app.js"))?;
    assert_eq!(field(&head, "content-encoding"), None, "{head}");
    drop(server);
    // A value that is not a yes or a no is a usage error, in either place.
    let mut command = socketserver();
    command
        .args(["http", "--listen", "tcp://127.0.0.1:0", "--dir", dir])
        .env("SOCKETSERVER_NO_COMPRESS", "maybe");
    let out = common::run_command(command)?;
    assert_one_line_error(&out, 2, &["maybe"]);
    let out = run(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--no-compress=yes please",
    ])?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    Ok(())
}

#[test]
fn the_compress_cache_keeps_hot_bodies_unless_it_is_zero() -> io::Result<()> {
    let site = site()?;
    let original = std::fs::read(site.path().join("app.js"))?;
    for (cache, cached) in [(None, true), (Some("0"), false)] {
        let extra: Vec<&str> = cache.map_or(vec![], |c| vec!["--compress-cache", c]);
        let server = start(&site, "async", &extra)?;
        let target = server.url("/app.js");
        let _ = curl(&["--compressed", "-H", "Accept-Encoding: gzip"], &target)?;
        let (head, body) = curl(&["--compressed", "-H", "Accept-Encoding: gzip"], &target)?;
        assert!(body == original, "{cache:?}");
        // From the cache the length is known; compressed anew it is chunked.
        assert_eq!(
            field(&head, "content-length").is_some(),
            cached,
            "{cache:?}: {head}"
        );
        assert_eq!(
            field(&head, "transfer-encoding") == Some("chunked"),
            !cached,
            "{cache:?}: {head}"
        );
    }
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let out = run(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--compress-cache",
        "lots",
    ])?;
    assert_one_line_error(&out, 2, &["lots"]);
    Ok(())
}
