//! The byte streams HTTP runs over, in one place: the [`Wire`] trait and its plain form
//! (`crate::Request`), [`ConnIo`] (a connection's receive buffer over a wire) and [`Source`]
//! (what a `Body` reads from), [`OutputWire`] (the event loop's output queue as a wire, for
//! answers made on the loop) and [`Spill`] (a worker's answer queued for the loop to send).
//! The TLS wire, `TlsWire`, is in `tls.rs` with the rest of rustls.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::mode::engine::{Input, Output, Produce};

/// Where a body's bytes come from: the connection (erased, so a `Body<'r>` need not name the
/// connection's own lifetime).
pub(crate) trait Source {
    /// Received bytes not consumed yet.
    fn buffered(&self) -> &[u8];
    /// Marks `n` buffered bytes as used.
    fn consume(&mut self, n: usize);
    /// Reads more bytes; `Ok(0)` at end of file.
    fn fill(&mut self) -> io::Result<usize>;
    /// Writes and flushes an interim response (`100 Continue`).
    fn interim(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// See [`crate::Request::set_read_deadline`].
    fn set_read_deadline(&mut self, deadline: Option<Instant>);
}

/// The byte stream HTTP runs over: the plain connection, or TLS on top of it.
pub(crate) trait Wire: Read + Write {
    /// Read and write timeout of the underlying socket.
    fn set_timeout(&mut self, timeout: Option<std::time::Duration>) -> io::Result<()>;
    /// See [`crate::Request::set_write_timeout`].
    fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>);
    /// See [`crate::Request::set_read_deadline`].
    fn set_read_deadline(&mut self, deadline: Option<Instant>);
    /// See [`crate::Request::set_idle`].
    fn set_idle(&mut self, idle: bool) -> bool;
    /// A new connection waits for its first request (see `shutdown::QUIET`).
    fn set_quiet(&mut self) {}
    /// True once the server is stopping.
    fn is_shutting_down(&self) -> bool;
    /// See [`crate::Request::wait_readable`].
    fn wait_readable(&mut self, timeout: Option<std::time::Duration>) -> io::Result<bool>;
    /// Whether waiting for the next request must poll for a shutdown. Only a forked child
    /// must: in process, a shutdown shuts idle sockets down and a blocking read wakes up.
    fn must_poll_when_idle(&self) -> bool {
        false
    }
    /// Writes `len` bytes of `file` from `offset`, zero-copy where possible.
    fn send_file(&mut self, file: std::fs::File, offset: u64, len: u64) -> io::Result<()>;
    /// Writes a body made as it is sent (a compressed one), all of it. A wire in front of
    /// an event loop queues it instead, and the loop makes it a step at a time as the socket
    /// drains.
    fn send_stream(&mut self, mut stream: Box<dyn Produce>) -> io::Result<()> {
        crate::mode::engine::write_stream(&mut *stream, self)
    }
    /// Sends what was written so far now (an interim `100 Continue` the client waits for),
    /// where [`flush`](Write::flush) may leave it queued for the event loop.
    fn send_now(&mut self) -> io::Result<()> {
        self.flush()
    }
    /// Runs `done(true)` once what was written so far has gone out, `done(false)` if the
    /// connection ends first: the access line then tells what really happened. A wire that
    /// writes before returning has sent it already.
    fn log_when_sent(&mut self, done: crate::mode::engine::OnSent) {
        done(true);
    }
}

impl Wire for crate::Request {
    fn set_timeout(&mut self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        crate::Request::set_timeout(self, timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>) {
        crate::Request::set_write_timeout(self, timeout);
    }

    fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        crate::Request::set_read_deadline(self, deadline);
    }

    fn set_idle(&mut self, idle: bool) -> bool {
        crate::Request::set_idle(self, idle)
    }

    fn set_quiet(&mut self) {
        crate::Request::set_quiet(self);
    }

    fn is_shutting_down(&self) -> bool {
        self.shutdown_handle().is_shutting_down()
    }

    fn wait_readable(&mut self, timeout: Option<std::time::Duration>) -> io::Result<bool> {
        crate::Request::wait_readable(self, timeout)
    }

    fn must_poll_when_idle(&self) -> bool {
        self.in_forked_child()
    }

    fn send_file(&mut self, file: std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        crate::Request::send_file(self, &file, offset, len)
    }
}

/// The connection's bytes: what was received but not used yet, then the stream.
pub(crate) struct ConnIo<'c> {
    pub(crate) stream: &'c mut dyn Wire,
    /// The same buffer as the event loop's (initialised once, compacted rather than grown).
    received: Input,
}

/// Bytes read per `fill`, and the unit the buffer grows by.
const FILL: usize = 16 * 1024;

impl<'c> ConnIo<'c> {
    pub(crate) fn new(stream: &'c mut dyn Wire) -> ConnIo<'c> {
        ConnIo::with_received(stream, Vec::new())
    }

    /// Over `stream`, with `received` already read from it (and not used yet).
    pub(crate) fn with_received(stream: &'c mut dyn Wire, received: Vec<u8>) -> ConnIo<'c> {
        ConnIo {
            stream,
            received: Input::from_vec(received),
        }
    }

    /// The bytes read and not used, handed back.
    pub(crate) fn into_received(self) -> Vec<u8> {
        self.received.bytes().to_vec()
    }
}

impl Source for ConnIo<'_> {
    fn buffered(&self) -> &[u8] {
        self.received.bytes()
    }

    fn consume(&mut self, n: usize) {
        self.received.consume(n);
    }

    fn fill(&mut self) -> io::Result<usize> {
        // More unread bytes than the buffer holds (a large head, a pipelined batch) grow it;
        // heads are bounded by `max_head`.
        let spare = self.received.spare(FILL);
        let n = self.stream.read(spare);
        self.received.commit(FILL, *n.as_ref().unwrap_or(&0));
        n
    }

    fn interim(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.send_now()
    }

    fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.stream.set_read_deadline(deadline);
    }
}

