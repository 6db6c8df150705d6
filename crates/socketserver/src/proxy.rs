//! The PROXY protocol header (HAProxy's; v1 text and v2 binary), read before anything else on
//! a connection that came through a balancer, so that the client's address replaces the
//! balancer's.
//!
//! [`parse`] is the reader: bytes in, a verdict out, no I/O, so the event loops and the
//! blocking path share it. The server uses it when
//! [`ServerBuilder::proxy_protocol`](crate::ServerBuilder::proxy_protocol) is set; it is
//! public for a Rust user who reads sockets of their own. The parsing itself is the `ppp`
//! crate's; this module adds the bounds (a header that cannot end within [`MAX_LEN`] is
//! refused, however slowly it comes) and the one question a server asks of a header: who is
//! the client?
//!
//! ```
//! use socketserver::proxy::{self, Header};
//!
//! let bytes = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\nGET / HTTP/1.1\r\n";
//! let header: Header = proxy::parse(bytes).unwrap().expect("complete");
//! assert_eq!(header.len, 44);
//! assert_eq!(header.source, Some("203.0.113.7:51234".parse().unwrap()));
//! // Not enough bytes yet: read more and ask again.
//! assert_eq!(proxy::parse(b"PROXY TCP4 203.0.1"), Ok(None));
//! // Not a PROXY header at all: close the connection.
//! assert!(proxy::parse(b"GET / HTTP/1.1\r\n").is_err());
//! ```

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use ppp::{HeaderResult, PartialResult, v1, v2};

/// The longest header accepted, in bytes: a v1 header is at most 107 bytes, a v2 header 16
/// plus its addresses and TLVs (a balancer's TLVs take a few hundred bytes at most).
pub const MAX_LEN: usize = 4096;

/// The longest v1 header, its line end included.
const V1_MAX_LEN: usize = 107;

/// The v2 header's first 12 bytes.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A complete PROXY header at the start of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// How many bytes of the input the header takes; what follows is the client's.
    pub len: usize,
    /// The client's address, as the balancer saw it. `None` when the header carries none
    /// (v1 `UNKNOWN`, v2 `LOCAL` such as a balancer's health check, or an address family
    /// other than IP): the socket's peer stays the peer.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, on the balancer, when the header carries one.
    pub destination: Option<SocketAddr>,
}

/// Why input is not a PROXY header; the connection cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    reason: String,
}

