//! Transports: creating, binding and adopting the four kinds of sockets.
//!
//! Python's `TCPServer`, `UDPServer`, `UnixStreamServer` and `UnixDatagramServer` differ only in
//! `address_family` and `socket_type`; here they differ only in a [`Kind`]. Every socket is a
//! `socket2::Socket`, so one code path sets options, accepts and receives for all four, and this
//! module never sees a handler.

use std::fs;
use std::io;
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::{Address, Error, Result};

/// The four transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Udp,
    Unix,
    UnixDatagram,
}

impl Kind {
    pub(crate) fn is_stream(self) -> bool {
        matches!(self, Kind::Tcp | Kind::Unix)
    }
}

/// Socket options applied when binding. Defaults are documented on the builder setters.
#[derive(Clone, Debug)]
pub(crate) struct SocketOptions {
    pub(crate) backlog: i32,
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    /// `TCP_NODELAY` for accepted TCP connections, set on the TCP listener too: on Linux the
    /// connections it accepts inherit it, which saves a `setsockopt` per connection (see
    /// `accept::Port::inherits_nodelay`).
    pub(crate) nodelay: bool,
}

/// A bound socket ready to serve: made by the server builder from an [`Address`], or adopted
/// from a socket bound elsewhere: a supervisor or a test ([`Listener::from_fd`], or
/// [`Listener::from_raw_fd`] for a descriptor number), systemd socket activation
/// ([`Listener::from_systemd`]).
///
/// Dropping a `Listener` closes the socket and, for a Unix socket file this library created,
/// removes the file if it is still the one it created.
#[derive(Debug)]
pub struct Listener {
    pub(crate) socket: Arc<Socket>,
    pub(crate) kind: Kind,
    pub(crate) local: Address,
    /// Bound elsewhere and handed to us (`from_fd`): never shut down, only closed.
    pub(crate) adopted: bool,
    /// The socket file this listener created and removes on drop (not for adopted sockets).
    _file: Option<SocketFile>,
}

