//! HTTPS on the wire: [`TlsWire`] (HTTP bytes through rustls over a connection) and
//! [`TlsSession`] (rustls driven by the event loop, with its encrypting pump). The
//! certificate, the key and the blocking handshake are in `tls_config.rs`.
//!
//! In the blocking modes the handshake runs in the connection's worker, bounded by the header
//! timeout, never on the accept loop: a client that opens a connection and sends nothing (or
//! a byte a minute) costs one worker for at most that long and delays nobody else (the bug of
//! servers that wrap the listening socket or handshake in the accept thread). In `Async` and
//! `Pool` modes ([`TlsSession`]) the event loop drives rustls without I/O of its own: the
//! handshake and request heads cost no thread at all, and each request runs on a worker.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use super::tls_config::{PLAIN_ON_TLS, is_plain_http};
use super::wire::Wire;

/// HTTP bytes through TLS.
pub(crate) struct TlsWire<'a> {
    conn: &'a mut ServerConnection,
    stream: &'a mut crate::Request,
    /// On a worker of an event loop: the ciphertext the loop had not sent yet. It stays the
    /// loop's to send unless this wire does TLS I/O of its own (a body read, an answer written
    /// directly, `100 Continue`): then it goes out first, so records stay in order. A worker
    /// whose answer is queued for the loop's pump never waits on it.
    pending: Option<&'a mut crate::mode::engine::Output>,
}

impl<'a> TlsWire<'a> {
    pub(crate) fn new(conn: &'a mut ServerConnection, stream: &'a mut crate::Request) -> Self {
        TlsWire {
            conn,
            stream,
            pending: None,
        }
    }

    /// Sends close_notify, best effort.
    pub(crate) fn close(&mut self) {
        if self.settle().is_err() {
            return;
        }
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(self.stream);
        let _ = self.stream.flush();
    }

    /// Sends the loop's pending ciphertext, before any TLS I/O of this wire's own.
    fn settle(&mut self) -> io::Result<()> {
        if let Some(pending) = self.pending.as_mut()
            && !pending.is_empty()
        {
            pending.drain_into(self.stream)?;
            self.stream.flush()?;
        }
        Ok(())
    }
}

impl Read for TlsWire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.settle()?;
        rustls::Stream::new(self.conn, self.stream).read(buf)
    }
}

impl Write for TlsWire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.settle()?;
        rustls::Stream::new(self.conn, self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.settle()?;
        rustls::Stream::new(self.conn, self.stream).flush()?;
        self.stream.flush()
    }
}

impl Wire for TlsWire<'_> {
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_timeout(timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.stream.set_write_timeout(timeout);
    }

    fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.stream.set_read_deadline(deadline);
    }

    fn set_idle(&mut self, idle: bool) -> bool {
        self.stream.set_idle(idle)
    }

    fn set_quiet(&mut self) {
        self.stream.set_quiet();
    }

    fn is_shutting_down(&self) -> bool {
        self.stream.shutdown_handle().is_shutting_down()
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        // Plaintext already decrypted counts as readable.
        if self
            .conn
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0)
        {
            return Ok(true);
        }
        self.stream.wait_readable(timeout)
    }

    fn must_poll_when_idle(&self) -> bool {
        self.stream.in_forked_child()
    }

    /// No zero-copy through TLS: read and encrypt in 64 KiB pieces.
    fn send_file(&mut self, file: File, offset: u64, len: u64) -> io::Result<()> {
        crate::request::copy_file_to(self, &file, offset, len)
    }
}

