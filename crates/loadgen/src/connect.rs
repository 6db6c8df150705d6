//! The connect workload, the pattern of Python's documented socketserver clients: each client
//! loops over connect, send `hello <n>\n` (n: the client's number), read to EOF, close. An
//! exchange counts when the reply is exactly `HELLO <n>` (what the `upper` service sends before
//! closing); its latency runs from the start of the connect to the EOF.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Barrier;
use std::time::Instant;

use crate::args::{Config, Target};
use crate::net::{self, Peer, Stream};
use crate::poller::{Event, Interest, Poller};
use crate::stats::{Recorder, Tally};
use crate::{BACKOFF, STALL_TIMEOUT, token};

#[derive(Debug)]
struct Client {
    stream: Option<Stream>,
    /// Changes whenever the socket does, so that a stale event is recognized.
    generation: u32,
    /// Whether the connection is known to be established (the line went out).
    connected: bool,
    registered: Option<Interest>,
    line: Box<[u8]>,
    expected: Box<[u8]>,
    /// Bytes of the line written, bytes of the reply read, and whether those match so far.
    sent: usize,
    got: usize,
    matches: bool,
    started: Instant,
    last_progress: Instant,
    retry_at: Option<Instant>,
    /// Failures since the last exchange that worked.
    failures: u32,
    served: bool,
}

struct Shared<'a> {
    peer: Peer,
    scratch: Vec<u8>,
    poller: Poller,
    rec: &'a mut Recorder,
}

/// Runs the clients numbered `ids` until the recorder's window ends.
pub fn client_thread(config: &Config, ids: &[usize], start: &Barrier) -> io::Result<Tally> {
    let setup = (|| {
        let peer = match &config.target {
            Target::Tcp(addr) => Peer::tcp(*addr),
            Target::Unix(path) => Peer::unix(path)?,
            Target::Udp(_) => unreachable!("checked when parsing"),
        };
        Ok::<_, io::Error>((peer, Poller::new()?))
    })();
    let hint = crate::reserve_hint(config);
    start.wait();
    let (peer, poller) = setup?;

    let mut rec = Recorder::start(config.warmup, config.duration, hint);
    let now = Instant::now();
    let mut clients: Vec<Client> = ids
        .iter()
        .map(|&n| Client {
            stream: None,
            generation: 0,
            connected: false,
            registered: None,
            line: format!("hello {n}\n").into_bytes().into_boxed_slice(),
            expected: format!("HELLO {n}").into_bytes().into_boxed_slice(),
            sent: 0,
            got: 0,
            matches: true,
            started: now,
            last_progress: now,
            retry_at: None,
            failures: 0,
            served: false,
        })
        .collect();
    let mut shared = Shared {
        peer,
        scratch: vec![0; 4096],
        poller,
        rec: &mut rec,
    };
    for (i, client) in clients.iter_mut().enumerate() {
        shared.begin(i, client, now);
    }

    crate::drive(&mut shared, &mut clients)?;
    let unserved = clients.iter().filter(|c| !c.served).count() as u64;
    drop(clients);
    drop(shared);
    Ok(rec.finish(unserved))
}

impl crate::Driven for Shared<'_> {
    type Slot = Client;

    fn poller(&mut self) -> &mut Poller {
        &mut self.poller
    }

    fn recorder(&self) -> &Recorder {
        self.rec
    }

    fn scan_slot(&mut self, i: usize, client: &mut Client, now: Instant) {
        self.scan(i, client, now);
    }

    fn is_current(client: &Client, generation: u32) -> bool {
        client.generation == generation && client.stream.is_some()
    }

    fn handle_event(&mut self, i: usize, client: &mut Client, event: &Event) {
        self.on_event(i, client, event);
    }
}

