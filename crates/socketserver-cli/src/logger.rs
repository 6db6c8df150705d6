//! A minimal `log` backend: one line per record on stderr, prefixed `socketserver: `.

use std::io::Write;

struct Stderr;

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
        // The whole line in one write(2): forked children share stderr with the parent, and
        // a line written in pieces interleaves with theirs (stderr is unbuffered).
        let line = if record.target() == "socketserver::access" {
            // Access-log lines stand alone (common log format), like http.server's.
            format!("{}\n", record.args())
        } else {
            format!("socketserver: {}\n", record.args())
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
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
