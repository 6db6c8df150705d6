//! What an event loop drives: the [`Driver`] trait (a user's [`Protocol`](crate::Protocol)
//! through [`Session`](crate::Session), or the HTTP server's sessions), the [`Step`] a call
//! returns, and a connection's buffers: [`Input`] (received, not consumed) and [`Output`]
//! (bytes and file ranges queued, sent under a budget, zero-copy for files). Crate-private:
//! the public face of all this is `protocol.rs`'s `Protocol`, `Conn` and `Flow`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::Request;
use crate::protocol::{Conn, Flow};

/// What a driver wants next (the crate-private superset of [`Flow`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "http"), allow(dead_code))] // only HTTP blocks
pub(crate) enum Step {
    Continue,
    Close,
    Abort,
    /// Hand the connection to a worker thread: [`Driver::blocking`] runs there with the
    /// blocking request, then the connection comes back to the loop.
    Block,
}

impl From<Flow> for Step {
    fn from(flow: Flow) -> Step {
        match flow {
            Flow::Continue => Step::Continue,
            Flow::Close => Step::Close,
            Flow::Abort => Step::Abort,
        }
    }
}

/// The loop's view of a connection's handler: a [`Protocol`](crate::Protocol), or the HTTP server.
pub(crate) trait Driver: Send {
    /// Most unconsumed input kept; reading pauses beyond it.
    fn input_limit(&self) -> usize {
        INPUT_LIMIT
    }
    /// The connection starts being driven (a session may be made before its connection).
    fn connected(&mut self) {}
    fn data(&mut self, conn: &mut Conn<'_>) -> Step;
    fn eof(&mut self, conn: &mut Conn<'_>) -> Step;
    /// The connection's timer fired (see [`deadline`](Self::deadline)).
    fn timed_out(&mut self, conn: &mut Conn<'_>) -> Step {
        let _ = conn;
        Step::Abort
    }
    /// When the connection must have made progress by. `last` is the last read or write
    /// progress; `timeout` the server's per-connection timeout; `sending` whether output is
    /// waiting for the peer.
    fn deadline(&self, last: Instant, timeout: Option<Duration>, sending: bool) -> Option<Instant> {
        let _ = sending;
        timeout.and_then(|t| last.checked_add(t))
    }
    /// Input the driver holds itself (decrypted, say) that it has not used yet: the loop
    /// calls [`data`](Self::data) again for it after a hand-off.
    fn pending_input(&self) -> bool {
        false
    }
    /// Output of its own still to make once the connection's output has room (an
    /// encrypting pump with plaintext left): the loop calls [`data`](Self::data) again for
    /// it, a bounded number of times per turn. Every such call must make progress.
    fn producing(&self) -> bool {
        false
    }
    /// Closing after [`Step::Close`]: every byte the peer meant to send was read (a whole
    /// request without a body, nothing after it), so the loop closes at once instead of
    /// lingering for bytes that cannot come. The default, `false`, lingers: a protocol
    /// closing mid-stream may leave bytes unread, and closing on them resets the connection.
    fn read_everything(&self) -> bool {
        false
    }
    /// Between requests, with nothing in flight: a graceful stop closes it at once.
    fn is_idle(&self) -> bool {
        false
    }
    /// New, and waiting for its first request (HTTP): not idle, but a graceful stop closes
    /// it after a moment's grace (see `shutdown::QUIET`).
    fn is_quiet(&self) -> bool {
        false
    }
    /// After [`Step::Block`], on a worker: `request` is the connection (its waits bounded
    /// by poll deadlines), `input` the bytes received and not consumed (the driver leaves the
    /// unused rest there), `output` what the loop had not sent yet: the driver sends it
    /// before anything of its own, or queues its own output behind it for the loop to send
    /// (so a worker need not wait for a slow reader).
    fn blocking(
        &mut self,
        request: &mut Request,
        input: &mut Vec<u8>,
        output: &mut Output,
    ) -> Step {
        let _ = (request, input, output);
        Step::Close
    }
    /// Handles one datagram, all of it in `conn` (see [`Protocol`](crate::Protocol)); `None`
    /// when this driver cannot, and the blocking handler must.
    fn datagram(&mut self, conn: &mut Conn<'_>) -> Option<Flow> {
        let _ = conn;
        None
    }
    fn lost(&mut self) {}
}

/// Largest sent output buffer a connection keeps for its next answer.
const SPARE_MAX: usize = 16 * 1024;
/// Default most unconsumed input bytes per connection.
pub(crate) const INPUT_LIMIT: usize = 64 * 1024;
/// Output bytes waiting beyond which the loop stops reading the connection.
pub(crate) const OUTPUT_HIGH: usize = 64 * 1024;

/// Received bytes not consumed yet: `buf[pos..end]`. `buf` stays initialised to its full
/// length, so reading into it never zeroes memory again.
#[derive(Default)]
pub(crate) struct Input {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Input {
    pub(crate) fn from_vec(buf: Vec<u8>) -> Input {
        let end = buf.len();
        Input { buf, pos: 0, end }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// The buffer itself, for reuse (its contents are not the unconsumed bytes).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.pos
    }

    /// Forgets every byte (the allocation is kept).
    pub(crate) fn clear(&mut self) {
        self.pos = 0;
        self.end = 0;
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.end);
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
    }

    /// Room for `want` more bytes after the unconsumed ones: the writable tail.
    pub(crate) fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.pos > 0 && self.buf.len() - self.end < want {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
        &mut self.buf[self.end..self.end + want]
    }

    /// Keeps `n` bytes of what [`spare`](Self::spare) offered.
    pub(crate) fn commit(&mut self, offered: usize, n: usize) {
        self.end += n.min(offered);
    }

    /// The buffer's size, used or not.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }
}

#[cfg_attr(not(feature = "http"), allow(dead_code))] // only HTTP sends files
enum Chunk {
    Bytes(Vec<u8>, usize),
    File {
        file: File,
        offset: u64,
        left: u64,
    },
    /// Called with `true` once everything before it went out, with `false` if the output is
    /// dropped first (see [`Output::on_sent`]).
    Done(OnSent),
    /// Bytes made as they are sent (a body compressed on the fly), a bounded step at a time.
    Stream(Box<dyn Produce>),
}

/// A body made as it is sent: each call does a bounded amount of work (so a loop can serve
/// other connections in between) and appends at least one byte unless it is the last.
pub(crate) trait Produce: Send {
    /// Appends the next bytes to `out`. Fails when the body cannot be completed (the
    /// connection must end: its length or framing was promised).
    fn produce(&mut self, out: &mut Vec<u8>) -> io::Result<Produced>;
}

/// Makes all of `stream` and writes it to `out`, a piece at a time: how a blocking writer
/// sends a body made as it is sent.
pub(crate) fn write_stream<W: Write + ?Sized>(
    stream: &mut dyn Produce,
    out: &mut W,
) -> io::Result<()> {
    let mut piece = Vec::new();
    loop {
        piece.clear();
        let produced = stream.produce(&mut piece)?;
        out.write_all(&piece)?;
        if produced.done {
            return Ok(());
        }
    }
}

/// What one [`Produce::produce`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Produced {
    /// Source bytes consumed: the work done, counted against [`STREAM_BUDGET`].
    pub(crate) work: usize,
    /// That was the last piece.
    pub(crate) done: bool,
}

/// Source bytes a stream may consume per [`Output::send`] call (per turn of the loop for this
/// connection): about a millisecond of compression, so a large compressed download never holds
/// the loop from other connections for longer.
pub(crate) const STREAM_BUDGET: usize = 64 * 1024;

/// What runs once the output before it has gone out (an HTTP access line with its real
/// outcome).
pub(crate) type OnSent = Box<dyn FnOnce(bool) + Send>;

/// How [`Output::send`] stopped, with the bytes it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Everything queued went out.
    Drained(usize),
    /// The socket would block: wait for it to be writable.
    Blocked(usize),
    /// The per-turn limit was reached; the socket may take more.
    Budget(usize),
}

