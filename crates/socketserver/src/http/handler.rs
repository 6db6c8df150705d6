//! The glue that makes [`Http`] a [`Handler`]: which way a connection is served. In the
//! blocking modes, `Http::serve` over the connection (after the TLS handshake, with a
//! `TlsConfig`); on an event loop, an `HttpSession` (inside a `TlsSession` for HTTPS). Kept
//! apart so the request loop (`conn.rs`), the loop's session (`session.rs`) and TLS
//! (`tls.rs`) do not import each other in a circle.

use std::io;
use std::time::Instant;

use super::Service;
use super::conn::Http;
use crate::Handler;

impl<S: Service> Handler for Http<S> {
    fn handle(&self, stream: &mut crate::Request) -> io::Result<()> {
        if stream.is_datagram() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "HTTP needs a stream transport (tcp:// or unix:)",
            ));
        }
        let peer = stream.peer().clone();
        let started = Instant::now();
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.config.tls {
            let Some(mut conn) = tls.accept(
                stream,
                started.checked_add(self.config.limits.header_timeout),
            )?
            else {
                return Ok(());
            };
            let mut wire = super::tls::TlsWire::new(&mut conn, stream);
            let result = self.serve(&mut wire, &peer, started);
            wire.close();
            return result;
        }
        self.serve(stream, &peer, started)
    }

    fn serves_requests(&self) -> bool {
        true
    }

    fn session(&self) -> Option<crate::Session> {
        let http = super::session::HttpSession::new(self.clone());
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.config.tls {
            // The handshake and request heads on the loop; requests on the workers.
            let conn = tls.connection()?;
            return Some(crate::Session(Box::new(super::tls::TlsSession::new(
                conn, http,
            ))));
        }
        Some(crate::Session(Box::new(http)))
    }
}