impl Shared<'_> {
    /// Starts an exchange: connect, and send the line if the socket takes it already.
    fn begin(&mut self, i: usize, client: &mut Client, now: Instant) {
        client.retry_at = None;
        client.generation = client.generation.wrapping_add(1);
        client.registered = None;
        client.connected = false;
        client.sent = 0;
        client.got = 0;
        client.matches = true;
        client.started = now;
        client.last_progress = now;
        match net::connect(&self.peer) {
            Ok((stream, connected)) => {
                client.stream = Some(stream);
                client.connected = connected;
                if let Err(e) = self.send(i, client) {
                    self.fail(i, client, now, &e);
                }
            }
            Err(e) => self.fail(i, client, now, &e),
        }
    }

    fn scan(&mut self, i: usize, client: &mut Client, now: Instant) {
        match (&client.stream, client.retry_at) {
            (None, Some(at)) if now >= at => self.begin(i, client, now),
            (Some(_), _) if now.duration_since(client.last_progress) >= STALL_TIMEOUT => {
                let what = if client.connected {
                    "timed out waiting for the reply"
                } else {
                    "timed out connecting"
                };
                self.fail(i, client, now, &what);
            }
            _ => {}
        }
    }

    fn on_event(&mut self, i: usize, client: &mut Client, event: &Event) {
        let before = (client.sent, client.got);
        if client.sent < client.line.len() {
            if (event.writable || event.error)
                && let Err(e) = self.send(i, client)
            {
                self.fail(i, client, Instant::now(), &e);
                return;
            }
        } else if event.readable || event.error {
            match self.receive(client) {
                Ok(false) => {}
                Ok(true) => {
                    let now = Instant::now();
                    if client.matches && client.got == client.expected.len() {
                        if self.rec.complete(client.started, now) {
                            client.served = true;
                        }
                        client.failures = 0;
                        self.close(client);
                        self.begin(i, client, now);
                    } else {
                        let what = format!(
                            "a reply of {} bytes that is not {:?}",
                            client.got,
                            String::from_utf8_lossy(&client.expected)
                        );
                        self.fail(i, client, now, &what);
                    }
                    return;
                }
                Err(e) => {
                    self.fail(i, client, Instant::now(), &e);
                    return;
                }
            }
        }
        if event.error && (client.sent, client.got) == before {
            let e = client
                .stream
                .as_ref()
                .and_then(Stream::take_error)
                .unwrap_or_else(|| io::Error::new(ErrorKind::ConnectionAborted, "hang-up"));
            self.fail(i, client, Instant::now(), &e);
        }
    }

    /// Writes what the socket takes of the line, then watches for what comes next: writable
    /// while some of the line is left (or the connect is in progress), readable after.
    fn send(&mut self, i: usize, client: &mut Client) -> io::Result<()> {
        let stream = client.stream.as_mut().expect("an open connection");
        while client.sent < client.line.len() {
            match stream.write(&client.line[client.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    client.sent += n;
                    client.connected = true;
                    client.last_progress = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::NotConnected && !client.connected => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let want = if client.sent < client.line.len() {
            Interest::WRITE
        } else {
            Interest::READ
        };
        if client.registered != Some(want) {
            let fd = stream.raw_fd();
            let tok = token(i, client.generation);
            match client.registered {
                None => self.poller.register(fd, tok, want)?,
                Some(_) => self.poller.reregister(fd, tok, want)?,
            }
            client.registered = Some(want);
        }
        Ok(())
    }

    /// Reads the reply, checking it against the expected one. True at EOF.
    fn receive(&mut self, client: &mut Client) -> io::Result<bool> {
        let stream = client.stream.as_mut().expect("an open connection");
        loop {
            match stream.read(&mut self.scratch) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    let part = &self.scratch[..n];
                    client.matches &= client.expected.get(client.got..client.got + n) == Some(part);
                    client.got += n;
                    client.last_progress = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn close(&mut self, client: &mut Client) {
        if let Some(stream) = client.stream.take() {
            self.poller.deregister(stream.raw_fd());
        }
        client.registered = None;
        client.generation = client.generation.wrapping_add(1);
    }

    /// Counts a failed exchange and starts the next: at once after one that worked, after a
    /// back-off when they keep failing.
    fn fail(&mut self, i: usize, client: &mut Client, now: Instant, what: &dyn std::fmt::Display) {
        self.rec.error(now, !client.connected, what);
        self.close(client);
        client.failures += 1;
        if client.failures == 1 {
            self.begin(i, client, now);
        } else {
            client.retry_at = Some(now + BACKOFF);
        }
    }
}