/// Output waiting for the peer, in order: bytes and file ranges.
#[derive(Default)]
pub(crate) struct Output {
    chunks: VecDeque<Chunk>,
    /// Bytes (not file ranges) waiting.
    pub(crate) bytes: usize,
    /// Something was written, if only an empty slice: a datagram reply is wanted.
    pub(crate) touched: bool,
    /// A sent buffer kept for the next answer.
    spare: Vec<u8>,
    /// Source bytes streams consumed through [`take_front`](Self::take_front) since the
    /// caller last reset it: an encrypting pump's measure of work done.
    pub(crate) work: usize,
}

impl Output {
    pub(crate) fn write(&mut self, data: &[u8]) {
        self.touched = true;
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        if let Some(Chunk::Bytes(buf, _)) = self.chunks.back_mut() {
            buf.extend_from_slice(data);
        } else {
            let mut buf = std::mem::take(&mut self.spare);
            buf.extend_from_slice(data);
            self.chunks.push_back(Chunk::Bytes(buf, 0));
        }
    }

    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn send_file(&mut self, file: File, offset: u64, len: u64) {
        if len > 0 {
            self.chunks.push_back(Chunk::File {
                file,
                offset,
                left: len,
            });
        }
    }

    /// Queues a body made as it is sent (see [`Produce`]).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn send_stream(&mut self, stream: Box<dyn Produce>) {
        self.chunks.push_back(Chunk::Stream(stream));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Memory kept for the next answer (the queue's and a sent buffer's), if any.
    pub(crate) fn kept(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Chunk>() + self.spare.capacity()
    }

