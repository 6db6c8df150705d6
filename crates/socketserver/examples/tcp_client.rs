//! The client from Python's "socketserver.TCPServer Example": sends its arguments as one line
//! and prints the reply.
//!
//! Start the `tcp_server` (or `tcp_stream_handler`) example, then:
//!
//! ```text
//! cargo run -p socketserver --example tcp_client -- hello world
//! cargo run -p socketserver --example tcp_client -- tcp://127.0.0.1:40000 hello world
//! ```
//!
//! The server is `127.0.0.1:9999` unless the first argument is an address: `tcp://HOST:PORT` as
//! the server prints it (a host name works too), or a numeric `HOST:PORT`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Takes the server's address off the front of `args` when there is one there: `tcp://HOST:PORT`
/// as the server prints it, or a numeric `HOST:PORT`. Anything else is data.
fn take_addr(args: &mut Vec<String>) -> String {
    let is_addr = |arg: &String| arg.starts_with("tcp://") || arg.parse::<SocketAddr>().is_ok();
    if args.first().is_some_and(is_addr) {
        args.remove(0).trim_start_matches("tcp://").to_string()
    } else {
        "127.0.0.1:9999".to_string()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let server = take_addr(&mut args);
    let data = args.join(" ");

    let mut sock = TcpStream::connect(server.as_str())?;
    sock.write_all(format!("{data}\n").as_bytes())?;
    // The server closes the connection after its reply, so reading to end of file gets the
    // whole reply even if it arrives in several pieces (Python's single `recv` may not).
    let mut received = String::new();
    sock.read_to_string(&mut received)?;

    println!("Sent:     {data}");
    println!("Received: {received}");
    Ok(())
}
