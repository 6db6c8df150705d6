//! Python's "socketserver.TCPServer Example", second version: `MyTCPHandler` as a
//! `StreamRequestHandler`, reading a line from `rfile` and writing to `wfile`.
//!
//! The `Request` is both: buffered `BufRead` for input and buffered `Write` for output. Run
//! it, then talk to it with the `tcp_client` example or with `nc`:
//!
//! ```text
//! cargo run -p socketserver --example tcp_stream_handler
//! cargo run -p socketserver --example tcp_client -- hello world
//! echo 'hello world' | nc 127.0.0.1 9999
//! ```
//!
//! It listens on `tcp://127.0.0.1:9999` unless given another address
//! (`cargo run -p socketserver --example tcp_stream_handler -- tcp://127.0.0.1:0`). Stop it
//! with Ctrl-C.

use std::io::{self, BufRead, Write};

use socketserver::{Address, Mode, Request, Server};

/// Any `Fn(&mut Request) -> io::Result<()>` is a handler; no trait impl needed.
fn my_tcp_handler(req: &mut Request) -> io::Result<()> {
    // Unlike a single `read`, this waits for the whole line, however it is split in transit.
    let mut line = String::new();
    req.read_line(&mut line)?;
    let data = line.trim();
    println!("{} wrote:", req.peer());
    println!("{data}");
    req.write_all(data.to_uppercase().as_bytes())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: Address = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => "tcp://127.0.0.1:9999".parse()?,
    };
    let server = Server::builder(addr)
        .mode(Mode::Sync)
        .bind(my_tcp_handler)?;
    println!("listening on {}", server.local_addr());
    server.serve_forever()?;
    Ok(())
}
