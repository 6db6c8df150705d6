//! `StaticFiles`: SimpleHTTPRequestHandler, done safely.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
#[cfg(target_os = "linux")]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compress::{self, Cache, Compression, Encoding, Key};
use super::conditional::{self, Conditions, Decision, Representation};
use super::files::{self, FileOptions, Refused, Resolved};
use super::listing;
use super::upload::{self, Uploads};
use super::{Method, Request, Response, Service, StatusCode};

/// Serves the files under a root directory, like `python -m http.server` and better.
///
/// - `GET` and `HEAD`; other known methods get `405` with `Allow: GET, HEAD`, unknown ones `501`.
/// - A directory serves its `index.html`, or else a listing (sorted, names HTML-escaped and
///   percent-encoded in links, sizes and modification times, a link to the parent). A
///   directory requested without its trailing slash is redirected (`301`) to the same path
///   with it, query kept; the `Location` is built from the normalised path and never starts
///   with `//` (the open redirect of CVE-2021-28861).
/// - Paths are percent-decoded once; NUL and backslash are refused; `.` and `..` segments are
///   dropped; nothing outside the root is ever served. Symlinks leading out of the root are
///   refused unless [`follow_symlinks`](Self::follow_symlinks); names starting with `.` are
///   neither listed nor served unless [`hidden`](Self::hidden).
/// - `Content-Type` by extension (text types with `charset=utf-8`), `Last-Modified` and
///   `If-Modified-Since` (`304`; a date in the future is ignored), a strong `ETag` (length and
///   modification time) and `If-None-Match`, `If-Match` and `If-Unmodified-Since` (`412`),
///   byte ranges (`206`, `If-Range` honoured; unsatisfiable: `416` with
///   `Content-Range: bytes */N`; malformed: the whole file), several ranges as
///   `multipart/byteranges` (merged; more than 16, or more than the file in all: the whole
///   file), `Accept-Ranges: bytes`.
/// - Compression ([`compression`](Self::compression)): zstd, br or gzip as the client's
///   `Accept-Encoding` prefers, for compressible types of 1 KiB or more, streamed (never a
///   whole file in memory; on an event loop a bounded step at a time), with
///   `Vary: Accept-Encoding` and an `ETag` per coding. A precompressed `NAME.zst`, `NAME.br`
///   or `NAME.gz` next to `NAME` is sent as it is instead (with its length and
///   `sendfile(2)`). A request with `Range` gets the file itself.
/// - File bodies are streamed with `sendfile(2)`, never read whole into memory.
/// - Every answer carries `X-Content-Type-Options: nosniff`.
#[derive(Clone, Debug)]
pub struct StaticFiles {
    root: PathBuf,
    /// The root, open: files are opened beneath it (see `files::resolve_in`).
    root_dir: Option<Arc<OwnedFd>>,
    options: FileOptions,
    /// A listing for a directory without an index (else `403`).
    listing: bool,
    /// The `Cache-Control` of file responses.
    cache_control: Option<String>,
    /// Served with `200` for a path that does not exist (a single-page app's `index.html`).
    fallback: Option<String>,
    /// The body of `404` answers.
    not_found: Option<String>,
    /// What is compressed, and how.
    compression: Compression,
    /// Compressed bodies of hot files (none when the settings' bound is 0).
    cache: Option<Arc<Cache>>,
    /// `PUT` stores files (see [`upload`](Self::upload)).
    upload: bool,
    uploads: Uploads,
}

/// The names a directory's index may have, in the order they are looked for.
const INDEX_NAMES: [&str; 2] = ["index.html", "index.htm"];

