//! HTTP Basic authentication (RFC 7617) in front of any [`Service`]: [`BasicAuth`], the users it
//! knows ([`Users`]) and how their secrets are kept ([`Secret`]).
//!
//! Secrets are compared so that the time taken says nothing about the input: a plain password
//! or a `sha256:` hash is compared as a SHA-256 digest with `subtle`'s constant-time equality
//! (so lengths do not show either), a PHC string (`$argon2id$...`) through the `argon2` crate's
//! verifier. An unknown user is checked against a dummy secret of the same kind, so it takes
//! as long as a wrong password.
//!
//! A slow hash is not paid on every request of a keep-alive browser: credentials that
//! verified are remembered as a keyed digest (SHA-256 over a random per-process key, the user
//! and the password), at most [`REMEMBERED`] of them. Why that is safe is in ARCHITECTURE.md
//! ("Remembered credentials"): a different password gives a different digest, the key is
//! never known outside the process, and nothing stored is a password or a hash of one alone.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::sync::Mutex;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Request, Response, Service, StatusCode};

/// The `WWW-Authenticate` challenge of every `401`.
pub const CHALLENGE: &str = "Basic realm=\"socketserver\", charset=\"UTF-8\"";

/// Most verified credentials remembered (the oldest is forgotten first).
pub const REMEMBERED: usize = 1024;

/// How a user's password is kept.
#[derive(Clone)]
pub enum Secret {
    /// The SHA-256 digest of the password (given in clear, or as `sha256:HEX`).
    Sha256([u8; 32]),
    /// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), verified by `argon2`.
    Phc(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret, not even a digest.
        match self {
            Secret::Sha256(_) => f.write_str("Sha256(..)"),
            Secret::Phc(_) => f.write_str("Phc(..)"),
        }
    }
}

impl Secret {
    /// Reads `PASSWORD`, `sha256:HEX` or a PHC string `$argon2...$...`.
    pub fn parse(text: &str) -> Result<Secret, AuthError> {
        if let Some(hex) = text.strip_prefix("sha256:") {
            let bytes = decode_hex(hex).ok_or_else(|| {
                AuthError(format!(
                    "sha256:{hex}: expected 64 hexadecimal digits (the output of `printf %s PASSWORD | sha256sum`)"
                ))
            })?;
            return Ok(Secret::Sha256(bytes));
        }
        if text.starts_with("$argon2") {
            argon2::PasswordHash::new(text).map_err(|e| {
                AuthError(format!(
                    "{}: not a valid argon2 PHC string ({e}); make one with `argon2 SALT -id -e`",
                    shorten(text)
                ))
            })?;
            return Ok(Secret::Phc(text.to_owned()));
        }
        if text.starts_with('$') {
            return Err(AuthError(format!(
                "{}: only argon2 PHC strings ($argon2id$...) are supported as hashes",
                shorten(text)
            )));
        }
        if text.is_empty() {
            return Err(AuthError("an empty password".to_owned()));
        }
        Ok(Secret::Sha256(Sha256::digest(text.as_bytes()).into()))
    }