impl Invalid {
    fn new(reason: impl Into<String>) -> Invalid {
        Invalid {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no valid PROXY protocol header: {}", self.reason)
    }
}

impl std::error::Error for Invalid {}

/// Reads a PROXY header (v1 or v2) from the start of `input`: `Ok(Some(header))` when one is
/// complete, `Ok(None)` when `input` is the beginning of one (read more, then call again with
/// everything so far), `Err` when it cannot become one: it begins otherwise, is malformed,
/// or runs past [`MAX_LEN`].
pub fn parse(input: &[u8]) -> Result<Option<Header>, Invalid> {
    let prefix = &input[..input.len().min(V2_SIGNATURE.len())];
    if !V2_SIGNATURE.starts_with(prefix) && !b"PROXY ".starts_with(&prefix[..prefix.len().min(6)]) {
        return Err(Invalid::new(format!(
            "the connection began with {:?}",
            String::from_utf8_lossy(&input[..input.len().min(16)])
        )));
    }
    if input.starts_with(b"PROXY ") {
        // A v1 header is one line: judge it whole (ppp reads some cut lines as malformed).
        return match input.iter().position(|&b| b == b'\n') {
            Some(end) if end < V1_MAX_LEN => v1_header(&input[..=end]),
            None if input.len() < V1_MAX_LEN => Ok(None),
            _ => Err(Invalid::new(format!(
                "a v1 header longer than {V1_MAX_LEN} bytes"
            ))),
        };
    }
    let result = HeaderResult::parse(&input[..input.len().min(MAX_LEN)]);
    if result.is_incomplete() {
        return if input.len() >= MAX_LEN {
            Err(Invalid::new(format!("longer than {MAX_LEN} bytes")))
        } else {
            Ok(None)
        };
    }
    match result {
        HeaderResult::V1(_) => v1_header(input),
        HeaderResult::V2(Ok(header)) => {
            let (source, destination) = match (header.command, header.addresses) {
                (v2::Command::Local, _) => (None, None),
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => (
                    Some(v4(a.source_address, a.source_port)),
                    Some(v4(a.destination_address, a.destination_port)),
                ),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => (
                    Some(v6(a.source_address, a.source_port)),
                    Some(v6(a.destination_address, a.destination_port)),
                ),
                (v2::Command::Proxy, _) => (None, None),
            };
            Ok(Some(Header {
                len: header.len(),
                source,
                destination,
            }))
        }
        HeaderResult::V2(Err(e)) => Err(Invalid::new(format!("v2: {e}"))),
    }
}

/// A v1 header: one whole line, its line end included.
fn v1_header(line: &[u8]) -> Result<Option<Header>, Invalid> {
    let header = v1::Header::try_from(line).map_err(|e| Invalid::new(format!("v1: {e}")))?;
    let (source, destination) = match header.addresses {
        v1::Addresses::Tcp4(a) => (
            Some(v4(a.source_address, a.source_port)),
            Some(v4(a.destination_address, a.destination_port)),
        ),
        v1::Addresses::Tcp6(a) => (
            Some(v6(a.source_address, a.source_port)),
            Some(v6(a.destination_address, a.destination_port)),
        ),
        v1::Addresses::Unknown => (None, None),
    };
    Ok(Some(Header {
        len: header.header.len(),
        source,
        destination,
    }))
}

fn v4(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

fn v6(ip: std::net::Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn ipv4_addresses() -> Vec<u8> {
        let mut a = vec![203, 0, 113, 7, 192, 0, 2, 1];
        a.extend_from_slice(&51234u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        a
    }

    #[test]
    fn v1_headers_give_their_source_and_length_and_leave_what_follows() {
        let input = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\nHELLO";
        let header = parse(input).unwrap().unwrap();
        assert_eq!(&input[header.len..], b"HELLO");
        assert_eq!(header.source, Some("[2001:db8::1]:4000".parse().unwrap()));
        assert_eq!(
            header.destination,
            Some("[2001:db8::2]:80".parse().unwrap())
        );
        let unknown = parse(b"PROXY UNKNOWN\r\nrest").unwrap().unwrap();
        assert_eq!((unknown.len, unknown.source), (15, None));
    }

    #[test]
    fn v2_proxy_and_local_commands() {
        let mut input = v2_header(1, 0x11, &ipv4_addresses(), &[0x04, 0, 1, 42]);
        let len = input.len();
        input.extend_from_slice(b"payload");
        let header = parse(&input).unwrap().unwrap();
        assert_eq!(header.len, len, "the TLVs are part of the header");
        assert_eq!(header.source, Some("203.0.113.7:51234".parse().unwrap()));
        let local = parse(&v2_header(0, 0x00, &[], &[])).unwrap().unwrap();
        assert_eq!((local.len, local.source), (16, None));
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n".to_vec();
        let v2 = v2_header(1, 0x11, &ipv4_addresses(), &[]);
        for whole in [v1, v2] {
            for cut in 1..whole.len() {
                assert_eq!(parse(&whole[..cut]), Ok(None), "{:?}", &whole[..cut]);
            }
            assert!(parse(&whole).unwrap().is_some());
        }
    }

    #[test]
    fn anything_else_is_refused_at_once_or_at_the_bound() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"P",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.400 1.2.3.4 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x10\x11\0\0",
        ] {
            // "P" alone could begin "PROXY "; the others cannot become a header.
            if bad == b"P" {
                assert_eq!(parse(bad), Ok(None));
            } else {
                assert!(parse(bad).is_err(), "{bad:?}");
            }
        }
        // v1 without its line end: refused once past v1's longest form.
        let mut endless = b"PROXY TCP4 ".to_vec();
        endless.resize(200, b'1');
        assert!(parse(&endless).is_err());
        // v2 announcing more than the bound: refused once the bound is reached.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        huge.resize(MAX_LEN, 0);
        assert!(parse(&huge).is_err());
        assert_eq!(parse(&huge[..100]), Ok(None));
    }

    proptest::proptest! {
        /// Any bytes: a verdict, never a panic, and a header never longer than its input.
        #[test]
        fn any_input_gets_a_verdict(input in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(Some(header)) = parse(&input) {
                proptest::prop_assert!(header.len <= input.len());
            }
        }

        /// A real v1 header followed by anything: the header's length and source exactly.
        #[test]
        fn v1_headers_with_any_tail(
            a in proptest::num::u32::ANY,
            port in proptest::num::u16::ANY,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let ip = std::net::Ipv4Addr::from(a);
            let head = format!("PROXY TCP4 {ip} 127.0.0.1 {port} 80\r\n");
            let mut input = head.clone().into_bytes();
            input.extend_from_slice(&tail);
            let header = parse(&input).unwrap().unwrap();
            proptest::prop_assert_eq!(header.len, head.len());
            proptest::prop_assert_eq!(header.source, Some(SocketAddr::from((ip, port))));
        }
    }
}