    /// An empty output with its memory, for another connection: nothing of this one's
    /// answers carries over. `None` when something is still queued.
    pub(crate) fn take_for_reuse(&mut self) -> Option<Output> {
        if !self.chunks.is_empty() {
            return None;
        }
        let mut used = std::mem::take(self);
        used.bytes = 0;
        used.touched = false;
        used.work = 0;
        Some(used)
    }

    /// Runs `done(true)` once everything queued so far has gone out (at once when nothing
    /// is queued), or `done(false)` if the output is dropped before (the connection ended
    /// first).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn on_sent(&mut self, done: OnSent) {
        if self.chunks.is_empty() {
            done(true);
        } else {
            self.chunks.push_back(Chunk::Done(done));
        }
    }

    /// The [`on_sent`](Self::on_sent) call at the front, if that is what comes next.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn take_done(&mut self) -> Option<OnSent> {
        if !matches!(self.chunks.front(), Some(Chunk::Done(_))) {
            return None;
        }
        match self.chunks.pop_front() {
            Some(Chunk::Done(done)) => Some(done),
            _ => None,
        }
    }

    /// True when reading should pause: too many bytes waiting, or a file still being sent.
    pub(crate) fn is_backed_up(&self) -> bool {
        self.bytes > OUTPUT_HIGH
            || self
                .chunks
                .iter()
                .any(|c| matches!(c, Chunk::File { .. } | Chunk::Stream(_)))
    }

    /// Sends what the socket takes, at most about `limit` bytes (so one fast reader cannot
    /// hold the loop); says how it stopped and how many bytes went out.
    pub(crate) fn send(&mut self, socket: &socket2::Socket, limit: usize) -> io::Result<Sent> {
        let mut sent = 0usize;
        let mut work = 0usize;
        loop {
            // A file follows these bytes directly: tell the kernel more is coming.
            let file_next = matches!(self.chunks.get(1), Some(Chunk::File { .. }));
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if sent >= limit {
                return Ok(Sent::Budget(sent));
            }
            match front {
                Chunk::Done(_) => {
                    if let Some(Chunk::Done(done)) = self.chunks.pop_front() {
                        done(true);
                    }
                    continue;
                }
                Chunk::Stream(stream) => {
                    if work >= STREAM_BUDGET {
                        return Ok(Sent::Budget(sent));
                    }
                    let mut piece = std::mem::take(&mut self.spare);
                    piece.clear();
                    let produced = stream.produce(&mut piece)?;
                    work += produced.work;
                    if produced.done {
                        self.chunks.pop_front();
                    }
                    if !piece.is_empty() {
                        self.bytes += piece.len();
                        self.chunks.push_front(Chunk::Bytes(piece, 0));
                    }
                    continue;
                }
                Chunk::Bytes(buf, pos) => {
                    let flags = if file_next {
                        crate::request::SEND_MORE_FLAGS
                    } else {
                        crate::request::SEND_FLAGS
                    };
                    match socket.send_with_flags(&buf[*pos..], flags) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            sent += n;
                            *pos += n;
                            self.bytes -= n;
                            if *pos < buf.len() {
                                continue;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // New output is appended to this buffer: drop what was sent
                            // once it is half of it, so the buffer stays within twice what
                            // waits (reading stops beyond 64 KiB of that).
                            if *pos * 2 >= buf.len() {
                                buf.drain(..*pos);
                                *pos = 0;
                            }
                            return Ok(Sent::Blocked(sent));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Chunk::File { file, offset, left } => {
                    let mut pos = i64::try_from(*offset)
                        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                    let chunk = usize::try_from((*left).min(1 << 20)).unwrap_or(1 << 20);
                    match crate::sys::sendfile(socket, file, &mut pos, chunk) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the file shrank while it was being sent",
                            ));
                        }
                        Ok(n) => {
                            sent += n;
                            *offset += n as u64;
                            *left -= n as u64;
                            if *left > 0 {
                                continue;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok(Sent::Blocked(sent));
                        }
                        Err(e) if no_zero_copy(&e) => {
                            // This file system cannot sendfile: copy the next piece instead.
                            use std::os::unix::fs::FileExt;
                            let want = usize::try_from((*left).min(64 * 1024)).unwrap_or(0);
                            let mut piece = vec![0; want];
                            let got = file.read_at(&mut piece, *offset)?;
                            if got == 0 {
                                return Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "the file shrank while it was being sent",
                                ));
                            }
                            piece.truncate(got);
                            *offset += got as u64;
                            *left -= got as u64;
                            if *left == 0 {
                                self.chunks.pop_front();
                            }
                            self.bytes += got;
                            self.chunks.push_front(Chunk::Bytes(piece, 0));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            // The front chunk is done; keep a modest buffer for the next answer.
            if let Some(Chunk::Bytes(mut buf, _)) = self.chunks.pop_front()
                && buf.capacity() <= SPARE_MAX
            {
                buf.clear();
                self.spare = buf;
            }
        }
        Ok(Sent::Drained(sent))
    }

    /// Moves up to `max` bytes from the front into `piece` (a file range is read for it):
    /// how an encrypting pump takes plaintext as the socket drains, never a whole file in
    /// memory. `Ok(false)` when nothing is left; `UnexpectedEof` when a file shrank.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn take_front(&mut self, piece: &mut Vec<u8>, max: usize) -> io::Result<bool> {
        let Some(front) = self.chunks.front_mut() else {
            return Ok(false);
        };
        let done = match front {
            // The caller takes it with `take_done`, in order.
            Chunk::Done(_) => return Ok(false),
            Chunk::Stream(stream) => {
                let produced = stream.produce(piece)?;
                self.work += produced.work;
                produced.done
            }
            Chunk::Bytes(buf, pos) => {
                let n = (buf.len() - *pos).min(max);
                piece.extend_from_slice(&buf[*pos..*pos + n]);
                *pos += n;
                self.bytes -= n;
                *pos >= buf.len()
            }
            Chunk::File { file, offset, left } => {
                use std::os::unix::fs::FileExt;
                let want = usize::try_from((*left).min(max as u64)).unwrap_or(max);
                let start = piece.len();
                piece.resize(start + want, 0);
                let got = loop {
                    match file.read_at(&mut piece[start..], *offset) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        other => break other,
                    }
                };
                let got = got.inspect_err(|_| piece.truncate(start))?;
                piece.truncate(start + got);
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being sent",
                    ));
                }
                *offset += got as u64;
                *left -= got as u64;
                *left == 0
            }
        };
        if done {
            self.chunks.pop_front();
        }
        Ok(true)
    }

    /// Everything written, as one buffer (file ranges read): a datagram's reply. The output
    /// is left empty, with its memory, for [`take_for_reuse`](Self::take_for_reuse).
    pub(crate) fn take_bytes(&mut self) -> io::Result<Vec<u8>> {
        if self.chunks.len() == 1
            && matches!(self.chunks.front(), Some(Chunk::Bytes(..)))
            && let Some(Chunk::Bytes(mut buf, pos)) = self.chunks.pop_front()
        {
            self.bytes = 0;
            buf.drain(..pos);
            return Ok(buf);
        }
        let mut all = Vec::with_capacity(self.bytes);
        self.drain_into(&mut all)?;
        self.bytes = 0;
        Ok(all)
    }

    /// Keeps `buf` (a sent datagram reply, given back) for the next answer's bytes, unless
    /// there is one already or it is too big to keep.
    pub(crate) fn keep_spare(&mut self, mut buf: Vec<u8>) {
        if self.spare.capacity() == 0 && buf.capacity() <= SPARE_MAX {
            buf.clear();
            self.spare = buf;
        }
    }

    /// Everything written, as bytes (file ranges read), for a datagram reply or a blocking
    /// connection.
    pub(crate) fn drain_into(&mut self, out: &mut dyn Write) -> io::Result<()> {
        while let Some(chunk) = self.chunks.pop_front() {
            match chunk {
                Chunk::Bytes(buf, pos) => out.write_all(&buf[pos..])?,
                Chunk::File { file, offset, left } => {
                    crate::request::copy_file_to(out, &file, offset, left)?
                }
                Chunk::Done(done) => {
                    // Gone out means written to the socket, not into a writer's buffer.
                    out.flush()?;
                    done(true);
                }
                Chunk::Stream(mut stream) => write_stream(&mut *stream, out)?,
            }
        }
        self.bytes = 0;
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // What was still to be sent never went out: say so to whoever waits for it.
        for chunk in self.chunks.drain(..) {
            if let Chunk::Done(done) = chunk {
                done(false);
            }
        }
    }
}