/// Bytes a worker queues for the loop to send before it writes the rest itself.
pub(crate) const SPILL_AT: usize = crate::mode::engine::OUTPUT_HIGH;

/// A worker's way to answer on an event loop's connection: the answer goes into a queue the
/// loop sends from (files as ranges, any size: `sendfile(2)` on plain connections, the
/// loop's encrypting pump over TLS), so the worker is free at once and a client that reads
/// slowly, or not at all, costs the loop a buffer and a timer, never a worker. Only an
/// answer streamed from a reader past [`SPILL_AT`] bytes is written by the worker itself,
/// through `inner` (within the write timeout): its length is unknown and it cannot wait in
/// memory. Reads (a request body) come from `inner`, within their deadlines.
pub(crate) struct Spill<'a, W: Wire> {
    pub(crate) inner: &'a mut W,
    pub(crate) queue: &'a mut Output,
    /// The queue was handed to `inner`: from now on the worker writes.
    pub(crate) direct: bool,
}

impl<'a, W: Wire> Spill<'a, W> {
    pub(crate) fn new(inner: &'a mut W, queue: &'a mut Output) -> Spill<'a, W> {
        Spill {
            inner,
            queue,
            direct: false,
        }
    }

    /// Writes the queue through `inner`, and everything after it directly.
    fn go_direct(&mut self) -> io::Result<()> {
        self.direct = true;
        self.queue.drain_into(&mut *self.inner)
    }
}

impl<W: Wire> Read for Spill<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<W: Wire> Write for Spill<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A piece larger than the bound is an answer already in memory (`Response::bytes`, a
        // listing), written whole: queue it too. Only a stream of small pieces past the bound
        // (a reader's body) is written directly.
        if !self.direct
            && (buf.len() > SPILL_AT || self.queue.bytes.saturating_add(buf.len()) <= SPILL_AT)
        {
            self.queue.write(buf);
            return Ok(buf.len());
        }
        if !self.direct {
            self.go_direct()?;
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.direct {
            self.inner.flush()
        } else {
            Ok(()) // the loop sends the queue
        }
    }
}

impl<W: Wire> Wire for Spill<'_, W> {
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_timeout(timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.inner.set_write_timeout(timeout);
    }

    fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.inner.set_read_deadline(deadline);
    }

    fn set_idle(&mut self, idle: bool) -> bool {
        self.inner.set_idle(idle)
    }

    fn set_quiet(&mut self) {
        self.inner.set_quiet();
    }

    fn is_shutting_down(&self) -> bool {
        self.inner.is_shutting_down()
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.inner.wait_readable(timeout)
    }

    fn must_poll_when_idle(&self) -> bool {
        self.inner.must_poll_when_idle()
    }

    fn send_file(&mut self, file: File, offset: u64, len: u64) -> io::Result<()> {
        if self.direct {
            self.inner.send_file(file, offset, len)
        } else {
            self.queue.send_file(file, offset, len);
            Ok(())
        }
    }

    fn send_stream(&mut self, stream: Box<dyn Produce>) -> io::Result<()> {
        if self.direct {
            self.inner.send_stream(stream)
        } else {
            // The loop makes it as the client reads: the worker is free at once.
            self.queue.send_stream(stream);
            Ok(())
        }
    }

    fn send_now(&mut self) -> io::Result<()> {
        if !self.direct {
            // What the client waits for goes out now; the queue is empty again after it.
            self.queue.drain_into(&mut *self.inner)?;
        }
        self.inner.send_now()
    }

    fn log_when_sent(&mut self, done: crate::mode::engine::OnSent) {
        if self.direct {
            self.inner.log_when_sent(done);
        } else {
            self.queue.on_sent(done);
        }
    }
}

/// A connection's output queue as a [`Wire`], for writing responses on the loop.
pub(crate) struct OutputWire<'o> {
    pub(crate) output: &'o mut Output,
    pub(crate) shutting_down: bool,
}

impl Read for OutputWire<'_> {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        // Services on the loop get no body: it ends at once (and the connection closes
        // after the answer, since the body was not read).
        Ok(0)
    }
}

impl Write for OutputWire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for OutputWire<'_> {
    fn set_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(()) // the loop's timers apply
    }

    fn set_write_timeout(&mut self, _timeout: Option<Duration>) {}

    fn set_read_deadline(&mut self, _deadline: Option<Instant>) {}

    fn set_idle(&mut self, _idle: bool) -> bool {
        !self.shutting_down
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    fn wait_readable(&mut self, _timeout: Option<Duration>) -> io::Result<bool> {
        Ok(true)
    }

    fn must_poll_when_idle(&self) -> bool {
        false
    }

    fn send_file(&mut self, file: File, offset: u64, len: u64) -> io::Result<()> {
        self.output.send_file(file, offset, len);
        Ok(())
    }

    fn send_stream(&mut self, stream: Box<dyn Produce>) -> io::Result<()> {
        self.output.send_stream(stream);
        Ok(())
    }

    fn log_when_sent(&mut self, done: crate::mode::engine::OnSent) {
        self.output.on_sent(done);
    }
}
