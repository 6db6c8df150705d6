//! Test support: servers on port 0 or in temp dirs that stop on drop, and clients that always
//! have timeouts, so a hang fails one test instead of stalling CI.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socketserver::{Address, Error, Handler, Mode, Request, Server, ServerBuilder, ShutdownHandle};
use tempfile::TempDir;

/// Client read/write timeout: generous, only there to turn a hang into a failure.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    Unix,
    UnixDatagram,
}

pub const TRANSPORTS: [Transport; 4] = [
    Transport::Tcp,
    Transport::Udp,
    Transport::Unix,
    Transport::UnixDatagram,
];
pub const STREAMS: [Transport; 2] = [Transport::Tcp, Transport::Unix];
pub const DATAGRAMS: [Transport; 2] = [Transport::Udp, Transport::UnixDatagram];

impl Transport {
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Unix)
    }
}

/// The thread-based modes; fork mode has its own test binary (a forked child inherits every fd
/// of the test process, so it must not run beside other tests' sockets).
pub fn thread_modes() -> [Mode; 3] {
    [Mode::Sync, Mode::Threading, Mode::Pool { workers: 4 }]
}

/// The event-driven mode as these tests run it: fixed small sizes, so thread counts are known
/// (2 loop threads, 2 worker threads).
pub const ASYNC: Mode = Mode::Async {
    loops: 2,
    workers: 2,
};

/// Every mode that runs inside this process: the thread-based ones plus the event-driven one.
pub fn all_modes() -> [Mode; 4] {
    [
        Mode::Sync,
        Mode::Threading,
        Mode::Pool { workers: 4 },
        ASYNC,
    ]
}

/// Name of the thread that runs `serve_forever` in tests (what sync mode reports).
pub const SERVING_THREAD: &str = "test-serving";

pub fn listen_addr(transport: Transport, dir: &TempDir) -> Address {
    match transport {
        Transport::Tcp => "tcp://127.0.0.1:0".parse().unwrap(),
        Transport::Udp => "udp://127.0.0.1:0".parse().unwrap(),
        Transport::Unix => Address::Unix(dir.path().join("server.sock")),
        Transport::UnixDatagram => Address::UnixDatagram(dir.path().join("server.dgram")),
    }
}

/// A server serving on a background thread. Dropping it closes it at once.
pub struct TestServer {
    pub server: Arc<Server>,
    pub addr: Address,
    pub stop: ShutdownHandle,
    thread: Option<JoinHandle<socketserver::Result<()>>>,
    pub dir: TempDir,
}

impl TestServer {
    pub fn start<H: Handler>(transport: Transport, mode: Mode, handler: H) -> TestServer {
        TestServer::start_with(transport, |b| b.mode(mode), handler)
    }

    pub fn start_with<H: Handler>(
        transport: Transport,
        configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
        handler: H,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let builder = configure(ServerBuilder::new().listen(listen_addr(transport, &dir)));
        let server = Arc::new(builder.bind(handler).unwrap());
        TestServer::serve(server, dir)
    }

    pub fn serve(server: Arc<Server>, dir: TempDir) -> TestServer {
        let addr = server.local_addr().clone();
        let stop = server.shutdown_handle();
        let serving = Arc::clone(&server);
        let thread = thread::Builder::new()
            .name(SERVING_THREAD.into())
            .spawn(move || serving.serve_forever())
            .unwrap();
        TestServer {
            server,
            addr,
            stop,
            thread: Some(thread),
            dir,
        }
    }

    /// Graceful shutdown; returns what `serve_forever` returned.
    pub fn shutdown(mut self) -> socketserver::Result<()> {
        self.stop.shutdown();
        self.thread.take().unwrap().join().unwrap()
    }

    /// Waits for `serve_forever` to return (after a shutdown triggered elsewhere).
    pub fn join(mut self) -> socketserver::Result<()> {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.close();
            let _ = thread.join();
        }
    }
}

