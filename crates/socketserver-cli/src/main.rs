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

use socketserver::http::{self, BasicAuth, Compression, Http, Limits, StaticFiles, TlsConfig};
use socketserver::metrics::{Metrics, Scrape};
use socketserver::services::{Echo, ThreadName, Upper};
use socketserver::{Address, Listener, Mode, Server, ServerBuilder};
use std::sync::Arc;

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
    // A worker counts into the block its supervisor passed after the listeners.
    let metrics = match &options.metrics {
        None => None,
        Some(_) if options.worker => Some(Arc::new(
            sys::inherited_fd(3 + options.listen.len())
                .and_then(Metrics::from_fd)
                .map_err(|e| Failure::Other(format!("the supervisor's metrics block: {e}")))?,
        )),
        Some(_) => Some(Arc::new(Metrics::new().map_err(|e| {
            Failure::Other(format!("cannot set up the metrics: {e}"))
        })?)),
    };
    if let Some(m) = &metrics {
        builder = builder.metrics(Arc::clone(m));
    }
    let mut site = None;
    let server: Server = match (&options.service, &options.http) {
        (Service::Echo, _) => builder.bind(Echo)?,
        (Service::Upper, _) => builder.bind(Upper)?,
        (Service::Threadname, _) => builder.bind(ThreadName)?,
        (Service::Http, Some(http)) => {
            let (mut handler, about) = http_handler(&options, http)?;
            if let Some(m) = &metrics {
                handler = handler.metrics(Arc::clone(m));
            }
            site = Some(about);
            // The http service enforces its own timeouts (head deadline, idle, write).
            builder.timeout(None).bind(handler)?
        }
        (Service::Http, None) => {
            return Err(Failure::Usage("the http service needs its options".into()));
        }
    };
    if options.worker {
        // The supervisor said what there is to say, and serves the metrics.
        return Ok(server.serve_forever()?);
    }
    let scrapes = match (&options.metrics, &metrics) {
        (Some(addr), Some(m)) => {
            let m = Arc::clone(m);
            Some(MetricsServer::start(
                addr,
                move || m.snapshot(),
                options.service == Service::Http,
            )?)
        }
        _ => None,
    };
    // Signal handling is installed by `bind`; only now is it safe to announce the addresses.
    announce(server.local_addrs(), scrapes.as_ref());
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
    let served = server.serve_forever();
    drop(scrapes);
    Ok(served?)
}

/// The stdout lines: `listening on URL` per listener, then `metrics on URL`.
fn announce(addrs: &[Address], scrapes: Option<&MetricsServer>) {
    let mut stdout = std::io::stdout().lock();
    for addr in addrs {
        // A closed stdout must not stop the server; there is nobody to tell.
        let _ = writeln!(stdout, "listening on {addr}");
    }
    if let Some(scrapes) = scrapes {
        let _ = writeln!(stdout, "metrics on {}", scrapes.addr);
    }
    let _ = stdout.flush();
}