impl Listener {
    /// Adopts an already bound socket: a listening TCP or Unix stream socket, or a bound UDP or
    /// Unix datagram socket. The transport is read from the socket itself. A stream socket that
    /// is bound but not yet listening is put into listening state with a backlog of 1024.
    ///
    /// The socket file of an adopted Unix socket is left in place: whoever bound it owns it.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{Address, Listener};
    ///
    /// let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = std_listener.local_addr()?.port();
    /// let listener = Listener::from_fd(std_listener)?;
    /// assert_eq!(listener.local_addr(), &Address::Tcp { host: "127.0.0.1".into(), port });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd(fd: impl Into<OwnedFd>) -> Result<Listener> {
        let socket = Socket::from(fd.into());
        let bad = |reason: &str| Error::Unsupported {
            what: format!("cannot serve on the inherited socket: {reason}"),
        };
        let domain = socket
            .domain()
            .map_err(|e| bad(&crate::error::describe(&e)))?;
        let ty = socket
            .r#type()
            .map_err(|e| bad(&crate::error::describe(&e)))?;
        let kind = match (domain, ty) {
            (Domain::IPV4 | Domain::IPV6, Type::STREAM) => Kind::Tcp,
            (Domain::IPV4 | Domain::IPV6, Type::DGRAM) => Kind::Udp,
            (Domain::UNIX, Type::STREAM) => Kind::Unix,
            (Domain::UNIX, Type::DGRAM) => Kind::UnixDatagram,
            _ => {
                return Err(bad(
                    "it is neither a TCP, UDP nor Unix stream/datagram socket",
                ));
            }
        };
        let local = socket.local_addr().map_err(Error::Io)?;
        let local = address_of(&local, kind);
        if kind.is_stream() && !socket.is_listener().unwrap_or(false) {
            socket
                .listen(DEFAULT_BACKLOG)
                .map_err(|source| Error::Bind {
                    addr: local.to_string(),
                    source,
                })?;
        }
        prepare(&socket, kind).map_err(Error::Io)?;
        Ok(Listener {
            socket: Arc::new(socket),
            kind,
            local,
            adopted: true,
            _file: None,
        })
    }

    /// Adopts the socket on descriptor `fd`, inherited from whoever started this process
    /// (`--listen fd:N`): checked to be an open socket, then served as
    /// [`from_fd`](Self::from_fd) does, and marked close-on-exec.
    ///
    /// This takes ownership of the descriptor: the listener closes it when dropped. A number
    /// is adopted once per process: a second adoption of it fails, even after the first
    /// listener closed (the number may belong to something else by then). Fails with
    /// [`Error::Inherited`] when `fd` is not open, not a socket, or a socket of another kind.
    pub fn from_raw_fd(fd: RawFd) -> Result<Listener> {
        let what = format!("fd:{fd}");
        claim_fds(&[fd]).map_err(|fd| Error::Inherited {
            what: what.clone(),
            reason: format!("descriptor {fd} was adopted already in this process"),
        })?;
        Listener::adopt_raw(fd, what)
    }

    fn adopt_raw(fd: RawFd, what: String) -> Result<Listener> {
        let owned = crate::sys::adopt_socket_fd(fd).map_err(|e| Error::Inherited {
            what: what.clone(),
            reason: crate::error::describe(&e),
        })?;
        Listener::from_fd(owned).map_err(|e| match e {
            Error::Unsupported { what: reason } => Error::Inherited { what, reason },
            other => other,
        })
    }

    /// The sockets systemd passed by socket activation: `LISTEN_PID` must be this process,
    /// `LISTEN_FDS` says how many descriptors there are from 3 on, and with `name` only those
    /// `LISTEN_FDNAMES` names so (`FileDescriptorName=` in the socket unit) are taken. Each is
    /// adopted as [`from_fd`](Self::from_fd) does.
    ///
    /// Each descriptor can be taken once per process (a second `from_systemd` asking for one
    /// already taken, or [`from_raw_fd`](Self::from_raw_fd) of it, fails). The environment
    /// variables are left as they are (removing them is not thread-safe; a program that starts
    /// other programs should remove them before it starts any thread). Fails with
    /// [`Error::Inherited`] when none were passed (or none by that name).
    pub fn from_systemd(name: Option<&str>) -> Result<Vec<Listener>> {
        let what = match name {
            Some(name) => format!("systemd:{name}"),
            None => "systemd".to_string(),
        };
        let fail = |reason: String| Error::Inherited {
            what: what.clone(),
            reason,
        };
        let passed: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
            .map_err(|e| fail(format!("bad socket activation variables: {e}")))?
            .collect();
        if passed.is_empty() {
            return Err(fail(
                "no sockets were passed (LISTEN_PID is not this process or LISTEN_FDS is \
                 unset); run under a systemd socket unit or systemd-socket-activate"
                    .into(),
            ));
        }
        let chosen: Vec<RawFd> = passed
            .iter()
            .filter(|(_, n)| name.is_none_or(|name| n == name))
            .map(|&(fd, _)| fd)
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = passed.iter().map(|(_, n)| n.as_str()).collect();
            return Err(fail(format!(
                "no socket was passed by that name (names passed: {})",
                names.join(", ")
            )));
        }
        claim_fds(&chosen).map_err(|fd| {
            fail(format!(
                "descriptor {fd} was adopted already in this process"
            ))
        })?;
        chosen
            .into_iter()
            .map(|fd| {
                Listener::adopt_raw(fd, what.clone()).map_err(|e| match e {
                    Error::Inherited { reason, .. } => fail(format!("descriptor {fd}: {reason}")),
                    other => other,
                })
            })
            .collect()
    }

    /// The address the socket is bound to, with the real port.
    pub fn local_addr(&self) -> &Address {
        &self.local
    }

    /// Binds `addr` as a server does (`SO_REUSEADDR`, `backlog` for streams, `SO_REUSEPORT`
    /// when asked; a stale Unix socket file replaced, a live one refused) without serving it:
    /// for a supervisor that binds once and hands the socket to worker processes (see
    /// [`as_raw_fd`](std::os::fd::AsRawFd::as_raw_fd)), each of which adopts it with
    /// [`from_raw_fd`](Self::from_raw_fd). Host names are resolved; the first address that
    /// binds wins. A Unix socket file made here is removed when this listener is dropped.
    /// Fails with [`Error::Bind`] naming the address.
    ///
    /// ```
    /// use socketserver::{Address, Listener};
    ///
    /// let listener = Listener::bind(&"tcp://127.0.0.1:0".parse()?, 128, false)?;
    /// assert!(matches!(listener.local_addr(), Address::Tcp { port, .. } if *port != 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind(addr: &Address, backlog: u32, reuse_port: bool) -> Result<Listener> {
        let opts = SocketOptions {
            backlog: i32::try_from(backlog).unwrap_or(i32::MAX),
            reuse_address: true,
            reuse_port,
            nodelay: false,
        };
        Listener::bind_with(addr, &opts)
    }

    /// Creates and binds a socket for `addr`, resolving host names (the first resolved address
    /// that binds wins, as Python's `getaddrinfo` loop does).
    pub(crate) fn bind_with(addr: &Address, opts: &SocketOptions) -> Result<Listener> {
        let bind_err = |source: io::Error| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        match addr {
            Address::Tcp { host, port } | Address::Udp { host, port } => {
                let kind = if matches!(addr, Address::Tcp { .. }) {
                    Kind::Tcp
                } else {
                    Kind::Udp
                };
                let candidates = (host.as_str(), *port).to_socket_addrs().map_err(|e| {
                    bind_err(io::Error::new(
                        e.kind(),
                        format!("cannot resolve host {host}: {}", crate::error::describe(&e)),
                    ))
                })?;
                let mut last = io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("host {host} has no addresses"),
                );
                for candidate in candidates {
                    match bind_inet(candidate, kind, opts) {
                        Ok(socket) => {
                            let local = socket.local_addr().map_err(bind_err)?;
                            return Ok(Listener {
                                local: address_of(&local, kind),
                                socket: Arc::new(socket),
                                kind,
                                adopted: false,
                                _file: None,
                            });
                        }
                        Err(e) => last = e,
                    }
                }
                Err(bind_err(last))
            }
            Address::Unix(path) | Address::UnixDatagram(path) => {
                // Variants can be built directly, bypassing `FromStr`'s checks.
                if path.as_os_str().is_empty() {
                    return Err(Error::InvalidAddress {
                        input: addr.to_string(),
                        reason: "the socket path is empty".into(),
                    });
                }
                let kind = if matches!(addr, Address::Unix(_)) {
                    Kind::Unix
                } else {
                    Kind::UnixDatagram
                };
                let (socket, file) = bind_unix(path, kind, opts).map_err(bind_err)?;
                Ok(Listener {
                    socket: Arc::new(socket),
                    kind,
                    local: addr.clone(),
                    adopted: false,
                    _file: Some(file),
                })
            }
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The socket's descriptor, for handing it to another process (it stays this listener's: the
/// listener closes it when dropped). It is close-on-exec, as every socket the library makes.
impl std::os::fd::AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.raw_fd()
    }
}

