//! Python's `socketserver.UnixStreamServer` (the TCP example's handler, on a Unix socket),
//! stopped cleanly by Ctrl-C.
//!
//! ```text
//! cargo run -p socketserver --example unix_stream_server
//! cargo run -p socketserver --example unix_stream_server -- /tmp/upper.sock
//! ```
//!
//! Then talk to it with `nc -U` (or `socat - UNIX-CONNECT:PATH`), one line at a time:
//!
//! ```text
//! nc -U /tmp/socketserver-example.sock
//! ```
//!
//! (the default path is in the system's temporary directory; the server prints it). Ctrl-C
//! stops accepting, lets open connections finish (for up to 10 seconds; a second Ctrl-C cuts
//! them short) and removes the socket file.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use socketserver::{Address, Request, Server};

/// Upper-cases each line until the client closes its side.
fn upper_lines(req: &mut Request) -> io::Result<()> {
    let mut line = String::new();
    // Each reply is flushed before the next read waits, so an interactive client sees it.
    while req.read_line(&mut line)? > 0 {
        req.write_all(line.to_uppercase().as_bytes())?;
        line.clear();
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args_os().nth(1) {
        Some(arg) => PathBuf::from(arg),
        None => std::env::temp_dir().join("socketserver-example.sock"),
    };
    let server = Server::builder(Address::Unix(path))
        .handle_signals(true)
        .bind(upper_lines)?;
    println!("listening on {}", server.local_addr());
    // Returns after Ctrl-C (SIGINT) or SIGTERM, once the open connections are done.
    server.serve_forever()?;
    // Dropping the server removes the socket file.
    Ok(())
}
