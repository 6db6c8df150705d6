//! Receiving files: `PUT /dir/name` stores the request body as `name` in `dir`, and
//! `POST /dir/` stores the files of a `multipart/form-data` form there (see
//! [`StaticFiles::upload`](super::StaticFiles::upload)).
//!
//! The order is what makes it safe:
//!
//! 1. The name is checked (no `/`, `\`, NUL or control character, not `.` or `..`, no
//!    dot-name unless hidden names are served), and the directory resolved with the same
//!    rules as reads (`files::resolve_in`), then opened beneath the root (`openat2`
//!    `RESOLVE_BENEATH`), so a symlink out of the root is refused, as for reads.
//! 2. An existing target without overwrite (`409`), and a length over the bound (`413`), are
//!    answered before the body is read: a client that sent `Expect: 100-continue` never gets
//!    its `100` and never sends the body.
//! 3. The body goes to a temporary `.NAME.upload-RANDOM` created exclusively in the target
//!    directory (so the final rename stays on one file system and is atomic), counted
//!    against the bound as it comes (chunked bodies have no length up front).
//! 4. Complete and of the announced length, the file is `fsync`ed, renamed into place
//!    (`renameat2(RENAME_NOREPLACE)` without overwrite: of two racing uploads exactly one gets
//!    the name, the other `409`) and the directory `fsync`ed, so a `201` means the file
//!    survives a power cut.
//!
//! Any failure before the rename (the client gone, too slow, too much) removes the temporary
//! file: nothing half-written is ever left, and a reader of the target sees nothing or the
//! whole file.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::files::{self, FileOptions, Refused, Resolved};
use super::{Request, Response, StatusCode};

/// What `PUT` may do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Uploads {
    /// Replace an existing file (`204`) instead of refusing (`409`).
    pub(crate) overwrite: bool,
    /// The largest body taken (`413` beyond).
    pub(crate) max_bytes: u64,
}

/// Why a name cannot be a file's, or `None` when it can.
pub(crate) fn bad_name(name: &[u8], hidden: bool) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the path names a directory, not a file");
    }
    if name == b"." || name == b".." {
        return Some("`.` and `..` are not file names");
    }
    if name
        .iter()
        .any(|&b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
    {
        return Some("a file name may not hold `/`, `\\` or control characters");
    }
    if name.starts_with(b".") && !hidden {
        return Some("names starting with `.` are not accepted");
    }
    if std::str::from_utf8(name).is_err() {
        return Some("the file name is not UTF-8");
    }
    None
}

/// `PUT`: stores the body of `req` under its path.
pub(crate) fn put(
    root: &Path,
    root_dir: Option<std::os::fd::BorrowedFd<'_>>,
    options: &FileOptions,
    uploads: Uploads,
    req: &mut Request<'_>,
) -> Response {
    let path = req.path().to_owned();
    let Some(slash) = path.rfind('/') else {
        return Response::error(StatusCode::BAD_REQUEST, "the path must start with /");
    };
    let (parent, raw_name) = path.split_at(slash + 1);
    let name: Vec<u8> = percent_encoding::percent_decode_str(raw_name).collect();
    if let Some(why) = bad_name(&name, options.hidden) {
        return Response::error(StatusCode::BAD_REQUEST, why);
    }
    let name = OsStr::from_bytes(&name).to_owned();
    let (dir_path, dir) = match directory(root, root_dir, parent, options) {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let target = dir_path.join(&name);
    let exists = match std::fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_dir() => {
            return Response::error(StatusCode::CONFLICT, "a directory has that name");
        }
        Ok(meta) if !meta.is_file() => {
            return Response::error(StatusCode::FORBIDDEN, "that name is not a regular file");
        }
        Ok(_) => true,
        Err(_) => false,
    };
    if exists && !uploads.overwrite {
        return Response::error(
            StatusCode::CONFLICT,
            "a file of that name exists, and files are not replaced",
        );
    }
    if req
        .body()
        .remaining()
        .is_some_and(|n| n > uploads.max_bytes)
    {
        return too_large(uploads.max_bytes);
    }
    let temp = temp_name(&name);
    let mut file = match crate::sys::create_in(&dir, &temp) {
        Ok(file) => file,
        Err(e) => {
            log::warn!("cannot create a file in {}: {e}", dir_path.display());
            return io_refusal(&e);
        }
    };
    // From here on the temporary file goes unless it is renamed into place.
    let stored = receive(&mut file, req, uploads.max_bytes).and_then(|n| {
        file.sync_all()?;
        Ok(n)
    });
    let stored = match stored {
        Ok(n) => n,
        Err(e) => {
            let _ = crate::sys::unlink_in(&dir, &temp);
            return match e {
                Received::TooLarge => too_large(uploads.max_bytes),
                Received::Io(e) => {
                    log::info!("{}: upload of {} not completed: {e}", req.peer(), path);
                    Response::error(StatusCode::BAD_REQUEST, "the body did not arrive whole")
                        .header("Connection", "close")
                }
            };
        }
    };
    drop(file);
    if let Err(e) = crate::sys::rename_in(&dir, &temp, &name, uploads.overwrite) {
        let _ = crate::sys::unlink_in(&dir, &temp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Response::error(
                StatusCode::CONFLICT,
                "a file of that name exists, and files are not replaced",
            );
        }
        log::warn!("cannot store {}: {e}", target.display());
        return io_refusal(&e);
    }
    // The new name is durable once the directory is.
    if let Err(e) = dir.sync_all() {
        log::warn!("fsync of {}: {e}", dir_path.display());
    }
    if exists {
        Response::new(StatusCode::NO_CONTENT)
    } else {
        Response::text(StatusCode::CREATED, format!("stored {stored} bytes\n"))
            .header("Location", path)
    }
}

