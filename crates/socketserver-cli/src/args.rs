//! Command-line flags → validated [`Options`]. Parsing only: nothing here binds or prints.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum, error::ErrorKind};
use socketserver::http::Users;
use socketserver::{Address, AsyncAccept, Mode};

/// What `socketserver` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// Echo every byte back (stream), or each datagram to its sender.
    Echo,
    /// Python's MyTCPHandler: one line back, stripped and upper-cased.
    Upper,
    /// Python's ThreadedTCPRequestHandler: `<worker name>: <data>`.
    Threadname,
    /// Static files over HTTP/1.1, like `python -m http.server`.
    Http,
}

/// How --mode async takes connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AcceptArg {
    /// Every loop accepts from the same listener
    Shared,
    /// Every loop has its own TCP listener on the port (SO_REUSEPORT)
    Reuseport,
    /// The serving thread accepts and hands connections to the loops
    Handoff,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Sync,
    Threading,
    Pool,
    Fork,
    Async,
}

/// Serve the demo handlers of Python's socketserver documentation over TCP, UDP and Unix
/// sockets, in any concurrency mode.
#[derive(Debug, Parser)]
#[command(name = "socketserver", version, about, max_term_width = 100)]
struct Cli {
    /// The service to run
    #[arg(value_enum)]
    service: Service,

    /// The TCP port to listen on, as `python -m http.server PORT` takes it (on --bind's
    /// address); not with --listen
    #[arg(value_name = "PORT")]
    port: Option<u16>,

    /// The address to listen on with PORT (default 127.0.0.1; `::` or `0.0.0.0` for every
    /// interface); not with --listen
    #[arg(long, value_name = "ADDR", env = "SOCKETSERVER_BIND")]
    bind: Option<String>,

    /// Where to listen: tcp://HOST:PORT, udp://HOST:PORT, unix:PATH or unixgram:PATH; fd:N for
    /// an inherited socket on descriptor N; systemd (or systemd:NAME) for the sockets systemd
    /// passed (repeatable; default tcp://127.0.0.1:9999, or tcp://127.0.0.1:8000 for http)
    /// [env: SOCKETSERVER_LISTEN, comma-separated]
    #[arg(long = "listen", value_name = "URL")]
    listen: Vec<String>,

    /// How requests run (default: threading; for http: async, which no number of slow or idle
    /// clients can make deaf)
    #[arg(long, value_enum, env = "SOCKETSERVER_MODE")]
    mode: Option<ModeArg>,

    /// Worker threads for --mode pool (default: 4 per core); event loops for --mode async
    /// (default: one per core)
    #[arg(long, value_name = "N", env = "SOCKETSERVER_WORKERS")]
    workers: Option<usize>,

    /// How --mode async takes new connections (default: shared)
    #[arg(long, value_enum, value_name = "HOW", env = "SOCKETSERVER_ACCEPT")]
    accept: Option<AcceptArg>,

