//! Running in production (the contract's section of that name): inherited sockets
//! (`--listen fd:N`, systemd socket activation), readiness and watchdog notifications, and the
//! health check.
//!
//! Socket activation runs under the real `systemd-socket-activate` when the machine has it
//! (`.ci/run` installs it), and is emulated exactly as systemd does it (the socket on fd 3,
//! `LISTEN_PID` the pid that execs the server) with `python3` when that is there; a test whose
//! tool is missing says so and passes.

mod common;

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Addr, Balancer, HttpReply, IO_TIMEOUT, Server, Stream, assert_one_line_error, exchange, run,
    run_command, socketserver, unix_url,
};
use tempfile::tempdir;

/// `systemd-socket-activate`, when this machine has it.
fn socket_activate() -> Option<Command> {
    let found = Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: systemd-socket-activate is not installed (Debian package systemd)");
        return None;
    }
    Some(Command::new("systemd-socket-activate"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_socketserver")
}

/// A path for a socket `systemd-socket-activate` binds (it takes no port 0, and a path in a
/// temporary directory cannot clash with another test).
fn socket_path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path()
        .join(name)
        .to_str()
        .expect("temporary paths are UTF-8")
        .to_string()
}

/// Socket activation as systemd does it: `systemd-socket-activate` binds, and starts the
/// server only when the first client comes. `start` runs in a thread (it returns once the
/// server printed its lines, or exited); once `socket` exists, `first` is that client, on
/// this thread. Returns what both gave.
fn activate<T: Send + 'static, C>(
    socket: &str,
    start: impl FnOnce() -> io::Result<T> + Send + 'static,
    first: impl FnOnce() -> io::Result<C>,
) -> io::Result<(T, C)> {
    let starting = std::thread::spawn(start);
    let deadline = Instant::now() + IO_TIMEOUT;
    while !std::path::Path::new(socket).exists() {
        if Instant::now() > deadline || starting.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = first();
    let started = starting
        .join()
        .map_err(|_| io::Error::other("the starting thread panicked"))??;
    Ok((started, client?))
}

#[test]
fn an_inherited_descriptor_is_served_with_its_real_address() -> io::Result<()> {
    let dir = tempdir()?;
    let Some(mut command) = socket_activate() else {
        return Ok(());
    };
    let stream = socket_path(&dir, "up.sock");
    command.args(["-l", &stream, bin(), "upper", "--listen", "fd:3"]);
    let addr = Addr::Unix(stream.clone().into());
    let (server, first) = activate(
        &stream,
        move || Server::spawn_command(command, 1, "upper --listen fd:3"),
        || exchange(&addr, b"inherited\n", dir.path()),
    )?;
    assert_eq!(first, b"INHERITED");
    assert_eq!(server.addrs, [Addr::Unix(stream.clone().into())]);
    assert_eq!(
        exchange(&server.addrs[0], b"again\n", dir.path())?,
        b"AGAIN"
    );
    // A datagram socket too: the kind is read from the socket.
    let Some(mut command) = socket_activate() else {
        return Ok(());
    };
    let datagram = socket_path(&dir, "up.dgram");
    command.args(["-d", "-l", &datagram, bin(), "upper", "--listen", "fd:3"]);
    let addr = Addr::UnixGram(datagram.clone().into());
    let (server, first) = activate(
        &datagram,
        move || Server::spawn_command(command, 1, "upper --listen fd:3 (datagram)"),
        || exchange(&addr, b"datagram", dir.path()),
    )?;
    assert_eq!(first, b"DATAGRAM");
    assert_eq!(server.addrs, [Addr::UnixGram(datagram.clone().into())]);
    Ok(())
}

#[test]
fn socket_activation_serves_every_passed_socket_and_a_name_picks_its_own() -> io::Result<()> {
    let dir = tempdir()?;
    let web = socket_path(&dir, "web.sock");
    let admin = socket_path(&dir, "admin.sock");
    for (listen, served) in [("systemd", 2), ("systemd:admin", 1)] {
        let Some(mut command) = socket_activate() else {
            return Ok(());
        };
        command.args([
            "-l",
            &web,
            "-l",
            &admin,
            "--fdname=web:admin",
            bin(),
            "echo",
            "--listen",
            listen,
        ]);
        let admin_addr = Addr::Unix(admin.clone().into());
        let what = format!("echo --listen {listen}");
        let (mut server, first) = activate(
            &admin,
            move || Server::spawn_command(command, served, &what),
            || exchange(&admin_addr, b"activated", dir.path()),
        )?;
        assert_eq!(first, b"activated");
        let mut expected = vec![Addr::Unix(admin.clone().into())];
        if served == 2 {
            expected.insert(0, Addr::Unix(web.clone().into()));
        }
        assert_eq!(server.addrs, expected, "{listen}");
        for addr in &server.addrs {
            assert_eq!(
                exchange(addr, b"served", dir.path())?,
                b"served",
                "{listen}"
            );
        }
        server.signal("TERM")?;
        assert!(server.wait_exit(IO_TIMEOUT)?.success());
        for path in [&web, &admin] {
            assert!(
                std::path::Path::new(path).exists(),
                "an inherited Unix socket file is its owner's: not removed at exit"
            );
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

#[test]
fn socket_activation_emulated_as_systemd_does_it() -> io::Result<()> {
    let python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !python {
        eprintln!("skipped: python3 is not installed (it stands in for systemd here)");
        return Ok(());
    }
    // What systemd does: bind and listen, put the socket on fd 3, set LISTEN_PID to the pid
    // that execs the service (exec keeps it), LISTEN_FDS and LISTEN_FDNAMES.
    let script = r#"
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "web"
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let mut command = Command::new("python3");
    command.args(["-c", script, bin(), "threadname", "--listen", "systemd:web"]);
    let server = Server::spawn_command(command, 1, "threadname --listen systemd:web")?;
    let dir = tempdir()?;
    let reply = exchange(&server.addrs[0], b"hi", dir.path())?;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.ends_with(": hi"), "{reply:?}");
    Ok(())
}

#[test]
fn sockets_that_cannot_be_served_are_usage_errors() -> io::Result<()> {
    let closed = run(&["echo", "--listen", "fd:99"])?;
    assert_one_line_error(&closed, 2, &["fd:99", "not open"]);
    // stdin is /dev/null here.
    let not_socket = run(&["echo", "--listen", "fd:0"])?;
    assert_one_line_error(&not_socket, 2, &["fd:0", "not a socket"]);
    let none = run(&["echo", "--listen", "systemd"])?;
    assert_one_line_error(&none, 2, &["systemd", "no sockets were passed"]);
    // LISTEN_PID names another process: those sockets are not ours.
    let mut other_pid = socketserver();
    other_pid
        .args(["echo", "--listen", "systemd"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1");
    assert_one_line_error(&run_command(other_pid)?, 2, &["no sockets were passed"]);
    let Some(mut command) = socket_activate() else {
        return Ok(());
    };
    let dir = tempdir()?;
    let datagram = socket_path(&dir, "http.dgram");
    command.args(["-d", "-l", &datagram, bin(), "http", "--listen", "fd:3"]);
    let path = datagram.clone();
    let (datagram_for_http, ()) = activate(
        &datagram,
        move || run_command(command),
        || {
            let client = UnixDatagram::unbound()?;
            client.send_to(b"wake up", &path)?;
            Ok(())
        },
    )?;
    assert_eq!(
        datagram_for_http.status.code(),
        Some(2),
        "{datagram_for_http:?}"
    );
    assert!(
        datagram_for_http.stderr.contains("stream listeners"),
        "{datagram_for_http:?}"
    );
    Ok(())
}

/// The messages a server sent to our `NOTIFY_SOCKET`, as they arrive.
fn next_message(socket: &UnixDatagram) -> io::Result<String> {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A service manager's notification socket in `dir`: its path (the `NOTIFY_SOCKET` to give)
/// and the socket, whose reads wait at most `wait`.
fn service_manager(
    dir: &tempfile::TempDir,
    wait: Duration,
) -> io::Result<(std::path::PathBuf, UnixDatagram)> {
    let path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path)?;
    manager.set_read_timeout(Some(wait))?;
    Ok((path, manager))
}

/// Signals SIGTERM and checks the next message, past pings already on their way, is
/// `STOPPING=1`.
fn stop_says_stopping(server: &Server, manager: &UnixDatagram) -> io::Result<()> {
    server.signal("TERM")?;
    let mut message = next_message(manager)?;
    while message == "WATCHDOG=1\n" {
        message = next_message(manager)?;
    }
    assert_eq!(message, "STOPPING=1\n");
    Ok(())
}

#[test]
fn readiness_watchdog_and_stopping_reach_the_service_manager() -> io::Result<()> {
    let dir = tempdir()?;
    let (path, manager) = service_manager(&dir, IO_TIMEOUT)?;
    let mut command = socketserver();
    command
        .args(["echo", "--listen", "tcp://127.0.0.1:0", "--mode", "async"])
        .env("NOTIFY_SOCKET", &path)
        // 300 ms: a ping every 150 ms.
        .env("WATCHDOG_USEC", "300000");
    let mut server = Server::spawn_command(command, 1, "echo with NOTIFY_SOCKET")?;
    assert_eq!(next_message(&manager)?, "READY=1\n");
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        assert_eq!(next_message(&manager)?, "WATCHDOG=1\n");
        pings += 1;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "3 pings at 150 ms intervals came in {took:?}"
    );
    stop_says_stopping(&server, &manager)?;
    assert!(server.wait_exit(IO_TIMEOUT)?.success());
    Ok(())
}

#[test]
fn without_a_watchdog_only_ready_and_stopping_are_sent() -> io::Result<()> {
    let dir = tempdir()?;
    let (path, manager) = service_manager(&dir, Duration::from_millis(500))?;
    let mut command = socketserver();
    command
        .args([
            "upper",
            "--listen",
            "tcp://127.0.0.1:0",
            "--mode",
            "threading",
        ])
        .env("NOTIFY_SOCKET", &path);
    let mut server = Server::spawn_command(command, 1, "upper with NOTIFY_SOCKET")?;
    assert_eq!(next_message(&manager)?, "READY=1\n");
    let quiet = next_message(&manager);
    assert!(
        quiet.as_ref().is_err_and(common::is_timeout),
        "nothing more without WATCHDOG_USEC: {quiet:?}"
    );
    server.signal("INT")?;
    assert_eq!(next_message(&manager)?, "STOPPING=1\n");
    assert!(server.wait_exit(IO_TIMEOUT)?.success());
    Ok(())
}

/// Sends `request` on `conn` and reads one response.
fn ask(conn: &mut Stream, request: &str, head_only: bool) -> io::Result<HttpReply> {
    conn.write_all(request.as_bytes())?;
    common::read_reply(&mut io::BufReader::new(&mut *conn), head_only)
}

#[test]
fn the_health_check_answers_ok_while_serving_and_503_once_stopping() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("index.html"), "<p>home</p>")?;
    let socket_dir = tempdir()?;
    let unix = socket_dir.path().join("h.sock");
    for mode in ["async", "threading", "pool", "fork"] {
        let unix_arg = unix_url(&unix);
        let dir = site.path().to_str().expect("UTF-8 temp path");
        let mut server = Server::start(&[
            "http", "--listen", &unix_arg, "--dir", dir, "--mode", mode, "--health", "/healthz",
            "--quiet",
        ])?;
        let addr = &server.addrs[0];
        let mut conn = Stream::connect(addr)?;
        let ok = ask(&mut conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", false)?;
        assert_eq!((ok.status, ok.text().as_str()), (200, "ok\n"), "{mode}");
        assert_eq!(ok.header("Cache-Control"), Some("no-store"), "{mode}");
        let head = ask(
            &mut conn,
            "HEAD /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            true,
        )?;
        assert_eq!(head.status, 200, "{mode}: a query does not change the path");
        let home = ask(&mut conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false)?;
        assert_eq!(
            (home.status, home.text().as_str()),
            (200, "<p>home</p>"),
            "{mode}"
        );
        // A request begun before the stop is answered after it: 503, and the connection ends.
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")?;
        std::thread::sleep(Duration::from_millis(100));
        server.signal("TERM")?;
        std::thread::sleep(Duration::from_millis(200));
        let stopping = ask(&mut conn, "\r\n", false)?;
        assert_eq!(stopping.status, 503, "{mode}: {stopping:?}");
        assert_eq!(stopping.header("Connection"), Some("close"), "{mode}");
        assert!(server.wait_exit(IO_TIMEOUT)?.success(), "{mode}");
    }
    Ok(())
}

#[test]
fn sighup_without_several_processes_is_logged_and_ignored() -> io::Result<()> {
    let dir = tempdir()?;
    for mode in ["threading", "async", "fork"] {
        let mut server =
            Server::start(&["upper", "--listen", "tcp://127.0.0.1:0", "--mode", mode])?;
        server.signal("HUP")?;
        server.wait_stderr(IO_TIMEOUT, |err| err.contains("SIGHUP ignored"))?;
        assert_eq!(
            exchange(&server.addrs[0], b"still here\n", dir.path())?,
            b"STILL HERE"
        );
        server.signal("TERM")?;
        assert!(server.wait_exit(IO_TIMEOUT)?.success(), "{mode}");
    }
    Ok(())
}

/// A v2 PROXY header (PROXY command, TCP over IPv4) naming `source` as the client.
fn proxy_v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    out.extend_from_slice(&source);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&8000u16.to_be_bytes());
    out
}

#[test]
fn behind_a_proxy_header_the_access_log_shows_the_client_in_every_mode() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("index.html"), "<p>home</p>")?;
    let socket_dir = tempdir()?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    for mode in ["async", "pool", "threading", "fork", "sync"] {
        for unix in [false, true] {
            let listen = if unix {
                unix_url(&socket_dir.path().join("p.sock"))
            } else {
                "tcp://127.0.0.1:0".to_string()
            };
            let mut server = Server::start(&[
                "http",
                "--listen",
                &listen,
                "--dir",
                dir,
                "--mode",
                mode,
                "--proxy-protocol",
                "--timeout",
                "2",
            ])?;
            let what = format!("{mode} {listen}");
            let addr = server.addrs[0].clone();
            // v1, then v2 on the next connection, each with a keep-alive request after it.
            let mut conn = Stream::connect(&addr)?;
            conn.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8000\r\n")?;
            let reply = ask(&mut conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false)?;
            assert_eq!(
                (reply.status, reply.text().as_str()),
                (200, "<p>home</p>"),
                "{what}"
            );
            drop(conn);
            let mut conn = Stream::connect(&addr)?;
            let mut request = proxy_v2([198, 51, 100, 20], 60001);
            request.extend_from_slice(
                b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            let reply = common::send_all_and_read_to_eof(&mut conn, &request)?;
            assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"), "{what}");
            // Plain HTTP where a header must come: closed without an answer, logged.
            let mut conn = Stream::connect(&addr)?;
            let reply =
                common::send_all_and_read_to_eof(&mut conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
            assert!(
                reply.is_empty(),
                "{what}: {:?}",
                String::from_utf8_lossy(&reply)
            );
            server.wait_stderr(IO_TIMEOUT, |err| {
                err.contains("203.0.113.7 - - [")
                    && err.contains("198.51.100.20 - - [")
                    && err.contains("no valid PROXY protocol header")
            })?;
            server.signal("TERM")?;
            assert!(server.wait_exit(IO_TIMEOUT)?.success(), "{what}");
            let log = server.stderr();
            assert!(
                !log.contains("127.0.0.1 - - ["),
                "{what}: the balancer's address in\n{log}"
            );
        }
    }
    Ok(())
}

/// HAProxy in front, as operators run it: TCP mode, `send-proxy-v2` to the server. The client
/// connects from 127.0.0.2 (all of 127/8 is loopback), HAProxy to the server from 127.0.0.1:
/// the access log must show the client's.
#[test]
fn haproxy_with_send_proxy_v2_in_front_shows_the_client_in_the_access_log() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("a.txt"), "through the balancer\n")?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let mut server = Server::start(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--proxy-protocol",
    ])?;
    let Addr::Tcp(backend) = server.addrs[0].clone() else {
        return Err(common::other("expected a TCP listener"));
    };
    let Some(balancer) = Balancer::start(backend)? else {
        return Ok(());
    };
    let url = format!("http://{}/a.txt", balancer.front);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--interface", "127.0.0.2", &url])
        .output()?;
    assert_eq!(out.stdout, b"through the balancer\n", "{out:?}");
    server.wait_stderr(IO_TIMEOUT, |err| {
        err.contains("127.0.0.2 - - [") && err.contains("\"GET /a.txt HTTP/1.1\" 200")
    })?;
    assert!(
        !server.stderr().contains("127.0.0.1 - - ["),
        "{}",
        server.stderr()
    );
    drop(balancer);
    server.signal("TERM")?;
    assert!(server.wait_exit(IO_TIMEOUT)?.success());
    Ok(())
}

