//! Receiving files: `PUT /dir/name` stores the request body as `name` in `dir` (see
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
    let dir_path = match files::resolve_in(root, root_dir, parent, None, options) {
        Ok(Resolved::Directory { path, .. }) => path,
        Ok(_) | Err(Refused::NotFound) => {
            return Response::error(StatusCode::CONFLICT, "the directory does not exist");
        }
        Err(Refused::Hidden | Refused::BadRequest) => {
            return Response::error(StatusCode::BAD_REQUEST, "the path is not acceptable");
        }
        Err(Refused::Forbidden) => return Response::error(StatusCode::FORBIDDEN, ""),
    };
    let dir = match open_dir(root, root_dir, &dir_path, options) {
        Ok(dir) => dir,
        Err(status) => return Response::error(status, ""),
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
