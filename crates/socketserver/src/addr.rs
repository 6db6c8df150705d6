//! Addresses as URLs: `tcp://HOST:PORT`, `udp://HOST:PORT`, `unix:PATH`, `unixgram:PATH`.
//!
//! Python spreads an address over `address_family`, `socket_type` and `server_address`; here one
//! value says all three, parses from the command line's URL and prints back as the same URL, so
//! `listening on {addr}` is just `Display`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

/// Where a server listens, or who a peer is: transport and address in one value.
///
/// Parses from and prints as a URL: `tcp://127.0.0.1:8000`, `udp://[::1]:9999`,
/// `unix:/run/app.sock`, `unixgram:relative/path`. Host names are kept as written and resolved
/// when the server binds; the server's [`local_addrs`](crate::Server::local_addrs) always shows
/// the numeric address and the real port.
///
/// # Examples
///
/// ```
/// use socketserver::Address;
///
/// let addr: Address = "tcp://[::1]:0".parse()?;
/// assert_eq!(addr.to_string(), "tcp://[::1]:0");
/// assert!(addr.is_stream());
///
/// let err = "tcp://localhost".parse::<Address>().unwrap_err();
/// assert_eq!(err.to_string(), "invalid address tcp://localhost: expected tcp://HOST:PORT");
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP endpoint. `host` is a name or a literal IP address (without brackets).
    Tcp {
        /// Host name or IP address, without IPv6 brackets.
        host: String,
        /// Port; 0 asks the system for a free one.
        port: u16,
    },
    /// A UDP endpoint. `host` is a name or a literal IP address (without brackets).
    Udp {
        /// Host name or IP address, without IPv6 brackets.
        host: String,
        /// Port; 0 asks the system for a free one.
        port: u16,
    },
    /// A Unix stream socket at a path. An empty path is an unnamed socket (most clients).
    Unix(PathBuf),
    /// A Unix datagram socket at a path. An empty path is an unnamed socket.
    UnixDatagram(PathBuf),
}

impl Address {
    /// A TCP address from a socket address.
    pub fn tcp(addr: SocketAddr) -> Address {
        Address::Tcp {
            host: ip_text(addr.ip()),
            port: addr.port(),
        }
    }

    /// A UDP address from a socket address.
    pub fn udp(addr: SocketAddr) -> Address {
        Address::Udp {
            host: ip_text(addr.ip()),
            port: addr.port(),
        }
    }

    /// True for the connection-oriented transports (TCP and Unix stream).
    pub fn is_stream(&self) -> bool {
        matches!(self, Address::Tcp { .. } | Address::Unix(_))
    }

    /// The socket address when the host is a literal IP address (`None` for names and paths).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp { host, port } | Address::Udp { host, port } => host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, *port)),
            Address::Unix(_) | Address::UnixDatagram(_) => None,
        }
    }

    /// The path of a Unix socket address (`None` for TCP and UDP).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Address::Unix(p) | Address::UnixDatagram(p) => Some(p),
            _ => None,
        }
    }

    /// The port of a TCP or UDP address.
    pub fn port(&self) -> Option<u16> {
        match self {
            Address::Tcp { port, .. } | Address::Udp { port, .. } => Some(*port),
            _ => None,
        }
    }
}