    /// Most child processes at once for --mode fork
    #[arg(
        long,
        value_name = "N",
        default_value_t = 40,
        env = "SOCKETSERVER_MAX_CHILDREN"
    )]
    max_children: usize,

    /// Run N worker processes under this one, which binds the listeners once and hands them to
    /// each (a fresh start of this binary); a worker that dies is replaced, SIGHUP restarts
    /// them all from the binary on disk without refusing a connection [default: 1, no
    /// supervisor]
    #[arg(long, value_name = "N", env = "SOCKETSERVER_PROCESSES")]
    processes: Option<usize>,

    /// Internal: serve as one of a supervisor's workers, the listeners inherited on
    /// descriptors 3 to 3+K-1 in order
    #[arg(long, value_name = "K", hide = true)]
    as_worker: Option<usize>,

    /// Most connections served at once, across all listeners (default: no limit)
    #[arg(long, value_name = "N", env = "SOCKETSERVER_MAX_CONNECTIONS")]
    max_connections: Option<usize>,

    /// Close a connection that sends nothing (or reads nothing we send) for SECS (default: none;
    /// for http: 30, and it also bounds receiving a request head and keep-alive idling)
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true, env = "SOCKETSERVER_TIMEOUT")]
    timeout: Option<Duration>,

    /// How long a graceful stop waits for in-flight work
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "10", allow_negative_numbers = true, env = "SOCKETSERVER_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Duration,

    /// Listen backlog for stream listeners (the kernel caps it at net.core.somaxconn)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1024,
        env = "SOCKETSERVER_BACKLOG"
    )]
    backlog: u32,

    /// Set SO_REUSEPORT so several servers can share a TCP or UDP port
    #[arg(long, env = "SOCKETSERVER_REUSE_PORT", value_parser = clap::builder::BoolishValueParser::new())]
    reuse_port: bool,

    /// Log only warnings and errors (no access log, no informational lines)
    #[arg(long, env = "SOCKETSERVER_QUIET", value_parser = clap::builder::BoolishValueParser::new())]
    quiet: bool,

    /// Serve Prometheus metrics (text format) at GET /metrics on this separate TCP listener,
    /// e.g. tcp://127.0.0.1:9100; with --processes, summed over the workers
    #[arg(long, value_name = "URL", env = "SOCKETSERVER_METRICS")]
    metrics: Option<String>,

    /// Every stream connection begins with a PROXY protocol header (v1 or v2, from HAProxy,
    /// nginx or a cloud balancer) due within --timeout (30 s when none is set); its client
    /// address replaces the balancer's everywhere. A connection without one is closed, logged
    #[arg(long, env = "SOCKETSERVER_PROXY_PROTOCOL", value_parser = clap::builder::BoolishValueParser::new())]
    proxy_protocol: bool,

    /// http: the directory to serve
    #[arg(
        long,
        short = 'd',
        visible_alias = "directory",
        value_name = "DIR",
        default_value = ".",
        env = "SOCKETSERVER_DIR"
    )]
    dir: PathBuf,

    /// http: follow symlinks that lead out of --dir (refused by default)
    #[arg(long, env = "SOCKETSERVER_FOLLOW_SYMLINKS", value_parser = clap::builder::BoolishValueParser::new())]
    follow_symlinks: bool,

    /// http: list and serve names starting with a dot (hidden by default)
    #[arg(long, env = "SOCKETSERVER_HIDDEN", value_parser = clap::builder::BoolishValueParser::new())]
    hidden: bool,

    /// http: TLS certificate chain (PEM)
    #[arg(long, value_name = "FILE", env = "SOCKETSERVER_TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// http: TLS private key (PEM)
    #[arg(long, value_name = "FILE", env = "SOCKETSERVER_TLS_KEY")]
    tls_key: Option<PathBuf>,

    /// http: longest request line in bytes (longer gets 414)
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024, env = "SOCKETSERVER_MAX_REQUEST_LINE")]
    max_request_line: usize,

    /// http: largest request head in bytes (larger gets 431)
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, env = "SOCKETSERVER_MAX_HEADER_BYTES")]
    max_header_bytes: usize,

    /// http: most header fields in a request (more gets 431)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        env = "SOCKETSERVER_MAX_HEADERS"
    )]
    max_headers: usize,

    /// http: close a connection that takes less than 64 KiB of a response for SECS (a client
    /// that stopped reading) [default: --timeout, 30]
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true, env = "SOCKETSERVER_WRITE_TIMEOUT")]
    write_timeout: Option<Duration>,

    /// http: least average rate of a request body, in bytes a second, after --timeout's grace
    /// (a client trickling a body is cut off); 0: no rate
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 1024,
        env = "SOCKETSERVER_MIN_BODY_RATE"
    )]
    min_body_rate: u64,

    /// http: answer GET/HEAD PATH with 200 "ok" while serving and 503 once a graceful stop has
    /// begun (for load balancers and readiness probes), before any other routing
    #[arg(long, value_name = "PATH", env = "SOCKETSERVER_HEALTH")]
    health: Option<String>,

    /// http: add 'NAME: VALUE' to every response, errors included (repeatable)
    #[arg(
        long = "header",
        value_name = "NAME: VALUE",
        env = "SOCKETSERVER_HEADER",
        value_delimiter = '\n'
    )]
    headers: Vec<String>,

    /// http: the Cache-Control of every file response, e.g. 'max-age=3600' (default: none)
    #[arg(long, value_name = "VALUE", env = "SOCKETSERVER_CACHE_CONTROL")]
    cache_control: Option<String>,

    /// http: allow cross-origin requests: Access-Control-Allow-Origin: * on every response,
    /// and CORS preflight requests answered
    #[arg(long, env = "SOCKETSERVER_CORS", value_parser = clap::builder::BoolishValueParser::new())]
    cors: bool,

    /// http: serve FILE (relative to --dir, e.g. index.html for a single-page app) with 200
    /// for a path that does not exist, instead of 404
    #[arg(long, value_name = "FILE", env = "SOCKETSERVER_FALLBACK")]
    fallback: Option<String>,

    /// http: the body of 404 answers: FILE, relative to --dir (the status stays 404)
    #[arg(long, value_name = "FILE", env = "SOCKETSERVER_NOT_FOUND")]
    not_found: Option<String>,

    /// http: answer 403 for a directory without an index, never a listing
    #[arg(long, env = "SOCKETSERVER_NO_LISTING", value_parser = clap::builder::BoolishValueParser::new())]
    no_listing: bool,

    /// http: never compress: no zstd, br or gzip on the fly, no precompressed NAME.zst,
    /// NAME.br or NAME.gz siblings served
    #[arg(long, env = "SOCKETSERVER_NO_COMPRESS", value_parser = clap::builder::BoolishValueParser::new())]
    no_compress: bool,

    /// http: require HTTP Basic credentials of USER (repeatable): USER:PASSWORD,
    /// USER:sha256:HEX or USER:$argon2id$... (a PHC string)
    #[arg(
        long = "auth",
        value_name = "USER:PASSWORD",
        env = "SOCKETSERVER_AUTH",
        value_delimiter = '\n'
    )]
    auth: Vec<String>,

    /// http: read users from FILE, one USER:PASSWORD-OR-HASH per line (# starts a comment)
    #[arg(long, value_name = "FILE", env = "SOCKETSERVER_AUTH_FILE")]
    auth_file: Option<PathBuf>,

    /// http: accept uploads: PUT /dir/name stores the body as that file (off by default:
    /// nothing is written without it)
    #[arg(long, env = "SOCKETSERVER_UPLOAD", value_parser = clap::builder::BoolishValueParser::new())]
    upload: bool,

    /// http: let an upload replace an existing file (refused with 409 otherwise)
    #[arg(long, env = "SOCKETSERVER_OVERWRITE", value_parser = clap::builder::BoolishValueParser::new())]
    overwrite: bool,

    /// http: the largest upload in bytes (larger gets 413)
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30, env = "SOCKETSERVER_MAX_UPLOAD_BYTES")]
    max_upload_bytes: u64,

    /// http: keep compressed bodies of hot files in memory, up to BYTES in all (0: compress
    /// every response anew)
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20, env = "SOCKETSERVER_COMPRESS_CACHE")]
    compress_cache: usize,
}

