//! The client from Python's "socketserver.UDPServer Example": sends its arguments as one
//! datagram and prints the reply.
//!
//! Start the `udp_server` example, then:
//!
//! ```text
//! cargo run -p socketserver --example udp_client -- hello world
//! cargo run -p socketserver --example udp_client -- udp://127.0.0.1:40000 hello world
//! ```
//!
//! The server is `127.0.0.1:9999` unless the first argument is an address: `udp://HOST:PORT` as
//! the server prints it (a host name works too), or a numeric `HOST:PORT`.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// Takes the server's address off the front of `args` when there is one there: `udp://HOST:PORT`
/// as the server prints it, or a numeric `HOST:PORT`. Anything else is data.
fn take_addr(args: &mut Vec<String>) -> String {
    let is_addr = |arg: &String| arg.starts_with("udp://") || arg.parse::<SocketAddr>().is_ok();
    if args.first().is_some_and(is_addr) {
        args.remove(0).trim_start_matches("udp://").to_string()
    } else {
        "127.0.0.1:9999".to_string()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let server = take_addr(&mut args);
    let data = args.join(" ");

    let addr = server
        .to_socket_addrs()?
        .next()
        .ok_or("the server's host name has no address")?;
    // Any local port, of the server's address family.
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(local)?;
    // Connecting only fixes the peer: replies from anyone else are filtered out, and a missing
    // server shows up as "connection refused" instead of silence.
    sock.connect(addr)?;
    // UDP may lose the request or the reply; don't wait forever for it.
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.send(format!("{data}\n").as_bytes())?;
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).map_err(|e| match e.kind() {
        // An expired read timeout shows up as `WouldBlock` on Unix.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "no reply within 5 seconds")
        }
        _ => e,
    })?;

    println!("Sent:     {data}");
    println!("Received: {}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}
