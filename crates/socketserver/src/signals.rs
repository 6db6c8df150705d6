//! SIGINT/SIGTERM (and SIGHUP) handling for `ServerBuilder::handle_signals`.
//!
//! The signal handler only writes a byte to a socket pair (signal-hook's pipe registration,
//! async-signal-safe); a small thread named `socketserver-signals` reads it and acts: the first
//! SIGINT or SIGTERM asks for a graceful shutdown, any further one closes at once. SIGHUP,
//! whose default would kill the process (a terminal hanging up, an operator asking for a
//! reload), arrives on a pipe of its own and is logged and ignored: a single server has
//! nothing to reload. A thread (rather than
//! the serving loop) reads the pipe so a second Ctrl-C works even while a `Mode::Sync` handler
//! occupies the serving thread. In `Mode::Fork` the watcher blocks in `read` and takes no lock
//! a child could need, so forking beside it is safe.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};

use std::os::fd::AsFd;

use signal_hook::SigId;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::ShutdownHandle;

/// The signals a server handles (and its forked children block).
pub(crate) const SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

pub(crate) struct SignalWatcher {
    ids: Vec<SigId>,
    /// A second handle on the read end, to wake the watcher even if a forked child (or its
    /// own children) still holds a write end.
    reader: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl SignalWatcher {
    pub(crate) fn start(handle: ShutdownHandle) -> io::Result<SignalWatcher> {
        let (mut read, write) = UnixStream::pair()?;
        let (mut hangups, hangup_write) = UnixStream::pair()?;
        let mut watcher = SignalWatcher {
            ids: Vec::new(),
            reader: Some(read.try_clone()?),
            thread: None,
        };
        for signal in [SIGINT, SIGTERM] {
            // On error, dropping `watcher` unregisters what was registered.
            watcher.ids.push(signal_hook::low_level::pipe::register(
                signal,
                write.try_clone()?,
            )?);
        }
        watcher.ids.push(signal_hook::low_level::pipe::register(
            SIGHUP,
            hangup_write,
        )?);
        drop(write);
        let thread = thread::Builder::new()
            .name("socketserver-signals".into())
            .spawn(move || {
                let mut seen = 0usize;
                let mut buf = [0u8; 16];
                let mut hangups_open = true;
                loop {
                    if hangups_open {
                        // Both pipes at once; a failed poll falls back to waiting for a stop.
                        let ready =
                            crate::sys::poll_readable(&[read.as_fd(), hangups.as_fd()], None)
                                .unwrap_or_else(|_| vec![true, false]);
                        if ready.get(1) == Some(&true) {
                            match hangups.read(&mut buf) {
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Ok(0) | Err(_) => hangups_open = false,
                                Ok(_) => log::warn!(
                                    "SIGHUP ignored: a single server has nothing to reload (SIGTERM stops it)"
                                ),
                            }
                        }
                        if ready.first() != Some(&true) {
                            continue;
                        }
                    }
                    match read.read(&mut buf) {
                        // Every write end is closed: the server is gone.
                        Ok(0) => return,
                        Ok(n) => {
                            seen += n;
                            if seen == 1 {
                                handle.shutdown();
                            } else {
                                handle.close();
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })?;
        watcher.thread = Some(thread);
        Ok(watcher)
    }
}

impl Drop for SignalWatcher {
    fn drop(&mut self) {
        // Unregistering drops our write ends; shutting the read end down ends the watcher's
        // `read` whoever else still holds a write end.
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.shutdown(std::net::Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SignalWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalWatcher")
            .field("signals", &self.ids.len())
            .finish()
    }
}