mod shared;
#[allow(unused_imports)] // each test binary uses part of it
pub use shared::{HttpReply, Stream, header_in, parse_reply, parse_whole_reply, read_reply};

impl Stream {
    pub fn connect(addr: &Address) -> io::Result<Stream> {
        let stream = match addr {
            Address::Tcp { .. } => Stream::Tcp(TcpStream::connect(addr.socket_addr().unwrap())?),
            Address::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            other => panic!("not a stream address: {other}"),
        };
        stream.set_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    }
}

/// A datagram client bound to its own address (a Unix datagram client needs a path to get
/// replies).
pub enum Dgram {
    Udp(UdpSocket, Address),
    Unix(UnixDatagram, PathBuf, TempDir),
}

impl Dgram {
    pub fn new(server: &Address) -> io::Result<Dgram> {
        let client = match server {
            Address::Udp { .. } => {
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                Dgram::Udp(socket, server.clone())
            }
            Address::UnixDatagram(path) => {
                let dir = tempfile::tempdir()?;
                let socket = UnixDatagram::bind(dir.path().join("client.dgram"))?;
                Dgram::Unix(socket, path.clone(), dir)
            }
            other => panic!("not a datagram address: {other}"),
        };
        client.set_timeout(Some(IO_TIMEOUT))?;
        Ok(client)
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Dgram::Udp(s, _) => s.set_read_timeout(timeout),
            Dgram::Unix(s, ..) => s.set_read_timeout(timeout),
        }
    }

    pub fn send(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Dgram::Udp(s, to) => s.send_to(data, to.socket_addr().unwrap()),
            Dgram::Unix(s, to, _) => s.send_to(data, to),
        }
    }

    pub fn recv(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        let n = match self {
            Dgram::Udp(s, _) => s.recv(&mut buf)?,
            Dgram::Unix(s, ..) => s.recv(&mut buf)?,
        };
        buf.truncate(n);
        Ok(buf)
    }
}

/// One request/response exchange: streams send, shut down the write side, read to EOF;
/// datagrams send one datagram and read one reply. Large stream payloads are written from a
/// second thread so neither side blocks.
pub fn exchange(addr: &Address, data: &[u8]) -> io::Result<Vec<u8>> {
    if addr.is_stream() && data.len() <= 16 * 1024 {
        // Small enough for the socket buffers: no writer thread needed.
        let mut stream = Stream::connect(addr)?;
        stream.write_all(data)?;
        stream.shutdown_write()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        Ok(reply)
    } else if addr.is_stream() {
        let mut stream = Stream::connect(addr)?;
        let mut writer = stream.try_clone()?;
        let payload = data.to_vec();
        let writing = thread::spawn(move || -> io::Result<()> {
            writer.write_all(&payload)?;
            writer.shutdown_write()
        });
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        writing.join().unwrap()?;
        Ok(reply)
    } else {
        let client = Dgram::new(addr)?;
        client.send(data)?;
        client.recv()
    }
}

/// A payload whose every position differs from its neighbours, so a dropped or duplicated
/// chunk shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Collects what `on_error` reports, as `peer: message` lines.
#[derive(Clone, Default)]
pub struct Errors(pub Arc<Mutex<Vec<String>>>);

impl Errors {
    pub fn record(&self, peer: &Address, error: &Error) {
        self.0.lock().unwrap().push(format!("{peer}: {error}"));
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A handler made of a closure plus an error recorder.
pub struct Recording<F> {
    pub handle: F,
    pub errors: Errors,
}

impl<F> Handler for Recording<F>
where
    F: Fn(&mut Request) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, request: &mut Request) -> io::Result<()> {
        (self.handle)(request)
    }

    fn on_error(&self, peer: &Address, error: &Error) {
        self.errors.record(peer, error);
    }
}

/// Counts entries in a `/proc/self` directory (`fd` or `task`).
pub fn proc_count(what: &str) -> usize {
    std::fs::read_dir(format!("/proc/self/{what}"))
        .unwrap()
        .count()
}

