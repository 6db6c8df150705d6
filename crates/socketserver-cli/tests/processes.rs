//! `--processes N` (the contract's "Running in production"): a supervisor that binds once and
//! runs N workers (fresh starts of the binary, the listeners inherited), replaces the ones
//! that die, stops them all on SIGTERM, and restarts them on SIGHUP without refusing,
//! resetting or failing one request, from the binary on disk (a broken one aborts the restart).

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use common::{Addr, IO_TIMEOUT, Server, Stream};
use tempfile::tempdir;

/// The supervisor's children (its workers), read from /proc.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits until `pid` has exactly `n` children and returns them.
fn wait_children(pid: u32, n: usize, differ_from: &[u32]) -> io::Result<Vec<u32>> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let now = children(pid);
        if now.len() == n && now.iter().all(|c| !differ_from.contains(c)) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            return Err(common::other(format!(
                "{pid} has children {now:?}, expected {n} new ones"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn upper(addr: &Addr, line: &[u8]) -> io::Result<Vec<u8>> {
    let mut conn = Stream::connect(addr)?;
    conn.write_all(line)?;
    conn.read_all()
}

#[test]
fn workers_share_the_listeners_a_dead_one_is_replaced_and_sigterm_stops_all() -> io::Result<()> {
    // Sync workers serve one connection at a time: a second connection served while the first
    // is held shows that another worker took it.
    let mut server = Server::start(&[
        "upper",
        "--listen",
        "tcp://127.0.0.1:0",
        "--processes",
        "2",
        "--mode",
        "sync",
    ])?;
    let sup = server.pid();
    let workers = wait_children(sup, 2, &[])?;
    let addr = server.addrs[0].clone();
    server.wait_stderr(IO_TIMEOUT, |e| e.matches("started").count() >= 2)?;
    let mut held = Stream::connect(&addr)?;
    held.write_all(b"held ")?; // no newline yet: its worker waits for the rest
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        upper(&addr, b"other\n")?,
        b"OTHER",
        "the other worker serves"
    );
    held.write_all(b"line\n")?;
    assert_eq!(held.read_all()?, b"HELD LINE");

    // A worker killed is replaced, and the service goes on.
    let killed = workers[0];
    nix_kill(killed, "KILL")?;
    let now = wait_children(sup, 2, &[killed])?;
    assert!(now.contains(&workers[1]));
    server.wait_stderr(IO_TIMEOUT, |e| e.contains("unexpectedly; starting another"))?;
    for _ in 0..4 {
        assert_eq!(upper(&addr, b"again\n")?, b"AGAIN");
    }

    server.signal("TERM")?;
    assert!(server.wait_exit(IO_TIMEOUT)?.success());
    for pid in now {
        assert!(!alive(pid), "worker {pid} outlived the supervisor");
    }
    assert!(
        server.rest_of_stdout().is_empty(),
        "the lines are printed once"
    );
    Ok(())
}

#[test]
fn workers_do_not_outlive_a_supervisor_killed_outright() -> io::Result<()> {
    let server = Server::start(&["echo", "--listen", "tcp://127.0.0.1:0", "--processes", "2"])?;
    let workers = wait_children(server.pid(), 2, &[])?;
    drop(server); // SIGKILL, then reaped
    let deadline = Instant::now() + IO_TIMEOUT;
    while workers.iter().any(|&w| alive(w)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    for w in workers {
        assert!(!alive(w), "worker {w} outlived its supervisor");
    }
    Ok(())
}

fn nix_kill(pid: u32, signal: &str) -> io::Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(common::other(format!("kill -{signal} {pid} failed")))
    }
}

/// A load client: runs until told to stop, counting into its tally.
type Client = fn(Addr, Arc<AtomicBool>, Arc<Tally>);

/// Load through restarts: what each client kind did.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    /// Keep-alive connections an old worker closed between requests, retried on a new
    /// connection as HTTP clients do (the request had not been answered, nor begun for the
    /// server).
    retried: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(what);
        }
    }
}

const BODY: &[u8] = b"0123456789abcdef-the-body-of-the-file\n";