/// HTTPS on the event loop: the loop feeds the connection's ciphertext to rustls (handshake
/// included) and parses request heads from the plaintext, so a TLS client that is slow,
/// idle between requests or trickling its head costs no thread. A complete request runs where
/// it would over plain HTTP: on the loop when the service runs inline (its answer encrypted by
/// the loop's pump), else on a worker (through [`TlsWire`] over the connection in blocking
/// mode).
pub(crate) struct TlsSession<S> {
    tls: ServerConnection,
    inner: super::session::HttpSession<S>,
    /// Plaintext received, not yet used by the HTTP session.
    plain_in: crate::mode::engine::Input,
    /// Plaintext answers to encrypt: error pages the session answered on the loop, and what
    /// a worker left (files as ranges). The loop's encrypting pump takes it a record at a time
    /// as the socket drains, so a slow reader costs no worker and no whole file in memory.
    plain_out: crate::mode::engine::Output,
    /// No byte has come yet: the first ones are checked for plain HTTP.
    fresh: bool,
    /// The connection ends once `plain_out` is sent (then close_notify).
    close_after: bool,
}

/// Plaintext per TLS record the pump encrypts.
const RECORD: usize = 16 * 1024;

impl<S: super::Service> TlsSession<S> {
    pub(crate) fn new(tls: ServerConnection, inner: super::session::HttpSession<S>) -> Self {
        TlsSession {
            tls,
            inner,
            plain_in: crate::mode::engine::Input::default(),
            plain_out: crate::mode::engine::Output::default(),
            fresh: true,
            close_after: false,
        }
    }

    /// Calls the HTTP session with the plaintext, `f` being the call.
    fn with_inner(
        &mut self,
        conn: &mut crate::Conn<'_>,
        f: impl FnOnce(
            &mut super::session::HttpSession<S>,
            &mut crate::Conn<'_>,
        ) -> crate::mode::engine::Step,
    ) -> crate::mode::engine::Step {
        let mut inner = crate::Conn {
            input: &mut self.plain_in,
            output: &mut self.plain_out,
            peer: conn.peer,
            local: conn.local,
            datagram: false,
            shutdown: conn.shutdown,
            // A request the service answers inline is answered on the loop, as over plain
            // HTTP: its answer joins `plain_out`, which the pump encrypts a record at a time
            // as the socket drains. Others go to a worker (`blocking`).
            inline: conn.inline,
        };
        f(&mut self.inner, &mut inner)
    }

    /// Ciphertext in, as much as rustls takes before its plaintext must be read out.
    fn feed(&mut self, conn: &mut crate::Conn<'_>) -> Fed {
        let mut fed = Fed::Stuck;
        while !conn.received().is_empty() {
            let mut bytes = conn.received();
            match self.tls.read_tls(&mut bytes) {
                // The peer's close_notify came: nothing after it counts.
                Ok(0) => return Fed::Closed,
                Ok(n) => conn.consume(n),
                // Its plaintext buffer is full: read that out first.
                Err(_) => break,
            }
            match self.tls.process_new_packets() {
                Ok(state) if state.peer_has_closed() => return Fed::Closed,
                Ok(_) => fed = Fed::Progress,
                Err(e) => {
                    log::debug!("{}: TLS failed: {e}", conn.peer);
                    return Fed::Failed;
                }
            }
        }
        fed
    }

    /// Plaintext out of rustls into `plain_in`, up to what the HTTP session keeps.
    fn pull(&mut self) {
        use crate::mode::engine::Driver;
        let limit = self.inner.input_limit();
        while self.plain_in.len() < limit {
            let want = (limit - self.plain_in.len()).min(16 * 1024);
            let spare = self.plain_in.spare(want);
            match self.tls.reader().read(spare) {
                Ok(n) if n > 0 => self.plain_in.commit(want, n),
                _ => {
                    self.plain_in.commit(want, 0);
                    break;
                }
            }
        }
    }