/// Options of the `http` service.
#[derive(Debug)]
pub struct HttpOptions {
    pub dir: PathBuf,
    pub follow_symlinks: bool,
    pub hidden: bool,
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// How long a response may stall (`None`: as `--timeout`).
    pub write_timeout: Option<Duration>,
    /// Least request body rate, bytes a second (0: none).
    pub min_body_rate: u64,
    /// Certificate chain and key files (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The health check's path.
    pub health: Option<String>,
    /// `--header`: every response's extra headers.
    pub headers: Vec<(String, String)>,
    pub cache_control: Option<String>,
    pub cors: bool,
    /// Relative to `dir`.
    pub fallback: Option<String>,
    /// Relative to `dir`.
    pub not_found: Option<String>,
    pub listing: bool,
    /// Compression on the fly and precompressed siblings.
    pub compress: bool,
    /// The compressed bodies' cache bound, bytes.
    pub compress_cache: usize,
    /// `--auth` and `--auth-file`: empty when anyone may read.
    pub users: Users,
    pub upload: bool,
    pub overwrite: bool,
    pub max_upload_bytes: u64,
}

/// One `--listen` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// An address to bind.
    Address(Address),
    /// `fd:N`: an inherited socket.
    Fd(i32),
    /// `systemd` or `systemd:NAME`: the sockets of socket activation.
    Systemd(Option<String>),
}