impl StaticFiles {
    /// Serves `root`, which must be a directory. Fails with `NotFound` (or the system's
    /// reason) naming the directory otherwise.
    pub fn new(root: impl AsRef<Path>) -> io::Result<StaticFiles> {
        let given = root.as_ref();
        let root = given.canonicalize().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: {}", given.display(), crate::error::describe(&e)),
            )
        })?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", given.display()),
            ));
        }
        // A handle that only names the directory (no read access needed); without one the
        // paths are checked instead.
        #[cfg(target_os = "linux")]
        let root_dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY)
            .open(&root)
            .ok()
            .map(|dir| Arc::new(OwnedFd::from(dir)));
        #[cfg(not(target_os = "linux"))]
        let root_dir = None;
        Ok(StaticFiles {
            root,
            root_dir,
            options: FileOptions::default(),
            listing: true,
            cache_control: None,
            fallback: None,
            not_found: None,
            compression: Compression::default(),
            cache: Some(Arc::new(Cache::new(
                Compression::default().cache_bytes_of(),
            ))),
            upload: false,
            uploads: Uploads {
                overwrite: false,
                max_bytes: 1 << 30,
            },
        })
    }

    /// Accepts `PUT /dir/name`: the body is stored as `name` in `dir` (which must exist,
    /// else `409`), `201 Created`. Off by default: nothing is ever written without it. An
    /// existing file is not replaced (`409`) unless [`overwrite`](Self::overwrite). Names with
    /// `/`, `\`, NUL or control characters, `.`, `..` and dot-names (unless
    /// [`hidden`](Self::hidden)) get `400`; a directory out of the root, symlinks included,
    /// `403`, exactly as for reads. The body goes to a temporary file in the same directory,
    /// renamed into place only once complete and `fsync`ed (the directory too): an interrupted
    /// upload leaves nothing, and a reader sees nothing or the whole file. The HTTP server's
    /// [`Limits::max_body`](super::Limits) must be at least
    /// [`max_upload_bytes`](Self::max_upload_bytes). On an event loop, uploads run on the
    /// workers; reads stay on the loop.
    pub fn upload(mut self, on: bool) -> Self {
        self.upload = on;
        self
    }

    /// Lets an upload replace an existing file (`204 No Content`). Default: refused (`409`).
    pub fn overwrite(mut self, on: bool) -> Self {
        self.uploads.overwrite = on;
        self
    }

    /// The largest upload, in bytes (default 1 GiB): larger gets `413`, before the body is
    /// read when its length is announced, and with nothing left behind when it is not.
    pub fn max_upload_bytes(mut self, bytes: u64) -> Self {
        self.uploads.max_bytes = bytes;
        self
    }

    /// How responses are compressed (default: [`Compression::default`], zstd, brotli and
    /// gzip on the fly for compressible types of 1 KiB or more, precompressed siblings
    /// served, a 32 MiB cache). [`Compression::off`] sends every file as it is.
    pub fn compression(mut self, compression: Compression) -> Self {
        let bytes = compression.cache_bytes_of();
        self.cache = (bytes > 0 && !compression.is_off()).then(|| Arc::new(Cache::new(bytes)));
        self.compression = compression;
        self
    }

    /// Follow symlinks that lead out of the root. Default: refused (403).
    pub fn follow_symlinks(mut self, follow: bool) -> Self {
        self.options.follow_symlinks = follow;
        self
    }

    /// List and serve names starting with `.`. Default: hidden (not listed, 404).
    pub fn hidden(mut self, hidden: bool) -> Self {
        self.options.hidden = hidden;
        self
    }

    /// Lists a directory that has no `index.html` or `index.htm` (`true`, the default), or
    /// answers `403` for it (`false`: nothing about the directory's contents is shown).
    pub fn listing(mut self, on: bool) -> Self {
        self.listing = on;
        self
    }

    /// The `Cache-Control` header of every file response (`200`, `206`, `304`), e.g.
    /// `max-age=3600` or `no-cache`. Default: none.
    pub fn cache_control(mut self, value: impl Into<String>) -> Self {
        self.cache_control = Some(value.into());
        self
    }

    /// Serves `file` (relative to the root, e.g. `index.html` for a single-page app) with
    /// `200` for a `GET`/`HEAD` of a path that does not exist, instead of `404`. Paths that
    /// exist, and refusals (traversal, dot-files, symlinks out of the root), are unaffected;
    /// `file` itself is opened under the same rules (a missing one gives the `404`).
    pub fn fallback(mut self, file: impl Into<String>) -> Self {
        self.fallback = Some(file.into());
        self
    }

    /// The body of every `404` answer: `file` (relative to the root), with its content
    /// type; the status stays `404`. A missing `file` leaves the plain `404`.
    pub fn not_found_page(mut self, file: impl Into<String>) -> Self {
        self.not_found = Some(file.into());
        self
    }

    /// Opens `file` (relative to the root) as a request for it would be: the same refusals.
    fn open_own(&self, file: &str) -> Option<(PathBuf, PathBuf, File, Metadata)> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let path: String = file
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| format!("/{}", utf8_percent_encode(s, NON_ALPHANUMERIC)))
            .collect();
        let root_dir = self.root_dir.as_deref().map(AsFd::as_fd);
        match files::resolve_in(&self.root, root_dir, &path, None, &self.options) {
            Ok(Resolved::File {
                path,
                name,
                meta,
                opened,
            }) => {
                let file = match opened {
                    Some(file) => file,
                    None => File::open(&path).ok()?,
                };
                Some((path, name, file, meta))
            }
            _ => None,
        }
    }

    /// The served directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Serves the file at `path` (or the one already `opened`); `name`, the path as requested,
    /// gives the content type.
    fn serve_file(
        &self,
        req: &Request<'_>,
        path: &Path,
        name: &Path,
        opened: Option<(File, Metadata)>,
    ) -> Response {
        let (file, meta) = match opened {
            Some(opened) => opened,
            None => {
                let file = match File::open(path) {
                    Ok(file) => file,
                    Err(e) => return io_error(&e),
                };
                // Metadata of what we opened, not of the path: it may have changed in between.
                match file.metadata() {
                    Ok(meta) if meta.is_file() => (file, meta),
                    Ok(_) => return Response::error(StatusCode::NOT_FOUND, ""),
                    Err(e) => return io_error(&e),
                }
            }
        };
        let identity = Representation::of(&meta, name);
        let (file, file_is, coding) = self.representation(req, path, file, &meta, identity);
        let decision =
            conditional::decide(&Conditions::of(req), &file_is, std::time::SystemTime::now());
        let len = file_is.len;
        let common = |response: Response| {
            let mut response = response
                .set("Last-Modified", file_is.last_modified.clone())
                .set("ETag", file_is.etag.clone())
                .set("Accept-Ranges", "bytes");
            if coding.varies {
                response = response.vary_accept_encoding();
            }
            match &self.cache_control {
                Some(value) => response.set("Cache-Control", value.clone()),
                None => response,
            }
        };
        if let Some(how) = coding.how
            && decision == Decision::Whole
        {
            let response = common(
                Response::new(StatusCode::OK).set("Content-Type", file_is.content_type.clone()),
            )
            .set("Content-Encoding", how.encoding().token());
            return match how {
                Coding::Sibling(_) => response.file(file, 0, len),
                Coding::Cached(_, body) => response.body(body.to_vec()),
                Coding::OnTheFly(encoding, level) => {
                    match compress::Encoder::file(file, 0, len, encoding, level) {
                        Ok(encoder) => {
                            let encoder = match &self.cache {
                                Some(cache) => {
                                    encoder.tee(Arc::clone(cache), Key::of(&meta, encoding, level))
                                }
                                None => encoder,
                            };
                            response.encoded(encoder)
                        }
                        Err(e) => {
                            log::warn!(
                                "compression with {} failed to start: {e}",
                                encoding.token()
                            );
                            Response::error(StatusCode::INTERNAL_SERVER_ERROR, "")
                        }
                    }
                }
            };
        }
        match decision {
            Decision::PreconditionFailed => common(Response::error(
                StatusCode::PRECONDITION_FAILED,
                "the file does not match the request's If-Match or If-Unmodified-Since",
            )),
            Decision::NotModified => common(Response::new(StatusCode::NOT_MODIFIED)),
            Decision::Whole => common(
                Response::new(StatusCode::OK).set("Content-Type", file_is.content_type.clone()),
            )
            .file(file, 0, len),
            Decision::Part { start, end } => common(
                Response::new(StatusCode::PARTIAL_CONTENT)
                    .set("Content-Type", file_is.content_type.clone())
                    .set("Content-Range", format!("bytes {start}-{end}/{len}")),
            )
            .file(file, start, end - start + 1),
            Decision::Parts(ranges) => {
                match byteranges(&file, &ranges, &file_is.content_type, len, &file_is.etag) {
                    Ok((boundary, pieces)) => common(Response::new(StatusCode::PARTIAL_CONTENT))
                        .header(
                            "Content-Type",
                            format!("multipart/byteranges; boundary={boundary}"),
                        )
                        .pieces(pieces),
                    Err(e) => io_error(&e),
                }
            }
            Decision::Unsatisfiable => common(
                Response::error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "the requested range is outside the file",
                )
                .set("Content-Range", format!("bytes */{len}")),
            ),
        }
    }

    /// The representation of a file that answers `req`: the file itself, a precompressed
    /// sibling the client accepts, or the file compressed on the fly (from the cache when it
    /// is there); with its validators (a coding's `ETag` carries its name) and whether the
    /// answer varies with `Accept-Encoding`. A request with `Range` gets the file itself.
    fn representation(
        &self,
        req: &Request<'_>,
        path: &Path,
        file: File,
        meta: &Metadata,
        identity: Representation,
    ) -> (File, Representation, Chosen) {
        let settings = &self.compression;
        let mut chosen = Chosen {
            varies: false,
            how: None,
        };
        if settings.is_off() {
            return (file, identity, chosen);
        }
        let on_the_fly = identity.len >= settings.min_size_of()
            && settings.on_the_fly(&Encoding::ALL).is_some()
            && compress::compressible(&identity.content_type);
        chosen.varies = on_the_fly;
        let accepted = if req.header_bytes("range").is_some() {
            Vec::new()
        } else {
            Encoding::negotiate(req.header("accept-encoding"))
        };
        if accepted.is_empty() {
            return (file, identity, chosen);
        }
        if settings.serves_precompressed() {
            let root_dir = self.root_dir.as_deref().map(AsFd::as_fd);
            let original = meta.modified().ok();
            for &encoding in &accepted {
                let Some((sibling, sibling_meta)) = files::open_sibling(
                    &self.root,
                    root_dir,
                    path,
                    encoding.extension(),
                    &self.options,
                ) else {
                    continue;
                };
                // A sibling older than its file was not made from this version of it.
                if sibling_meta.modified().ok() < original {
                    continue;
                }
                let is = Representation::sibling(
                    &sibling_meta,
                    identity.content_type,
                    encoding.extension(),
                );
                chosen.varies = true;
                chosen.how = Some(Coding::Sibling(encoding));
                return (sibling, is, chosen);
            }
        }
        if !on_the_fly {
            return (file, identity, chosen);
        }
        let Some((encoding, level)) = settings.on_the_fly(&accepted) else {
            return (file, identity, chosen);
        };
        let mut is = identity;
        is.etag = compress::tag_for(&is.etag, encoding);
        chosen.how = Some(
            match self
                .cache
                .as_ref()
                .and_then(|c| c.get(&Key::of(meta, encoding, level)))
            {
                Some(body) => Coding::Cached(encoding, body),
                None => Coding::OnTheFly(encoding, level),
            },
        );
        (file, is, chosen)
    }

    fn serve_directory(&self, req: &Request<'_>, path: &Path, display: &str) -> Response {
        for name in INDEX_NAMES {
            let index = path.join(name);
            if !index.is_file() {
                continue;
            }
            // The index is a path of its own: a symlink named index.html that leads out of
            // the root is refused like any other.
            let inside = index
                .canonicalize()
                .is_ok_and(|real| real.starts_with(&self.root));
            if !inside && !self.options.follow_symlinks {
                return Response::error(StatusCode::FORBIDDEN, "");
            }
            return self.serve_file(req, &index, &index, None);
        }
        if !self.listing {
            return Response::error(
                StatusCode::FORBIDDEN,
                "this directory has no index page, and listings are off",
            );
        }
        let mut entries = match listing::list_directory(path, &self.options) {
            Ok(entries) => entries,
            Err(e) => return io_error(&e),
        };
        let order = listing::Order::from_query(req.query());
        order.sort(&mut entries);
        // One URL, two representations: caches must key on Accept.
        let page = if listing::wants_json(req.query(), req.header("accept")) {
            Response::new(StatusCode::OK)
                .set("Content-Type", "application/json")
                .header("Vary", "Accept")
                .body(listing::render_json(display, &entries))
        } else {
            let page = listing::render_listing(display, &entries, order);
            let page = if self.upload {
                listing::with_upload_form(page)
            } else {
                page
            };
            Response::html(StatusCode::OK, page).header("Vary", "Accept")
        };
        page.compress(req, &self.compression)
    }
}

