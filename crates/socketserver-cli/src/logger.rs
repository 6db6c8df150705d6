//! A minimal `log` backend: one line per record on stderr, prefixed `socketserver: `.

use std::io::Write;

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if record.target() == "socketserver::access" {
            // Access-log lines stand alone (common log format), like http.server's.
            let _ = writeln!(std::io::stderr().lock(), "{}", record.args());
        } else {
            let _ = writeln!(std::io::stderr().lock(), "socketserver: {}", record.args());
        }
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