impl Listen {
    fn parse(text: &str) -> Result<Listen, String> {
        if let Some(n) = text.strip_prefix("fd:") {
            return match n.parse::<i32>() {
                Ok(fd) if fd >= 0 => Ok(Listen::Fd(fd)),
                _ => Err(format!(
                    "--listen {text}: expected fd:N with N a descriptor number (0 or more)"
                )),
            };
        }
        if text == "systemd" {
            return Ok(Listen::Systemd(None));
        }
        if let Some(name) = text.strip_prefix("systemd:") {
            if name.is_empty() || name.contains(':') {
                return Err(format!(
                    "--listen {text}: expected systemd:NAME with the socket unit's FileDescriptorName"
                ));
            }
            return Ok(Listen::Systemd(Some(name.to_string())));
        }
        text.parse::<Address>()
            .map(Listen::Address)
            .map_err(|e| e.to_string())
    }
}

/// Validated options.
#[derive(Debug)]
pub struct Options {
    pub service: Service,
    pub listen: Vec<Listen>,
    pub mode: Mode,
    pub accept: AsyncAccept,
    pub max_connections: Option<usize>,
    pub timeout: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub backlog: u32,
    pub reuse_port: bool,
    pub quiet: bool,
    /// `--metrics URL`: where the metrics are served.
    pub metrics: Option<Address>,
    /// `--processes N`: run a supervisor with N workers.
    pub processes: Option<usize>,
    /// This process is a supervisor's worker (its listeners are inherited).
    pub worker: bool,
    /// How long a connection's PROXY header may take (`None`: no header expected).
    pub proxy_protocol: Option<Duration>,
    pub http: Option<HttpOptions>,
}

/// How parsing ended when it did not produce options.
#[derive(Debug)]
pub enum Stop {
    /// `--help` or `--version`: print this on stdout and exit 0.
    Print(String),
    /// A bad command line: print `socketserver: <message>` and exit 2.
    Usage(String),
}

/// How long a PROXY header may take when no `--timeout` says.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if secs.is_sign_negative() {
        return Err(format!("{text:?} must not be negative"));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{text:?} is not a usable number of seconds"))
}

/// Parses `args` (without the program name handling: clap takes it from the first item).
pub fn parse<I, T>(args: I) -> Result<Options, Stop>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let clap_stop = |err: clap::Error| match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Stop::Print(err.to_string()),
        _ => Stop::Usage(one_line(&err.to_string())),
    };
    let matches = Cli::command()
        .try_get_matches_from(args)
        .map_err(clap_stop)?;
    let cli = Cli::from_arg_matches(&matches).map_err(clap_stop)?;
    if cli.service != Service::Http
        && let Some(flag) = http_only_flag(&matches)
    {
        return Err(Stop::Usage(format!(
            "--{flag} applies to the http service only, not {}",
            cli.service
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string())
        )));
    }
    validate(cli).map_err(Stop::Usage)
}

/// The first `http`-only flag given on the command line, if any: on another service it would
/// be silently ignored (a TLS certificate on `echo` would start a plaintext server).
fn http_only_flag(matches: &ArgMatches) -> Option<String> {
    Cli::command()
        .get_arguments()
        .filter(|arg| {
            arg.get_help()
                .is_some_and(|help| help.to_string().starts_with("http:"))
        })
        .find(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|arg| {
            arg.get_long()
                .map_or_else(|| arg.get_id().as_str().replace('_', "-"), String::from)
        })
}

/// clap's message in one line: its first line without the `error: ` prefix, plus the
/// possible values when it lists them.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // "the following required arguments were not provided:" names them on the next line.
    if message.ends_with(':')
        && let Some(next) = lines.next()
    {
        message.push(' ');
        message.push_str(next);
    }
    if let Some(values) = rendered
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("[possible values:"))
    {
        message.push_str(&format!(" {values}"));
    }
    message.push_str(" (see socketserver --help)");
    message
}

