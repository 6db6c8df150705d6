//! std peer for bench/run: `std_echo ADDR [echo|upper|udp]`.
//!
//! - `echo` (default): a thread per connection copies every byte back until EOF.
//! - `upper`: a thread per connection runs Python's documented MyTCPHandler: read one line,
//!   reply with it stripped and upper-cased (no newline), close.
//! - `udp`: a blocking single-thread loop echoing each datagram to its sender.
//!
//! Prints `listening on tcp://IP:PORT` (or `udp://`) on stdout, flushed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};

fn announce(scheme: &str, addr: std::net::SocketAddr) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {scheme}://{addr}").unwrap();
    out.flush().unwrap();
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn upper(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(&stream).take(64 * 1024);
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).is_err() {
        return;
    }
    let reply = line.trim_ascii().to_ascii_uppercase();
    let _ = (&stream).write_all(&reply);
    let _ = stream.shutdown(Shutdown::Write);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let kind = args.next().unwrap_or_else(|| "echo".into());
    let handler: fn(TcpStream) = match kind.as_str() {
        "echo" => echo,
        "upper" => upper,
        "udp" => {
            let socket = UdpSocket::bind(&addr).expect("bind");
            announce("udp", socket.local_addr().unwrap());
            let mut buf = vec![0u8; 65536];
            loop {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        }
        other => {
            eprintln!("std_echo: unknown kind {other:?} (echo, upper, udp)");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&addr).expect("bind");
    announce("tcp", listener.local_addr().unwrap());
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || handler(stream));
                if let Err(e) = spawned {
                    eprintln!("std_echo: spawn: {e}");
                }
            }
            Err(e) => {
                eprintln!("std_echo: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}