/// Descriptors adopted by number in this process ([`Listener::from_raw_fd`],
/// [`Listener::from_systemd`]): each may be taken once, or two listeners would close it.
static ADOPTED: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());

/// Claims every one of `fds`, or none: `Err` names the first one taken before.
fn claim_fds(fds: &[RawFd]) -> std::result::Result<(), RawFd> {
    let mut adopted = ADOPTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&taken) = fds.iter().find(|fd| adopted.contains(fd)) {
        return Err(taken);
    }
    adopted.extend_from_slice(fds);
    Ok(())
}

/// The backlog used for adopted stream sockets that are not listening yet.
pub(crate) const DEFAULT_BACKLOG: i32 = 1024;

fn bind_inet(addr: std::net::SocketAddr, kind: Kind, opts: &SocketOptions) -> io::Result<Socket> {
    let ty = if kind == Kind::Tcp {
        Type::STREAM
    } else {
        Type::DGRAM
    };
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    socket.set_reuse_address(opts.reuse_address)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    if kind == Kind::Tcp {
        if opts.nodelay {
            socket.set_tcp_nodelay(true)?;
        }
        socket.listen(opts.backlog)?;
    }
    prepare(&socket, kind)?;
    Ok(socket)
}

/// Listening stream sockets are non-blocking (the loop accepts until `WouldBlock`); datagram
/// sockets stay blocking so handlers can reply with plain `send_to`, and the loop receives with
/// `MSG_DONTWAIT` instead.
fn prepare(socket: &Socket, kind: Kind) -> io::Result<()> {
    socket.set_nonblocking(kind.is_stream())
}

fn bind_unix(path: &Path, kind: Kind, opts: &SocketOptions) -> io::Result<(Socket, SocketFile)> {
    clear_stale_socket(path, kind)?;
    let ty = if kind == Kind::Unix {
        Type::STREAM
    } else {
        Type::DGRAM
    };
    let socket = Socket::new(Domain::UNIX, ty, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    // From here on the file is ours: remove it again if anything below fails.
    let file = SocketFile::new(path.to_path_buf())?;
    if kind == Kind::Unix {
        socket.listen(opts.backlog)?;
    }
    prepare(&socket, kind)?;
    Ok((socket, file))
}

/// Makes room for a new socket at `path`: nothing there is fine; a socket file nobody listens on
/// (left by a crashed server) is removed; a live socket is "in use"; anything else is never
/// touched.
fn clear_stale_socket(path: &Path, kind: Kind) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    // A non-blocking connect: a live server whose queue is full answers EAGAIN instead of
    // making us wait for it.
    let ty = if kind == Kind::Unix {
        Type::STREAM
    } else {
        Type::DGRAM
    };
    let probe = Socket::new(Domain::UNIX, ty, None).and_then(|s| {
        s.set_nonblocking(true)?;
        s.connect(&SockAddr::unix(path)?)
    });
    match probe {
        Ok(()) => Err(in_use()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(in_use()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path),
        // Someone is bound there with the other socket type: alive, so in use.
        Err(e) if e.raw_os_error() == Some(nix::libc::EPROTOTYPE) => Err(in_use()),
        Err(e) => Err(e),
    }
}

fn in_use() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        "address in use: another server is listening on it",
    )
}

/// A socket file this process created. Removed on drop, but only if the path still names the
/// same file (another server may have replaced it since).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: PathBuf) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(&path)?;
        Ok(SocketFile {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The [`Address`] of a socket address, for the given transport.
pub(crate) fn address_of(addr: &SockAddr, kind: Kind) -> Address {
    match kind {
        Kind::Tcp | Kind::Udp => match addr.as_socket() {
            Some(sa) if kind == Kind::Tcp => Address::tcp(sa),
            Some(sa) => Address::udp(sa),
            None => Address::Tcp {
                host: "unknown".into(),
                port: 0,
            },
        },
        Kind::Unix | Kind::UnixDatagram => {
            let path = addr
                .as_pathname()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            if kind == Kind::Unix {
                Address::Unix(path)
            } else {
                Address::UnixDatagram(path)
            }
        }
    }
}