/// A keep-alive HTTP client: GET after GET on one connection; a connection closed before any
/// byte of the answer is retried on a new one, once.
fn keep_alive_client(addr: Addr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut conn: Option<BufReader<Stream>> = None;
    while !stop.load(SeqCst) {
        let reused = conn.is_some();
        let reader = match conn.as_mut() {
            Some(r) => r,
            None => match Stream::connect(&addr) {
                Ok(s) => conn.insert(BufReader::new(s)),
                Err(e) => {
                    tally.fail(format!("keep-alive connect: {e}"));
                    return;
                }
            },
        };
        match http_get(reader) {
            Ok(true) => {
                tally.requests.fetch_add(1, SeqCst);
            }
            Ok(false) => {
                tally.requests.fetch_add(1, SeqCst);
                conn = None; // `Connection: close`: the server is draining
            }
            Err((answered, e)) if reused && !answered => {
                let _ = e;
                tally.retried.fetch_add(1, SeqCst);
                conn = None;
            }
            Err((_, e)) => {
                tally.fail(format!("keep-alive GET: {e}"));
                conn = None;
            }
        }
    }
}

/// One GET of /file.txt; `Ok(keep)`; on failure, whether any byte of the answer came.
fn http_get(reader: &mut BufReader<Stream>) -> Result<bool, (bool, io::Error)> {
    let sent = reader
        .get_mut()
        .write_all(b"GET /file.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    if let Err(e) = sent {
        return Err((false, e));
    }
    let mut status = String::new();
    match reader.read_line(&mut status) {
        Ok(0) => return Err((false, common::other("closed before the answer"))),
        Ok(_) => {}
        Err(e) => return Err((false, e)),
    }
    let fail = |e: io::Error| (true, e);
    if status != "HTTP/1.1 200 OK\r\n" {
        return Err(fail(common::other(format!("status line {status:?}"))));
    }
    let mut keep = true;
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(fail)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower == "connection: close" {
            keep = false;
        }
        if let Some(n) = lower.strip_prefix("content-length: ") {
            length = n.parse::<usize>().ok();
        }
    }
    let mut body = vec![0u8; length.unwrap_or(0)];
    reader.read_exact(&mut body).map_err(fail)?;
    if body != BODY {
        return Err(fail(common::other("the body differs")));
    }
    Ok(keep)
}

