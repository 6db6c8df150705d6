//! Sockets: non-blocking stream connects (std only has blocking ones) and the stream type over
//! TCP and Unix sockets.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::sys;

/// A connected (or connecting) stream socket, non-blocking.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// The pending socket error (`SO_ERROR`), if any: why a connect failed.
    pub fn take_error(&self) -> Option<io::Error> {
        let pending = match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        };
        pending.unwrap_or_else(Some)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream server's address in the form `connect(2)` takes, built once per run.
#[derive(Clone, Copy)]
pub enum Peer {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
    Unix(libc::sockaddr_un, libc::socklen_t),
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::V4(_) => "Peer::V4",
            Peer::V6(_) => "Peer::V6",
            Peer::Unix(..) => "Peer::Unix",
        })
    }
}

impl Peer {
    pub fn tcp(addr: SocketAddr) -> Peer {
        match addr {
            SocketAddr::V4(a) => {
                let mut sin: libc::sockaddr_in = sys::zeroed();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                Peer::V4(sin)
            }
            SocketAddr::V6(a) => {
                let mut sin6: libc::sockaddr_in6 = sys::zeroed();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                Peer::V6(sin6)
            }
        }
    }

    /// `path` must be shorter than `sun_path` (checked when the arguments are parsed).
    pub fn unix(path: &Path) -> io::Result<Peer> {
        use std::os::unix::ffi::OsStrExt;
        let mut sun: libc::sockaddr_un = sys::zeroed();
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        // Leave room for the terminating NUL.
        if bytes.is_empty() || bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "unix socket path must be 1 to {} bytes without NUL",
                    sun.sun_path.len() - 1
                ),
            ));
        }
        for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
        Ok(Peer::Unix(sun, len as libc::socklen_t))
    }

    fn domain(&self) -> libc::c_int {
        match self {
            Peer::V4(_) => libc::AF_INET,
            Peer::V6(_) => libc::AF_INET6,
            Peer::Unix(..) => libc::AF_UNIX,
        }
    }

    /// The address as `connect(2)` takes it: a pointer into `self`, and its length.
    pub fn raw(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            Peer::V4(sin) => (
                (sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            Peer::V6(sin6) => (
                (sin6 as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
            Peer::Unix(sun, len) => ((sun as *const libc::sockaddr_un).cast(), *len),
        }
    }
}

/// Opens a non-blocking stream socket (with `TCP_NODELAY` for TCP) and starts connecting it to
/// `peer`. The flag says whether the connection is already established; when it is not, the
/// socket becomes writable (or reports an error) once the connect completes. A Unix socket
/// whose listener's backlog is full fails at once with `WouldBlock`.
pub fn connect(peer: &Peer) -> io::Result<(Stream, bool)> {
    let fd = sys::stream_socket(peer.domain())?;
    let stream = match peer {
        Peer::Unix(..) => Stream::Unix(UnixStream::from(fd)),
        _ => {
            let tcp = TcpStream::from(fd);
            tcp.set_nodelay(true)?;
            Stream::Tcp(tcp)
        }
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    match &stream {
        Stream::Tcp(s) => s.set_nonblocking(true)?,
        Stream::Unix(s) => s.set_nonblocking(true)?,
    }
    let Err(err) = sys::connect(stream.raw_fd(), peer) else {
        return Ok((stream, true));
    };
    match err.raw_os_error() {
        // An interrupted connect goes on asynchronously, like a non-blocking one.
        Some(libc::EINPROGRESS) | Some(libc::EINTR) => Ok((stream, false)),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;

    use super::*;

    fn connect_blocking(peer: &Peer) -> Stream {
        let (stream, _) = connect(peer).unwrap();
        match &stream {
            Stream::Tcp(s) => s.set_nonblocking(false).unwrap(),
            Stream::Unix(s) => s.set_nonblocking(false).unwrap(),
        }
        stream
    }

    #[test]
    fn connects_over_tcp_and_unix() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = connect_blocking(&Peer::tcp(listener.local_addr().unwrap()));
        let (mut accepted, _) = listener.accept().unwrap();
        stream.write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        match &stream {
            Stream::Tcp(s) => assert!(s.nodelay().unwrap()),
            Stream::Unix(_) => panic!("expected TCP"),
        }

        let dir = std::env::temp_dir().join(format!("loadgen-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let mut stream = connect_blocking(&Peer::unix(&path).unwrap());
        let (mut accepted, _) = listener.accept().unwrap();
        accepted.write_all(b"yo").unwrap();
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"yo");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refused_connects_are_errors_not_panics() {
        // A port that was just free: the connect is refused at once or reported later.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        match connect(&Peer::tcp(addr)) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            Ok((stream, _)) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                let e = stream.take_error().expect("a pending error");
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            }
        }
        assert!(Peer::unix(Path::new(&"x".repeat(200))).is_err());
        assert!(Peer::unix(Path::new("")).is_err());
    }
}
