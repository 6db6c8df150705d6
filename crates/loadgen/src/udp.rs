//! The UDP workload: each client has its own connected socket and one datagram of `size` bytes
//! in flight; the next goes out when the echo is back. The first (up to 8) bytes carry a
//! sequence number, so that a late echo of a datagram already given up on is not taken for the
//! current one. No echo within [`UDP_TIMEOUT`] counts as an error (a loss), and the client moves
//! on to the next datagram.

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::args::{Config, Target};
use crate::poller::{Event, Interest, Poller};
use crate::stats::{Recorder, Tally};
use crate::{BACKOFF, token};

/// How long a client waits for an echo.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Client {
    socket: UdpSocket,
    seq: u64,
    /// When the datagram in flight was sent; `None` when none is.
    sent_at: Option<Instant>,
    /// When to send again after a failed or refused send.
    retry_at: Option<Instant>,
    served: bool,
}

struct Shared<'a> {
    size: usize,
    /// The datagram, rewritten with each client's sequence number before sending.
    payload: Vec<u8>,
    /// One byte larger than a datagram, to notice longer replies.
    scratch: Vec<u8>,
    poller: Poller,
    rec: &'a mut Recorder,
}

fn open(server: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Runs the clients numbered `ids` until the recorder's window ends.
pub fn client_thread(config: &Config, ids: &[usize], start: &Barrier) -> io::Result<Tally> {
    let Target::Udp(server) = config.target else {
        unreachable!("checked when parsing")
    };
    let setup = (|| {
        let mut poller = Poller::new()?;
        let mut clients = Vec::with_capacity(ids.len());
        for i in 0..ids.len() {
            let socket = open(server)?;
            poller.register(socket.as_raw_fd(), token(i, 0), Interest::READ)?;
            clients.push(Client {
                socket,
                seq: 0,
                sent_at: None,
                retry_at: None,
                served: false,
            });
        }
        Ok::<_, io::Error>((poller, clients))
    })();
    let hint = crate::reserve_hint(config);
    start.wait();
    let (poller, mut clients) = setup?;

    let mut rec = Recorder::start(config.warmup, config.duration, hint);
    let mut shared = Shared {
        size: config.size,
        payload: (0..config.size).map(|i| b'a' + (i % 26) as u8).collect(),
        scratch: vec![0; config.size + 1],
        poller,
        rec: &mut rec,
    };
    for client in &mut clients {
        shared.send(client);
    }

    crate::drive(&mut shared, &mut clients)?;
    let unserved = clients.iter().filter(|c| !c.served).count() as u64;
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

    fn scan_slot(&mut self, _: usize, client: &mut Client, now: Instant) {
        self.scan(client, now);
    }

    /// A client keeps its socket for the whole run: every event is current.
    fn is_current(_: &Client, _: u32) -> bool {
        true
    }

    fn handle_event(&mut self, _: usize, client: &mut Client, _: &Event) {
        self.receive(client);
    }
}

impl Shared<'_> {
    /// Sends the client's next datagram.
    fn send(&mut self, client: &mut Client) {
        client.retry_at = None;
        client.seq += 1;
        let seq = client.seq.to_le_bytes();
        let k = self.size.min(seq.len());
        self.payload[..k].copy_from_slice(&seq[..k]);
        let now = Instant::now();
        match client.socket.send(&self.payload) {
            Ok(n) if n == self.size => client.sent_at = Some(now),
            Ok(n) => {
                client.sent_at = None;
                self.rec
                    .error(now, false, &format!("sent {n} of {} bytes", self.size));
                client.retry_at = Some(now + BACKOFF);
            }
            // A full send buffer is no failure of the server: just try again shortly.
            Err(e)
                if e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                client.sent_at = None;
                client.retry_at = Some(now + Duration::from_millis(1));
            }
            Err(e) => {
                client.sent_at = None;
                self.rec.error(now, false, &e);
                client.retry_at = Some(now + BACKOFF);
            }
        }
    }

    /// Gives up on an echo that is late, and sends again after a back-off.
    fn scan(&mut self, client: &mut Client, now: Instant) {
        match (client.sent_at, client.retry_at) {
            (Some(sent), _) if now.duration_since(sent) >= UDP_TIMEOUT => {
                self.rec.error(now, false, &"no echo within 1 s");
                self.send(client);
            }
            (None, Some(at)) if now >= at => self.send(client),
            _ => {}
        }
    }

    /// Takes the echoes that have arrived; a matching one completes the request and sends the
    /// next.
    fn receive(&mut self, client: &mut Client) {
        loop {
            match client.socket.recv(&mut self.scratch) {
                Ok(n) => {
                    let Some(sent) = client.sent_at else {
                        // Nothing in flight: a late echo.
                        continue;
                    };
                    let seq = client.seq.to_le_bytes();
                    let k = self.size.min(seq.len());
                    if n >= k && self.scratch[..k] != seq[..k] {
                        // The echo of a datagram already given up on.
                        continue;
                    }
                    let now = Instant::now();
                    client.sent_at = None;
                    if n == self.size {
                        if self.rec.complete(sent, now) {
                            client.served = true;
                        }
                    } else {
                        let what = format!("an echo of {n} bytes for {}", self.size);
                        self.rec.error(now, false, &what);
                    }
                    self.send(client);
                    // The next echo cannot be there yet: back to waiting.
                    return;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Typically ECONNREFUSED: nobody listens on the server's port.
                    let now = Instant::now();
                    self.rec.error(now, false, &e);
                    client.sent_at = None;
                    client.retry_at = Some(now + BACKOFF);
                    return;
                }
            }
        }
    }
}
