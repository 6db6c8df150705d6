//! Python's "socketserver.TCPServer Example" (`MyTCPHandler`, a `BaseRequestHandler`).
//!
//! Run it, then talk to it with the `tcp_client` example or with `nc`:
//!
//! ```text
//! cargo run -p socketserver --example tcp_server
//! cargo run -p socketserver --example tcp_client -- hello world
//! echo 'hello world' | nc 127.0.0.1 9999
//! ```
//!
//! It listens on `tcp://127.0.0.1:9999` unless given another address
//! (`cargo run -p socketserver --example tcp_server -- tcp://127.0.0.1:0` picks a free port,
//! printed on the `listening on` line). Stop it with Ctrl-C.

use std::io::{self, Read, Write};

use socketserver::{Address, Handler, Mode, Request, Server};

/// One instance serves every connection, so per-request data lives in locals, not fields.
struct MyTcpHandler;

impl Handler for MyTcpHandler {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        // Like Python's single `recv(1024)`: whatever has arrived, up to 1024 bytes. Enough
        // for a short line; use `read_line` (see `tcp_stream_handler`) for a whole line.
        let mut buf = [0u8; 1024];
        let n = req.read(&mut buf)?;
        let data = buf[..n].trim_ascii();
        println!("Received from {}:", req.peer());
        println!("{}", String::from_utf8_lossy(data));
        // The reply goes out when the request ends, followed by end of file.
        req.write_all(&data.to_ascii_uppercase())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: Address = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => "tcp://127.0.0.1:9999".parse()?,
    };
    // Python's plain `TCPServer` handles one request at a time: `Mode::Sync` is that.
    let server = Server::builder(addr).mode(Mode::Sync).bind(MyTcpHandler)?;
    println!("listening on {}", server.local_addr());
    server.serve_forever()?;
    Ok(())
}