fn validate(cli: Cli) -> Result<Options, String> {
    // `http` defaults to the event loops: the mode that slow or idle clients cannot make deaf.
    let chosen = cli.mode.unwrap_or(if cli.service == Service::Http {
        ModeArg::Async
    } else {
        ModeArg::Threading
    });
    let mode = match chosen {
        ModeArg::Sync => Mode::Sync,
        ModeArg::Threading => Mode::Threading,
        ModeArg::Pool => match cli.workers {
            Some(workers) => Mode::Pool { workers },
            None => Mode::pool(),
        },
        ModeArg::Fork => Mode::Fork {
            max_children: cli.max_children,
        },
        ModeArg::Async => match (cli.workers, Mode::evented()) {
            (Some(loops), Mode::Async { workers, .. }) => Mode::Async { loops, workers },
            (_, default) => default,
        },
    };
    if cli.workers == Some(0) {
        return Err(match chosen {
            ModeArg::Async => "--workers 0: async mode needs at least 1 event loop".into(),
            _ => "--workers 0: a pool needs at least 1 worker".into(),
        });
    }
    if cli.workers.is_some() && !matches!(chosen, ModeArg::Pool | ModeArg::Async) {
        return Err(format!(
            "--workers applies to --mode pool and --mode async, not --mode {mode}"
        ));
    }
    if cli.accept.is_some() && chosen != ModeArg::Async {
        return Err(format!(
            "--accept applies to --mode async, not --mode {mode}"
        ));
    }
    if cli.max_children == 0 {
        return Err("--max-children 0: fork mode needs at least 1 child".into());
    }
    if cli.max_connections == Some(0) {
        return Err("--max-connections 0 would never serve anyone; use at least 1".into());
    }
    if cli.backlog == 0 {
        return Err("--backlog 0: use at least 1".into());
    }
    let metrics = match &cli.metrics {
        None => None,
        Some(url) => match url.parse::<Address>() {
            Ok(addr @ Address::Tcp { .. }) => Some(addr),
            Ok(other) => {
                return Err(format!(
                    "--metrics {other}: the metrics are served over TCP (tcp://HOST:PORT)"
                ));
            }
            Err(e) => return Err(format!("--metrics {url}: {e}")),
        },
    };
    if cli.processes == Some(0) {
        return Err("--processes 0: use at least 1 worker process".into());
    }
    // `SOCKETSERVER_LISTEN` is a comma-separated list, read only when no --listen is given.
    let from_env: Vec<String> = match std::env::var("SOCKETSERVER_LISTEN") {
        Ok(list) if cli.listen.is_empty() => list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    let urls = if cli.listen.is_empty() {
        &from_env
    } else {
        &cli.listen
    };
    if (cli.port.is_some() || cli.bind.is_some()) && !urls.is_empty() {
        return Err(
            "a PORT or --bind together with --listen: give one or the other (--listen tcp://HOST:PORT says both)"
                .into(),
        );
    }
    let mut listen = Vec::new();
    for url in urls {
        let spec = Listen::parse(url)?;
        if matches!(spec, Listen::Fd(_) | Listen::Systemd(_)) && listen.contains(&spec) {
            return Err(format!("--listen {url} is given twice"));
        }
        listen.push(spec);
    }
    let http = cli.service == Service::Http;
    if listen.is_empty() {
        let port = cli.port.unwrap_or(if http { 8000 } else { 9999 });
        let host = cli.bind.clone().unwrap_or_else(|| "127.0.0.1".into());
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err("--bind: an empty address; use 0.0.0.0 or :: for every interface".into());
        }
        listen.push(Listen::Address(Address::Tcp { host, port }));
    }
    if let Some(inherited) = cli.as_worker {
        // A supervisor's worker: it bound the listeners given, in order, from fd 3 on.
        listen = (0..inherited)
            .map(|i| Listen::Fd(3 + i32::try_from(i).unwrap_or(0)))
            .collect();
    }
    let http = if http {
        Some(http_options(&cli, &listen)?)
    } else {
        None
    };
    let timeout = match (&http, cli.timeout) {
        (Some(_), None) => Some(Duration::from_secs(30)),
        (_, timeout) => timeout,
    };
    Ok(Options {
        service: cli.service,
        listen,
        mode,
        accept: match cli.accept {
            None | Some(AcceptArg::Shared) => AsyncAccept::Shared,
            Some(AcceptArg::Handoff) => AsyncAccept::Handoff,
            Some(AcceptArg::Reuseport) => AsyncAccept::ReusePort,
        },
        max_connections: cli.max_connections,
        timeout: timeout.filter(|t| !t.is_zero()),
        shutdown_timeout: cli.shutdown_timeout,
        backlog: cli.backlog,
        reuse_port: cli.reuse_port,
        quiet: cli.quiet,
        metrics,
        processes: cli.processes.filter(|_| cli.as_worker.is_none()),
        worker: cli.as_worker.is_some(),
        proxy_protocol: cli
            .proxy_protocol
            .then(|| timeout.filter(|t| !t.is_zero()))
            .map(|t| t.unwrap_or(PROXY_HEADER_TIMEOUT)),
        http,
    })
}

