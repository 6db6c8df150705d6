//! Command line → validated [`Config`]. Parsing only: nothing here connects or prints.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, error::ErrorKind};

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// The largest `--size` × `--pipeline` of the echo workload (one buffer per client thread).
const MAX_ROUND: usize = 64 * 1024 * 1024;

/// Load generator for the socketserver benchmarks: closed-loop echo, connect-per-request and UDP
/// request/response. Prints one human line and one JSON line.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    workload: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N persistent connections, each sending P requests of B bytes back to back and reading
    /// back all P×B echoed bytes before the next round
    Echo(EchoArgs),
    /// N clients, each looping: connect, send `hello <n>\n`, read to EOF, close (against the
    /// upper service)
    Connect(ConnectArgs),
    /// N clients, each sending a datagram of B bytes and waiting up to 1 s for its echo
    Udp(UdpArgs),
}

#[derive(Debug, Args)]
struct EchoArgs {
    /// Server address: tcp://HOST:PORT or unix:PATH
    #[arg(long, value_name = "URL")]
    addr: String,
    /// Persistent connections
    #[arg(long, value_name = "N")]
    connections: usize,
    /// Bytes per request
    #[arg(long, value_name = "B")]
    size: usize,
    /// Requests sent back to back on a connection before reading their echoes
    #[arg(long, value_name = "P", default_value_t = 1)]
    pipeline: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    /// Server address: tcp://HOST:PORT (or unix:PATH)
    #[arg(long, value_name = "URL")]
    addr: String,
    /// Concurrent clients
    #[arg(long, value_name = "N")]
    clients: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct UdpArgs {
    /// Server address: udp://HOST:PORT
    #[arg(long, value_name = "URL")]
    addr: String,
    /// Concurrent clients, each with its own socket
    #[arg(long, value_name = "N")]
    clients: usize,
    /// Bytes per datagram
    #[arg(long, value_name = "B")]
    size: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct Common {
    /// Seconds measured (after the warm-up)
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Duration,
    /// Client threads; connections are spread over them
    #[arg(long, value_name = "T", default_value_t = 1)]
    threads: usize,
    /// Seconds run before measuring, not counted
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "0.5", allow_negative_numbers = true)]
    warmup: Duration,
}

/// The three workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Echo,
    Connect,
    Udp,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Echo => "echo",
            Workload::Connect => "connect",
            Workload::Udp => "udp",
        }
    }
}

/// Where the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Udp(SocketAddr),
}

/// A validated command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub workload: Workload,
    /// `--addr` as given, for the report.
    pub addr: String,
    pub target: Target,
    /// Connections (echo) or clients (connect, udp).
    pub count: usize,
    /// Bytes per request (echo, udp); 0 for connect, whose requests are `hello <n>\n`.
    pub size: usize,
    /// Requests in flight per connection: `--pipeline` for echo, 1 otherwise.
    pub pipeline: usize,
    pub threads: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

/// How parsing ended when it did not produce a configuration.
#[derive(Debug)]
pub enum Stop {
    /// `--help` or `--version`: print this on stdout and exit 0.
    Print(String),
    /// A bad command line: print `loadgen: <message>` and exit 2.
    Usage(String),
}

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

/// Parses `args`, the program name first.
pub fn parse<I, T>(args: I) -> Result<Config, Stop>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|err| match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let mut text = err.to_string();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            Stop::Print(text)
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            Stop::Usage("a workload is required: echo, connect or udp (see loadgen --help)".into())
        }
        _ => Stop::Usage(one_line(&err.to_string())),
    })?;
    validate(cli).map_err(Stop::Usage)
}

/// clap's message in one line: its first line without the `error: ` prefix, plus what the next
/// line names when the first ends with a colon.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if message.ends_with(':')
        && let Some(next) = lines.next()
    {
        message.push(' ');
        message.push_str(next);
    }
    message.push_str(" (see loadgen --help)");
    message
}