/// Waits (at most 10 s) until `condition` holds; false if it never did. For conditions the
/// test cannot be told about, such as "the server has accepted both connections".
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

/// The names of this process's threads, as the kernel keeps them (`/proc/self/task/*/comm`:
/// at most 15 bytes, so `socketserver-loop-0` shows as `socketserver-lo`).
pub fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        // A thread may end between the listing and the read: skip it.
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|comm| comm.trim_end_matches('\n').to_string())
        .collect()
}

/// How many of this process's threads have a name starting with `prefix`; the prefix is cut to
/// the 15 bytes the kernel keeps of a thread name.
pub fn threads_named(prefix: &str) -> usize {
    let prefix = &prefix[..prefix.len().min(15)];
    thread_names()
        .iter()
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Serialises the tests of one binary that count process-wide resources (threads, fds).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's server threads: (loop threads, worker threads, any other `socketserver-`
/// thread). Names as the kernel keeps them: 15 bytes.
pub fn server_threads() -> (usize, usize, Vec<String>) {
    let names = thread_names();
    let loops = names
        .iter()
        .filter(|n| n.starts_with("socketserver-lo"))
        .count();
    let workers = names
        .iter()
        .filter(|n| n.starts_with("socketserver-wo"))
        .count();
    let others = names
        .into_iter()
        .filter(|n| {
            n.starts_with("socketserver-")
                && !n.starts_with("socketserver-lo")
                && !n.starts_with("socketserver-wo")
        })
        .collect();
    (loops, workers, others)
}

/// Waits (bounded) until no `socketserver-` thread is left in the process.
#[track_caller]
pub fn assert_no_server_thread_left(what: &str) {
    assert!(
        wait_until(|| threads_named("socketserver-") == 0),
        "{what}: server threads left behind: {:?}",
        thread_names()
            .into_iter()
            .filter(|n| n.starts_with("socketserver-"))
            .collect::<Vec<_>>()
    );
}

/// A TCP client with timeouts.
pub fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// True for the errors a read gets when its timeout expires.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Raises the soft limit on open files to the hard limit; `None` (after saying so) when even
/// the hard limit is too low for `needed` descriptors.
pub fn raise_fd_limit(needed: u64) -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard < needed {
        eprintln!("the hard limit on open files is {hard} (< {needed}): skipping");
        return None;
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    Some(hard)
}

/// After a stop: the in-flight echo connection `stream` still gets every byte it sends (2 MB
/// more, then its end of file), byte-exact. `what` names the case in failures.
pub fn assert_in_flight_echo_completes(stream: &mut Stream, what: &str) -> io::Result<()> {
    let rest = pattern(2_000_000);
    let mut writer = stream.try_clone()?;
    let sent = rest.clone();
    let writing = thread::spawn(move || {
        writer.write_all(&sent)?;
        writer.shutdown_write()
    });
    let mut tail = Vec::new();
    stream.read_to_end(&mut tail)?;
    writing.join().unwrap()?;
    assert!(
        tail == rest,
        "{what}: {} of {} bytes after the shutdown",
        tail.len(),
        rest.len()
    );
    Ok(())
}

/// Whether this process still holds the server's end of `client`'s TCP connection (to a
/// server in this process): `/proc/net/tcp` lists a socket from the server's port to the
/// client's that a file still owns (a socket closed but still sending shows inode 0). Lets a
/// test see the moment the server drops a connection whose client reads nothing.
pub fn server_holds(client: &TcpStream) -> bool {
    let (Ok(local), Ok(server)) = (client.local_addr(), client.peer_addr()) else {
        return false;
    };
    let ours = format!(":{:04X}", server.port());
    let theirs = format!(":{:04X}", local.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 9
            && fields[1].ends_with(&ours)
            && fields[2].ends_with(&theirs)
            && fields[9] != "0"
    })
}

/// Waits until the server lets go of `client`'s connection; how long that took, or `None`
/// after `limit`.
pub fn released_within(client: &TcpStream, limit: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if !server_holds(client) {
            return Some(started.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}