fn http_options(cli: &Cli, listen: &[Listen]) -> Result<HttpOptions, String> {
    // Inherited sockets are checked once adopted (their kind is read from the socket).
    let mut addresses = listen.iter().filter_map(|l| match l {
        Listen::Address(addr) => Some(addr),
        _ => None,
    });
    if let Some(addr) = addresses.find(|a| !a.is_stream()) {
        return Err(format!(
            "the http service needs stream listeners (tcp:// or unix:), not {addr}"
        ));
    }
    match std::fs::metadata(&cli.dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("--dir {}: not a directory", cli.dir.display())),
        Err(e) => return Err(format!("--dir {}: {}", cli.dir.display(), describe(&e))),
    }
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => {
            return Err("--tls-cert needs --tls-key (the certificate's private key)".into());
        }
        (None, Some(_)) => return Err("--tls-key needs --tls-cert (the certificate chain)".into()),
    };
    if let Some(path) = &cli.health
        && (!path.starts_with('/')
            || path.contains(['?', '#'])
            || path.chars().any(char::is_control))
    {
        return Err(format!(
            "--health {path}: expected a path starting with / (no query), such as /healthz"
        ));
    }
    for (flag, value) in [
        ("--max-request-line", cli.max_request_line),
        ("--max-header-bytes", cli.max_header_bytes),
        ("--max-headers", cli.max_headers),
    ] {
        if value == 0 {
            return Err(format!("{flag} 0: use at least 1"));
        }
    }
    let mut headers = Vec::new();
    for given in &cli.headers {
        match given.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() && name.trim() == name => {
                headers.push((name.to_string(), value.trim().to_string()));
            }
            _ => {
                return Err(format!(
                    "--header {given:?}: expected 'NAME: VALUE', such as 'X-Frame-Options: DENY'"
                ));
            }
        }
    }
    for (flag, file) in [
        ("--fallback", &cli.fallback),
        ("--not-found", &cli.not_found),
    ] {
        if let Some(file) = file
            && !cli.dir.join(file.trim_start_matches('/')).is_file()
        {
            return Err(format!(
                "{flag} {file}: no such file in --dir {}",
                cli.dir.display()
            ));
        }
    }
    let mut users = Users::new();
    for entry in &cli.auth {
        users = users.with(entry).map_err(|e| format!("--auth: {e}"))?;
    }
    if let Some(file) = &cli.auth_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--auth-file {}: {}", file.display(), describe(&e)))?;
        users = users
            .with_lines(&text)
            .map_err(|e| format!("--auth-file {}: {e}", file.display()))?;
        if users.is_empty() {
            return Err(format!("--auth-file {}: no users in it", file.display()));
        }
    }
    Ok(HttpOptions {
        dir: cli.dir.clone(),
        follow_symlinks: cli.follow_symlinks,
        hidden: cli.hidden,
        max_request_line: cli.max_request_line,
        max_header_bytes: cli.max_header_bytes,
        max_headers: cli.max_headers,
        write_timeout: cli.write_timeout.filter(|t| !t.is_zero()),
        min_body_rate: cli.min_body_rate,
        tls,
        health: cli.health.clone(),
        headers,
        cache_control: cli.cache_control.clone(),
        cors: cli.cors,
        fallback: cli.fallback.clone(),
        not_found: cli.not_found.clone(),
        listing: !cli.no_listing,
        compress: !cli.no_compress,
        compress_cache: cli.compress_cache,
        users,
        upload: cli.upload,
        overwrite: cli.overwrite,
        max_upload_bytes: cli.max_upload_bytes,
    })
}