/// `--metrics URL`: a server of its own (so that scrapes are not counted), on a thread,
/// stopped when dropped.
struct MetricsServer {
    addr: Address,
    stop: socketserver::ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    fn start(
        addr: &Address,
        snapshot: impl Fn() -> socketserver::metrics::Snapshot + Send + Sync + 'static,
        http: bool,
    ) -> Result<MetricsServer, Failure> {
        let page = Http::new(Scrape::new(snapshot, http)).access_log(false);
        let server = ServerBuilder::new()
            .listen(addr.clone())
            .mode(Mode::Threading)
            .timeout(Some(std::time::Duration::from_secs(10)))
            .shutdown_timeout(std::time::Duration::from_secs(1))
            .bind(page)?;
        let addr = server.local_addr().clone();
        let stop = server.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                if let Err(e) = server.serve_forever() {
                    log::error!("the metrics server stopped: {e}");
                }
            })
            .map_err(|e| Failure::Other(format!("cannot start the metrics server: {e}")))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    // Per listener, a socket per worker slot (TCP: `SO_REUSEPORT` spreads connections evenly
    // over them) or one socket for every slot (see `supervisor.rs`). Sync workers are busy
    // while they serve a connection: they share one socket, so an idle one always takes the
    // next connection instead of it waiting behind a busy worker's.
    let per_slot = !matches!(options.mode, Mode::Sync);
    let mut listeners: Vec<Vec<Listener>> = Vec::new();
    for spec in &options.listen {
        match spec {
            Listen::Address(addr @ Address::Tcp { .. }) if per_slot => {
                let first = Listener::bind(addr, options.backlog, true)?;
                // The others on the port the first got (port 0 picks one).
                let bound = first.local_addr().clone();
                let mut slots = vec![first];
                for _ in 1..processes {
                    slots.push(Listener::bind(&bound, options.backlog, true)?);
                }
                listeners.push(slots);
            }
            Listen::Address(addr) => {
                listeners.push(vec![Listener::bind(
                    addr,
                    options.backlog,
                    options.reuse_port,
                )?]);
            }
            inherited => listeners.extend(adopt(inherited, options)?.into_iter().map(|l| vec![l])),
        }
    }
    if inherits_systemd {
        // Read once; the workers get the sockets from us. No thread runs yet.
        sys::forget_socket_activation();
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Other(format!("cannot find this program to start workers: {e}")))?;
    // The workers count into blocks of their own; this sums them, and those of workers gone.
    let board = options
        .metrics
        .as_ref()
        .map(|_| Arc::new(std::sync::Mutex::new(supervisor::Board::default())));
    let scrapes = match (&options.metrics, &board) {
        (Some(addr), Some(board)) => {
            let board = Arc::clone(board);
            Some(MetricsServer::start(
                addr,
                move || supervisor::Board::sum(&board),
                options.service == Service::Http,
            )?)
        }
        _ => None,
    };
    let addrs: Vec<Address> = listeners
        .iter()
        .map(|slots| slots[0].local_addr().clone())
        .collect();
    announce(&addrs, scrapes.as_ref());
    let plan = supervisor::Plan {
        exe,
        args: std::env::args_os().skip(1).collect(),
        fds: (0..processes)
            .map(|slot| {
                listeners
                    .iter()
                    .map(|slots| slots[slot.min(slots.len() - 1)].as_raw_fd())
                    .collect()
            })
            .collect(),
        processes,
        shutdown_timeout: options.shutdown_timeout,
        board,
    };
    let result = supervisor::run(plan).map_err(|e| Failure::Other(e.to_string()));
    drop(scrapes);
    drop(listeners);
    result
}

/// The `http` handler, and what to tell people about it (the root, and whether it is HTTPS).
/// The `http` service as served: the files, behind a password when `--auth` says so.
type FileServer = Http<Arc<dyn http::Service>>;

fn http_handler(
    options: &Options,
    http: &HttpOptions,
) -> Result<(FileServer, (std::path::PathBuf, bool)), Failure> {
    let mut files = StaticFiles::new(&http.dir)
        .map_err(|e| Failure::Usage(format!("--dir {e}")))?
        .follow_symlinks(http.follow_symlinks)
        .hidden(http.hidden)
        .listing(http.listing);
    files = files.compression(if http.compress {
        Compression::default().cache_bytes(http.compress_cache)
    } else {
        Compression::off()
    });
    files = files
        .upload(http.upload)
        .overwrite(http.overwrite)
        .max_upload_bytes(http.max_upload_bytes);
    if let Some(value) = &http.cache_control {
        files = files.cache_control(value.clone());
    }
    if let Some(file) = &http.fallback {
        files = files.fallback(file.clone());
    }
    if let Some(file) = &http.not_found {
        files = files.not_found_page(file.clone());
    }
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
    if http.upload {
        // The upload's own bound decides; the server's must not refuse first.
        limits.max_body = limits.max_body.max(http.max_upload_bytes);
    }
    // One request at a time: an idle keep-alive connection would make the server deaf.
    limits.keep_alive = !matches!(options.mode, Mode::Sync);
    let service: Arc<dyn http::Service> = if http.users.is_empty() {
        Arc::new(files)
    } else {
        Arc::new(BasicAuth::new(files, http.users.clone()))
    };
    let mut handler = Http::new(service).limits(limits).access_log(!options.quiet);
    if let Some(path) = &http.health {
        handler = handler.health(path.clone());
    }
    for (name, value) in &http.headers {
        handler = handler
            .header(name.clone(), value.clone())
            .map_err(|e| Failure::Usage(format!("--header {e}")))?;
    }
    handler = handler.cors(http.cors);
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
