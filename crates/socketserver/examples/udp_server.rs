//! Python's "socketserver.UDPServer Example" (`MyUDPHandler`).
//!
//! Run it, then talk to it with the `udp_client` example or with `nc`:
//!
//! ```text
//! cargo run -p socketserver --example udp_server
//! cargo run -p socketserver --example udp_client -- hello world
//! echo 'hello world' | nc -u -w1 127.0.0.1 9999
//! ```
//!
//! It listens on `udp://127.0.0.1:9999` unless given another address
//! (`cargo run -p socketserver --example udp_server -- udp://127.0.0.1:0`). Stop it with
//! Ctrl-C.

use std::io::{self, Write};

use socketserver::{Address, Handler, Mode, Request, Server};

struct MyUdpHandler;

impl Handler for MyUdpHandler {
    fn handle(&self, req: &mut Request) -> io::Result<()> {
        // Python's `self.request[0]`; `None` only for stream requests.
        let data = req
            .packet()
            .ok_or_else(|| io::Error::other("not a datagram: this handler serves UDP only"))?
            .trim_ascii();
        println!("{} wrote:", req.peer());
        println!("{}", String::from_utf8_lossy(data));
        // `data` borrows from `req`: make the reply before writing into `req`.
        let reply = data.to_ascii_uppercase();
        // No `sendto`: what is written becomes one datagram, sent back to the client when the
        // request ends. Writing nothing sends nothing, so `flush` asks for the reply even when
        // it is empty (a blank line): Python's `sendto` would send an empty datagram too.
        req.write_all(&reply)?;
        req.flush()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: Address = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => "udp://127.0.0.1:9999".parse()?,
    };
    let server = Server::builder(addr).mode(Mode::Sync).bind(MyUdpHandler)?;
    println!("listening on {}", server.local_addr());
    server.serve_forever()?;
    Ok(())
}