/// How a file's answer is encoded, as [`StaticFiles::representation`] chose.
struct Chosen {
    /// The answer depends on `Accept-Encoding` (`Vary`).
    varies: bool,
    /// `None`: the file as it is.
    how: Option<Coding>,
}

/// An encoded representation of a file.
enum Coding {
    /// A precompressed sibling file, sent as it is.
    Sibling(Encoding),
    /// Compressed earlier: the cache's copy.
    Cached(Encoding, Arc<[u8]>),
    /// Compressed as it is sent, at this level.
    OnTheFly(Encoding, i32),
}

impl Coding {
    fn encoding(&self) -> Encoding {
        match self {
            Coding::Sibling(e) | Coding::Cached(e, _) | Coding::OnTheFly(e, _) => *e,
        }
    }
}

/// The pieces of a `multipart/byteranges` body (RFC 9110 §14.6) for `ranges` of `file`, and
/// its boundary: each part its `Content-Type` and `Content-Range` head, then its bytes
/// straight from the file (with `sendfile(2)` where the transport allows).
fn byteranges(
    file: &File,
    ranges: &[(u64, u64)],
    content_type: &str,
    len: u64,
    etag: &str,
) -> io::Result<(String, Vec<super::Piece>)> {
    use super::Piece;
    // A boundary that cannot occur in the part heads and is unlikely in the bytes: derived
    // from the representation, so the same request gets the same answer.
    let seed: u64 = etag.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let boundary = format!("socketserver-{seed:016x}");
    let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
    for (i, &(start, end)) in ranges.iter().enumerate() {
        let head = format!(
            "{}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{end}/{len}\r\n\r\n",
            if i == 0 { "" } else { "\r\n" }
        );
        pieces.push(Piece::Bytes(head.into_bytes()));
        pieces.push(Piece::File {
            file: file.try_clone()?,
            offset: start,
            len: end - start + 1,
        });
    }
    pieces.push(Piece::Bytes(format!("\r\n--{boundary}--\r\n").into_bytes()));
    Ok((boundary, pieces))
}