    /// Whether `password` is this secret, in time independent of where they differ.
    fn verify(&self, password: &[u8]) -> bool {
        use argon2::PasswordVerifier as _;
        match self {
            Secret::Sha256(digest) => {
                let given: [u8; 32] = Sha256::digest(password).into();
                bool::from(given.ct_eq(digest))
            }
            Secret::Phc(phc) => match argon2::PasswordHash::new(phc) {
                Ok(hash) => argon2::Argon2::default()
                    .verify_password(password, &hash)
                    .is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// A bad user entry or password file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError(String);

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

fn shorten(text: &str) -> String {
    let head: String = text.chars().take(24).collect();
    if head.len() < text.len() {
        format!("{head}...")
    } else {
        head
    }
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// The users [`BasicAuth`] lets in, each with their [`Secret`].
#[derive(Clone, Debug, Default)]
pub struct Users {
    users: HashMap<String, Secret>,
}

impl Users {
    /// No users (a [`BasicAuth`] with none lets no one in).
    pub fn new() -> Users {
        Users::default()
    }

    /// Adds `USER:PASSWORD`, `USER:sha256:HEX` or `USER:$argon2id$...`. The user name must be
    /// non-empty and without `:` (RFC 7617); a user given twice is an error.
    ///
    /// ```
    /// use socketserver::http::Users;
    ///
    /// let users = Users::new().with("alice:wonderland")?.with(
    ///     "bob:sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
    /// )?;
    /// assert_eq!(users.len(), 2);
    /// assert!(Users::new().with("no-password").is_err());
    /// # Ok::<(), socketserver::http::AuthError>(())
    /// ```
    pub fn with(mut self, entry: &str) -> Result<Users, AuthError> {
        let (user, secret) = entry.split_once(':').ok_or_else(|| {
            AuthError(format!(
                "{:?}: expected USER:PASSWORD (or USER:sha256:HEX, USER:$argon2id$...)",
                shorten(entry)
            ))
        })?;
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(AuthError(format!(
                "{:?}: the user name must be non-empty, without control characters",
                shorten(entry)
            )));
        }
        let secret = Secret::parse(secret).map_err(|e| AuthError(format!("user {user}: {e}")))?;
        if self.users.insert(user.to_owned(), secret).is_some() {
            return Err(AuthError(format!("user {user} is given twice")));
        }
        Ok(self)
    }

    /// Adds every `USER:PASSWORD-OR-HASH` line of `text` (a password file); empty lines and
    /// lines starting with `#` are skipped. An error names the line.
    pub fn with_lines(mut self, text: &str) -> Result<Users, AuthError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            self = self
                .with(line)
                .map_err(|e| AuthError(format!("line {}: {e}", n + 1)))?;
        }
        Ok(self)
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn any_slow(&self) -> bool {
        self.users.values().any(|s| matches!(s, Secret::Phc(_)))
    }
}

/// Puts HTTP Basic authentication in front of `inner`: a request without credentials of one
/// of the [`Users`] gets `401` with `WWW-Authenticate: Basic realm="socketserver",
/// charset="UTF-8"` (and its body, if any, is never read: nothing reaches `inner`), and the
/// failure is logged with the client's address (at warning level, target
/// `socketserver::auth`, so fail2ban can read it).
///
/// ```
/// use socketserver::http::{BasicAuth, Http, StaticFiles, Users};
///
/// # let dir = tempfile::tempdir()?;
/// let users = Users::new().with("alice:wonderland")?;
/// let handler = Http::new(BasicAuth::new(StaticFiles::new(dir.path())?, users));
/// # let _ = handler;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With a PHC hash among the users the check may take tens of milliseconds (argon2 is slow on
/// purpose), so the service no longer runs on an event loop: each request goes to a worker,
/// and credentials that verified are remembered (see the module documentation) so a browser
/// pays the hash once, not per request.
pub struct BasicAuth<S> {
    inner: S,
    users: Users,
    /// Keyed digests of credentials that verified, with when they were last used.
    remembered: Mutex<Remembered>,
    /// The key of those digests: random, per process, never shown.
    key: [u8; 32],
}

#[derive(Default)]
struct Remembered {
    digests: HashMap<[u8; 32], u64>,
    clock: u64,
}

impl<S> fmt::Debug for BasicAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BasicAuth({} users)", self.users.len())
    }
}

impl<S: Service> BasicAuth<S> {
    /// `inner`, for `users` only.
    pub fn new(inner: S, users: Users) -> BasicAuth<S> {
        BasicAuth {
            inner,
            users,
            remembered: Mutex::new(Remembered::default()),
            key: random_key(),
        }
    }

    /// The user `req` authenticates as, if its credentials are good; else why not, with the
    /// user name it gave, if any (for the log).
    fn authenticate(&self, req: &Request<'_>) -> Result<String, Refusal> {
        let refuse = |why, user: Option<&[u8]>| Refusal {
            why,
            user: user.map(|u| String::from_utf8_lossy(u).into_owned()),
        };
        let value = req
            .header("authorization")
            .ok_or(refuse("no credentials", None))?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or(refuse("malformed credentials", None))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(refuse("not Basic credentials", None));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .map_err(|_| refuse("malformed credentials", None))?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(refuse("malformed credentials", None))?;
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user =
            std::str::from_utf8(user).map_err(|_| refuse("malformed credentials", Some(user)))?;
        let digest = self.digest(user, password);
        if self.recall(&digest) {
            return Ok(user.to_owned());
        }
        let good = match self.users.users.get(user) {
            Some(secret) => secret.verify(password),
            None => {
                // As long as a wrong password of a known user takes.
                let _ = self.dummy().verify(password);
                false
            }
        };
        if !good {
            return Err(refuse("wrong user or password", Some(user.as_bytes())));
        }
        self.remember(digest);
        Ok(user.to_owned())
    }

    /// A secret of the slowest kind the users have, for unknown user names.
    fn dummy(&self) -> Secret {
        self.users
            .users
            .values()
            .find(|s| matches!(s, Secret::Phc(_)))
            .cloned()
            .unwrap_or(Secret::Sha256([0; 32]))
    }

    fn digest(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password);
        h.finalize().into()
    }

    fn recall(&self, digest: &[u8; 32]) -> bool {
        let mut r = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        r.clock += 1;
        let now = r.clock;
        match r.digests.get_mut(digest) {
            Some(used) => {
                *used = now;
                true
            }
            None => false,
        }
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut r = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if r.digests.len() >= REMEMBERED
            && let Some(oldest) = r
                .digests
                .iter()
                .min_by_key(|(_, used)| **used)
                .map(|(d, _)| *d)
        {
            r.digests.remove(&oldest);
        }
        r.clock += 1;
        let now = r.clock;
        r.digests.insert(digest, now);
    }
}

