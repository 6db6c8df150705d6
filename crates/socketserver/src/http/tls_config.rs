//! HTTPS configuration: the certificate and key, loaded from PEM files (rustls with the ring
//! provider), and the server side of the handshake in the blocking modes, bounded by the
//! header deadline. The TLS session on the event loop and the TLS wire are in `tls.rs`.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server certificate and key, ready to serve HTTPS with [`Http::tls`](super::Http::tls).
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// Why a certificate or key could not be used. The message names the file.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsConfig {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1). Fails with a message naming the file: unreadable, no certificate in it, no key
    /// in it, or a key that does not match the certificate.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        readable(cert)?;
        readable(key)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| TlsError(format!("cannot read certificate {}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(TlsError(format!(
                "no PEM certificate found in {}",
                cert.display()
            )));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| TlsError(format!("cannot read private key {}: {e}", key.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS setup failed: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| {
                TlsError(format!(
                    "certificate {} and key {} cannot be used together: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
        // Say which protocol this is (ALPN): clients and scanners expect it, and a client
        // that offers only another protocol (h2) is told so at once instead of talking past us.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    /// Runs the server side of the handshake on `stream` before `deadline`. `Ok(None)` when
    /// the client went away, timed out or failed the handshake (nothing to answer).
    pub(crate) fn accept(
        &self,
        stream: &mut crate::Request,
        deadline: Option<Instant>,
    ) -> io::Result<Option<ServerConnection>> {
        let Some(mut conn) = self.connection() else {
            return Ok(None);
        };
        // The whole handshake is due by the deadline: a client trickling it a byte at a time
        // (each read well within any per-read timeout) is cut off when it passes.
        stream.set_read_deadline(deadline);
        if let Ok(left) = crate::deadline::time_left(deadline) {
            stream.set_timeout(left)?;
        }
        let plain = io::BufRead::fill_buf(stream).is_ok_and(is_plain_http);
        if plain {
            log::debug!("{}: plain HTTP on the TLS port", stream.peer());
            let _ = stream.write_all(PLAIN_ON_TLS).and_then(|()| stream.flush());
            return Ok(None);
        }
        let done = loop {
            if !conn.is_handshaking() {
                break true;
            }
            let Ok(left) = crate::deadline::time_left(deadline) else {
                break false;
            };
            stream.set_timeout(left)?;
            match conn.complete_io(stream) {
                Ok((0, 0)) if conn.is_handshaking() => break false,
                Ok(_) => {}
                Err(e) => {
                    log::debug!("{}: TLS handshake failed: {e}", stream.peer());
                    break false;
                }
            }
        };
        stream.set_read_deadline(None);
        Ok(done.then_some(conn))
    }

    /// A new server-side TLS state for one connection (the handshake not started).
    pub(crate) fn connection(&self) -> Option<ServerConnection> {
        ServerConnection::new(Arc::clone(&self.config)).ok()
    }
}

fn readable(path: &Path) -> Result<(), TlsError> {
    File::open(path).map(drop).map_err(|e| {
        TlsError(format!(
            "cannot read {}: {}",
            path.display(),
            crate::error::describe(&e)
        ))
    })
}

/// The answer to plain HTTP sent to the TLS port: readable in a browser or curl, where raw
/// TLS alert bytes are not (nginx answers the same way).
pub(crate) const PLAIN_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 53\r\nConnection: close\r\n\r\nThis port speaks HTTPS: use https:// in the address.\n";

/// Whether a connection's first bytes are plain HTTP rather than TLS (a TLS client starts with
/// a handshake record, 0x16; an HTTP request with a method's letters).
pub(crate) fn is_plain_http(first: &[u8]) -> bool {
    first.first().is_some_and(u8::is_ascii_uppercase)
}
