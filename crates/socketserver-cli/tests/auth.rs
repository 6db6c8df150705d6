//! `--auth` and `--auth-file` through the binary, with curl as the client: every kind of
//! secret, the failures logged with the client's address, `--health` left open, and bad
//! entries refused with a one-line usage error.

mod common;

use std::io;

use common::{Server, assert_one_line_error, run};
use tempfile::tempdir;

/// "s3cret" hashed with argon2id.
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$k8RGCVgK+7qGSNAd0kjisJ/jWx/aj+AR5aR8IJzkIeo";
/// sha256("password").
const SHA: &str = "sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

/// `curl -s ARGS URL`: the status code and the `WWW-Authenticate` header.
fn curl(args: &[&str], url: &str) -> io::Result<(u16, Option<String>, String)> {
    let mut all = vec!["-s", "-D", "-"];
    all.extend_from_slice(args);
    all.push(url);
    let output = common::curl_output(&all)?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let challenge = text
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .map(|v| v.trim().to_owned());
    Ok((code, challenge, text))
}

#[test]
fn users_from_flags_and_a_file_with_every_kind_of_secret() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("a.txt"), "inside\n")?;
    let file = site.path().join("users");
    std::fs::write(&file, format!("# the team\nbob:{SHA}\n\ncarol:{PHC}\n"))?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let users = file.to_str().expect("UTF-8 temp path");
    for mode in ["async", "threading"] {
        let server = Server::start(&[
            "http",
            "--listen",
            "tcp://127.0.0.1:0",
            "--dir",
            dir,
            "--mode",
            mode,
            "--auth",
            "alice:wonderland",
            "--auth-file",
            users,
            "--health",
            "/healthz",
        ])?;
        let target = server.url("/a.txt");
        for user in ["alice:wonderland", "bob:password", "carol:s3cret"] {
            let (code, _, text) = curl(&["-u", user], &target)?;
            assert_eq!(code, 200, "{mode} {user}: {text}");
            assert!(text.ends_with("inside\n"), "{mode} {user}: {text}");
        }
        for args in [
            &[][..],
            &["-u", "alice:wrong"],
            &["-u", "mallory:wonderland"],
            &["-u", "carol:"],
        ] {
            let (code, challenge, text) = curl(args, &target)?;
            assert_eq!(code, 401, "{mode} {args:?}: {text}");
            assert_eq!(
                challenge.as_deref(),
                Some(r#"Basic realm="socketserver", charset="UTF-8""#),
                "{mode}: {text}"
            );
            assert!(!text.contains("inside"), "{mode} {args:?}");
        }
        let (code, _, _) = curl(&[], &server.url("/healthz"))?;
        assert_eq!(code, 200, "{mode}: --health needs no password");
        // Each failure is logged with the client's address (the line fail2ban reads); the
        // log is read by a thread of the test, so give it a moment.
        let wanted = [
            "authentication failed from 127.0.0.1 for user \"alice\": wrong user or password",
            "authentication failed from 127.0.0.1: no credentials",
        ];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut log = server.stderr();
        while !wanted.iter().all(|w| log.contains(w)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            log = server.stderr();
        }
        for w in wanted {
            assert!(log.contains(w), "{mode}: {w:?} not in {log}");
        }
    }
    Ok(())
}

#[test]
fn users_come_from_the_environment_too() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("a.txt"), "inside\n")?;
    let server = Server::http_env(
        site.path(),
        &[("SOCKETSERVER_AUTH", "alice:wonderland\nbob:password")],
        "SOCKETSERVER_AUTH",
    )?;
    let target = server.url("/a.txt");
    assert_eq!(curl(&["-u", "bob:password"], &target)?.0, 200);
    assert_eq!(curl(&["-u", "alice:wonderland"], &target)?.0, 200);
    assert_eq!(curl(&[], &target)?.0, 401);
    Ok(())
}

#[test]
fn bad_users_are_usage_errors() -> io::Result<()> {
    let site = tempdir()?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let empty = site.path().join("empty");
    std::fs::write(&empty, "# nobody yet\n")?;
    let broken = site.path().join("broken");
    std::fs::write(&broken, "alice:one\nno-colon-here\n")?;
    let cases: [(&[&str], &[&str]); 7] = [
        (&["--auth", "nopassword"], &["--auth", "nopassword"]),
        (&["--auth", ":pw"], &["--auth", "user name"]),
        (
            &["--auth", "alice:sha256:1234"],
            &["alice", "64 hexadecimal"],
        ),
        (&["--auth", "alice:$argon2id$garbage"], &["alice", "argon2"]),
        (
            &["--auth", "alice:a", "--auth", "alice:b"],
            &["alice", "twice"],
        ),
        (
            &["--auth-file", "/nonexistent/users"],
            &["--auth-file", "/nonexistent/users"],
        ),
        (&["--auth-file", broken.to_str().unwrap_or("")], &["line 2"]),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["http", "--listen", "tcp://127.0.0.1:0", "--dir", dir];
        args.extend_from_slice(extra);
        let out = run(&args)?;
        assert_one_line_error(&out, 2, needles);
    }
    let out = run(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--auth-file",
        empty.to_str().unwrap_or(""),
    ])?;
    assert_one_line_error(&out, 2, &["no users"]);
    Ok(())
}

/// With `--auth` and `--upload`, nothing is written before authentication; with the password
/// the upload goes through (curl `-T`, which waits for `100 Continue`).
#[test]
fn uploads_behind_a_password_write_nothing_for_strangers() -> io::Result<()> {
    let site = tempdir()?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let body = site
        .path()
        .join("..")
        .join(format!("body-{}", std::process::id()));
    std::fs::write(&body, vec![b'x'; 300_000])?;
    let body_path = body.to_str().expect("UTF-8 temp path");
    let server = Server::start(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--upload",
        "--auth",
        "alice:wonderland",
        "--quiet",
    ])?;
    let target = server.url("/up.bin");
    let (code, _, _) = curl(&["-T", body_path], &target)?;
    assert_eq!(code, 401);
    let (code, _, _) = curl(&["-T", body_path, "-u", "alice:nope"], &target)?;
    assert_eq!(code, 401);
    assert_eq!(
        std::fs::read_dir(site.path())?.count(),
        0,
        "nothing written"
    );
    let (code, _, text) = curl(&["-T", body_path, "-u", "alice:wonderland"], &target)?;
    assert!(text.contains("201 Created"), "{code}: {text}");
    assert_eq!(
        std::fs::read(site.path().join("up.bin"))?,
        vec![b'x'; 300_000]
    );
    std::fs::remove_file(&body)?;
    // Bad upload flags are usage errors.
    let out = run(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--max-upload-bytes",
        "-5",
    ])?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    Ok(())
}