/// The directory `raw` (a request path ending in `/`) names, resolved as reads are, and open.
fn directory(
    root: &Path,
    root_dir: Option<std::os::fd::BorrowedFd<'_>>,
    raw: &str,
    options: &FileOptions,
) -> Result<(std::path::PathBuf, File), Response> {
    let dir_path = match files::resolve_in(root, root_dir, raw, None, options) {
        Ok(Resolved::Directory { path, .. }) => path,
        Ok(_) | Err(Refused::NotFound) => {
            return Err(Response::error(
                StatusCode::CONFLICT,
                "the directory does not exist",
            ));
        }
        Err(Refused::Hidden | Refused::BadRequest) => {
            return Err(Response::error(
                StatusCode::BAD_REQUEST,
                "the path is not acceptable",
            ));
        }
        Err(Refused::Forbidden) => return Err(Response::error(StatusCode::FORBIDDEN, "")),
    };
    let dir = open_dir(root, root_dir, &dir_path, options).map_err(|s| Response::error(s, ""))?;
    Ok((dir_path, dir))
}

/// The most parts one form may have.
const MAX_PARTS: usize = 1000;

/// Why a form upload stopped.
enum Failed {
    Malformed(io::Error),
    BadName(&'static str),
    Exists,
    TooLarge,
    Io(io::Error),
}

/// A body that fails once more than `left` bytes come.
struct Bounded<'a, R> {
    inner: &'a mut R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.over = true;
            return Err(io::Error::other("the upload is larger than allowed"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// `POST /dir/` with `multipart/form-data`: each file part stored in `dir` under its file
/// name (the name only, no path), each through its own temporary file; renamed into place
/// only once the whole form has arrived, so a form that fails halfway stores nothing.
pub(crate) fn post(
    root: &Path,
    root_dir: Option<std::os::fd::BorrowedFd<'_>>,
    options: &FileOptions,
    uploads: Uploads,
    req: &mut Request<'_>,
) -> Response {
    let Some(boundary) = req
        .header("content-type")
        .and_then(super::multipart::boundary)
    else {
        return Response::error(
            StatusCode::BAD_REQUEST,
            "expected a multipart/form-data body with a boundary",
        );
    };
    let mut raw = req.path().to_owned();
    if !raw.ends_with('/') {
        raw.push('/');
    }
    let (dir_path, dir) = match directory(root, root_dir, &raw, options) {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    if req
        .body()
        .remaining()
        .is_some_and(|n| n > uploads.max_bytes)
    {
        return too_large(uploads.max_bytes);
    }
    let browser = req
        .header("accept")
        .is_some_and(|a| a.contains("text/html"));
    let peer = req.peer().to_string();
    // (temporary, final) names in `dir`, in the order received.
    let mut stored: Vec<(OsString, OsString)> = Vec::new();
    let received = (|| -> Result<(), Failed> {
        let mut body = Bounded {
            inner: req.body(),
            left: uploads.max_bytes,
            over: false,
        };
        let result = receive_form(
            &mut body,
            &boundary,
            &dir,
            &dir_path,
            options,
            uploads,
            &mut stored,
        );
        if body.over {
            return Err(Failed::TooLarge);
        }
        result
    })();
    let failed = match received {
        Ok(()) if stored.is_empty() => Some(Response::error(
            StatusCode::BAD_REQUEST,
            "the form holds no file",
        )),
        Ok(()) => None,
        Err(Failed::Malformed(e)) => {
            log::info!("{peer}: upload to {raw} not completed: {e}");
            Some(
                Response::error(StatusCode::BAD_REQUEST, "the form did not arrive whole")
                    .header("Connection", "close"),
            )
        }
        Err(Failed::BadName(why)) => Some(Response::error(StatusCode::BAD_REQUEST, why)),
        Err(Failed::Exists) => Some(Response::error(
            StatusCode::CONFLICT,
            "a file of that name exists, and files are not replaced",
        )),
        Err(Failed::TooLarge) => Some(too_large(uploads.max_bytes)),
        Err(Failed::Io(e)) => Some(io_refusal(&e)),
    };
    if let Some(refusal) = failed {
        for (temp, _) in &stored {
            let _ = crate::sys::unlink_in(&dir, temp);
        }
        return refusal;
    }
    // Everything arrived: into place, each atomically; a name taken meanwhile undoes this
    // form's own files.
    let mut placed: Vec<&OsString> = Vec::new();
    for (temp, name) in &stored {
        if let Err(e) = crate::sys::rename_in(&dir, temp, name, uploads.overwrite) {
            for (temp, _) in &stored {
                let _ = crate::sys::unlink_in(&dir, temp);
            }
            if !uploads.overwrite {
                for name in placed {
                    let _ = crate::sys::unlink_in(&dir, name);
                }
            }
            return if e.kind() == io::ErrorKind::AlreadyExists {
                Response::error(
                    StatusCode::CONFLICT,
                    "a file of that name exists, and files are not replaced",
                )
            } else {
                io_refusal(&e)
            };
        }
        placed.push(name);
    }
    if let Err(e) = dir.sync_all() {
        log::warn!("fsync of {}: {e}", dir_path.display());
    }
    if browser {
        return Response::new(StatusCode::SEE_OTHER).header("Location", raw);
    }
    let mut names = String::new();
    for (_, name) in &stored {
        names.push_str(&name.to_string_lossy());
        names.push('\n');
    }
    Response::text(StatusCode::CREATED, names)
}

/// Reads the form's parts, each file into its own temporary file in `dir` (listed in
/// `stored` as soon as it exists, so the caller can remove it on failure).
fn receive_form<R: Read>(
    body: &mut R,
    boundary: &str,
    dir: &File,
    dir_path: &Path,
    options: &FileOptions,
    uploads: Uploads,
    stored: &mut Vec<(OsString, OsString)>,
) -> Result<(), Failed> {
    let mut form = super::multipart::Multipart::new(body, boundary);
    let mut parts = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(head) = form.next_part().map_err(Failed::Malformed)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(Failed::Malformed(io::Error::other("too many parts")));
        }
        let Some(filename) = head.filename else {
            continue; // a plain field: skipped with its bytes
        };
        // The name only: old browsers sent the whole client path.
        let base = filename
            .rsplit(|&b| b == b'/' || b == b'\\')
            .next()
            .unwrap_or(&[]);
        if base.is_empty() {
            continue; // no file chosen for this input
        }
        if let Some(why) = bad_name(base, options.hidden) {
            return Err(Failed::BadName(why));
        }
        let name = OsStr::from_bytes(base).to_owned();
        if stored.iter().any(|(_, n)| *n == name) {
            return Err(Failed::BadName("the form holds two files of one name"));
        }
        match std::fs::symlink_metadata(dir_path.join(&name)) {
            Ok(meta) if !meta.is_file() => return Err(Failed::Exists),
            Ok(_) if !uploads.overwrite => return Err(Failed::Exists),
            _ => {}
        }
        let temp = temp_name(&name);
        let mut file = crate::sys::create_in(dir, &temp).map_err(Failed::Io)?;
        stored.push((temp, name));
        loop {
            let n = form.read_data(&mut buf).map_err(Failed::Malformed)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(Failed::Io)?;
        }
        file.sync_all().map_err(Failed::Io)?;
    }
    Ok(())
}

/// The target's directory, open, beneath the root like the file itself would be.
fn open_dir(
    root: &Path,
    root_dir: Option<std::os::fd::BorrowedFd<'_>>,
    dir_path: &Path,
    options: &FileOptions,
) -> Result<File, StatusCode> {
    let opened = match (root_dir, dir_path.strip_prefix(root)) {
        (Some(fd), Ok(relative)) if !options.follow_symlinks => {
            let relative = if relative.as_os_str().is_empty() {
                Path::new(".")
            } else {
                relative
            };
            crate::sys::open_beneath(fd, relative).ok()
        }
        _ => None,
    };
    let dir = match opened {
        Some(dir) => dir,
        // No openat2, or an absolute link that stays inside: `resolve_in` checked the path.
        None => File::open(dir_path).map_err(|e| io_status(&e))?,
    };
    match dir.metadata() {
        Ok(meta) if meta.is_dir() => Ok(dir),
        _ => Err(StatusCode::CONFLICT),
    }
}

/// `.NAME.upload-XXXXXXXX`: hidden, unique, in the same directory.
fn temp_name(name: &OsStr) -> OsString {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let mut temp = OsString::from(".");
    // A long name would push the temporary past NAME_MAX: keep its first 200 bytes.
    temp.push(OsStr::from_bytes(&name.as_bytes()[..name.len().min(200)]));
    temp.push(format!(".upload-{:016x}", h.finish()));
    temp
}

enum Received {
    TooLarge,
    Io(io::Error),
}

impl From<io::Error> for Received {
    fn from(e: io::Error) -> Received {
        Received::Io(e)
    }
}

/// Copies the body into `file`, at most `max` bytes.
fn receive(file: &mut File, req: &mut Request<'_>, max: u64) -> Result<u64, Received> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match req.body().read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Received::Io(e)),
        };
        total += n as u64;
        if total > max {
            return Err(Received::TooLarge);
        }
        file.write_all(&buf[..n])?;
    }
}

