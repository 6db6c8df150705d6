//! Python's "Asynchronous Mixins" example (`ThreadedTCPServer`, `ThreadedTCPRequestHandler`):
//! a server with a thread per connection, served from a background thread, and three clients
//! in the same program.
//!
//! ```text
//! cargo run -p socketserver --example threaded_tcp_server
//! ```
//!
//! It needs no client of its own and stops by itself, printing something like:
//!
//! ```text
//! Server loop running in thread: server
//! Received: socketserver-conn-0: Hello World 1
//! Received: socketserver-conn-1: Hello World 2
//! Received: socketserver-conn-2: Hello World 3
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;

use socketserver::{Mode, Request, Server, worker_name};

fn threaded_tcp_request_handler(req: &mut Request) -> io::Result<()> {
    let mut data = [0u8; 1024];
    let n = req.read(&mut data)?;
    let data = String::from_utf8_lossy(&data[..n]);
    write!(req, "{}: {data}", worker_name())
}

fn client(addr: SocketAddr, message: &str) -> io::Result<()> {
    let mut sock = TcpStream::connect(addr)?;
    sock.write_all(message.as_bytes())?;
    // Not needed by this handler (it reads once), but a handler that reads to end of file
    // would wait for it.
    sock.shutdown(Shutdown::Write)?;
    let mut response = String::new();
    sock.read_to_string(&mut response)?;
    println!("Received: {response}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Port 0 asks the system for a free port; `local_addr` has the real one.
    let server = Server::builder("tcp://127.0.0.1:0".parse()?)
        .mode(Mode::Threading)
        .bind(threaded_tcp_request_handler)?;
    let addr = server
        .local_addr()
        .socket_addr()
        .ok_or("the server has no IP address")?;
    // Taken before the server moves to its thread: the handle is how we stop it from here.
    let stop = server.shutdown_handle();

    // This thread runs the serving loop; the loop starts one more thread per connection.
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

    // Unlike Python's, this `shutdown` never blocks; joining waits for the drain instead.
    stop.shutdown();
    serving
        .join()
        .map_err(|_| "the serving thread panicked")??;
    Ok(())
}
