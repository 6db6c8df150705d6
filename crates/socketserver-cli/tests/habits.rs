//! Python's habits (`socketserver http 8080`, `--bind`, `-d/--directory`) and every long
//! option from the environment as `SOCKETSERVER_*`, the command line winning (the contract's
//! "http: content" section).

mod common;

use std::io::{self, BufReader, Write};
use std::process::Command;

use common::{Addr, Server, Stream, assert_one_line_error, run_command, socketserver};
use tempfile::tempdir;

/// A TCP port free a moment ago (the positional PORT takes no 0 to mean "any": it is what
/// people type).
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn get(addr: &Addr, path: &str) -> io::Result<common::HttpReply> {
    let mut conn = Stream::connect(addr)?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    common::read_reply(&mut BufReader::new(&mut conn), false)
}

/// `socketserver` with `env` set (and nothing else of ours inherited).
fn with_env(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = socketserver();
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

#[test]
fn a_port_bind_and_directory_as_python_takes_them() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("hi.txt"), "hi\n")?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    for flag in ["-d", "--directory", "--dir"] {
        let port = free_port()?;
        let server = Server::start(&["http", &port.to_string(), "--bind", "127.0.0.1", flag, dir])?;
        assert_eq!(
            server.addrs,
            vec![Addr::Tcp(format!("127.0.0.1:{port}").parse().unwrap())],
            "{flag}"
        );
        let reply = get(&server.addrs[0], "/hi.txt")?;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "hi\n"),
            "{flag}"
        );
    }
    // The port alone: on 127.0.0.1, as the default address has always been.
    let port = free_port()?;
    let server = Server::start(&["echo", &port.to_string()])?;
    assert_eq!(
        server.addrs,
        vec![Addr::Tcp(format!("127.0.0.1:{port}").parse().unwrap())]
    );
    Ok(())
}

#[test]
fn a_port_or_bind_with_listen_is_a_usage_error() -> io::Result<()> {
    for args in [
        &["http", "8080", "--listen", "tcp://127.0.0.1:0"][..],
        &["http", "--bind", "0.0.0.0", "--listen", "tcp://127.0.0.1:0"],
    ] {
        let out = run_command(with_env(args, &[]))?;
        assert_one_line_error(&out, 2, &["PORT or --bind together with --listen"]);
    }
    let out = run_command(with_env(&["http", "99999"], &[]))?;
    assert_one_line_error(&out, 2, &["99999"]);
    Ok(())
}

#[test]
fn every_long_option_comes_from_the_environment_and_the_command_line_wins() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("env.txt"), "from the environment\n")?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    // Two listeners from one variable, the directory, quiet and the mode from others.
    let command = with_env(
        &["http"],
        &[
            (
                "SOCKETSERVER_LISTEN",
                "tcp://127.0.0.1:0, tcp://127.0.0.1:0",
            ),
            ("SOCKETSERVER_DIR", dir),
            ("SOCKETSERVER_QUIET", "1"),
            ("SOCKETSERVER_MODE", "sync"),
        ],
    );
    let server = Server::spawn_command(command, 2, "http from the environment")?;
    for addr in &server.addrs {
        let reply = get(addr, "/env.txt")?;
        assert_eq!(reply.text(), "from the environment\n");
    }
    // Sync mode (from the environment) ends each connection after its answer, and says so.
    let mut conn = Stream::connect(&server.addrs[0])?;
    conn.write_all(b"GET /env.txt HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let reply = common::read_reply(&mut BufReader::new(&mut conn), false)?;
    assert_eq!(reply.header("Connection"), Some("close"), "sync mode");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(server.stderr(), "", "SOCKETSERVER_QUIET=1: nothing logged");
    drop(server);

    // The command line wins over the environment.
    let command = with_env(
        &[
            "http",
            "--listen",
            "tcp://127.0.0.1:0",
            "--mode",
            "threading",
            "--quiet",
        ],
        &[
            ("SOCKETSERVER_MODE", "sync"),
            ("SOCKETSERVER_QUIET", "false"),
            ("SOCKETSERVER_DIR", dir),
        ],
    );
    let server = Server::spawn_command(command, 1, "http, flags over the environment")?;
    assert_eq!(get(&server.addrs[0], "/env.txt")?.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !server.stderr().contains("GET /env.txt"),
        "--quiet wins over SOCKETSERVER_QUIET=false"
    );
    drop(server);
    let command = with_env(
        &[
            "http",
            "--listen",
            "tcp://127.0.0.1:0",
            "--mode",
            "threading",
        ],
        &[("SOCKETSERVER_MODE", "sync"), ("SOCKETSERVER_DIR", dir)],
    );
    let server = Server::spawn_command(command, 1, "http, --mode over the environment")?;
    assert_eq!(get(&server.addrs[0], "/env.txt")?.status, 200);
    let log = server.wait_stderr(common::IO_TIMEOUT, |e| e.contains("GET /env.txt"))?;
    assert!(log.contains("threading mode"), "{log}");

    // Bad values there are usage errors, as on the command line.
    for (name, value, says) in [
        ("SOCKETSERVER_QUIET", "maybe", "maybe"),
        ("SOCKETSERVER_TIMEOUT", "-1", "must not be negative"),
        ("SOCKETSERVER_MODE", "fast", "fast"),
        ("SOCKETSERVER_LISTEN", "tcp://nowhere", "tcp://nowhere"),
    ] {
        let out = run_command(with_env(&["echo"], &[(name, value)]))?;
        assert_one_line_error(&out, 2, &[says]);
    }
    Ok(())
}