/// Why a request was not let in, and the user name it gave, if any.
struct Refusal {
    why: &'static str,
    user: Option<String>,
}

/// 32 random bytes from the kernel; should that fail, a key from the process's own hasher
/// seeds (random per process too, only weaker).
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .is_ok()
    {
        return key;
    }
    use std::hash::{BuildHasher, Hasher};
    for chunk in key.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

impl<S: Service> Service for BasicAuth<S> {
    fn call(&self, req: &mut Request<'_>) -> Response {
        match self.authenticate(req) {
            Ok(_user) => self.inner.call(req),
            Err(Refusal { why, user }) => {
                let peer = match req.peer() {
                    crate::Address::Tcp { host, .. } | crate::Address::Udp { host, .. } => {
                        host.clone()
                    }
                    other => other.to_string(),
                };
                let user = user.map_or_else(String::new, |u| {
                    format!(" for user {:?}", crate::error::escape_control(&u))
                });
                log::warn!(
                    target: "socketserver::auth",
                    "authentication failed from {peer}{user}: {why}"
                );
                Response::error(
                    StatusCode::UNAUTHORIZED,
                    "this server needs a user name and password",
                )
                .header("WWW-Authenticate", CHALLENGE)
            }
        }
    }

    /// On the loop only when every check is quick (no PHC hash) and `inner` runs there.
    fn runs_inline(&self) -> bool {
        self.inner.runs_inline() && !self.users.any_slow()
    }

    fn runs_inline_for(&self, method: &super::Method) -> bool {
        self.inner.runs_inline_for(method) && !self.users.any_slow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_and_verify() {
        let plain = Secret::parse("wonderland").unwrap();
        assert!(plain.verify(b"wonderland"));
        assert!(!plain.verify(b"wonderlanD"));
        assert!(!plain.verify(b""));
        let hashed = Secret::parse(
            "sha256:5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8",
        )
        .unwrap();
        assert!(hashed.verify(b"password"));
        assert!(!hashed.verify(b"passwore"));
        for bad in [
            "sha256:abc",
            "sha256:",
            "$2b$12$bcrypt",
            "$argon2id$nonsense",
            "",
        ] {
            assert!(Secret::parse(bad).is_err(), "{bad}");
        }
        use argon2::PasswordHasher as _;
        let phc = argon2::Argon2::default()
            .hash_password_with_salt(b"s3cret", b"saltsaltsaltsalt")
            .unwrap()
            .to_string();
        let slow = Secret::parse(&phc).unwrap();
        assert!(slow.verify(b"s3cret"));
        assert!(!slow.verify(b"s3cret "));
        assert_eq!(format!("{slow:?} {plain:?}"), "Phc(..) Sha256(..)");
    }

    #[test]
    fn remembered_credentials_match_only_themselves_and_are_bounded() {
        let ok = |_: &mut Request<'_>| Response::new(StatusCode::OK);
        let auth = BasicAuth::new(ok, Users::new().with("carol:pw").unwrap());
        let good = auth.digest("carol", b"s3cret");
        auth.remember(good);
        assert!(auth.recall(&auth.digest("carol", b"s3cret")));
        assert!(!auth.recall(&auth.digest("carol", b"s3cret ")));
        assert!(!auth.recall(&auth.digest("carol", b"")));
        assert!(
            !auth.recall(&auth.digest("caro", b"ls3cret")),
            "user and password are kept apart"
        );
        // Another server's key: the same credentials give another digest.
        let other = BasicAuth::new(ok, Users::new());
        assert_ne!(other.digest("carol", b"s3cret"), good);
        for i in 0..REMEMBERED + 10 {
            auth.remember(auth.digest("u", i.to_string().as_bytes()));
        }
        let held = auth.remembered.lock().unwrap().digests.len();
        assert_eq!(held, REMEMBERED);
        assert!(!auth.recall(&good), "the oldest went first");
        assert!(auth.recall(&auth.digest("u", (REMEMBERED + 9).to_string().as_bytes())));
    }

    #[test]
    fn users_and_password_files() {
        let users = Users::new()
            .with_lines("# team\nalice:one\n\n  # more\r\nbob:sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\r\n")
            .unwrap();
        assert_eq!(users.len(), 2);
        let err = Users::new().with_lines("alice:one\nbroken\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2: "), "{err}");
        let err = Users::new()
            .with_lines("alice:one\nalice:two\n")
            .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(Users::new().with(":pw").is_err());
        assert!(Users::new().with("a\u{7}b:pw").is_err());
        // A password may itself hold colons.
        let users = Users::new().with("carol:a:b:c").unwrap();
        assert!(users.users["carol"].verify(b"a:b:c"));
    }
}
