//! A minimal `log` backend: one line per record on stderr, prefixed `socketserver: `.
//!
//! Access-log lines from an event loop are batched, the way nginx's `access_log ... buffer=`
//! batches them: a loop calls `log::logger().flush()` each time before it waits for events
//! (the library documents this), so the lines of everything it answered in one turn go out
//! in one write(2), and none waits longer than the turn that made it. A thread that never
//! calls `flush` (a worker, a thread per connection, a forked child) writes each line at once,
//! as nothing would flush it otherwise.

use std::cell::RefCell;
use std::io::Write;

/// The most one batched write holds: a pipe takes a write of up to `PIPE_BUF` (4096) bytes
/// whole, so lines from several processes sharing stderr (`--processes`) never interleave.
const BATCH: usize = 4096;

struct Stderr;

/// A thread's access lines not yet written.
struct Pending {
    lines: Vec<u8>,
    /// This thread calls `flush` (an event loop): its lines may wait for it.
    batched: bool,
}

impl Pending {
    fn write_out(&mut self) {
        if !self.lines.is_empty() {
            let _ = std::io::stderr().lock().write_all(&self.lines);
            self.lines.clear();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A loop thread that ends (a stop) leaves nothing behind.
        self.write_out();
    }
}

thread_local! {
    static PENDING: RefCell<Pending> = const {
        RefCell::new(Pending { lines: Vec::new(), batched: false })
    };
}

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // What the libraries we build on say (rustls warns once per client that sends an IP
        // address as its SNI name, as curl and wrk do) is their internal chatter: debug level,
        // never one line per client on stderr. Only our own records are shown.
        metadata.target().starts_with("socketserver") && metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let access = record.target() == "socketserver::access";
        let queued = PENDING.try_with(|pending| {
            let Ok(mut pending) = pending.try_borrow_mut() else {
                return false;
            };
            if access && pending.batched {
                let start = pending.lines.len();
                // Access-log lines stand alone (common log format), like http.server's.
                let _ = writeln!(pending.lines, "{}", record.args());
                if pending.lines.len() > BATCH && start > 0 {
                    // Full: what was there goes out now, the new line stays for the next.
                    let line = pending.lines.split_off(start);
                    pending.write_out();
                    pending.lines = line;
                }
                return true;
            }
            // Anything else is written at once, after this thread's earlier lines.
            pending.write_out();
            false
        });
        if queued == Ok(true) {
            return;
        }
        // The whole line in one write(2): forked children share stderr with the parent, and
        // a line written in pieces interleaves with theirs (stderr is unbuffered).
        let line = if access {
            format!("{}\n", record.args())
        } else {
            format!("socketserver: {}\n", record.args())
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = PENDING.try_with(|pending| {
            if let Ok(mut pending) = pending.try_borrow_mut() {
                pending.batched = true;
                pending.write_out();
            }
        });
    }
}

static LOGGER: Stderr = Stderr;

/// Installs the logger: warnings and errors always, informational lines unless `quiet`.
pub fn init(quiet: bool) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if quiet {
        log::LevelFilter::Warn
    } else {
        log::LevelFilter::Info
    });
}