/// Connect, one GET with `Connection: close`, read to the end: every time a new connection.
fn per_request_client(addr: Addr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(SeqCst) {
        let outcome = (|| -> io::Result<Vec<u8>> {
            let mut conn = Stream::connect(&addr)?;
            conn.write_all(b"GET /file.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
            conn.read_all()
        })();
        match outcome {
            Ok(reply) if reply.starts_with(b"HTTP/1.1 200 OK\r\n") && reply.ends_with(BODY) => {
                tally.requests.fetch_add(1, SeqCst);
            }
            Ok(reply) => tally.fail(format!(
                "per-request GET: {:?}",
                String::from_utf8_lossy(&reply[..reply.len().min(80)])
            )),
            Err(e) => tally.fail(format!("per-request GET: {e}")),
        }
    }
}

/// Echo: connect, 4 KiB of a pattern, read it all back, close.
fn echo_client(addr: Addr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    while !stop.load(SeqCst) {
        let outcome = Stream::connect(&addr)
            .map_err(|e| io::Error::new(e.kind(), format!("connect: {e}")))
            .and_then(|mut conn| {
                common::send_all_and_read_to_eof(&mut conn, &data)
                    .map_err(|e| io::Error::new(e.kind(), format!("exchange: {e}")))
            });
        match outcome {
            Ok(back) if back == data => {
                tally.requests.fetch_add(1, SeqCst);
            }
            Ok(back) => tally.fail(format!("echo: {} bytes back of {}", back.len(), data.len())),
            Err(e) => tally.fail(format!("echo: {e}")),
        }
    }
}

/// Copies the binary to `dir`, so the test can replace it on disk as a rebuild would.
fn own_binary(dir: &Path) -> io::Result<PathBuf> {
    let copy = dir.join("socketserver");
    std::fs::copy(env!("CARGO_BIN_EXE_socketserver"), &copy)?;
    Ok(copy)
}

/// Starts the copy at `bin`. Another test thread forking while the copy was being written
/// holds a write descriptor to it until its own exec, and exec then fails with `ETXTBSY`
/// for a moment: try again then.
fn start_copy(bin: &Path, args: &[&str]) -> io::Result<Server> {
    let mut tries = 0;
    loop {
        let mut command = std::process::Command::new(bin);
        command.args(args);
        match Server::spawn_command(command, 1, &format!("{args:?}")) {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Replaces `path` with `contents` (a new file renamed over it, as `cargo build` or a package
/// upgrade does), executable.
fn replace_binary(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let staged = path.with_extension("new");
    std::fs::write(&staged, contents)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&staged, path)
}

/// SIGHUP, then waits for the restart to finish (`restarts` done in all), for the old workers
/// to be gone and `n` new ones to serve.
fn restart(server: &Server, restarts: usize, old: &[u32], n: usize) -> io::Result<Vec<u32>> {
    server.signal("HUP")?;
    server.wait_stderr(Duration::from_secs(20), |e| {
        e.matches("restart: new workers").count() >= restarts
    })?;
    wait_children(server.pid(), n, old)
}

#[test]
fn a_restart_under_load_loses_nothing_and_a_broken_binary_aborts_it() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("file.txt"), BODY)?;
    let bin_dir = tempdir()?;
    let bin = own_binary(bin_dir.path())?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let start = |args: &[&str]| start_copy(&bin, args);
    let mut http = start(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--processes",
        "2",
        "--workers",
        "1",
    ])?;
    let mut echo = start(&[
        "echo",
        "--listen",
        "tcp://127.0.0.1:0",
        "--processes",
        "2",
        "--mode",
        "async",
        "--workers",
        "1",
    ])?;
    let http_sup = http.pid();
    let echo_sup = echo.pid();
    let first_http = wait_children(http_sup, 2, &[])?;
    let first_echo = wait_children(echo_sup, 2, &[])?;

    let stop = Arc::new(AtomicBool::new(false));
    let kinds: [(&str, Addr, Client); 3] = [
        ("keep-alive", http.addrs[0].clone(), keep_alive_client),
        ("per-request", http.addrs[0].clone(), per_request_client),
        ("echo", echo.addrs[0].clone(), echo_client),
    ];
    let mut clients = Vec::new();
    let mut tallies = Vec::new();
    for (name, addr, client) in kinds {
        for _ in 0..2 {
            let tally = Arc::new(Tally::default());
            tallies.push((name, Arc::clone(&tally)));
            let stop = Arc::clone(&stop);
            let addr = addr.clone();
            clients.push(thread::spawn(move || client(addr, stop, tally)));
        }
    }
    let began = Instant::now();
    thread::sleep(Duration::from_millis(500));
    let second_http = restart(&http, 1, &first_http, 2)?;
    let second_echo = restart(&echo, 1, &first_echo, 2)?;
    thread::sleep(Duration::from_millis(300));
    // A rebuilt binary (a new file at the same path) is what the next restart starts.
    replace_binary(&bin, &std::fs::read(env!("CARGO_BIN_EXE_socketserver"))?)?;
    let third_http = restart(&http, 2, &second_http, 2)?;
    let third_echo = restart(&echo, 2, &second_echo, 2)?;
    thread::sleep(Duration::from_millis(300));

    // A broken binary on disk: the restart is aborted, the workers serving go on.
    replace_binary(&bin, b"#!/bin/sh\necho broken >&2\nexit 3\n")?;
    http.signal("HUP")?;
    http.wait_stderr(IO_TIMEOUT, |e| e.contains("restart aborted"))?;
    thread::sleep(Duration::from_millis(300));
    assert_eq!(children(http_sup), third_http, "the old workers go on");
    stop.store(true, SeqCst);
    for client in clients {
        client
            .join()
            .map_err(|_| common::other("a client panicked"))?;
    }
    let took = began.elapsed();

    let mut report = Vec::new();
    for (name, tally) in &tallies {
        let errors = tally.errors.lock().unwrap();
        report.push(format!(
            "{name}: {} requests, {} retried, errors {:?}",
            tally.requests.load(SeqCst),
            tally.retried.load(SeqCst),
            *errors
        ));
    }
    eprintln!("restart under load, {took:?}:\n{}", report.join("\n"));
    for server in [&http, &echo] {
        for line in server
            .stderr()
            .lines()
            .filter(|l| l.contains("restart finished"))
        {
            eprintln!("{line}");
        }
    }
    for (name, tally) in &tallies {
        assert!(
            tally.errors.lock().unwrap().is_empty(),
            "{name}: {}",
            report.join("\n")
        );
        assert!(
            tally.requests.load(SeqCst) > 10,
            "{name}: {}",
            report.join("\n")
        );
    }
    for pid in third_http.iter().chain(&third_echo) {
        assert!(
            !first_http.contains(pid) && !second_http.contains(pid),
            "every worker pid is new"
        );
    }
    assert_eq!((http.pid(), echo.pid()), (http_sup, echo_sup));
    for server in [&mut http, &mut echo] {
        server.signal("TERM")?;
        assert!(server.wait_exit(IO_TIMEOUT)?.success());
    }
    Ok(())
}

/// The same through a real HAProxy (`send-proxy-v2`, so `--proxy-protocol`): HAProxy keeps
/// no pool of its own in TCP mode, so every client connection is one to a worker, and a
/// restart must lose none of them.
#[test]
fn a_restart_under_load_through_haproxy_loses_nothing() -> io::Result<()> {
    let site = tempdir()?;
    std::fs::write(site.path().join("file.txt"), BODY)?;
    let dir = site.path().to_str().expect("UTF-8 temp path");
    let http = Server::start(&[
        "http",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        dir,
        "--processes",
        "2",
        "--workers",
        "1",
        "--proxy-protocol",
    ])?;
    let Addr::Tcp(backend) = http.addrs[0].clone() else {
        return Err(common::other("expected a TCP listener"));
    };
    let Some(balancer) = common::Balancer::start(backend)? else {
        return Ok(());
    };
    let first = wait_children(http.pid(), 2, &[])?;
    let front = Addr::Tcp(balancer.front);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    let mut tallies = Vec::new();
    for (name, client) in [
        ("keep-alive", keep_alive_client as Client),
        ("per-request", per_request_client as Client),
    ] {
        let tally = Arc::new(Tally::default());
        tallies.push((name, Arc::clone(&tally)));
        let (stop, front) = (Arc::clone(&stop), front.clone());
        clients.push(thread::spawn(move || client(front, stop, tally)));
    }
    thread::sleep(Duration::from_millis(300));
    let second = restart(&http, 1, &first, 2)?;
    thread::sleep(Duration::from_millis(300));
    restart(&http, 2, &second, 2)?;
    thread::sleep(Duration::from_millis(300));
    stop.store(true, SeqCst);
    for client in clients {
        client
            .join()
            .map_err(|_| common::other("a client panicked"))?;
    }
    for (name, tally) in &tallies {
        let errors = tally.errors.lock().unwrap();
        let requests = tally.requests.load(SeqCst);
        eprintln!(
            "through haproxy, {name}: {requests} requests, {} retried, errors {:?}",
            tally.retried.load(SeqCst),
            *errors
        );
        assert!(errors.is_empty() && requests > 10, "{name}: {:?}", *errors);
    }
    // The access log names the client (here 127.0.0.1 too), never a missing header.
    assert!(
        !http.stderr().contains("PROXY protocol header"),
        "{}",
        http.stderr()
    );
    Ok(())
}

/// How many established TCP connections on local `port` process `pid` holds (from
/// /proc/net/tcp and the process's descriptors).
fn connections_held(pid: u32, port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && f.get(3) == Some(&"01"))
                .then(|| f.get(9).map(|i| i.to_string()))?
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| {
                    let t = t.to_string_lossy();
                    inodes.iter().any(|i| t == format!("socket:[{i}]"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// A socket per worker (`SO_REUSEPORT`): the kernel spreads new connections over the
/// workers, even when one of them could take them all.
#[test]
fn connections_are_spread_over_the_workers() -> io::Result<()> {
    let server = Server::start(&[
        "echo",
        "--listen",
        "tcp://127.0.0.1:0",
        "--processes",
        "2",
        "--mode",
        "async",
        "--workers",
        "1",
    ])?;
    let workers = wait_children(server.pid(), 2, &[])?;
    server.wait_stderr(IO_TIMEOUT, |e| e.matches("started").count() >= 2)?;
    let Addr::Tcp(addr) = server.addrs[0] else {
        return Err(common::other("expected a TCP listener"));
    };
    let held: Vec<Stream> = (0..20)
        .map(|_| Stream::connect(&server.addrs[0]))
        .collect::<io::Result<_>>()?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let taken = loop {
        let taken: Vec<usize> = workers
            .iter()
            .map(|&w| connections_held(w, addr.port()))
            .collect();
        if taken.iter().sum::<usize>() >= 20 || Instant::now() > deadline {
            break taken;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(taken.iter().sum::<usize>(), 20, "{taken:?}");
    assert!(
        taken.iter().all(|&n| n >= 2),
        "both workers take connections: {taken:?}"
    );
    drop(held);
    Ok(())
}

/// The process group of `pid` (from /proc/PID/stat).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Ctrl-C in a terminal signals the whole foreground process group: the workers have groups
/// of their own, so they hear it once, from the supervisor, and drain instead of stopping at
/// once (as a second signal would make them).
#[test]
fn ctrl_c_in_a_terminal_drains_the_workers_gracefully() -> io::Result<()> {
    let mut server = Server::start_in_own_group(&[
        "upper",
        "--listen",
        "tcp://127.0.0.1:0",
        "--processes",
        "2",
    ])?;
    let workers = wait_children(server.pid(), 2, &[])?;
    server.wait_stderr(IO_TIMEOUT, |e| e.matches("started").count() >= 2)?;
    for &w in &workers {
        assert_eq!(
            process_group(w),
            Some(w),
            "worker {w} leads a group of its own"
        );
    }
    // A request in flight: half a line sent.
    let mut conn = Stream::connect(&server.addrs[0])?;
    conn.write_all(b"in ")?;
    thread::sleep(Duration::from_millis(100));
    server.signal_group("INT")?;
    server.wait_stderr(IO_TIMEOUT, |e| {
        e.contains("stopping every worker gracefully")
    })?;
    thread::sleep(Duration::from_millis(200));
    conn.write_all(b"flight\n")?;
    assert_eq!(
        conn.read_all()?,
        b"IN FLIGHT",
        "the request in flight is answered"
    );
    assert!(server.wait_exit(IO_TIMEOUT)?.success());
    for w in workers {
        assert!(!alive(w), "worker {w} is gone");
    }
    Ok(())
}

/// A new binary that starts but never says it is ready (here: one that only sleeps) aborts
/// the restart after 10 s; the old workers serve throughout and after.
#[test]
fn a_new_binary_never_ready_aborts_the_restart_after_ten_seconds() -> io::Result<()> {
    let bin_dir = tempdir()?;
    let bin = own_binary(bin_dir.path())?;
    let server = start_copy(
        &bin,
        &["upper", "--listen", "tcp://127.0.0.1:0", "--processes", "2"],
    )?;
    let workers = wait_children(server.pid(), 2, &[])?;
    server.wait_stderr(IO_TIMEOUT, |e| e.matches("started").count() >= 2)?;
    replace_binary(&bin, b"#!/bin/sh\nexec sleep 60\n")?;
    let asked = Instant::now();
    server.signal("HUP")?;
    // Served all along.
    while !server.stderr().contains("restart aborted") && asked.elapsed() < Duration::from_secs(20)
    {
        assert_eq!(upper(&server.addrs[0], b"still\n")?, b"STILL");
        thread::sleep(Duration::from_millis(200));
    }
    let took = asked.elapsed();
    assert!(
        server.stderr().contains("not all ready within 10 s"),
        "{}",
        server.stderr()
    );
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // The sleeping ones are stopped; the old workers go on.
    assert_eq!(wait_children(server.pid(), 2, &[])?, workers);
    assert_eq!(upper(&server.addrs[0], b"after\n")?, b"AFTER");
    Ok(())
}
