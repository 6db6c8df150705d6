//! Helpers for the `socketserver` binary's integration tests: a guard that owns a running
//! server (and kills it whatever happens), clients for the four transports, and a runner for
//! invocations that are expected to exit on their own.
//!
//! Readiness is learnt from the `listening on URL` lines the server prints once every listener
//! is bound; nothing here sleeps to wait for a server to come up. Every client socket has read
//! and write timeouts, so a hang fails one test instead of blocking the run.
// Each test binary uses part of it.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Read and write timeout of every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server may take to print its `listening on` lines.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a run that should end on its own may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary under test.
/// Runs `curl -q --noproxy '*' --max-time 10 ARGS...` (no `.curlrc`, no proxy from the
/// environment, bounded time) and returns what it did. Fails the test with a clear message
/// when curl is missing.
pub fn curl_output(args: &[&str]) -> io::Result<std::process::Output> {
    let output = Command::new("curl")
        .args(["-q", "--noproxy", "*", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output();
    match output {
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`curl` is not installed: the CLI tests drive the server with the real curl. \
             Install it (`apt-get install curl`); .ci/run installs it before running the tests"
        ),
        other => other,
    }
}

pub fn socketserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_socketserver"))
}

pub fn other(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

/// Runs `op` again while it fails with `Interrupted`: on this machine a blocking socket call
/// with a timeout can return `EINTR` spuriously (and under `strace` it always may).
pub fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// An address a server printed, parsed from its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
    UnixGram(PathBuf),
}

impl Addr {
    pub fn parse(url: &str) -> io::Result<Addr> {
        let bad = || other(format!("not a URL the server should print: {url:?}"));
        if let Some(rest) = url.strip_prefix("tcp://") {
            Ok(Addr::Tcp(rest.parse().map_err(|_| bad())?))
        } else if let Some(rest) = url.strip_prefix("udp://") {
            Ok(Addr::Udp(rest.parse().map_err(|_| bad())?))
        } else if let Some(path) = url.strip_prefix("unixgram:") {
            Ok(Addr::UnixGram(PathBuf::from(path)))
        } else if let Some(path) = url.strip_prefix("unix:") {
            Ok(Addr::Unix(PathBuf::from(path)))
        } else {
            Err(bad())
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Addr::Tcp(_) | Addr::Unix(_))
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Addr::Unix(p) | Addr::UnixGram(p) => Some(p),
            _ => None,
        }
    }
}

/// `unix:PATH` for a path.
pub fn unix_url(path: &Path) -> String {
    format!("unix:{}", path.display())
}

/// `unixgram:PATH` for a path.
pub fn unixgram_url(path: &Path) -> String {
    format!("unixgram:{}", path.display())
}

/// A running server. Dropping it kills the process with SIGKILL and reaps it, so a failing
/// test never leaves a server behind.
pub struct Server {
    child: Child,
    /// One address per `listening on` line, in the order printed.
    pub addrs: Vec<Addr>,
    /// stdout lines after the `listening on` ones (there should be none).
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts `socketserver ARGS...` and waits for one `listening on` line per `--listen`.
    pub fn start(args: &[&str]) -> io::Result<Server> {
        Server::start_in(args, None)
    }

