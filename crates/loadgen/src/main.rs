//! `loadgen`: the load generator of the socketserver benchmarks (issue 5). Not part of the
//! library; std, clap and libc only, no async runtime.
//!
//! ```text
//! loadgen echo    --addr tcp://HOST:PORT|unix:PATH --connections N --size B --duration SECS [--pipeline P] [--threads T] [--warmup SECS]
//! loadgen connect --addr tcp://HOST:PORT|unix:PATH --clients N --duration SECS [--threads T] [--warmup SECS]
//! loadgen udp     --addr udp://HOST:PORT --clients N --size B --duration SECS [--threads T] [--warmup SECS]
//! ```
//!
//! # Workloads
//!
//! All three are closed loops: a client sends its next request when the previous one is done.
//! The N connections (or clients) are spread round-robin over T client threads (default 1);
//! each thread drives its share with non-blocking sockets and one level-triggered readiness
//! loop (epoll on Linux, poll(2) elsewhere). TCP sockets have `TCP_NODELAY`.
//!
//! - `echo`: N persistent connections. Each round a connection writes P requests of B bytes
//!   back to back (P = `--pipeline`, default 1) and reads back exactly P×B bytes, as an echo
//!   server returns them. A request's latency runs from the write that carried its first byte
//!   to the read that brought back its last.
//! - `connect`: Python's documented client pattern. Each client loops: connect, send the line
//!   `hello <n>\n` (n: the client's number), read to EOF, close. Meant for the `upper` service,
//!   which replies `HELLO <n>` and closes; any other reply is an error. Latency: from the start
//!   of the connect to the EOF. (The `echo` service never closes first, so against it every
//!   exchange times out.)
//! - `udp`: each client has its own connected UDP socket and one datagram of B bytes in flight;
//!   latency from the send to the matching echo. No echo within 1 s is an error (a loss).
//!
//! # Timing
//!
//! All threads start together. The first `--warmup` seconds (default 0.5) are not counted: a
//! request counts when it completes inside the following `--duration` seconds, wherever it
//! started, and so does an error. Every counted request's latency is kept (microseconds) and
//! the percentiles are nearest-rank over all of them.
//!
//! # Errors
//!
//! Refused or failed connects, resets, early EOF, wrong replies and timeouts (no progress for
//! 2 s on a TCP or Unix connection, no echo within 1 s for UDP) are counted, never fatal. A
//! failed connection is closed and reopened: at once the first time, every 10 ms while it keeps
//! failing. Errors on a connection that was never established are also counted as connect
//! errors. The first error's description goes to stderr.
//!
//! # Output
//!
//! Exactly two lines on stdout, a human one and a JSON one:
//!
//! ```text
//! echo tcp://127.0.0.1:9999 c=100 size=64 p=1 t=1: 143210 req/s, p50 0.61 ms, p99 1.9 ms, max 12.3 ms, errors 0
//! {"workload":"echo","addr":"tcp://127.0.0.1:9999","connections":100,"size":64,"pipeline":1,"threads":1,"duration_s":3,"requests":429630,"errors":0,"rps":143210.0,"p50_us":610,"p99_us":1900,"max_us":12300,"connect_errors":0,"unserved":0,"client_cpu_s":2.871}
//! ```
//!
//! `connect` and `udp` print `clients` instead of `connections`; `connect` has `"size":null`
//! and no `size=` in the human line, `udp` no `p=`. `pipeline` is 1 for both. `rps` is the
//! counted requests over `duration_s`; the latencies are 0 when none was counted. Three keys
//! go beyond the required ones: `connect_errors` (part of `errors`), `unserved` (connections
//! or clients that completed no request in the window: a server that leaves some waiting), and
//! `client_cpu_s`, the CPU time (user + system, all threads) the generator itself used during
//! the window: when it approaches `duration_s` times the cores the generator can use (one when
//! it is pinned to one), the generator, not the server, may be the limit. The human line
//! mentions the first two only when they are not zero: `errors 7 (3 connecting), unserved 2`.
//!
//! Exit status: 0 after a run, whatever its errors; 2 for a bad command line (one line on
//! stderr); 1 when the run itself cannot proceed (no poller, for instance).

mod args;
mod connect;
mod echo;
mod net;
mod poller;
mod stats;
mod sys;
mod udp;

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::args::{Config, Stop, Workload};
use crate::stats::{Summary, Tally};