fn invalid(input: &str, reason: &str) -> Error {
    Error::InvalidAddress {
        input: input.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_host_port(input: &str, rest: &str, scheme: &str) -> Result<(String, u16), Error> {
    let expected = format!("expected {scheme}://HOST:PORT");
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid(input, "missing ']' after IPv6 host"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(input, "the bracketed host is not an IPv6 address"));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| invalid(input, &expected))?;
        (host, port)
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(input, &expected))?;
        if host.contains(':') {
            return Err(invalid(
                input,
                "IPv6 hosts go in brackets, as in tcp://[::1]:8000",
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(invalid(input, "the host is empty"));
    }
    if host.contains(['/', '?', '#', '@']) {
        return Err(invalid(input, &expected));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| invalid(input, "the port must be a number from 0 to 65535"))?;
    Ok((host.to_string(), port))
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(input: &str) -> Result<Address, Error> {
        if let Some(rest) = input.strip_prefix("tcp://") {
            let (host, port) = parse_host_port(input, rest, "tcp")?;
            Ok(Address::Tcp { host, port })
        } else if let Some(rest) = input.strip_prefix("udp://") {
            let (host, port) = parse_host_port(input, rest, "udp")?;
            Ok(Address::Udp { host, port })
        } else if let Some(path) = input.strip_prefix("unixgram:") {
            check_path(input, path)?;
            Ok(Address::UnixDatagram(PathBuf::from(path)))
        } else if let Some(path) = input.strip_prefix("unix:") {
            check_path(input, path)?;
            Ok(Address::Unix(PathBuf::from(path)))
        } else {
            Err(invalid(
                input,
                "expected tcp://HOST:PORT, udp://HOST:PORT, unix:PATH or unixgram:PATH",
            ))
        }
    }
}

/// The longest path `sockaddr_un` holds on Linux (108 bytes including the terminating NUL).
const MAX_UNIX_PATH: usize = 107;

fn check_path(input: &str, path: &str) -> Result<(), Error> {
    if path.is_empty() {
        return Err(invalid(input, "the socket path is empty"));
    }
    if path.contains('\0') {
        return Err(invalid(input, "the socket path contains a NUL byte"));
    }
    if path.len() > MAX_UNIX_PATH {
        return Err(invalid(
            input,
            &format!(
                "the socket path is {} bytes long; Unix sockets allow at most {MAX_UNIX_PATH}",
                path.len()
            ),
        ));
    }
    Ok(())
}

fn fmt_host(f: &mut fmt::Formatter<'_>, scheme: &str, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "{scheme}://[{host}]:{port}")
    } else {
        write!(f, "{scheme}://{host}:{port}")
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } => fmt_host(f, "tcp", host, *port),
            Address::Udp { host, port } => fmt_host(f, "udp", host, *port),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::UnixDatagram(path) => write!(f, "unixgram:{}", path.display()),
        }
    }
}

/// `ip` as text, the same as its `Display`, made once per accepted connection and per
/// datagram: an IPv4 address is written digit by digit into a string of its final size,
/// without the formatting machinery (which cost a UDP echo about a fifth of its instructions).
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn ip_text_is_display() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        for ip in [
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 99, 100, 255)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 9, 10)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped()),
        ] {
            assert_eq!(super::ip_text(ip), ip.to_string());
        }
        for n in 0..=255u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(n, 255 - n, n / 3, n.wrapping_mul(7)));
            assert_eq!(super::ip_text(ip), ip.to_string());
        }
    }

    use super::*;

    #[test]
    fn urls_round_trip() {
        for url in [
            "tcp://127.0.0.1:0",
            "tcp://[::1]:8000",
            "udp://localhost:9999",
            "unix:/tmp/x.sock",
            "unix:relative.sock",
            "unixgram:/tmp/g.sock",
        ] {
            assert_eq!(url.parse::<Address>().unwrap().to_string(), url);
        }
    }

    #[test]
    fn bad_urls_name_the_problem() {
        let cases = [
            ("http://x:1", "expected tcp://HOST:PORT"),
            ("tcp://x", "expected tcp://HOST:PORT"),
            ("tcp://:80", "the host is empty"),
            ("tcp://x:99999", "the port must be a number"),
            ("tcp://x:-1", "the port must be a number"),
            ("tcp://::1:80", "IPv6 hosts go in brackets"),
            ("tcp://[::1:80", "missing ']'"),
            ("tcp://[nothost]:80", "not an IPv6 address"),
            ("unix:", "the socket path is empty"),
            ("unixgram:a\0b", "NUL"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(
                err.contains(input.split('\0').next().unwrap()),
                "{input}: {err}"
            );
        }
        let long = format!("unix:/{}", "a".repeat(200));
        assert!(
            long.parse::<Address>()
                .unwrap_err()
                .to_string()
                .contains("at most 107")
        );
    }
}
