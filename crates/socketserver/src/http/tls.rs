//! HTTPS: rustls (ring provider) under the HTTP connection loop.
//!
//! The handshake runs in the connection's worker, bounded by the header timeout, never on the
//! accept loop: a client that opens a connection and sends nothing (or a byte a minute) costs
//! one worker for at most that long and delays nobody else (the bug of servers that wrap the
//! listening socket or handshake in the accept thread).

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::request::Wire;

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
        let config = rustls::ServerConfig::builder_with_provider(provider)
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
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    /// Runs the server side of the handshake on `stream` before `deadline`. `Ok(None)` when
    /// the client went away, timed out or failed the handshake (nothing to answer).
    pub(crate) fn accept<'a>(
        &self,
        stream: &'a mut crate::Request,
        deadline: Option<Instant>,
    ) -> io::Result<Option<TlsWire<'a>>> {
        let Ok(mut conn) = ServerConnection::new(Arc::clone(&self.config)) else {
            return Ok(None);
        };
        while conn.is_handshaking() {
            let Ok(left) = crate::server::time_left(deadline) else {
                return Ok(None);
            };
            stream.set_timeout(left)?;
            match conn.complete_io(stream) {
                Ok((0, 0)) if conn.is_handshaking() => return Ok(None),
                Ok(_) => {}
                Err(e) => {
                    log::debug!("{}: TLS handshake failed: {e}", stream.peer());
                    return Ok(None);
                }
            }
        }
        Ok(Some(TlsWire { conn, stream }))
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

/// HTTP bytes through TLS.
pub(crate) struct TlsWire<'a> {
    conn: ServerConnection,
    stream: &'a mut crate::Request,
}

impl TlsWire<'_> {
    /// Sends close_notify, best effort.
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(self.stream);
        let _ = self.stream.flush();
    }
}

impl Read for TlsWire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        rustls::Stream::new(&mut self.conn, self.stream).read(buf)
    }
}

impl Write for TlsWire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        rustls::Stream::new(&mut self.conn, self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        rustls::Stream::new(&mut self.conn, self.stream).flush()?;
        self.stream.flush()
    }
}

impl Wire for TlsWire<'_> {
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_timeout(timeout)
    }

    fn set_idle(&mut self, idle: bool) -> bool {
        self.stream.set_idle(idle)
    }

    fn is_shutting_down(&self) -> bool {
        self.stream.shutdown_handle().is_shutting_down()
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        // Plaintext already decrypted counts as readable.
        if self
            .conn
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0)
        {
            return Ok(true);
        }
        self.stream.wait_readable(timeout)
    }

    /// No zero-copy through TLS: read and encrypt in 64 KiB pieces.
    fn send_file(&mut self, file: File, offset: u64, len: u64) -> io::Result<()> {
        crate::request::copy_file_to(self, &file, offset, len)
    }
}
