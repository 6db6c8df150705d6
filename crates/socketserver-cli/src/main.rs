//! The `socketserver` command: see `socketserver --help` and the README.
//!
//! `main` only parses flags, builds a server, prints the `listening on` lines and reports the
//! outcome as one line with a deliberate exit code: 2 for a bad command line (including an
//! unusable `--dir` or certificate), 1 for a failure to start or serve, 0 after a signal-driven
//! stop.

mod args;
mod logger;
mod supervisor;
mod sys;

use std::io::Write;
use std::process::ExitCode;

use socketserver::http::{Http, Limits, StaticFiles, TlsConfig};
use socketserver::services::{Echo, ThreadName, Upper};
use socketserver::{Address, Listener, Mode, Server, ServerBuilder};

use crate::args::{HttpOptions, Listen, Options, Service, Stop};

/// How `run` failed, which decides the exit code.
enum Failure {
    /// Bad input found after parsing (a directory or certificate that cannot be used): 2.
    Usage(String),
    /// The server could not start or stopped with an error: 1.
    Runtime(socketserver::Error),
    /// Anything else that ends the run: 1.
    Other(String),
}

impl From<socketserver::Error> for Failure {
    fn from(e: socketserver::Error) -> Failure {
        Failure::Runtime(e)
    }
}

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
        Ok(Err(Failure::Usage(message))) => {
            eprintln!("socketserver: {message}");
            ExitCode::from(2)
        }
        Ok(Err(Failure::Runtime(e))) => {
            eprintln!("socketserver: {e}");
            ExitCode::from(1)
        }
        Ok(Err(Failure::Other(message))) => {
            eprintln!("socketserver: {message}");
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

fn run(options: Options) -> Result<(), Failure> {
    let mut builder = ServerBuilder::new()
        .mode(options.mode)
        .async_accept(options.accept)
        .shutdown_timeout(options.shutdown_timeout)
        .timeout(options.timeout)
        .backlog(options.backlog)
        .reuse_port(options.reuse_port)
        .handle_signals(true)
        .notify_service_manager(true)
        .proxy_protocol(options.proxy_protocol);
    if let Some(limit) = options.max_connections {
        builder = builder.max_connections(limit);
    }
    let inherits_systemd = options
        .listen
        .iter()
        .any(|l| matches!(l, Listen::Systemd(_)));
    if let Some(processes) = options.processes {
        return supervise(&options, processes, inherits_systemd);
    }
    for spec in &options.listen {
        match spec {
            Listen::Address(addr) => builder = builder.listen(addr.clone()),
            inherited => {
                for listener in adopt(inherited, &options)? {
                    builder = builder.listener(listener);
                }
            }
        }
    }
    if inherits_systemd {
        // Read once; programs we start must not take them for theirs. No thread runs yet.
        sys::forget_socket_activation();
    }
    let mut site = None;
    let server: Server = match (&options.service, &options.http) {
        (Service::Echo, _) => builder.bind(Echo)?,
        (Service::Upper, _) => builder.bind(Upper)?,
        (Service::Threadname, _) => builder.bind(ThreadName)?,
        (Service::Http, Some(http)) => {
            let (handler, about) = http_handler(&options, http)?;
            site = Some(about);
            // The http service enforces its own timeouts (head deadline, idle, write).
            builder.timeout(None).bind(handler)?
        }
        (Service::Http, None) => {
            return Err(Failure::Usage("the http service needs its options".into()));
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
    if options.worker {
        // The supervisor said what there is to say.
        return Ok(server.serve_forever()?);
    }
    match &site {
        Some((root, https)) => {
            for url in server
                .local_addrs()
                .iter()
                .filter_map(|a| browser_url(a, *https))
            {
                log::info!("serving {} at {url}", root.display());
            }
        }
        None => log::info!("serving {}", server.local_addr()),
    }
    log::info!(
        "{} mode; Ctrl-C stops gracefully, a second Ctrl-C at once",
        options.mode
    );
    Ok(server.serve_forever()?)
}

/// The sockets of an inherited `--listen` (`fd:N`, `systemd[:NAME]`), checked to suit the
/// service.
fn adopt(spec: &Listen, options: &Options) -> Result<Vec<Listener>, Failure> {
    let adopted = match spec {
        Listen::Address(_) => Vec::new(),
        Listen::Fd(fd) => vec![Listener::from_raw_fd(*fd)],
        Listen::Systemd(name) => match Listener::from_systemd(name.as_deref()) {
            Ok(listeners) => listeners.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        },
    };
    let mut listeners = Vec::new();
    for listener in adopted {
        let listener = listener.map_err(|e| Failure::Usage(e.to_string()))?;
        if options.service == Service::Http && !listener.local_addr().is_stream() {
            return Err(Failure::Usage(format!(
                "the http service needs stream listeners (tcp:// or unix:), not {} (inherited)",
                listener.local_addr()
            )));
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// `--processes N`: bind (or adopt) every listener here, print the lines, and run the workers
/// (see `supervisor.rs`). The listeners stay open here for the whole run: restarts hand the
/// same sockets to new workers, and Unix socket files go when this process exits.
fn supervise(options: &Options, processes: usize, inherits_systemd: bool) -> Result<(), Failure> {
    use std::os::fd::AsRawFd;
    let mut listeners = Vec::new();
    for spec in &options.listen {
        match spec {
            Listen::Address(addr) => {
                listeners.push(Listener::bind(addr, options.backlog, options.reuse_port)?);
            }
            inherited => listeners.extend(adopt(inherited, options)?),
        }
    }
    if inherits_systemd {
        // Read once; the workers get the sockets from us. No thread runs yet.
        sys::forget_socket_activation();
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Other(format!("cannot find this program to start workers: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    for listener in &listeners {
        let _ = writeln!(stdout, "listening on {}", listener.local_addr());
    }
    let _ = stdout.flush();
    drop(stdout);
    let plan = supervisor::Plan {
        exe,
        args: std::env::args_os().skip(1).collect(),
        fds: listeners.iter().map(AsRawFd::as_raw_fd).collect(),
        processes,
        shutdown_timeout: options.shutdown_timeout,
    };
    let result = supervisor::run(plan).map_err(|e| Failure::Other(e.to_string()));
    drop(listeners);
    result
}

/// The `http` handler, and what to tell people about it (the root, and whether it is HTTPS).
fn http_handler(
    options: &Options,
    http: &HttpOptions,
) -> Result<(Http<StaticFiles>, (std::path::PathBuf, bool)), Failure> {
    let files = StaticFiles::new(&http.dir)
        .map_err(|e| Failure::Usage(format!("--dir {e}")))?
        .follow_symlinks(http.follow_symlinks)
        .hidden(http.hidden);
    let root = files.root().to_path_buf();
    let mut limits = Limits::default();
    if let Some(timeout) = options.timeout {
        limits.header_timeout = timeout;
        limits.idle_timeout = timeout;
        limits.write_timeout = timeout;
    }
    if let Some(timeout) = http.write_timeout {
        limits.write_timeout = timeout;
    }
    limits.min_body_rate = http.min_body_rate;
    limits.max_request_line = http.max_request_line;
    limits.max_head = http.max_header_bytes;
    limits.max_headers = http.max_headers;
    // One request at a time: an idle keep-alive connection would make the server deaf.
    limits.keep_alive = !matches!(options.mode, Mode::Sync);
    let mut handler = Http::new(files).limits(limits).access_log(!options.quiet);
    if let Some(path) = &http.health {
        handler = handler.health(path.clone());
    }
    let mut https = false;
    if let Some((cert, key)) = &http.tls {
        let config =
            TlsConfig::from_pem_files(cert, key).map_err(|e| Failure::Usage(e.to_string()))?;
        handler = handler.tls(config);
        https = true;
    }
    Ok((handler, (root, https)))
}

/// The clickable URL of a TCP listener (none for Unix sockets).
fn browser_url(addr: &Address, https: bool) -> Option<String> {
    let sa = addr.socket_addr()?;
    let host = match sa.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let scheme = if https { "https" } else { "http" };
    Some(format!("{scheme}://{host}:{}/", sa.port()))
}