fn validate(cli: Cli) -> Result<Config, String> {
    let (workload, addr, count, count_flag, size, pipeline, common) = match cli.workload {
        Command::Echo(a) => (
            Workload::Echo,
            a.addr,
            a.connections,
            "--connections",
            a.size,
            a.pipeline,
            a.common,
        ),
        Command::Connect(a) => (
            Workload::Connect,
            a.addr,
            a.clients,
            "--clients",
            0,
            1,
            a.common,
        ),
        Command::Udp(a) => (
            Workload::Udp,
            a.addr,
            a.clients,
            "--clients",
            a.size,
            1,
            a.common,
        ),
    };
    if count == 0 {
        return Err(format!("{count_flag} 0: use at least 1"));
    }
    if workload != Workload::Connect && size == 0 {
        return Err("--size 0: use at least 1 byte".into());
    }
    if pipeline == 0 {
        return Err("--pipeline 0: use at least 1".into());
    }
    if workload == Workload::Echo && size.saturating_mul(pipeline) > MAX_ROUND {
        return Err(format!(
            "--size {size} × --pipeline {pipeline} is more than {MAX_ROUND} bytes per round"
        ));
    }
    if workload == Workload::Udp && size > MAX_DATAGRAM {
        return Err(format!(
            "--size {size}: a UDP datagram carries at most {MAX_DATAGRAM} bytes"
        ));
    }
    if common.threads == 0 {
        return Err("--threads 0: use at least 1".into());
    }
    if common.threads > count {
        return Err(format!(
            "--threads {} is more than {count_flag} {count}: every thread needs one",
            common.threads
        ));
    }
    if common.duration.is_zero() {
        return Err("--duration 0: measure for some time".into());
    }
    let target = parse_target(&addr)?;
    match (workload, &target) {
        (Workload::Echo | Workload::Connect, Target::Tcp(_) | Target::Unix(_)) => {}
        (Workload::Udp, Target::Udp(_)) => {}
        (Workload::Udp, _) => return Err(format!("--addr {addr}: the udp workload needs udp://")),
        (_, _) => {
            return Err(format!(
                "--addr {addr}: the {} workload needs tcp:// or unix:",
                workload.name()
            ));
        }
    }
    Ok(Config {
        workload,
        addr,
        target,
        count,
        size,
        pipeline,
        threads: common.threads,
        duration: common.duration,
        warmup: common.warmup,
    })
}

