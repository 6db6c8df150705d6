//! tokio peer for bench/run: `tokio_echo ADDR [echo|upper|udp]`.
//!
//! - `echo` (default): a task per connection copies every byte back until EOF.
//! - `upper`: Python's documented MyTCPHandler: read one line, reply with it stripped and
//!   upper-cased (no newline), close.
//! - `udp`: echo each datagram to its sender from one task.
//!
//! Prints `listening on tcp://IP:PORT` (or `udp://`) on stdout, flushed.

use std::io::Write;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

fn announce(scheme: &str, addr: std::net::SocketAddr) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {scheme}://{addr}").unwrap();
    out.flush().unwrap();
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn upper(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    // At most 64 KiB, as the socketserver `upper` service.
    if (&mut reader).take(64 * 1024).read_until(b'\n', &mut line).await.is_err() {
        return;
    }
    let reply = line.trim_ascii().to_ascii_uppercase();
    let mut stream = reader.into_inner();
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let kind = args.next().unwrap_or_else(|| "echo".into());
    if kind == "udp" {
        let socket = UdpSocket::bind(&addr).await.expect("bind");
        announce("udp", socket.local_addr().unwrap());
        let mut buf = vec![0u8; 65536];
        loop {
            if let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], peer).await;
            }
        }
    }
    let upper_mode = match kind.as_str() {
        "echo" => false,
        "upper" => true,
        other => {
            eprintln!("tokio_echo: unknown kind {other:?} (echo, upper, udp)");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&addr).await.expect("bind");
    announce("tcp", listener.local_addr().unwrap());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("tokio_echo: accept: {e}");
                // Out of file descriptors or similar: back off without the `time` feature.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if upper_mode {
            tokio::spawn(upper(stream));
        } else {
            tokio::spawn(echo(stream));
        }
    }
}