fn io_error(e: &io::Error) -> Response {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            Response::error(StatusCode::NOT_FOUND, "")
        }
        io::ErrorKind::PermissionDenied => Response::error(StatusCode::FORBIDDEN, ""),
        _ => Response::error(StatusCode::INTERNAL_SERVER_ERROR, ""),
    }
}

impl Service for StaticFiles {
    /// Opening files and listing directories is quick local work: the event loop may do it.
    fn runs_inline(&self) -> bool {
        true
    }

    /// Uploads read their bodies: on a worker. Everything else stays on the loop.
    fn runs_inline_for(&self, method: &Method) -> bool {
        !(self.upload && matches!(method, Method::Put | Method::Post))
    }

    fn call(&self, req: &mut Request<'_>) -> Response {
        // Browsers must take the type we send, not guess one from the bytes: an uploaded or
        // mistyped file is never run as a script or a page (the header nginx users add).
        let mut response = self.respond(req);
        if response.status() == StatusCode::NOT_FOUND
            && let Some(page) = &self.not_found
            && let Some((_, name, file, meta)) = self.open_own(page)
        {
            let kind = Representation::of(&meta, &name).content_type;
            response = Response::new(StatusCode::NOT_FOUND)
                .set("Content-Type", kind)
                .file(file, 0, meta.len())
                .compress(req, &self.compression);
        }
        response.set("X-Content-Type-Options", "nosniff")
    }
}