    /// `socketserver http --listen tcp://127.0.0.1:0 --dir DIR --mode MODE --quiet EXTRA...`,
    /// started.
    pub fn http(dir: &Path, mode: &str, extra: &[&str]) -> io::Result<Server> {
        let dir = dir.to_str().expect("UTF-8 temp path");
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

    /// `socketserver http --listen tcp://127.0.0.1:0 --dir DIR --quiet` with `env` set,
    /// started.
    pub fn http_env(dir: &Path, env: &[(&str, &str)], what: &str) -> io::Result<Server> {
        let mut command = socketserver();
        command.args(["http", "--listen", "tcp://127.0.0.1:0", "--dir"]);
        command.arg(dir).arg("--quiet");
        for (name, value) in env {
            command.env(name, value);
        }
        Server::spawn_command(command, 1, what)
    }

    /// `http://ADDR/PATH` of the first (TCP) listener.
    pub fn url(&self, path: &str) -> String {
        match &self.addrs[0] {
            Addr::Tcp(addr) => format!("http://{addr}{path}"),
            other => panic!("not TCP: {other:?}"),
        }
    }

    /// [`Server::start`] with a working directory.
    pub fn start_in(args: &[&str], dir: Option<&Path>) -> io::Result<Server> {
        Server::spawn(args, dir, false)
    }

    /// [`Server::start`] as the leader of a new process group, so that
    /// [`signal_group`](Server::signal_group) reaches it and its forked children as a
    /// terminal's Ctrl-C would.
    pub fn start_in_own_group(args: &[&str]) -> io::Result<Server> {
        Server::spawn(args, None, true)
    }

    fn spawn(args: &[&str], dir: Option<&Path>, own_group: bool) -> io::Result<Server> {
        let listeners = args
            .iter()
            .filter(|a| **a == "--listen" || a.starts_with("--listen="))
            .count()
            .max(1);
        let mut command = socketserver();
        command.args(args);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        if own_group {
            command.process_group(0);
        }
        Server::spawn_command(command, listeners, &format!("{args:?}"))
    }

    /// Starts `command` (the binary, or a program that runs it: `systemd-socket-activate`,
    /// an environment set up by the test) and waits for `listeners` `listening on` lines.
    pub fn spawn_command(mut command: Command, listeners: usize, what: &str) -> io::Result<Server> {
        let args = what;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| other("no stdout pipe"))?;
        let stderr = child.stderr.take().ok_or_else(|| other("no stderr pipe"))?;
        let (lines_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr_buf);
        thread::spawn(move || {
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        // The guard exists from here on: an early return kills the child.
        let mut server = Server {
            child,
            addrs: Vec::new(),
            stdout: lines,
            stderr: stderr_buf,
        };
        for _ in 0..listeners {
            let line = server.stdout.recv_timeout(START_TIMEOUT).map_err(|_| {
                other(format!(
                    "socketserver {args} did not announce its listeners; stderr: {}",
                    server.stderr()
                ))
            })?;
            let url = line
                .strip_prefix("listening on ")
                .ok_or_else(|| other(format!("unexpected stdout line {line:?}")))?;
            server.addrs.push(Addr::parse(url)?);
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) with the `kill` command.
    pub fn signal(&self, name: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(other(format!(
                "kill -{name} {} failed: {status}",
                self.pid()
            )))
        }
    }

    /// Sends a signal to the server's whole process group (see
    /// [`start_in_own_group`](Server::start_in_own_group)).
    pub fn signal_group(&self, name: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg("--")
            .arg(format!("-{}", self.pid()))
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(other(format!(
                "kill -{name} -- -{} failed: {status}",
                self.pid()
            )))
        }
    }

    /// Waits (at most 3 s) until no signal is pending for the process any more: the last one
    /// sent has been delivered to its handler. Sending another one after this cannot merge
    /// with it into a single pending signal.
    pub fn wait_signals_delivered(&self) -> io::Result<()> {
        let status_file = format!("/proc/{}/status", self.pid());
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let status = std::fs::read_to_string(&status_file)?;
            let pending = status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("ShdPnd:")
                        .or_else(|| l.strip_prefix("SigPnd:"))
                })
                .any(|mask| mask.trim().chars().any(|c| c != '0'));
            if !pending {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(other(format!("signals still pending: {status}")));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> io::Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the server did not exit within {within:?}; stderr: {}",
                        self.stderr()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// stdout lines printed after the `listening on` lines, up to end of file (call after the
    /// process exited).
    /// The next stdout line (the `metrics on URL` line after the `listening on` ones).
    pub fn next_stdout_line(&self) -> io::Result<String> {
        self.stdout
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| other(format!("no further stdout line; stderr: {}", self.stderr())))
    }

