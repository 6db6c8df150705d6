//! Resource accounting: no fd or thread survives a server, and accept survives fd exhaustion.
//!
//! These checks count process-wide resources (`/proc/self/fd`, `/proc/self/task`) and exhaust
//! the fd table, so they run in their own test binary as ONE test: the harness would otherwise
//! start other tests' threads in the middle of a count.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use common::*;
use socketserver::Mode;
use socketserver::services::Echo;

fn load(addr: &socketserver::Address, clients: usize, each: usize) -> io::Result<()> {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addr = addr.clone();
            thread::spawn(move || -> io::Result<()> {
                for i in 0..each {
                    let msg = format!("{c}/{i}");
                    assert_eq!(exchange(&addr, msg.as_bytes())?, msg.as_bytes());
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap()?;
    }
    Ok(())
}

fn no_fd_or_thread_leak_after_thousands_of_connections() -> io::Result<()> {
    for mode in all_modes() {
        for transport in TRANSPORTS {
            let fds = proc_count("fd");
            let threads = proc_count("task");
            let server = TestServer::start(transport, mode, Echo);
            let (clients, each) = if transport.is_stream() {
                (4, 500)
            } else {
                (4, 250)
            };
            load(&server.addr, clients, each)?;
            server.shutdown().unwrap();
            assert!(
                wait_until(|| proc_count("fd") == fds && proc_count("task") == threads),
                "{mode} {transport:?}: fds {fds} -> {}, threads {threads} -> {}",
                proc_count("fd"),
                proc_count("task")
            );
        }
    }
    Ok(())
}

fn threads_of_finished_connections_do_not_pile_up_while_serving() -> io::Result<()> {
    let threads = proc_count("task");
    let server = TestServer::start(Transport::Tcp, Mode::Threading, Echo);
    load(&server.addr, 4, 250)?;
    // Only the serving thread remains while the server runs: finished connection threads are
    // gone, not parked until close (python/cpython#81374).
    assert!(
        wait_until(|| proc_count("task") == threads + 1),
        "{} threads",
        proc_count("task")
    );
    server.shutdown().unwrap();
    Ok(())
}

/// Collects log lines (the library reports accept trouble through `log`).
struct Collect(Mutex<Vec<String>>);

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

fn logs() -> &'static Collect {
    static LOGS: OnceLock<&'static Collect> = OnceLock::new();
    LOGS.get_or_init(|| {
        let collect: &'static Collect = Box::leak(Box::new(Collect(Mutex::new(Vec::new()))));
        log::set_logger(collect).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
        collect
    })
}

fn accept_backs_off_when_out_of_fds_and_recovers() -> io::Result<()> {
    let logs = logs();
    let server = TestServer::start(Transport::Tcp, Mode::Threading, Echo);
    let addr = server.addr.socket_addr().unwrap();

    // Fill the fd table, leaving exactly one slot for our client.
    let null = std::fs::File::open("/dev/null")?;
    let mut hog = Vec::new();
    let exhausted = loop {
        match null.try_clone() {
            Ok(f) => hog.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(exhausted.raw_os_error(), Some(24), "{exhausted}"); // EMFILE
    hog.pop();
    let connected = TcpStream::connect(addr);
    // The server cannot accept now: it backs off instead of spinning or dying.
    thread::sleep(Duration::from_millis(300));
    drop(hog);
    let mut client = connected?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.write_all(b"queued while out of fds")?;
    client.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    client.read_to_end(&mut reply)?;
    assert_eq!(reply, b"queued while out of fds");
    let lines: Vec<String> = logs.0.lock().unwrap().clone();
    let reported = lines
        .iter()
        .filter(|l| l.contains("too many open files"))
        .count();
    assert_eq!(reported, 1, "one log line per burst: {lines:?}");
    server.shutdown().unwrap();
    Ok(())
}

#[test]
fn resource_accounting() -> io::Result<()> {
    no_fd_or_thread_leak_after_thousands_of_connections()?;
    threads_of_finished_connections_do_not_pile_up_while_serving()?;
    accept_backs_off_when_out_of_fds_and_recovers()
}