/// The contrib unit's shape: socket activation, `--processes`, a reload by SIGHUP. The
/// supervisor takes systemd's socket and hands it to its workers.
#[test]
fn socket_activation_with_several_processes_and_a_reload() -> io::Result<()> {
    let Some(mut command) = socket_activate() else {
        return Ok(());
    };
    let dir = tempdir()?;
    let web = socket_path(&dir, "web.sock");
    command.args([
        "-l",
        &web,
        "--fdname=web",
        bin(),
        "echo",
        "--listen",
        "systemd:web",
        "--processes",
        "2",
    ]);
    let addr = Addr::Unix(web.clone().into());
    let (mut server, first) = activate(
        &web,
        move || Server::spawn_command(command, 1, "echo --listen systemd:web --processes 2"),
        || exchange(&addr, b"activated", dir.path()),
    )?;
    assert_eq!(first, b"activated");
    server.signal("HUP")?;
    server.wait_stderr(IO_TIMEOUT, |e| e.contains("restart finished"))?;
    assert_eq!(
        exchange(&server.addrs[0], b"reloaded", dir.path())?,
        b"reloaded"
    );
    server.signal("TERM")?;
    assert!(server.wait_exit(IO_TIMEOUT)?.success());
    assert!(
        std::path::Path::new(&web).exists(),
        "systemd's socket file is left alone"
    );
    Ok(())
}

/// With `--processes`, the supervisor speaks for its workers (the unit's main process is
/// the only one systemd listens to): READY once both are ready, watchdog pings while their
/// loops turn, STOPPING on SIGTERM.
#[test]
fn with_several_processes_the_supervisor_notifies_for_its_workers() -> io::Result<()> {
    let dir = tempdir()?;
    let (path, manager) = service_manager(&dir, IO_TIMEOUT)?;
    let mut command = socketserver();
    command
        .args(["echo", "--listen", "tcp://127.0.0.1:0", "--processes", "2"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000");
    let mut server = Server::spawn_command(command, 1, "echo --processes 2 with NOTIFY_SOCKET")?;
    assert_eq!(next_message(&manager)?, "READY=1\n");
    for _ in 0..3 {
        assert_eq!(next_message(&manager)?, "WATCHDOG=1\n");
    }
    stop_says_stopping(&server, &manager)?;
    assert!(server.wait_exit(IO_TIMEOUT)?.success());
    Ok(())
}
