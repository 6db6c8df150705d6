//! The `socketserver` command: see `shared/cli-contract.md` (and `socketserver --help`).
//!
//! `main` only parses flags, builds a server, prints the `listening on` lines and reports the
//! outcome as one line with a deliberate exit code: 2 for a bad command line, 1 for a failure
//! to start or serve, 0 after a signal-driven stop.

mod args;
mod logger;

use std::io::Write;
use std::process::ExitCode;

use socketserver::services::{Echo, ThreadName, Upper};
use socketserver::{Server, ServerBuilder};

use crate::args::{Options, Service, Stop};

fn main() -> ExitCode {
    // Handler panics are caught by the library and reported once through the log; the
    // default hook would print a second, multi-line report.
    std::panic::set_hook(Box::new(|_| {}));
    let options = match args::parse(std::env::args_os()) {
        Ok(options) => options,
        Err(Stop::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(Stop::Usage(message)) => {
            eprintln!("socketserver: {message}");
            return ExitCode::from(2);
        }
    };
    logger::init(options.quiet);
    match std::panic::catch_unwind(|| run(options)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("socketserver: {e}");
            ExitCode::from(1)
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            eprintln!("socketserver: internal error: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(options: Options) -> socketserver::Result<()> {
    let mut builder = ServerBuilder::new()
        .mode(options.mode)
        .shutdown_timeout(options.shutdown_timeout)
        .timeout(options.timeout)
        .backlog(options.backlog)
        .reuse_port(options.reuse_port)
        .handle_signals(true);
    if let Some(limit) = options.max_connections {
        builder = builder.max_connections(limit);
    }
    for addr in options.listen {
        builder = builder.listen(addr);
    }
    let server: Server = match options.service {
        Service::Echo => builder.bind(Echo)?,
        Service::Upper => builder.bind(Upper)?,
        Service::Threadname => builder.bind(ThreadName)?,
        // Argument validation refuses it first; kept as an error, not a panic.
        Service::Http => {
            return Err(socketserver::Error::Unsupported {
                what: "the http service is not available yet".into(),
            });
        }
    };
    // Signal handling is installed by `bind`; only now is it safe to announce the addresses.
    let mut stdout = std::io::stdout().lock();
    for addr in server.local_addrs() {
        // A closed stdout must not stop the server; there is nobody to tell.
        let _ = writeln!(stdout, "listening on {addr}");
    }
    let _ = stdout.flush();
    drop(stdout);
    log::info!(
        "serving {} in {} mode; Ctrl-C stops gracefully, a second Ctrl-C at once",
        server.local_addr(),
        options.mode
    );
    server.serve_forever()
}