    /// The encrypting pump: plaintext answers into rustls a record at a time, and its records
    /// into the connection's output, until the output is backed up (the loop calls again when
    /// it drains, see `pending_input`) or nothing is left. Fails when a file being sent
    /// shrank: the promised length cannot be kept, the connection must end.
    fn pump(&mut self, conn: &mut crate::Conn<'_>) -> io::Result<()> {
        let mut out = OutputWriter(conn.output);
        let mut piece = Vec::with_capacity(RECORD);
        self.plain_out.work = 0;
        loop {
            while self.tls.wants_write() {
                if self.tls.write_tls(&mut out).is_err() {
                    break;
                }
            }
            if out.0.is_backed_up() {
                return Ok(());
            }
            if self.plain_out.work >= crate::mode::engine::STREAM_BUDGET && !out.0.is_empty() {
                // A body compressed as it goes has had its share of this turn: the loop
                // calls again (`producing`) once the records made so far are sent.
                return Ok(());
            }
            if let Some(done) = self.plain_out.take_done() {
                // Everything before it is encrypted into the output: done once that is sent.
                out.0.on_sent(done);
                continue;
            }
            piece.clear();
            if !self.plain_out.take_front(&mut piece, RECORD)? {
                return Ok(());
            }
            self.tls.writer().write_all(&piece)?;
        }
    }

    /// Ends the session: what can still be encrypted now, then close_notify.
    fn closing(&mut self, conn: &mut crate::Conn<'_>) {
        let _ = self.pump(conn);
        self.plain_out = crate::mode::engine::Output::default();
        self.close_after = false;
        self.tls.send_close_notify();
        let _ = self.pump(conn);
    }
}

/// What feeding ciphertext to rustls did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fed {
    /// Some was taken.
    Progress,
    /// None could be taken (nothing there, or plaintext waiting to be read out).
    Stuck,
    /// The peer closed the TLS session.
    Closed,
    /// The session failed (an alert is queued).
    Failed,
}

/// A connection's output queue as an `io::Write`, for rustls's records.
struct OutputWriter<'o>(&'o mut crate::mode::engine::Output);

impl Write for OutputWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: super::Service> crate::mode::engine::Driver for TlsSession<S> {
    fn connected(&mut self) {
        self.inner.connected();
    }

    fn data(&mut self, conn: &mut crate::Conn<'_>) -> crate::mode::engine::Step {
        use crate::mode::engine::Step;
        let limit = self.inner.input_limit();
        if self.close_after || !self.plain_out.is_empty() {
            // An answer is still being encrypted: it goes first, the next request waits.
            if self.pump(conn).is_err() {
                return Step::Abort;
            }
            if !self.plain_out.is_empty() {
                return Step::Continue;
            }
            if self.close_after {
                self.closing(conn);
                return Step::Close;
            }
        }
        if self.fresh && !conn.received().is_empty() {
            self.fresh = false;
            if is_plain_http(conn.received()) {
                log::debug!("{}: plain HTTP on the TLS port", conn.peer);
                conn.output.write(PLAIN_ON_TLS);
                return Step::Close;
            }
        }
        // Feed and read out in turns: rustls holds only so much plaintext at a time.
        loop {
            if !conn.received().is_empty() && !self.tls.is_handshaking() {
                // Bytes of a request are coming: its head is due within the header timeout
                // even if they decrypt to nothing yet (a record trickled a byte at a time).
                self.inner.bytes_arrived();
            }
            let fed = self.feed(conn);
            match fed {
                Fed::Failed => {
                    // Tell the client why (an alert), then close.
                    let _ = self.pump(conn);
                    return Step::Close;
                }
                Fed::Closed if self.plain_in.len() == 0 => {
                    self.pull();
                    if self.plain_in.len() == 0 {
                        self.closing(conn);
                        return Step::Close;
                    }
                }
                _ => {}
            }
            let before = self.plain_in.len();
            self.pull();
            let pulled = self.plain_in.len() > before;
            if conn.received().is_empty()
                || self.plain_in.len() >= limit
                || (fed != Fed::Progress && !pulled)
            {
                break;
            }
        }
        // Pipelined requests wait while earlier answers are backed up, as in plain HTTP (the
        // HTTP session sees only `plain_out`): the loop calls again as the output drains.
        let step = if self.plain_in.len() > 0 && !conn.output.is_backed_up() {
            self.with_inner(conn, |inner, c| inner.data(c))
        } else {
            Step::Continue
        };
        if self.pump(conn).is_err() {
            return Step::Abort;
        }
        if step == Step::Close && !self.plain_out.is_empty() {
            // The answer is longer than the output holds: close once the pump is done.
            self.close_after = true;
            return Step::Continue;
        }
        if step == Step::Close {
            self.closing(conn);
        }
        step
    }