/// `sendfile(2)` refused for this file or platform (not a failure of the connection).
fn no_zero_copy(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(nix::libc::EINVAL | nix::libc::ENOSYS)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};

    /// Bytes held by the output's buffers, sent or not.
    fn held(output: &Output) -> usize {
        output
            .chunks
            .iter()
            .map(|c| match c {
                Chunk::Bytes(buf, _) => buf.len(),
                Chunk::File { .. } | Chunk::Done(_) | Chunk::Stream(_) => 0,
            })
            .sum()
    }

    /// Ten pieces of 1,000 bytes, each costing 40 KiB of work.
    struct Counting(u8);

    impl Produce for Counting {
        fn produce(&mut self, out: &mut Vec<u8>) -> io::Result<Produced> {
            out.extend(std::iter::repeat_n(b'a' + self.0, 1000));
            self.0 += 1;
            Ok(Produced {
                work: 40 * 1024,
                done: self.0 == 10,
            })
        }
    }

    #[test]
    fn a_stream_is_made_as_it_is_sent_within_its_work_budget() {
        let (ours, theirs) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut output = Output::default();
        output.write(b"head");
        output.send_stream(Box::new(Counting(0)));
        output.write(b"tail");
        assert!(
            output.is_backed_up(),
            "reading waits while a stream is queued"
        );
        let mut turns = 0;
        loop {
            turns += 1;
            match output.send(&ours, usize::MAX).unwrap() {
                Sent::Budget(_) => continue,
                Sent::Drained(_) => break,
                Sent::Blocked(n) => panic!("blocked after {n}"),
            }
        }
        // 64 KiB of work a call: two pieces each.
        assert_eq!(turns, 5);
        drop(ours);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &theirs, &mut got).unwrap();
        let mut expected = b"head".to_vec();
        for i in 0..10u8 {
            expected.extend(std::iter::repeat_n(b'a' + i, 1000));
        }
        expected.extend_from_slice(b"tail");
        assert_eq!(got, expected);
        // The other ways out make the same bytes.
        let mut output = Output::default();
        output.write(b"head");
        output.send_stream(Box::new(Counting(0)));
        output.write(b"tail");
        let mut drained = Vec::new();
        output.drain_into(&mut drained).unwrap();
        assert_eq!(drained, expected);
        let mut output = Output::default();
        output.write(b"head");
        output.send_stream(Box::new(Counting(0)));
        output.write(b"tail");
        let mut taken = Vec::new();
        while output.take_front(&mut taken, 16 * 1024).unwrap() {}
        assert_eq!(taken, expected);
        assert_eq!(output.work, 10 * 40 * 1024);
    }

    #[test]
    fn input_consumes_and_clears_without_overflow() {
        let mut input = Input::default();
        let spare = input.spare(10);
        spare.copy_from_slice(b"0123456789");
        input.commit(10, 10);
        input.consume(3);
        assert_eq!(input.bytes(), b"3456789");
        input.consume(usize::MAX);
        assert_eq!(input.bytes(), b"");
        let spare = input.spare(2);
        spare.copy_from_slice(b"ab");
        input.commit(2, 2);
        input.consume(1);
        input.clear();
        assert_eq!(input.len(), 0);
        assert_eq!(input.spare(1).len(), 1);
    }

    #[test]
    fn output_goes_out_under_the_turn_budget_then_drains_in_order_with_its_done_calls() {
        let (ours, peer) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        ours.set_nonblocking(true).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut output = Output::default();
        for piece in 0..2u8 {
            output.write(&[piece; 2000]);
            let tx = tx.clone();
            output.on_sent(Box::new(move |sent| tx.send((piece, sent)).unwrap()));
        }
        // The budget is checked between pieces: the first answer ends the turn.
        assert!(matches!(
            output.send(&ours, 1500).unwrap(),
            Sent::Budget(2000)
        ));
        assert!(
            rx.try_recv().is_err(),
            "its done call waits for the next turn"
        );
        assert!(matches!(
            output.send(&ours, usize::MAX).unwrap(),
            Sent::Drained(2000)
        ));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [(0, true), (1, true)]);
        assert!(output.is_empty());
        let mut got = vec![0u8; 4000];
        std::io::Read::read_exact(&mut &peer, &mut got).unwrap();
        assert!(got[..2000].iter().all(|&b| b == 0) && got[2000..].iter().all(|&b| b == 1));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_head_and_the_file_after_it_leave_in_one_segment() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let ours = Socket::from(listener.accept().unwrap().0);
        ours.set_tcp_nodelay(true).unwrap();
        ours.set_nonblocking(true).unwrap();
        let body: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&body).unwrap();
        let before = crate::sys::tcp_segments_out(&ours).unwrap();
        let mut output = Output::default();
        output.write(b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n");
        output.send_file(file, 0, body.len() as u64);
        assert!(matches!(
            output.send(&ours, usize::MAX).unwrap(),
            Sent::Drained(_)
        ));
        // Without MSG_MORE on the head, TCP_NODELAY sends it alone: two segments.
        assert_eq!(
            crate::sys::tcp_segments_out(&ours).unwrap() - before,
            1,
            "head and body in one segment"
        );
        let mut got = vec![0u8; 42 + body.len()];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(&got[42..], &body[..]);
    }

    #[test]
    fn a_slowly_drained_output_keeps_its_buffer_bounded() {
        let (ours, peer) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        ours.set_nonblocking(true).unwrap();
        let _ = ours.set_send_buffer_size(4096);
        let mut output = Output::default();
        let mut sink = vec![0u8; 4096];
        let mut received = 0usize;
        let mut written = 0usize;
        for round in 0..2000 {
            // Like the loop: more is written only while little waits.
            if !output.is_backed_up() {
                let piece = vec![(round % 251) as u8; 8 * 1024];
                output.write(&piece);
                written += piece.len();
            }
            output.send(&ours, usize::MAX).unwrap();
            // The peer reads slower than we write.
            received += std::io::Read::read(&mut &peer, &mut sink).unwrap();
            assert!(
                held(&output) <= 2 * output.bytes + 8 * 1024,
                "round {round}: {} bytes held for {} waiting",
                held(&output),
                output.bytes
            );
        }
        assert!(written > 4 * 1024 * 1024 && received > 0);
    }
}
