//! Python's "Asynchronous Mixins" example with `ForkingMixIn` instead of `ThreadingMixIn`: a
//! server with a process per connection, served from a background thread, and three clients
//! in the same program.
//!
//! ```text
//! cargo run -p socketserver --example forking_tcp_server
//! ```
//!
//! It needs no client of its own and stops by itself, printing something like:
//!
//! ```text
//! Server loop running in thread: server
//! Received: pid-41872: Hello World 1
//! Received: pid-41873: Hello World 2
//! Received: pid-41874: Hello World 3
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;

use socketserver::{Mode, Request, Server, worker_name};

/// Runs in a child process: it must not print (stdout's lock may have been held by another
/// thread at the fork) and anything it changes dies with it.
fn forked_tcp_request_handler(req: &mut Request) -> io::Result<()> {
    let mut data = [0u8; 1024];
    let n = req.read(&mut data)?;
    let data = String::from_utf8_lossy(&data[..n]);
    write!(req, "{}: {data}", worker_name())
}

fn client(addr: SocketAddr, message: &str) -> io::Result<()> {
    let mut sock = TcpStream::connect(addr)?;
    sock.write_all(message.as_bytes())?;
    // Children forked from this process inherit a copy of `sock`, so dropping it would not
    // close the connection; only `shutdown` tells the server "that was all" for sure.
    sock.shutdown(Shutdown::Write)?;
    let mut response = String::new();
    sock.read_to_string(&mut response)?;
    println!("Received: {response}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder("tcp://127.0.0.1:0".parse()?)
        .mode(Mode::fork())
        .bind(forked_tcp_request_handler)?;
    let addr = server
        .local_addr()
        .socket_addr()
        .ok_or("the server has no IP address")?;
    let stop = server.shutdown_handle();

    // This thread runs the serving loop and forks a child per connection; it reaps them too.
    let serving = thread::Builder::new()
        .name("server".into())
        .spawn(move || server.serve_forever())?;
    println!(
        "Server loop running in thread: {}",
        serving.thread().name().unwrap_or("unnamed")
    );

    for i in 1..=3 {
        client(addr, &format!("Hello World {i}"))?;
    }

    // Returns at once; joining waits until every child has exited and been reaped.
    stop.shutdown();
    serving
        .join()
        .map_err(|_| "the serving thread panicked")??;
    Ok(())
}