    fn eof(&mut self, conn: &mut crate::Conn<'_>) -> crate::mode::engine::Step {
        self.closing(conn);
        crate::mode::engine::Step::Close
    }

    fn timed_out(&mut self, conn: &mut crate::Conn<'_>) -> crate::mode::engine::Step {
        let step = self.with_inner(conn, |inner, c| inner.timed_out(c));
        self.closing(conn);
        step
    }

    fn deadline(&self, last: Instant, timeout: Option<Duration>, sending: bool) -> Option<Instant> {
        self.inner.deadline(last, timeout, sending)
    }

    fn is_idle(&self) -> bool {
        // Idle only between requests, as a plain connection: never mid-handshake.
        self.inner.is_idle()
            && self.plain_in.len() == 0
            && self.plain_out.is_empty()
            && !self.close_after
    }

    fn is_quiet(&self) -> bool {
        self.inner.is_quiet()
            && self.plain_in.len() == 0
            && self.plain_out.is_empty()
            && !self.close_after
    }

    /// The pump has plaintext left: every call to `data` encrypts some of it.
    fn producing(&self) -> bool {
        !self.plain_out.is_empty()
    }

    /// Also true while the pump has plaintext left (or a close to send): the loop calls
    /// `data` again when the output drains, and the pump goes on.
    fn pending_input(&self) -> bool {
        self.plain_in.len() > 0 || !self.plain_out.is_empty() || self.close_after
    }

    fn blocking(
        &mut self,
        request: &mut crate::Request,
        input: &mut Vec<u8>,
        output: &mut crate::mode::engine::Output,
    ) -> crate::mode::engine::Step {
        use crate::mode::engine::Step;
        let peer = request.peer().clone();
        // Ciphertext the loop had not fed yet goes to rustls first, all of it, before the
        // worker reads the socket (records must arrive in order): plaintext is moved out
        // whenever rustls's buffer is full.
        let mut plain = self.plain_in.bytes().to_vec();
        self.plain_in = crate::mode::engine::Input::default();
        let mut rest = input.as_slice();
        while !rest.is_empty() {
            match self.tls.read_tls(&mut rest) {
                Ok(0) => break, // the peer closed: nothing after that counts
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        log::debug!("{peer}: TLS failed: {e}");
                        // The alert after what the loop had queued, best effort.
                        let mut alert = Vec::new();
                        let _ = self.tls.write_tls(&mut alert);
                        output.write(&alert);
                        return Step::Abort;
                    }
                }
                Err(_) => {
                    let before = plain.len();
                    let _ = self.tls.reader().read_to_end(&mut plain);
                    if plain.len() == before {
                        // No way to take the rest in order: give up rather than reorder.
                        return Step::Abort;
                    }
                }
            }
        }

        // The answer is queued as plaintext for the loop's encrypting pump (see `Spill`).
        let mut tls = TlsWire {
            conn: &mut self.tls,
            stream: request,
            pending: Some(output),
        };
        let mut wire = super::wire::Spill::new(&mut tls, &mut self.plain_out);
        let mut step = self.inner.serve_pending(&mut wire, &peer, &mut plain);
        let direct = wire.direct;
        if step == Step::Close {
            if direct {
                tls.close();
            } else {
                // close_notify after the queued answer, from the loop.
                self.close_after = true;
                step = Step::Continue;
            }
        }
        self.plain_in = crate::mode::engine::Input::from_vec(plain);
        // Plaintext rustls decrypted past the request (pipelined) joins it.
        self.pull();
        input.clear();
        step
    }
}