/// `tcp://HOST:PORT`, `udp://HOST:PORT` (HOST a name, an IPv4 address or a bracketed IPv6
/// address; names are resolved once, to their first address) or `unix:PATH`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("--addr {text}: the path is missing"));
        }
        // sun_path holds 108 bytes on Linux, 104 elsewhere, with a NUL at the end.
        if path.len() >= 104 {
            return Err(format!(
                "--addr {text}: a socket path must be under 104 bytes"
            ));
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    let (udp, rest) = if let Some(rest) = text.strip_prefix("tcp://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("udp://") {
        (true, rest)
    } else {
        return Err(format!(
            "--addr {text}: expected tcp://HOST:PORT, udp://HOST:PORT or unix:PATH"
        ));
    };
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("--addr {text}: the port is missing"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--addr {text}: {port:?} is not a port"))?;
    if port == 0 {
        return Err(format!("--addr {text}: port 0 is not a server's port"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("--addr {text}: the host is missing"));
    }
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("--addr {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {text}: {host} has no address"))?;
    Ok(if udp {
        Target::Udp(addr)
    } else {
        Target::Tcp(addr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(line: &str) -> Config {
        match parse(std::iter::once("loadgen").chain(line.split_whitespace())) {
            Ok(config) => config,
            Err(stop) => panic!("{line}: {stop:?}"),
        }
    }

    fn usage(line: &str) -> String {
        match parse(std::iter::once("loadgen").chain(line.split_whitespace())) {
            Err(Stop::Usage(message)) => {
                assert!(!message.contains('\n'), "one line: {message:?}");
                message
            }
            other => panic!("expected a usage error for {line:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_documented_command_lines_parse() {
        let echo = parse_ok(
            "echo --addr tcp://127.0.0.1:9999 --connections 100 --size 64 --duration 3 \
             --pipeline 4 --threads 2 --warmup 1",
        );
        assert_eq!(
            echo,
            Config {
                workload: Workload::Echo,
                addr: "tcp://127.0.0.1:9999".into(),
                target: Target::Tcp("127.0.0.1:9999".parse().unwrap()),
                count: 100,
                size: 64,
                pipeline: 4,
                threads: 2,
                duration: Duration::from_secs(3),
                warmup: Duration::from_secs(1),
            }
        );
        let defaults = parse_ok("echo --addr unix:/tmp/s --connections 1 --size 1 --duration 0.25");
        assert_eq!(defaults.target, Target::Unix("/tmp/s".into()));
        assert_eq!((defaults.pipeline, defaults.threads), (1, 1));
        assert_eq!(defaults.warmup, Duration::from_millis(500));
        assert_eq!(defaults.duration, Duration::from_millis(250));

        let connect = parse_ok("connect --addr tcp://[::1]:80 --clients 10 --duration 2");
        assert_eq!(connect.workload, Workload::Connect);
        assert_eq!(connect.target, Target::Tcp("[::1]:80".parse().unwrap()));
        assert_eq!((connect.count, connect.size, connect.pipeline), (10, 0, 1));

        let udp = parse_ok("udp --addr udp://localhost:53 --clients 10 --size 64 --duration 2");
        assert_eq!(udp.workload, Workload::Udp);
        assert!(matches!(udp.target, Target::Udp(a) if a.port() == 53 && a.ip().is_loopback()));
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        assert!(usage("").contains("echo, connect or udp"));
        assert!(usage("bench").contains("'bench'"));
        assert!(
            usage("echo --addr tcp://127.0.0.1:1 --size 64 --duration 1").contains("--connections")
        );
        let base = "--addr tcp://127.0.0.1:1 --connections 4 --size 64";
        assert!(usage(&format!("echo {base} --duration -1")).contains("must not be negative"));
        assert!(usage(&format!("echo {base} --duration x")).contains("not a number"));
        assert!(usage(&format!("echo {base} --duration 0")).contains("--duration 0"));
        assert!(usage(&format!("echo {base} --duration 1 --threads 5")).contains("--threads 5"));
        assert!(usage(&format!("echo {base} --duration 1 --threads 0")).contains("--threads 0"));
        assert!(usage(&format!("echo {base} --duration 1 --pipeline 0")).contains("--pipeline 0"));
        assert!(usage(&format!("echo {base} --duration 1 --clients 3")).contains("--clients"));
        assert!(
            usage("echo --addr tcp://127.0.0.1:1 --connections 0 --size 1 --duration 1")
                .contains("--connections 0")
        );
        assert!(
            usage("echo --addr udp://127.0.0.1:1 --connections 1 --size 1 --duration 1")
                .contains("tcp:// or unix:")
        );
        assert!(
            usage("udp --addr tcp://127.0.0.1:1 --clients 1 --size 1 --duration 1")
                .contains("udp://")
        );
        assert!(
            usage("udp --addr udp://127.0.0.1:1 --clients 1 --size 70000 --duration 1")
                .contains("65507")
        );
        assert!(usage("connect --addr tcp://127.0.0.1 --clients 1 --duration 1").contains("port"));
        assert!(usage("connect --addr 127.0.0.1:80 --clients 1 --duration 1").contains("tcp://"));
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_target("tcp://127.0.0.1:9999"),
            Ok(Target::Tcp("127.0.0.1:9999".parse().unwrap()))
        );
        assert_eq!(
            parse_target("udp://[::1]:7"),
            Ok(Target::Udp("[::1]:7".parse().unwrap()))
        );
        assert_eq!(
            parse_target("unix:/run/x.sock"),
            Ok(Target::Unix("/run/x.sock".into()))
        );
        assert!(parse_target("tcp://127.0.0.1:0").is_err());
        assert!(parse_target("tcp://127.0.0.1:99999").is_err());
        assert!(parse_target("tcp://:80").is_err());
        assert!(parse_target("unix:").is_err());
        assert!(parse_target("http://127.0.0.1:80").is_err());
    }

    #[test]
    fn help_and_version_are_printed_not_errors() {
        assert!(matches!(parse(["loadgen", "--help"]), Err(Stop::Print(_))));
        assert!(matches!(
            parse(["loadgen", "--version"]),
            Err(Stop::Print(_))
        ));
        assert!(matches!(
            parse(["loadgen", "echo", "--help"]),
            Err(Stop::Print(_))
        ));
    }
}