/// A TCP or Unix connection that makes no progress this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before reopening a connection that failed again without completing a request.
const BACKOFF: Duration = Duration::from_millis(10);
/// How often each thread looks for timeouts and due reopenings.
const SCAN_INTERVAL: Duration = Duration::from_millis(10);

/// A poller token: the connection's index in its thread, and its generation.
fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

fn untoken(token: u64) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

/// One thread's share of a workload, as the readiness loop ([`drive`]) runs it.
trait Driven {
    /// The state of one connection (or client).
    type Slot;
    fn poller(&mut self) -> &mut poller::Poller;
    fn recorder(&self) -> &stats::Recorder;
    /// Looks for timeouts and due reopenings; runs every `SCAN_INTERVAL`.
    fn scan_slot(&mut self, i: usize, slot: &mut Self::Slot, now: Instant);
    /// Whether an event tagged `generation` belongs to the slot's current socket.
    fn is_current(slot: &Self::Slot, generation: u32) -> bool;
    fn handle_event(&mut self, i: usize, slot: &mut Self::Slot, event: &poller::Event);
}

/// The readiness loop every workload shares: until the recorder's window ends, scan the slots
/// every `SCAN_INTERVAL` and hand each event to its slot, dropping events of replaced sockets.
fn drive<D: Driven>(driven: &mut D, slots: &mut [D::Slot]) -> io::Result<()> {
    let mut events = Vec::with_capacity(1024);
    let mut next_scan = Instant::now() + SCAN_INTERVAL;
    loop {
        let now = Instant::now();
        if driven.recorder().finished(now) {
            return Ok(());
        }
        if now >= next_scan {
            for (i, slot) in slots.iter_mut().enumerate() {
                driven.scan_slot(i, slot, now);
            }
            next_scan = now + SCAN_INTERVAL;
        }
        let wait = next_scan.min(driven.recorder().until()) - now;
        driven.poller().wait(&mut events, wait)?;
        for event in &events {
            let (i, generation) = untoken(event.token);
            if let Some(slot) = slots.get_mut(i)
                && D::is_current(slot, generation)
            {
                driven.handle_event(i, slot, event);
            }
        }
    }
}

/// Latencies each thread reserves room for, so that its vector rarely grows mid-run.
fn reserve_hint(config: &Config) -> usize {
    let per_second = 250_000.0 / config.threads as f64;
    ((config.duration.as_secs_f64() * per_second) as usize).clamp(1024, 1 << 26)
}