fn describe(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such directory",
        std::io::ErrorKind::PermissionDenied => "permission denied",
        _ => "cannot be read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(args: &[&str]) -> String {
        match parse(std::iter::once("socketserver").chain(args.iter().copied())) {
            Err(Stop::Usage(message)) => message,
            other => panic!("expected a usage error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_are_named() {
        assert!(usage(&["bogus"]).contains("'bogus'"));
        assert!(usage(&["echo", "--mode", "turbo"]).contains("'turbo'"));
        assert!(usage(&["echo", "--mode", "turbo"]).contains("possible values"));
        assert!(usage(&["echo", "--listen", "tcp://x"]).contains("tcp://x"));
        assert!(usage(&["echo", "--timeout", "-1"]).contains("must not be negative"));
        assert!(usage(&[]).contains("<SERVICE>"));
        assert!(usage(&["echo", "--mode", "async", "--workers", "0"]).contains("event loop"));
        assert!(usage(&["echo", "--accept", "shared"]).contains("--accept"));
        assert!(usage(&["echo", "--mode", "async", "--accept", "sometimes"]).contains("sometimes"));
        assert!(usage(&["http", "--dir", "/no/such/dir"]).contains("/no/such/dir"));
        assert!(usage(&["http", "--listen", "udp://127.0.0.1:0"]).contains("udp://"));
        assert!(usage(&["echo", "--workers", "3"]).contains("--workers"));
        assert!(usage(&["echo", "--mode", "pool", "--workers", "0"]).contains("--workers 0"));
        assert!(!usage(&["echo", "--frobnicate"]).contains('\n'));
        assert!(usage(&["echo", "--listen", "fd:x"]).contains("fd:N"));
        assert!(usage(&["echo", "--listen", "fd:-1"]).contains("fd:N"));
        assert!(usage(&["echo", "--listen", "systemd:"]).contains("systemd:NAME"));
        assert!(usage(&["echo", "--listen", "fd:3", "--listen", "fd:3"]).contains("twice"));
        assert!(usage(&["echo", "--health", "/healthz"]).contains("http service only"));
        assert!(usage(&["http", "--health", "healthz"]).contains("starting with /"));
        assert!(usage(&["http", "--health", "/h?x=1"]).contains("no query"));
    }

    #[test]
    fn inherited_sockets_are_listen_values_of_their_own() {
        let opts = parse([
            "socketserver",
            "echo",
            "--listen",
            "fd:3",
            "--listen",
            "systemd",
            "--listen",
            "systemd:web",
            "--listen",
            "unix:x.sock",
        ])
        .unwrap();
        assert_eq!(
            opts.listen,
            vec![
                Listen::Fd(3),
                Listen::Systemd(None),
                Listen::Systemd(Some("web".into())),
                Listen::Address("unix:x.sock".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn defaults_follow_the_contract() {
        let opts = parse(["socketserver", "echo"]).unwrap();
        assert_eq!(
            opts.listen,
            vec![Listen::Address("tcp://127.0.0.1:9999".parse().unwrap())]
        );
        assert_eq!(opts.mode, Mode::Threading);
        assert_eq!(opts.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(opts.timeout, None);
        let pool = parse(["socketserver", "echo", "--mode", "pool", "--workers", "3"]).unwrap();
        assert_eq!(pool.mode, Mode::Pool { workers: 3 });
        let evented = parse(["socketserver", "echo", "--mode", "async", "--workers", "3"]).unwrap();
        assert!(matches!(evented.mode, Mode::Async { loops: 3, .. }));
        let fork = parse([
            "socketserver",
            "echo",
            "--mode",
            "fork",
            "--max-children",
            "2",
        ])
        .unwrap();
        assert_eq!(fork.mode, Mode::Fork { max_children: 2 });
    }
}