impl StaticFiles {
    /// The answer to one request, before the headers every answer carries.
    fn respond(&self, req: &mut Request<'_>) -> Response {
        match req.method() {
            Method::Get | Method::Head => {}
            Method::Put if self.upload => {
                if !req.path().starts_with('/') {
                    return Response::error(StatusCode::BAD_REQUEST, "");
                }
                let root_dir = self.root_dir.as_deref().map(AsFd::as_fd);
                return upload::put(&self.root, root_dir, &self.options, self.uploads, req);
            }
            Method::Post if self.upload => {
                if !req.path().starts_with('/') {
                    return Response::error(StatusCode::BAD_REQUEST, "");
                }
                let root_dir = self.root_dir.as_deref().map(AsFd::as_fd);
                return upload::post(&self.root, root_dir, &self.options, self.uploads, req);
            }
            m if m.is_known() => {
                let (allow, what) = if self.upload {
                    ("GET, HEAD, PUT, POST", "GET, HEAD, PUT and POST")
                } else {
                    ("GET, HEAD", "GET and HEAD only")
                };
                return Response::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("this server serves files: {what}"),
                )
                .header("Allow", allow);
            }
            _ => return Response::error(StatusCode::NOT_IMPLEMENTED, "unknown method"),
        }
        if !req.path().starts_with('/') {
            return Response::error(StatusCode::BAD_REQUEST, "");
        }
        let root_dir = self.root_dir.as_deref().map(AsFd::as_fd);
        match files::resolve_in(&self.root, root_dir, req.path(), req.query(), &self.options) {
            Err(Refused::NotFound) => match self.fallback.as_deref().and_then(|f| self.open_own(f)) {
                Some((path, name, file, meta)) => {
                    self.serve_file(req, &path, &name, Some((file, meta)))
                }
                None => Response::error(StatusCode::NOT_FOUND, ""),
            },
            Err(Refused::Hidden) => Response::error(StatusCode::NOT_FOUND, ""),
            Err(Refused::BadRequest) => Response::error(StatusCode::BAD_REQUEST, "the path is not acceptable"),
            Err(Refused::Forbidden) => Response::error(StatusCode::FORBIDDEN, ""),
            Ok(Resolved::RedirectSlash { location }) => Response::html(
                StatusCode::MOVED_PERMANENTLY,
                "<!DOCTYPE html>\n<title>Moved</title>\n<p>This directory is at its path with a trailing slash.</p>\n",
            )
            .set("Location", location),
            Ok(Resolved::Directory { path, display }) => self.serve_directory(req, &path, &display),
            Ok(Resolved::File {
                path,
                name,
                meta,
                opened,
            }) => self.serve_file(req, &path, &name, opened.map(|file| (file, meta))),
        }
    }
}