fn main() -> ExitCode {
    let config = match args::parse(std::env::args_os()) {
        Ok(config) => config,
        Err(Stop::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(Stop::Usage(message)) => {
            eprintln!("loadgen: {message}");
            return ExitCode::from(2);
        }
    };
    let needed = (config.count + 4 * config.threads + 16) as u64;
    match sys::raise_open_files_limit() {
        Ok(limit) if limit < needed => eprintln!(
            "loadgen: warning: the open-file limit ({limit}) is below the {needed} descriptors \
             this run needs; expect errors (raise ulimit -n)"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("loadgen: warning: cannot read the open-file limit: {e}"),
    }
    let summary = match run(&config) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(first) = &summary.first_error {
        eprintln!("loadgen: {} errors; the first: {first}", summary.errors);
    }
    let mut stdout = io::stdout().lock();
    let printed = writeln!(stdout, "{}", human_line(&config, &summary))
        .and_then(|()| writeln!(stdout, "{}", json_line(&config, &summary)))
        .and_then(|()| stdout.flush());
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: cannot print the report: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the workload on `config.threads` threads and merges their measurements. This thread
/// only watches the clock, to measure the generator's own CPU use over the window.
fn run(config: &Config) -> io::Result<Summary> {
    let start = Barrier::new(config.threads + 1);
    let (results, cpu) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.threads)
            .map(|t| {
                let ids: Vec<usize> = (t..config.count).step_by(config.threads).collect();
                let start = &start;
                std::thread::Builder::new()
                    .name(format!("loadgen-{t}"))
                    .spawn_scoped(scope, move || match config.workload {
                        Workload::Echo => echo::client_thread(config, &ids, start),
                        Workload::Connect => connect::client_thread(config, &ids, start),
                        Workload::Udp => udp::client_thread(config, &ids, start),
                    })
                    .expect("spawning a client thread")
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        sleep_until(t0 + config.warmup);
        let before = sys::process_cpu_time();
        sleep_until(t0 + config.warmup + config.duration);
        let after = sys::process_cpu_time();
        let cpu = match (before, after) {
            (Ok(before), Ok(after)) => after.saturating_sub(before).as_secs_f64(),
            _ => 0.0,
        };
        let results: Vec<io::Result<Tally>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a client thread panicked")))
            })
            .collect();
        (results, cpu)
    });
    let tallies = results.into_iter().collect::<io::Result<Vec<Tally>>>()?;
    let mut summary = Tally::merge(tallies).summary(config.duration);
    summary.client_cpu_s = cpu;
    Ok(summary)
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Milliseconds with the precision that matters at each scale: 0.012, 0.61, 1.9, 12.3.
fn ms(us: u32) -> String {
    let ms = f64::from(us) / 1000.0;
    if ms < 0.1 {
        format!("{ms:.3}")
    } else if ms < 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}

fn human_line(config: &Config, s: &Summary) -> String {
    let mut line = format!(
        "{} {} c={}",
        config.workload.name(),
        config.addr,
        config.count
    );
    if config.workload != Workload::Connect {
        let _ = write!(line, " size={}", config.size);
    }
    if config.workload == Workload::Echo {
        let _ = write!(line, " p={}", config.pipeline);
    }
    let _ = write!(
        line,
        " t={}: {:.0} req/s, p50 {} ms, p99 {} ms, max {} ms, errors {}",
        config.threads,
        s.rps,
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.max_us),
        s.errors
    );
    if s.connect_errors > 0 {
        let _ = write!(line, " ({} connecting)", s.connect_errors);
    }
    if s.unserved > 0 {
        let _ = write!(line, ", unserved {}", s.unserved);
    }
    line
}

