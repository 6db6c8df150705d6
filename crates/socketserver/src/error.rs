//! The library's error type.

use std::fmt;
use std::io;

/// Everything that can go wrong in this crate, from parsing an address to a handler failing.
///
/// Messages are lowercase, name the value at fault and, where there is one, say what to do:
/// `cannot bind tcp://127.0.0.1:8000: address already in use`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An address URL that does not parse.
    InvalidAddress {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A listener could not be created, bound or put into listening state.
    Bind {
        /// The address as given (URL form).
        addr: String,
        /// The system's reason.
        source: io::Error,
    },
    /// Something this version does not support (for example an unknown mode name, or an
    /// inherited socket of an unknown kind).
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// An inherited socket (a descriptor, or systemd socket activation) cannot be served.
    Inherited {
        /// Which: `fd:N`, or `systemd` / `systemd:NAME`.
        what: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The server was closed; it cannot serve again.
    Closed,
    /// A request handler returned an error.
    Handler(io::Error),
    /// A request handler panicked; the message is the panic's payload when it was a string.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// A datagram larger than the configured maximum arrived and was dropped.
    DatagramTooLarge {
        /// Its size in bytes.
        len: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// Accepting a connection or starting its worker failed.
    Accept(io::Error),
    /// Any other I/O error.
    Io(io::Error),
}

/// `std::result::Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A short lowercase description of an I/O error, without the `(os error N)` suffix people
/// cannot act on.
pub(crate) fn describe(err: &io::Error) -> String {
    use io::ErrorKind::*;
    let text = match err.kind() {
        AddrInUse => "address already in use",
        AddrNotAvailable => "address not available on this machine",
        PermissionDenied => "permission denied",
        NotFound => "no such file or directory",
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset by peer",
        BrokenPipe => "broken pipe (the peer closed the connection)",
        TimedOut => "timed out",
        _ => return strip_os_error(err.to_string()),
    };
    match err.get_ref() {
        // A custom message (ours) says more than the kind.
        Some(inner) => inner.to_string(),
        None => text.to_string(),
    }
}

fn strip_os_error(mut text: String) -> String {
    if let Some(at) = text.find(" (os error") {
        text.truncate(at);
    }
    if let Some(first) = text.get(..1) {
        let lower = first.to_lowercase();
        text.replace_range(..1, &lower);
    }
    text
}

/// Escapes ASCII control characters and DEL as `\xHH` so untrusted text cannot drive a
/// terminal (python/cpython#100001).
pub(crate) fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            for unit in c.to_string().bytes() {
                out.push_str(&format!("\\x{unit:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidAddress { input, reason } => {
                write!(f, "invalid address {}: {reason}", escape_control(input))
            }
            Error::Bind { addr, source } => write!(f, "cannot bind {addr}: {}", describe(source)),
            Error::Unsupported { what } => write!(f, "{what}"),
            Error::Inherited { what, reason } => write!(f, "cannot serve {what}: {reason}"),
            Error::Closed => write!(f, "the server is closed; build a new one to serve again"),
            Error::Handler(err) => write!(f, "{}", describe(err)),
            Error::Panicked { message } => {
                write!(f, "handler panicked: {}", escape_control(message))
            }
            Error::DatagramTooLarge { len, limit } => write!(
                f,
                "dropped a datagram of {len} bytes: the limit is {limit} (raise max_packet_size)"
            ),
            Error::Accept(err) => write!(f, "accept failed: {}", describe(err)),
            Error::Io(err) => write!(f, "{}", describe(err)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } => Some(source),
            Error::Handler(err) | Error::Accept(err) | Error::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::Io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_as_lowercase_phrases() {
        let err = Error::Bind {
            addr: "tcp://127.0.0.1:80".into(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert_eq!(
            err.to_string(),
            "cannot bind tcp://127.0.0.1:80: address already in use"
        );
        let custom = io::Error::new(
            io::ErrorKind::AddrInUse,
            "a server is already listening on it",
        );
        assert_eq!(describe(&custom), "a server is already listening on it");
        assert_eq!(
            describe(&io::Error::from_raw_os_error(24)),
            "too many open files"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("a\x1b[31mb\x7f\n"), "a\\x1b[31mb\\x7f\\x0a");
        assert_eq!(escape_control("\u{85}"), "\\xc2\\x85");
    }
}
