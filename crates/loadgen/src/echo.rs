//! The echo workload: a closed loop over persistent stream connections. Each round a connection
//! writes `pipeline` requests of `size` bytes back to back and reads back all `pipeline × size`
//! bytes; a request completes when its last byte is back, and its latency runs from the write
//! that carried its first byte. Reading goes on while a large round is still being written, so
//! a round bigger than the socket buffers cannot deadlock.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Barrier;
use std::time::Instant;

use crate::args::{Config, Target};
use crate::net::{self, Peer, Stream};
use crate::poller::{Event, Interest, Poller};
use crate::stats::{Recorder, Tally};
use crate::{BACKOFF, STALL_TIMEOUT, token};

/// Largest single read.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
struct Conn {
    stream: Option<Stream>,
    /// Changes whenever the socket does, so that a stale event is recognized.
    generation: u32,
    /// Whether the connection is known to be established (a write went through).
    connected: bool,
    /// What the poller watches for, if the socket is registered.
    registered: Option<Interest>,
    /// Bytes of the current round written and read back.
    sent: usize,
    received: usize,
    /// When each request of the round was written.
    stamps: Box<[Instant]>,
    last_progress: Instant,
    /// When to reopen a closed connection.
    retry_at: Option<Instant>,
    /// Failures since the last completed round.
    failures: u32,
    /// Whether any request completed inside the measured window.
    served: bool,
}

/// What the connections of one thread share.
struct Shared<'a> {
    peer: Peer,
    size: usize,
    /// `pipeline × size` bytes: one round.
    payload: Vec<u8>,
    scratch: Vec<u8>,
    poller: Poller,
    rec: &'a mut Recorder,
}

/// Runs the connections numbered `ids` until the recorder's window ends.
pub fn client_thread(config: &Config, ids: &[usize], start: &Barrier) -> io::Result<Tally> {
    let setup = (|| {
        let peer = match &config.target {
            Target::Tcp(addr) => Peer::tcp(*addr),
            Target::Unix(path) => Peer::unix(path)?,
            Target::Udp(_) => unreachable!("checked when parsing"),
        };
        Ok::<_, io::Error>((peer, Poller::new()?))
    })();
    let round = config.size * config.pipeline;
    let payload: Vec<u8> = (0..round).map(|i| b'a' + (i % 26) as u8).collect();
    let scratch = vec![0u8; READ_CHUNK.min(round)];
    let hint = crate::reserve_hint(config);
    start.wait();
    let (peer, poller) = setup?;

    let mut rec = Recorder::start(config.warmup, config.duration, hint);
    let now = Instant::now();
    let mut conns: Vec<Conn> = ids
        .iter()
        .map(|_| Conn {
            stream: None,
            generation: 0,
            connected: false,
            registered: None,
            sent: 0,
            received: 0,
            stamps: vec![now; config.pipeline].into_boxed_slice(),
            last_progress: now,
            retry_at: None,
            failures: 0,
            served: false,
        })
        .collect();
    let mut shared = Shared {
        peer,
        size: config.size,
        payload,
        scratch,
        poller,
        rec: &mut rec,
    };
    for (i, conn) in conns.iter_mut().enumerate() {
        shared.open(i, conn, now);
    }

    crate::drive(&mut shared, &mut conns)?;
    let unserved = conns.iter().filter(|c| !c.served).count() as u64;
    drop(conns);
    drop(shared);
    Ok(rec.finish(unserved))
}

impl crate::Driven for Shared<'_> {
    type Slot = Conn;

    fn poller(&mut self) -> &mut Poller {
        &mut self.poller
    }

    fn recorder(&self) -> &Recorder {
        self.rec
    }

    fn scan_slot(&mut self, i: usize, conn: &mut Conn, now: Instant) {
        self.scan(i, conn, now);
    }

    fn is_current(conn: &Conn, generation: u32) -> bool {
        conn.generation == generation && conn.stream.is_some()
    }

    fn handle_event(&mut self, i: usize, conn: &mut Conn, event: &Event) {
        self.on_event(i, conn, event);
    }
}