fn json_line(config: &Config, s: &Summary) -> String {
    let count_key = match config.workload {
        Workload::Echo => "connections",
        Workload::Connect | Workload::Udp => "clients",
    };
    let size = match config.workload {
        Workload::Connect => "null".to_string(),
        Workload::Echo | Workload::Udp => config.size.to_string(),
    };
    format!(
        "{{\"workload\":\"{}\",\"addr\":{},\"{count_key}\":{},\"size\":{size},\"pipeline\":{},\
         \"threads\":{},\"duration_s\":{},\"requests\":{},\"errors\":{},\"rps\":{:.1},\
         \"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"connect_errors\":{},\"unserved\":{},\
         \"client_cpu_s\":{:.3}}}",
        config.workload.name(),
        json_string(&config.addr),
        config.count,
        config.pipeline,
        config.threads,
        config.duration.as_secs_f64(),
        s.requests,
        s.errors,
        s.rps,
        s.p50_us,
        s.p99_us,
        s.max_us,
        s.connect_errors,
        s.unserved,
        s.client_cpu_s,
    )
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, UdpSocket};

    use super::*;

    fn config(line: &str) -> Config {
        args::parse(std::iter::once("loadgen").chain(line.split_whitespace())).unwrap()
    }

    fn summary() -> Summary {
        Summary {
            requests: 429_630,
            rps: 143_210.0,
            p50_us: 610,
            p99_us: 1900,
            max_us: 12_300,
            errors: 0,
            connect_errors: 0,
            unserved: 0,
            first_error: None,
            client_cpu_s: 2.5,
        }
    }

    #[test]
    fn report_lines_follow_the_format() {
        let echo =
            config("echo --addr tcp://127.0.0.1:9999 --connections 100 --size 64 --duration 3");
        assert_eq!(
            human_line(&echo, &summary()),
            "echo tcp://127.0.0.1:9999 c=100 size=64 p=1 t=1: 143210 req/s, p50 0.61 ms, \
             p99 1.9 ms, max 12.3 ms, errors 0"
        );
        assert_eq!(
            json_line(&echo, &summary()),
            "{\"workload\":\"echo\",\"addr\":\"tcp://127.0.0.1:9999\",\"connections\":100,\
             \"size\":64,\"pipeline\":1,\"threads\":1,\"duration_s\":3,\"requests\":429630,\
             \"errors\":0,\"rps\":143210.0,\"p50_us\":610,\"p99_us\":1900,\"max_us\":12300,\
             \"connect_errors\":0,\"unserved\":0,\"client_cpu_s\":2.500}"
        );
        let connect =
            config("connect --addr tcp://127.0.0.1:9 --clients 10 --duration 1.5 --threads 2");
        let s = Summary {
            errors: 3,
            connect_errors: 2,
            unserved: 1,
            p50_us: 12,
            ..summary()
        };
        let human = human_line(&connect, &s);
        assert!(
            human.starts_with("connect tcp://127.0.0.1:9 c=10 t=2: 143210 req/s, p50 0.012 ms")
        );
        assert!(
            human.ends_with("errors 3 (2 connecting), unserved 1"),
            "{human}"
        );
        let json = json_line(&connect, &s);
        assert!(
            json.contains("\"clients\":10,\"size\":null,\"pipeline\":1,"),
            "{json}"
        );
        assert!(json.contains("\"duration_s\":1.5,"), "{json}");
        assert_eq!(
            json_string("unix:/tmp/a\"b\\c\u{1}"),
            r#""unix:/tmp/a\"b\\c\u0001""#
        );
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(untoken(token(999, 7)), (999, 7));
        assert_eq!(untoken(token(0, u32::MAX)), (0, u32::MAX));
    }

    /// A thread-per-connection echo server for the tests; `upper` serves Python's handler.
    fn tcp_server(upper: bool) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    if upper {
                        let mut line = Vec::new();
                        while !line.ends_with(b"\n") {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => line.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = stream.write_all(&line.trim_ascii().to_ascii_uppercase());
                        return;
                    }
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn run_line(line: &str) -> Summary {
        run(&config(line)).unwrap()
    }

    #[test]
    fn echo_runs_against_a_server() {
        let addr = tcp_server(false);
        let s = run_line(&format!(
            "echo --addr tcp://{addr} --connections 5 --size 100 --pipeline 3 --threads 2 \
             --duration 0.3 --warmup 0.1"
        ));
        assert!(s.requests > 100, "{s:?}");
        assert_eq!((s.errors, s.unserved), (0, 0), "{s:?}");
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.max_us);

        // A round larger than the socket buffers, written and read at once.
        let s = run_line(&format!(
            "echo --addr tcp://{addr} --connections 2 --size 1000000 --pipeline 4 \
             --duration 0.3 --warmup 0"
        ));
        assert!(s.requests >= 4, "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");
    }

    #[test]
    fn connect_runs_against_an_upper_server() {
        let addr = tcp_server(true);
        let s = run_line(&format!(
            "connect --addr tcp://{addr} --clients 3 --duration 0.3 --warmup 0.05"
        ));
        assert!(s.requests > 10, "{s:?}");
        assert_eq!((s.errors, s.unserved), (0, 0), "{s:?}");
    }

    #[test]
    fn errors_are_counted_not_fatal() {
        // Nobody listens: every connect is refused, and the run still reports.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = run_line(&format!(
            "echo --addr tcp://{addr} --connections 2 --size 8 --duration 0.2 --warmup 0"
        ));
        assert_eq!(s.requests, 0);
        assert!(s.errors > 0 && s.errors == s.connect_errors, "{s:?}");
        assert_eq!(s.unserved, 2);
        // Against an echo server, connect never sees EOF: the exchanges time out (2 s).
        let echo = tcp_server(false);
        let s = run_line(&format!(
            "connect --addr tcp://{echo} --clients 1 --duration 2.2 --warmup 0"
        ));
        assert_eq!((s.requests, s.errors, s.connect_errors), (0, 1, 0), "{s:?}");
    }

    #[test]
    fn udp_runs_against_a_server() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while let Ok((len, from)) = server.recv_from(&mut buf) {
                n += 1;
                // Drop one datagram: it must count as one loss after 1 s, not stop the client.
                if n != 50 {
                    let _ = server.send_to(&buf[..len], from);
                }
            }
        });
        let s = run_line(&format!(
            "udp --addr udp://{addr} --clients 4 --size 64 --duration 1.3 --warmup 0"
        ));
        assert!(s.requests > 100, "{s:?}");
        assert_eq!((s.errors, s.unserved), (1, 0), "{s:?}");
    }
}