    pub fn rest_of_stdout(&self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(2)) {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `Child::kill` sends SIGKILL (and does nothing once the child was reaped).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a run that ended on its own went.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `socketserver ARGS...` expecting it to exit by itself (within 10 s, else it is killed
/// and this fails).
pub fn run(args: &[&str]) -> io::Result<Finished> {
    let mut command = socketserver();
    command.args(args);
    run_command(command)
}

/// [`run`] for a command the test set up (environment, a program in front).
pub fn run_command(mut command: Command) -> io::Result<Finished> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or_else(|| other("no stdout pipe"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| other("no stderr pipe"))?;
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(other(format!(
                "{command:?} still ran after {RUN_TIMEOUT:?}; killed"
            )));
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Finished {
        status,
        stdout: out.join().map_err(|_| other("stdout reader panicked"))?,
        stderr: err.join().map_err(|_| other("stderr reader panicked"))?,
    })
}

#[path = "../../../socketserver/tests/common/shared.rs"]
mod shared;
#[allow(unused_imports)] // each test binary uses part of it
pub use shared::{HttpReply, Stream, header_in, parse_reply, parse_whole_reply, read_reply};

impl Stream {
    /// Connects with [`IO_TIMEOUT`] read and write timeouts.
    pub fn connect(addr: &Addr) -> io::Result<Stream> {
        let conn = match addr {
            Addr::Tcp(a) => Stream::Tcp(retry(|| TcpStream::connect_timeout(a, IO_TIMEOUT))?),
            Addr::Unix(p) => Stream::Unix(retry(|| UnixStream::connect(p))?),
            other_addr => return Err(other(format!("{other_addr:?} is not a stream address"))),
        };
        conn.set_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    }
}

/// Writes `data` then `shutdown(Write)` on `conn` from a second thread while this one reads to
/// end of file, so neither side blocks on a full buffer. Returns what came back.
pub fn send_all_and_read_to_eof(conn: &mut Stream, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut writer = conn.try_clone()?;
    thread::scope(|scope| {
        let sending = scope.spawn(move || -> io::Result<()> {
            writer.write_all(data)?;
            writer.shutdown_write()
        });
        let received = conn.read_all();
        let sent = sending
            .join()
            .map_err(|_| other("the writer thread panicked"))?;
        let received = received?;
        sent?;
        Ok(received)
    })
}

/// One stream request: connect, send `data`, end, read the reply to end of file.
pub fn stream_exchange(addr: &Addr, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut conn = Stream::connect(addr)?;
    send_all_and_read_to_eof(&mut conn, data)
}

static CLIENT_PATHS: AtomicUsize = AtomicUsize::new(0);

/// A datagram client: UDP, or Unix datagram bound to its own path (the server replies to it).
#[derive(Debug)]
pub enum Dgram {
    Udp(UdpSocket, SocketAddr),
    Unix(UnixDatagram, PathBuf),
}

impl Dgram {
    /// A client for `server`; a Unix datagram client binds a fresh path inside `dir`.
    pub fn new(server: &Addr, dir: &Path) -> io::Result<Dgram> {
        let client = match server {
            Addr::Udp(a) => {
                let socket = UdpSocket::bind((a.ip(), 0))?;
                socket.set_read_timeout(Some(IO_TIMEOUT))?;
                socket.set_write_timeout(Some(IO_TIMEOUT))?;
                Dgram::Udp(socket, *a)
            }
            Addr::UnixGram(p) => {
                let n = CLIENT_PATHS.fetch_add(1, Ordering::SeqCst);
                let socket = UnixDatagram::bind(dir.join(format!("client-{n}.sock")))?;
                socket.set_read_timeout(Some(IO_TIMEOUT))?;
                socket.set_write_timeout(Some(IO_TIMEOUT))?;
                Dgram::Unix(socket, p.clone())
            }
            other_addr => {
                return Err(other(format!("{other_addr:?} is not a datagram address")));
            }
        };
        Ok(client)
    }

    pub fn send(&self, data: &[u8]) -> io::Result<()> {
        let sent = retry(|| match self {
            Dgram::Udp(s, to) => s.send_to(data, to),
            Dgram::Unix(s, to) => s.send_to(data, to),
        })?;
        if sent == data.len() {
            Ok(())
        } else {
            Err(other(format!("sent {sent} of {} bytes", data.len())))
        }
    }

    pub fn recv(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        let n = retry(|| match self {
            Dgram::Udp(s, _) => s.recv(&mut buf),
            Dgram::Unix(s, _) => s.recv(&mut buf),
        })?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn exchange(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.send(data)?;
        self.recv()
    }
}

/// One request over any transport: a stream exchange, or one datagram and its reply.
pub fn exchange(addr: &Addr, data: &[u8], dir: &Path) -> io::Result<Vec<u8>> {
    if addr.is_stream() {
        stream_exchange(addr, data)
    } else {
        Dgram::new(addr, dir)?.exchange(data)
    }
}

/// `len` pseudo-random bytes (every byte value occurs), the same for every run.
pub fn payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Compares bytes without dumping megabytes into the failure message.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    let show = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.min(b.len())..(at + 32).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: got {} bytes, want {}; first difference at byte {at}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}

/// Waits (at most `within`) until `addr` refuses connections, i.e. until the server has closed
/// that listener after a signal. Probe connections that still get in are closed at once; one
/// reset while the listener closes under it means "not yet sure", so probing goes on.
pub fn wait_until_refused(addr: &Addr, within: Duration) -> io::Result<Duration> {
    let start = Instant::now();
    loop {
        let probe = match addr {
            Addr::Tcp(a) => retry(|| TcpStream::connect_timeout(a, IO_TIMEOUT)).map(drop),
            Addr::Unix(p) => retry(|| UnixStream::connect(p)).map(drop),
            other_addr => return Err(other(format!("cannot probe {other_addr:?}"))),
        };
        match probe {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) =>
            {
                return Ok(start.elapsed());
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if start.elapsed() >= within {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{addr:?} still accepted connections {within:?} after the signal"),
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// True when a read error means "nothing arrived before the socket's read timeout".
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Asserts the contract's error shape: nothing on stdout, exactly one line on stderr starting
/// with `socketserver: ` and containing every one of `needles`, and the exit code.
#[track_caller]
pub fn assert_one_line_error(run: &Finished, code: i32, needles: &[&str]) {
    let context = format!("{run:?}");
    assert_eq!(run.status.code(), Some(code), "exit status: {context}");
    assert_eq!(run.stdout, "", "stdout must be empty: {context}");
    assert!(
        run.stderr.ends_with('\n') && run.stderr.matches('\n').count() == 1,
        "stderr must be exactly one line: {context}"
    );
    assert!(
        run.stderr.starts_with("socketserver: "),
        "stderr must start with `socketserver: `: {context}"
    );
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "stderr must mention {needle:?}: {context}"
        );
    }
}

/// Pids of the live or zombie children of `parent`, read from /proc.
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push((pid, state));
        }
    }
    found
}

impl Server {
    /// Waits at most `within` until what the server wrote on stderr satisfies `done`, and
    /// returns it (the error carries what was there when time ran out).
    pub fn wait_stderr(&self, within: Duration, done: impl Fn(&str) -> bool) -> io::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.stderr();
            if done(&text) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("stderr did not show what was expected within {within:?}: {text:?}"),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the server wrote on stderr, complete: call after the process exited. Waits
    /// (at most `within`) until the reader of the stderr pipe has seen end of file, which it
    /// shows by dropping its handle on the buffer.
    pub fn stderr_at_exit(&self, within: Duration) -> io::Result<String> {
        let deadline = Instant::now() + within;
        while Arc::strong_count(&self.stderr) > 1 {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "stderr still open {within:?} after the exit; so far: {}",
                        self.stderr()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(self.stderr())
    }
}

/// A real HAProxy in front of a server, as operators run it: TCP mode, the PROXY protocol v2
/// to the server (`send-proxy-v2`). Killed when dropped.
pub struct Balancer {
    child: Child,
    /// Where clients connect.
    pub front: SocketAddr,
    _config: tempfile::TempDir,
}

impl Balancer {
    /// Starts HAProxy in front of `backend`, or `None` (said on stderr) when the machine has
    /// no `haproxy` (Debian package `haproxy`; `.ci/run` installs it).
    pub fn start(backend: SocketAddr) -> io::Result<Option<Balancer>> {
        let found = Command::new("haproxy")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("skipped: haproxy is not installed (Debian package haproxy)");
            return Ok(None);
        }
        // HAProxy takes no port 0: a port just free, which nothing else here binds.
        let front = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 1024\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                 frontend front\n  bind {front}\n  default_backend servers\n\
                 backend servers\n  server s1 {backend} send-proxy-v2\n"
            ),
        )?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let balancer = Balancer {
            child,
            front,
            _config: dir,
        };
        // Ready once it accepts.
        let deadline = Instant::now() + IO_TIMEOUT;
        while TcpStream::connect(front).is_err() {
            if Instant::now() > deadline {
                return Err(other("haproxy did not start listening"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(balancer))
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