impl Shared<'_> {
    /// Opens connection `i` and starts its first round.
    fn open(&mut self, i: usize, conn: &mut Conn, now: Instant) {
        conn.retry_at = None;
        conn.generation = conn.generation.wrapping_add(1);
        conn.registered = None;
        conn.sent = 0;
        conn.received = 0;
        conn.last_progress = now;
        match net::connect(&self.peer) {
            Ok((stream, connected)) => {
                conn.stream = Some(stream);
                conn.connected = connected;
                if let Err(e) = self.write_some(i, conn) {
                    self.fail(i, conn, now, &e);
                }
            }
            Err(e) => {
                conn.connected = false;
                self.fail(i, conn, now, &e);
            }
        }
    }

    /// Reopens a connection whose back-off has passed, and fails one that made no progress for
    /// too long.
    fn scan(&mut self, i: usize, conn: &mut Conn, now: Instant) {
        match (&conn.stream, conn.retry_at) {
            (None, Some(at)) if now >= at => self.open(i, conn, now),
            (Some(_), _) if now.duration_since(conn.last_progress) >= STALL_TIMEOUT => {
                let what = if conn.connected {
                    "timed out waiting for the echo"
                } else {
                    "timed out connecting"
                };
                self.fail(i, conn, now, &what);
            }
            _ => {}
        }
    }

    fn on_event(&mut self, i: usize, conn: &mut Conn, event: &Event) {
        let before = (conn.sent, conn.received);
        let round = self.payload.len();
        if (event.writable || event.error)
            && conn.sent < round
            && let Err(e) = self.write_some(i, conn)
        {
            return self.fail(i, conn, Instant::now(), &e);
        }
        if event.readable || event.error {
            match self.read_some(conn) {
                Ok(true) => {
                    // Round complete: start the next one.
                    conn.failures = 0;
                    conn.sent = 0;
                    conn.received = 0;
                    if let Err(e) = self.write_some(i, conn) {
                        self.fail(i, conn, Instant::now(), &e);
                    }
                    return;
                }
                Ok(false) => {}
                Err(e) => return self.fail(i, conn, Instant::now(), &e),
            }
        }
        if event.error && (conn.sent, conn.received) == before {
            // An error or hang-up that neither reading nor writing surfaced.
            let e = conn
                .stream
                .as_ref()
                .and_then(Stream::take_error)
                .unwrap_or_else(|| io::Error::new(ErrorKind::ConnectionAborted, "hang-up"));
            self.fail(i, conn, Instant::now(), &e);
        }
    }

    /// Writes as much of the round as the socket takes, stamping the requests that start in
    /// each write, then watches for what the connection needs next.
    fn write_some(&mut self, i: usize, conn: &mut Conn) -> io::Result<()> {
        let stream = conn.stream.as_mut().expect("an open connection");
        let round = self.payload.len();
        while conn.sent < round {
            let now = Instant::now();
            match stream.write(&self.payload[conn.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    // Requests whose first byte is in [sent, sent + n).
                    let first = conn.sent.div_ceil(self.size);
                    let end = (conn.sent + n).div_ceil(self.size);
                    conn.stamps[first..end].fill(now);
                    conn.sent += n;
                    conn.connected = true;
                    conn.last_progress = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Still connecting, on systems that say so instead of WouldBlock.
                Err(e) if e.kind() == ErrorKind::NotConnected && !conn.connected => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let want = if conn.sent < round {
            Interest::BOTH
        } else {
            Interest::READ
        };
        if conn.registered != Some(want) {
            let fd = stream.raw_fd();
            let tok = token(i, conn.generation);
            match conn.registered {
                None => self.poller.register(fd, tok, want)?,
                Some(_) => self.poller.reregister(fd, tok, want)?,
            }
            conn.registered = Some(want);
        }
        Ok(())
    }

    /// Reads what has come back of the round, completing requests. True when the whole round
    /// is back.
    fn read_some(&mut self, conn: &mut Conn) -> io::Result<bool> {
        let stream = conn.stream.as_mut().expect("an open connection");
        let round = self.payload.len();
        loop {
            let want = (round - conn.received).min(self.scratch.len());
            match stream.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
                Ok(n) => {
                    let now = Instant::now();
                    // Requests whose last byte is in [received, received + n).
                    let first = conn.received / self.size;
                    let end = (conn.received + n) / self.size;
                    for &stamp in &conn.stamps[first..end] {
                        if self.rec.complete(stamp, now) {
                            conn.served = true;
                        }
                    }
                    conn.received += n;
                    conn.last_progress = now;
                    if conn.received == round {
                        return Ok(true);
                    }
                    if n < want {
                        // Drained: a further read would most likely say WouldBlock.
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Counts a failure, closes the connection and reopens it: at once after a connection that
    /// worked, after a back-off when it keeps failing.
    fn fail(&mut self, i: usize, conn: &mut Conn, now: Instant, what: &dyn std::fmt::Display) {
        self.rec.error(now, !conn.connected, what);
        if let Some(stream) = conn.stream.take() {
            self.poller.deregister(stream.raw_fd());
        }
        conn.registered = None;
        conn.generation = conn.generation.wrapping_add(1);
        conn.failures += 1;
        if conn.failures == 1 {
            self.open(i, conn, now);
        } else {
            conn.retry_at = Some(now + BACKOFF);
        }
    }
}