fn too_large(max: u64) -> Response {
    Response::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("uploads are limited to {max} bytes"),
    )
    .header("Connection", "close")
}

fn io_status(e: &io::Error) -> StatusCode {
    match e.kind() {
        io::ErrorKind::NotFound => StatusCode::CONFLICT,
        io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn io_refusal(e: &io::Error) -> Response {
    match e.raw_os_error() {
        Some(nix::libc::ENOSPC | nix::libc::EDQUOT) => Response::error(
            StatusCode::INSUFFICIENT_STORAGE,
            "no space left for the file",
        ),
        _ => Response::error(io_status(e), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for good in [
            &b"a.txt"[..],
            b"report 2026.pdf",
            "é.txt".as_bytes(),
            b"a..b",
            b"-x",
        ] {
            assert_eq!(bad_name(good, false), None, "{good:?}");
        }
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"a\\b",
            b"a\0b",
            b"a\nb",
            b"a\rb",
            b"\x7f",
            b".env",
            b"\xff\xfe",
        ] {
            assert!(bad_name(bad, false).is_some(), "{bad:?}");
        }
        assert_eq!(bad_name(b".env", true), None);
        assert!(bad_name(b"..", true).is_some());
    }

    proptest! {
        /// Whatever the bytes, an accepted name is one plain path component.
        #[test]
        fn an_accepted_name_is_one_normal_component(name in proptest::collection::vec(any::<u8>(), 0..12), hidden in any::<bool>()) {
            if bad_name(&name, hidden).is_none() {
                let path = Path::new(OsStr::from_bytes(&name));
                let parts: Vec<_> = path.components().collect();
                prop_assert_eq!(parts.len(), 1);
                prop_assert!(matches!(parts[0], std::path::Component::Normal(_)));
                prop_assert!(!name.contains(&0));
            }
        }
    }
}
