//! Static files: request path resolution (validators, ranges and content types are
//! `conditional.rs`'s).
//!
//! Everything here is pure with respect to the network: the functions look at the file system
//! (metadata, canonical paths) but never open a socket, so the connection loop can call them and
//! the tests can drive them with real files in a temporary directory.
//!
//! # Path resolution, and how it differs from Python
//!
//! `resolve` follows `SimpleHTTPRequestHandler.translate_path`: percent-decode the path once,
//! split it on `/`, drop empty, `.` and `..` segments, and join what remains under the root. On
//! top of that it is stricter where Python is lax or was vulnerable:
//!
//! - invalid UTF-8 after decoding (overlong forms like `%c0%ae` included), NUL and backslash
//!   are refused with [`Refused::BadRequest`];
//! - segments starting with `.` (dot-files, `.git/`) are [`Refused::Hidden`] unless
//!   [`FileOptions::hidden`];
//! - unless [`FileOptions::follow_symlinks`], the joined path is canonicalized and must stay
//!   inside the root. **A symlink (or a symlinked directory anywhere in the path) whose target
//!   lies outside the root is refused with [`Refused::Forbidden`]**, as nginx
//!   (`disable_symlinks`) and Apache (`Options -FollowSymLinks`) do; the name is already
//!   visible in the listing, so 403 reveals nothing a 404 would hide, and it tells the operator
//!   why. Symlinks that stay inside the root are served;
//! - the slash redirect for directories is rebuilt from the normalized segments, each one
//!   percent-encoded, so its `Location` always starts with exactly one `/` and can never be a
//!   protocol-relative `//host/...` URL (CVE-2021-28861).
//!
//! Files are opened with `openat2(RESOLVE_BENEATH)` under an open handle on the root where
//! the kernel has it ([`resolve_in`]): the kernel then refuses any resolution that leaves the
//! root, in the same system call that opens the file, so there is no window between check
//! and open, and a request costs one call instead of a `readlink` per path component.
//! Directories, absolute symlinks (refused by `RESOLVE_BENEATH` even when they point inside)
//! and kernels without `openat2` take the path-checking way above, so the answers are the
//! same either way (a test compares them). On that way checking and opening are separate
//! system calls, so a local user able to rename things inside the root between the two can
//! still race the check; the path returned is the canonical one that was checked, which
//! narrows the window to a swap of that exact path.

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::str;

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, percent_decode_str};

/// What the static-file service may serve beyond plain files under the root.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FileOptions {
    /// Serve symlinks whatever their target, even outside the root (Python's behaviour).
    /// When false, a path whose canonical form leaves the root is [`Refused::Forbidden`].
    pub(crate) follow_symlinks: bool,
    /// Serve and list names starting with `.`; when false they are [`Refused::Hidden`] and
    /// left out of listings.
    pub(crate) hidden: bool,
}

/// A request path that maps to something servable.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// A regular file; `path` is canonical unless symlinks are followed or it was opened
    /// beneath the root (see [`resolve_in`]), `meta` follows links. `opened`: the file, when
    /// resolving opened it (its metadata is then `meta`).
    File {
        path: PathBuf,
        /// The path as requested (before symlinks): its extension gives the content type,
        /// as Python and nginx do, whichever way the file was resolved.
        name: PathBuf,
        meta: Metadata,
        opened: Option<fs::File>,
    },
    /// A directory requested with a trailing slash. `display` is the decoded, normalized
    /// request path with a leading and trailing `/` (`/` for the root), for the listing title.
    Directory { path: PathBuf, display: String },
    /// A directory requested without its trailing slash: answer `301` with this `Location`,
    /// an absolute path (exactly one leading `/`) that is safe to put in a header as is.
    RedirectSlash { location: String },
}

/// Why a request path does not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Nothing servable there: missing, a file asked for as a directory, ...
    NotFound,
    /// A name starting with `.` without [`FileOptions::hidden`]: answered as not found, but
    /// never replaced by a fallback page (it may well exist).
    Hidden,
    /// The path cannot name a file: invalid UTF-8, NUL or backslash after decoding.
    BadRequest,
    /// It exists but may not be served: permissions, a symlink leaving the root, a socket,
    /// fifo or device.
    Forbidden,
}

/// Bytes escaped in one path segment: everything but RFC 3986 `unreserved`
/// (`ALPHA / DIGIT / "-" / "." / "_" / "~"`), like Python's `urllib.parse.quote(s, safe="")`.
///
/// Stricter than the path grammar needs, on purpose: `:` stays escaped so that a relative link
/// to a file named `javascript:x` can never be read as a URL scheme, and `'`, `&`, `;` stay
/// escaped so the result is inert in HTML attributes and headers alike.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bytes escaped when a query string is copied into a `Location`: controls, space, and the
/// characters RFC 3986 never allows unescaped. `%` is kept, since the query is still encoded.
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Percent-encodes a name's raw bytes as one path segment (see [`SEGMENT`]), for the
/// listing's links: a file name that is not UTF-8 gets a link that decodes back to its exact
/// bytes.
pub(super) fn encode_bytes(s: &[u8]) -> String {
    percent_encoding::percent_encode(s, SEGMENT).to_string()
}

/// Maps a request path to a file or directory under `root`: [`resolve_in`] without a handle on
/// the root (paths are checked, never opened here).
///
/// `root` must be canonical (the caller canonicalizes it once at startup); `raw_path` is the
/// still percent-encoded path of the request target and `query` what followed `?`, if any.
/// See the module documentation for the rules.
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) fn resolve(
    root: &Path,
    raw_path: &str,
    query: Option<&str>,
    opts: &FileOptions,
) -> Result<Resolved, Refused> {
    resolve_in(root, None, raw_path, query, opts)
}

/// `resolve`, with `root_dir` an open handle on `root`: then a file is first opened with
/// the kernel keeping the resolution beneath the root (`openat2`, `RESOLVE_BENEATH`): one
/// system call instead of a `readlink` per path component, and no window between check and
/// open. Whatever that cannot settle (a directory, an absolute symlink, a kernel without
/// `openat2`) takes the path-checking way, so the answers are the same.
pub(crate) fn resolve_in(
    root: &Path,
    root_dir: Option<std::os::fd::BorrowedFd<'_>>,
    raw_path: &str,
    query: Option<&str>,
    opts: &FileOptions,
) -> Result<Resolved, Refused> {
    use std::os::unix::ffi::OsStrExt;
    // Decode exactly once: `%252e` becomes the literal text `%2e` and stays so. To bytes, not
    // text: a file name need not be UTF-8 (Unix names are bytes), and the listing links such
    // a name by its exact bytes.
    let decoded: std::borrow::Cow<'_, [u8]> = percent_decode_str(raw_path).into();
    if decoded.iter().any(|&b| b == 0 || b == b'\\') {
        return Err(Refused::BadRequest);
    }
    // An empty path can only be the root; every other request path starts with `/`.
    let trailing_slash = decoded.is_empty() || decoded.ends_with(b"/");
    let segments: Vec<&[u8]> = decoded
        .split(|&b| b == b'/')
        .filter(|s| !matches!(*s, b"" | b"." | b".."))
        .collect();
    if !opts.hidden && segments.iter().any(|s| s.starts_with(b".")) {
        return Err(Refused::Hidden);
    }

    // Each segment is one normal component (no `/`, not `.` or `..`), so this stays lexically
    // under the root; only symlinks can lead elsewhere.
    let mut joined = root.to_path_buf();
    joined.extend(segments.iter().map(|s| std::ffi::OsStr::from_bytes(s)));

    if let Some(dir) = root_dir.filter(|_| !opts.follow_symlinks && !trailing_slash)
        && !segments.is_empty()
    {
        let relative: PathBuf = segments
            .iter()
            .map(|s| std::ffi::OsStr::from_bytes(s))
            .collect();
        match crate::sys::open_beneath(dir, &relative) {
            Ok(file) => {
                let meta = file.metadata().map_err(|e| refusal(&e))?;
                if meta.is_file() {
                    return Ok(Resolved::File {
                        path: joined.clone(),
                        name: joined,
                        meta,
                        opened: Some(file),
                    });
                }
                if !meta.is_dir() {
                    return Err(Refused::Forbidden); // a socket, FIFO or device
                }
                // A directory: the redirect below, built the usual way.
            }
            Err(e) => {
                if let Some(nix::libc::ENOENT | nix::libc::ENOTDIR | nix::libc::ENAMETOOLONG) =
                    e.raw_os_error()
                {
                    return Err(Refused::NotFound);
                }
                // EXDEV (leaving the root, or an absolute symlink that may stay inside),
                // EACCES (a directory we may traverse but not read redirects all the same),
                // ELOOP, no openat2 here, anything else: check the paths.
            }
        }
    }

    let (path, meta) = if opts.follow_symlinks {
        let meta = fs::metadata(&joined).map_err(|e| refusal(&e))?;
        (joined.clone(), meta)
    } else {
        let canonical = fs::canonicalize(&joined).map_err(|e| refusal(&e))?;
        if !contained(root, &canonical) {
            return Err(Refused::Forbidden);
        }
        let meta = fs::metadata(&canonical).map_err(|e| refusal(&e))?;
        (canonical, meta)
    };

    if meta.is_dir() {
        if trailing_slash {
            Ok(Resolved::Directory {
                path,
                display: display_path(&segments),
            })
        } else {
            Ok(Resolved::RedirectSlash {
                location: redirect_location(&segments, query),
            })
        }
    } else if trailing_slash {
        // A file asked for as a directory, as Python answers it.
        Err(Refused::NotFound)
    } else if meta.is_file() {
        Ok(Resolved::File {
            path,
            name: joined,
            meta,
            opened: None,
        })
    } else {
        Err(Refused::Forbidden)
    }
}

/// Opens the sibling `NAME.EXT` of the file at `path` (under `root`), under the same rules as
/// the file itself: beneath the root (`openat2` where the kernel has it, else the checked
/// canonical path), symlinks out of the root refused unless followed. `None` when there is no
/// such regular file, or it may not be served.
pub(crate) fn open_sibling(
    root: &Path,
    root_dir: Option<std::os::fd::BorrowedFd<'_>>,
    path: &Path,
    extension: &str,
    opts: &FileOptions,
) -> Option<(fs::File, Metadata)> {
    let mut name = path.file_name()?.to_os_string();
    name.push(".");
    name.push(extension);
    let sibling = path.with_file_name(name);
    let file = if opts.follow_symlinks {
        fs::File::open(&sibling).ok()?
    } else {
        let relative = sibling.strip_prefix(root).ok()?;
        match root_dir.map(|dir| crate::sys::open_beneath(dir, relative)) {
            Some(Ok(file)) => file,
            Some(Err(e))
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::ENOENT | nix::libc::ENOTDIR | nix::libc::ENAMETOOLONG)
                ) =>
            {
                return None;
            }
            // No handle on the root, no openat2, or a link that may stay inside: check.
            _ => {
                let canonical = fs::canonicalize(&sibling).ok()?;
                if !contained(root, &canonical) {
                    return None;
                }
                fs::File::open(canonical).ok()?
            }
        }
    };
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta))
}

/// The refusal for a failed metadata or canonicalize call.
fn refusal(e: &io::Error) -> Refused {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Refused::Forbidden,
        // Missing, a file used as a directory, a symlink loop, a name too long: nothing there.
        _ => Refused::NotFound,
    }
}

/// Whether `canonical` lies inside `root`, component-wise (`/srv/www2` is not in `/srv/www`).
///
/// Should the caller pass a root that is not canonical after all, the root is canonicalized
/// here and compared again (only on that failure path), so such a root still serves its own
/// files instead of refusing everything; the comparison is the same strict one either way.
fn contained(root: &Path, canonical: &Path) -> bool {
    canonical.starts_with(root)
        || fs::canonicalize(root).is_ok_and(|root| canonical.starts_with(root))
}

/// `/` + the segments + `/`, decoded, for the listing's title (bytes that are not UTF-8
/// shown as U+FFFD).
fn display_path(segments: &[&[u8]]) -> String {
    let mut display = String::from("/");
    for segment in segments {
        display.push_str(&String::from_utf8_lossy(segment));
        display.push('/');
    }
    display
}

/// `/` + the encoded segments + `/` + `?query`: one leading slash whatever the request was.
///
/// An empty query (a bare `?`) is dropped, as Python's `urlunsplit` does.
fn redirect_location(segments: &[&[u8]], query: Option<&str>) -> String {
    let mut location = String::from("/");
    for segment in segments {
        location.extend(percent_encoding::percent_encode(segment, SEGMENT));
        location.push('/');
    }
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        location.push('?');
        location.extend(percent_encoding::utf8_percent_encode(query, QUERY));
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use proptest::prelude::*;

    /// A scratch tree:
    ///
    /// ```text
    /// tmp/secret.txt                 the sentinel, outside the root
    /// tmp/root2/secret.txt           a sibling whose name extends the root's
    /// tmp/root/                      the root
    ///     index.html  a/b.txt  dir/  sp ace/  attacker.com/  .hidden  .git/config
    ///     dir/.secret  inlink -> a/b.txt  indir -> a
    ///     out -> ../secret.txt  outdir -> ..  sib -> ../root2  abs -> /etc
    /// ```
    struct Tree {
        _tmp: tempfile::TempDir,
        top: PathBuf,
        root: PathBuf,
    }

    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().canonicalize().unwrap();
        let root = top.join("root");
        fs::create_dir(&root).unwrap();
        fs::write(top.join("secret.txt"), "secret").unwrap();
        fs::create_dir(top.join("root2")).unwrap();
        fs::write(top.join("root2/secret.txt"), "secret2").unwrap();
        fs::write(root.join("index.html"), "<p>hi</p>").unwrap();
        fs::create_dir(root.join("a")).unwrap();
        fs::write(root.join("a/b.txt"), "b").unwrap();
        for d in ["dir", "sp ace", "attacker.com", ".git"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        fs::write(root.join("dir/.secret"), "s").unwrap();
        fs::write(root.join(".hidden"), "h").unwrap();
        fs::write(root.join(".git/config"), "c").unwrap();
        symlink("a/b.txt", root.join("inlink")).unwrap();
        symlink("a", root.join("indir")).unwrap();
        symlink("../secret.txt", root.join("out")).unwrap();
        symlink("..", root.join("outdir")).unwrap();
        symlink("../root2", root.join("sib")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        Tree {
            _tmp: tmp,
            top,
            root,
        }
    }

    const PLAIN: FileOptions = FileOptions {
        follow_symlinks: false,
        hidden: false,
    };
    const HIDDEN: FileOptions = FileOptions {
        follow_symlinks: false,
        hidden: true,
    };
    const FOLLOW: FileOptions = FileOptions {
        follow_symlinks: true,
        hidden: false,
    };

    /// The invariant: a served path, with every link resolved, lies under the root; a
    /// redirect is a single-slash absolute path without anything that could split a header.
    fn assert_contained(root: &Path, request: &str, result: &Result<Resolved, Refused>) {
        match result {
            Ok(Resolved::File { path, .. }) | Ok(Resolved::Directory { path, .. }) => {
                let real = path.canonicalize().unwrap();
                assert!(
                    real.starts_with(root),
                    "{request:?} escaped the root: {}",
                    real.display()
                );
            }
            Ok(Resolved::RedirectSlash { location }) => {
                assert!(location.starts_with('/'), "{request:?} -> {location:?}");
                assert!(!location.starts_with("//"), "{request:?} -> {location:?}");
                assert!(
                    location.bytes().all(|b| b.is_ascii_graphic()),
                    "{request:?} -> {location:?}"
                );
            }
            Err(_) => {}
        }
    }

    fn file_path(result: Result<Resolved, Refused>) -> PathBuf {
        match result {
            Ok(Resolved::File { path, .. }) => path,
            other => panic!("expected a file, got {other:?}"),
        }
    }

    fn location(result: Result<Resolved, Refused>) -> String {
        match result {
            Ok(Resolved::RedirectSlash { location }) => location,
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    fn encode_all(s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn traversal_battery() {
        let t = tree();
        let secret = t.top.join("secret.txt");
        let secret_str = secret.to_str().unwrap();
        let top_str = t.top.to_str().unwrap();
        use Refused::{BadRequest as Bad, Forbidden as Forb, NotFound as NF};

        let absolute_raw = format!("/{secret_str}");
        let absolute_slash = format!("/%2f{}", &secret_str[1..]);
        let absolute_encoded = format!("/{}", encode_all(secret_str));
        let absolute_up = format!("/..{secret_str}");
        let absolute_dotdot = format!("/{top_str}/root/../secret.txt");
        let deep = format!("/{}secret.txt", "..%2f".repeat(12));
        let deep_raw = format!("/{}secret.txt", "../".repeat(12));

        let cases: Vec<(&str, Refused)> = vec![
            ("/../secret.txt", NF),
            ("/..%2fsecret.txt", NF),
            ("/..%2Fsecret.txt", NF),
            ("/%2e%2e/secret.txt", NF),
            ("/%2E%2E/secret.txt", NF),
            ("/%2e%2e%2fsecret.txt", NF),
            ("/.%2e/secret.txt", NF),
            ("/%2e./secret.txt", NF),
            ("/%252e%252e/secret.txt", NF),
            ("/%252e%252e%252fsecret.txt", NF),
            ("/..%252f..%252fsecret.txt", NF),
            ("/%%32%65%%32%65/secret.txt", NF),
            ("/%u002e%u002e/secret.txt", NF),
            ("/..\\secret.txt", Bad),
            ("/%5c..%5csecret.txt", Bad),
            ("/..%5csecret.txt", Bad),
            ("/%2e%2e%5csecret.txt", Bad),
            ("/..%255csecret.txt", NF),
            ("//../secret.txt", NF),
            ("//%2e%2e//%2e%2e//secret.txt", NF),
            ("/./../secret.txt", NF),
            ("/a/../../secret.txt", NF),
            ("/a/%2e%2e/%2e%2e/secret.txt", NF),
            ("/indir/../../secret.txt", NF),
            ("/...../secret.txt", NF),
            ("/..;/secret.txt", NF),
            ("/.../secret.txt", NF),
            (&deep, NF),
            (&deep_raw, NF),
            (&absolute_raw, NF),
            (&absolute_slash, NF),
            (&absolute_encoded, NF),
            (&absolute_up, NF),
            (&absolute_dotdot, NF),
            ("/secret.txt%00.html", Bad),
            ("/..%00/secret.txt", Bad),
            ("/%00", Bad),
            // Overlong and invalid UTF-8 are bytes of a name (Unix names are bytes), never a
            // dot or a slash: nothing there.
            ("/%c0%ae%c0%ae/secret.txt", NF),
            ("/%c0%ae%c0%ae%c0%afsecret.txt", NF),
            ("/%e0%80%ae%e0%80%ae/secret.txt", NF),
            ("/%ff/secret.txt", NF),
            ("/%ef%bc%8e%ef%bc%8e/secret.txt", NF), // fullwidth dots are just a name
            ("/\u{2215}..\u{2215}secret.txt", NF),  // DIVISION SLASH too
            ("/out", Forb),
            ("/outdir/secret.txt", Forb),
            ("/outdir/", Forb),
            ("/outdir", Forb),
            ("/outdir/root/../secret.txt", NF),
            ("/sib/secret.txt", Forb),
            ("/abs/passwd", Forb),
            ("/abs/", Forb),
        ];
        assert!(cases.len() >= 30);
        for (request, expected) in &cases {
            for opts in [PLAIN, HIDDEN] {
                let result = resolve(&t.root, request, None, &opts);
                assert_contained(&t.root, request, &result);
                if let Ok(Resolved::File { path, .. }) = &result {
                    assert_ne!(path.canonicalize().unwrap(), secret, "{request:?}");
                }
                // `/...../` style names are hidden-file refusals only without `hidden`;
                // with it they are plain missing names: not found either way.
                let got = match result.as_ref().err() {
                    Some(Refused::Hidden) => Some(&Refused::NotFound),
                    other => other,
                };
                assert_eq!(got, Some(expected), "{request:?} {opts:?}");
            }
        }
    }

    /// The kind of an outcome, for comparing the two ways of resolving.
    fn kind(result: &Result<Resolved, Refused>) -> String {
        match result {
            Ok(Resolved::File { path, name, .. }) => format!(
                "file {} named {}",
                path.canonicalize().unwrap().display(),
                name.display()
            ),
            Ok(Resolved::Directory { display, .. }) => format!("dir {display}"),
            Ok(Resolved::RedirectSlash { location }) => format!("redirect {location}"),
            Err(e) => format!("{e:?}"),
        }
    }

    /// Opening beneath the root (`openat2`) answers exactly as checking paths does, for every
    /// request of the other tests and a FIFO, with and without hidden files.
    #[test]
    fn opening_beneath_the_root_answers_like_checking_paths() {
        use std::os::fd::{AsFd, OwnedFd};
        use std::os::unix::fs::OpenOptionsExt;
        let t = tree();
        let fifo = t.root.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .is_ok_and(|s| s.success())
        );
        let dir: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY)
            .open(&t.root)
            .unwrap()
            .into();
        let secret = t.top.join("secret.txt");
        let top = t.top.to_str().unwrap();
        let requests = [
            "/a/b.txt".to_string(),
            "/inlink".into(),
            "/indir/b.txt".into(),
            "/indir/".into(),
            "/indir".into(),
            "/out".into(),
            "/outdir/secret.txt".into(),
            "/outdir/root/a/b.txt".into(),
            "/sib/secret.txt".into(),
            "/abs/passwd".into(),
            "/abs/hostname".into(),
            "/missing.txt".into(),
            "/a/b.txt/x".into(),
            "/fifo".into(),
            "/.hidden".into(),
            "/.git/config".into(),
            "/dir/.secret".into(),
            "/index.html".into(),
            "/".into(),
            "/a".into(),
            "/a/".into(),
            "/../secret.txt".into(),
            "/%2e%2e/secret.txt".into(),
            format!("/{top}/secret.txt"),
            format!("/..{top}/secret.txt"),
        ];
        for request in &requests {
            for opts in [PLAIN, HIDDEN] {
                let checked = resolve(&t.root, request, None, &opts);
                let opened = resolve_in(&t.root, Some(dir.as_fd()), request, None, &opts);
                assert_contained(&t.root, request, &opened);
                assert_eq!(kind(&opened), kind(&checked), "{request:?} {opts:?}");
                if let Ok(Resolved::File { path, opened, .. }) = &opened {
                    assert_ne!(path.canonicalize().unwrap(), secret, "{request:?}");
                    // What was opened is what the path names.
                    if let Some(file) = opened {
                        use std::os::unix::fs::MetadataExt;
                        let a = file.metadata().unwrap();
                        let b = fs::metadata(path).unwrap();
                        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "{request:?}");
                    }
                }
            }
        }
        // A symlink swapped to lead out is refused (the open fails with EXDEV, the check agrees).
        fs::remove_file(t.root.join("inlink")).unwrap();
        symlink("../secret.txt", t.root.join("inlink")).unwrap();
        let swapped = resolve_in(&t.root, Some(dir.as_fd()), "/inlink", None, &PLAIN);
        assert_eq!(swapped.err(), Some(Refused::Forbidden));
    }

    #[test]
    fn symlinks_inside_root_are_served() {
        let t = tree();
        let b = t.root.join("a/b.txt");
        assert_eq!(file_path(resolve(&t.root, "/inlink", None, &PLAIN)), b);
        assert_eq!(file_path(resolve(&t.root, "/indir/b.txt", None, &PLAIN)), b);
        match resolve(&t.root, "/indir/", None, &PLAIN) {
            Ok(Resolved::Directory { path, display }) => {
                assert_eq!(path, t.root.join("a"));
                assert_eq!(display, "/indir/");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn symlinks_outside_root_are_served_when_followed() {
        let t = tree();
        let path = file_path(resolve(&t.root, "/out", None, &FOLLOW));
        assert_eq!(fs::read_to_string(path).unwrap(), "secret");
        let path = file_path(resolve(&t.root, "/outdir/secret.txt", None, &FOLLOW));
        assert_eq!(fs::read_to_string(path).unwrap(), "secret");
        assert!(matches!(
            resolve(&t.root, "/sib/", None, &FOLLOW),
            Ok(Resolved::Directory { .. })
        ));
        // Following links does not make `..` work.
        assert_eq!(
            resolve(&t.root, "/../secret.txt", None, &FOLLOW).err(),
            Some(Refused::NotFound)
        );
        // Nor dangling links.
        symlink("nowhere", t.root.join("dangling")).unwrap();
        for opts in [PLAIN, FOLLOW] {
            assert_eq!(
                resolve(&t.root, "/dangling", None, &opts).err(),
                Some(Refused::NotFound)
            );
        }
    }

    #[test]
    fn files_and_directories() {
        let t = tree();
        match resolve(&t.root, "/a/b.txt", None, &PLAIN) {
            Ok(Resolved::File { path, meta, .. }) => {
                assert_eq!(path, t.root.join("a/b.txt"));
                assert_eq!(meta.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        // Percent-encoded names and redundant segments.
        assert_eq!(
            file_path(resolve(&t.root, "/%61/./b%2etxt", None, &PLAIN)),
            t.root.join("a/b.txt")
        );
        assert_eq!(
            file_path(resolve(&t.root, "//a//b.txt", None, &PLAIN)),
            t.root.join("a/b.txt")
        );
        // Python drops `..` rather than applying it.
        assert_eq!(
            file_path(resolve(&t.root, "/a/../b.txt", None, &PLAIN)),
            t.root.join("a/b.txt")
        );
        for (request, display) in [
            ("/", "/"),
            ("", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/../", "/"),
            ("/dir/", "/dir/"),
            ("/sp%20ace/", "/sp ace/"),
            ("//a/./", "/a/"),
        ] {
            match resolve(&t.root, request, None, &PLAIN) {
                Ok(Resolved::Directory { path, display: d }) => {
                    assert_eq!(d, display, "{request:?}");
                    assert!(path.starts_with(&t.root));
                }
                other => panic!("{request:?}: {other:?}"),
            }
        }
        assert_eq!(
            resolve(&t.root, "/missing.txt", None, &PLAIN).err(),
            Some(Refused::NotFound)
        );
        // `+` is not a space in a path.
        assert_eq!(
            resolve(&t.root, "/sp+ace/", None, &PLAIN).err(),
            Some(Refused::NotFound)
        );
    }

    #[test]
    fn trailing_slash_on_a_file_is_not_found() {
        let t = tree();
        for request in ["/a/b.txt/", "/index.html/", "/a/b.txt/x", "/inlink/"] {
            assert_eq!(
                resolve(&t.root, request, None, &PLAIN).err(),
                Some(Refused::NotFound),
                "{request:?}"
            );
        }
    }

    #[test]
    fn hidden_names() {
        let t = tree();
        for request in [
            "/.hidden",
            "/.git/config",
            "/.git/",
            "/dir/.secret",
            "/%2ehidden",
        ] {
            assert_eq!(
                resolve(&t.root, request, None, &PLAIN).err(),
                Some(Refused::Hidden),
                "{request:?}"
            );
            assert!(
                resolve(&t.root, request, None, &HIDDEN).is_ok(),
                "{request:?}"
            );
        }
        assert_eq!(
            file_path(resolve(&t.root, "/.git/config", None, &HIDDEN)),
            t.root.join(".git/config")
        );
        assert_eq!(location(resolve(&t.root, "/.git", None, &HIDDEN)), "/.git/");
    }

    #[test]
    fn special_files_are_forbidden() {
        let t = tree();
        let _listener = std::os::unix::net::UnixListener::bind(t.root.join("sock")).unwrap();
        assert_eq!(
            resolve(&t.root, "/sock", None, &PLAIN).err(),
            Some(Refused::Forbidden)
        );
        assert_eq!(
            resolve(&t.root, "/sock/", None, &PLAIN).err(),
            Some(Refused::NotFound)
        );
    }

    #[test]
    fn unreadable_directory_is_forbidden() {
        use std::os::unix::fs::PermissionsExt;
        let t = tree();
        let locked = t.root.join("locked");
        fs::create_dir(&locked).unwrap();
        fs::write(locked.join("f.txt"), "f").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let enforced = fs::metadata(locked.join("f.txt")).is_err(); // root bypasses modes
        let result = resolve(&t.root, "/locked/f.txt", None, &PLAIN);
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        if enforced {
            assert_eq!(result.err(), Some(Refused::Forbidden));
        } else {
            assert!(matches!(result, Ok(Resolved::File { .. })));
        }
    }

    #[test]
    fn root_given_non_canonical_still_works() {
        let t = tree();
        let crooked = t.root.join("a/..");
        assert!(matches!(
            resolve(&crooked, "/a/b.txt", None, &PLAIN),
            Ok(Resolved::File { .. })
        ));
        assert_eq!(
            resolve(&crooked, "/out", None, &PLAIN).err(),
            Some(Refused::Forbidden)
        );
    }

    #[test]
    fn redirects() {
        let t = tree();
        fs::create_dir(t.root.join("%41")).unwrap();
        fs::create_dir(t.root.join("é")).unwrap();
        fs::create_dir(t.root.join("a#b?c\"<d>")).unwrap();
        fs::create_dir(t.root.join("j:x")).unwrap();
        let cases = [
            ("/dir", None, "/dir/"),
            ("/dir", Some("x=1&y=2"), "/dir/?x=1&y=2"),
            ("/dir", Some(""), "/dir/"),
            ("/dir", Some("q=%2F%20"), "/dir/?q=%2F%20"),
            ("/dir", Some("a b\r\n<x>"), "/dir/?a%20b%0D%0A%3Cx%3E"),
            ("//dir", None, "/dir/"),
            ("///dir", None, "/dir/"),
            ("/%2fdir", None, "/dir/"),
            ("/%2f%2fdir", None, "/dir/"),
            ("/./dir", None, "/dir/"),
            ("/../dir", None, "/dir/"),
            ("//attacker.com/..%2f..", None, "/attacker.com/"),
            ("//attacker.com/%2e%2e", None, "/attacker.com/"),
            ("//attacker.com", None, "/attacker.com/"),
            ("/%2fattacker.com", None, "/attacker.com/"),
            ("//attacker.com//", None, "ignored"),
            ("/..", None, "/"),
            ("/%2e%2e", None, "/"),
            ("/.", None, "/"),
            ("//..", None, "/"),
            ("/..", Some("x"), "/?x"),
            ("/sp%20ace", None, "/sp%20ace/"),
            ("/%2541", None, "/%2541/"),
            ("/%C3%A9", None, "/%C3%A9/"),
            ("/é", None, "/%C3%A9/"),
            ("/a%23b%3Fc%22%3Cd%3E", None, "/a%23b%3Fc%22%3Cd%3E/"),
            ("/j:x", None, "/j%3Ax/"),
            ("/indir", None, "/indir/"),
            ("/a/%2e/", None, "ignored"),
        ];
        for (request, query, expected) in cases {
            let result = resolve(&t.root, request, query, &PLAIN);
            assert_contained(&t.root, request, &result);
            if expected == "ignored" {
                assert!(
                    matches!(result, Ok(Resolved::Directory { .. })),
                    "{request:?}"
                );
                continue;
            }
            assert_eq!(location(result), expected, "{request:?} {query:?}");
        }
        // `/a/../dir` is `a/dir` (Python drops `..`), which does not exist.
        assert_eq!(
            resolve(&t.root, "/a/../dir", None, &PLAIN).err(),
            Some(Refused::NotFound)
        );
        // CVE-2021-28861's other spelling never gets as far as a redirect.
        assert_eq!(
            resolve(&t.root, "/\\\\host/%2e%2e%2f", None, &PLAIN).err(),
            Some(Refused::BadRequest)
        );
        // The redirect leads to the directory it names.
        for request in ["/%2541", "/%C3%A9", "/a%23b%3Fc%22%3Cd%3E", "/j:x"] {
            let loc = location(resolve(&t.root, request, None, &PLAIN));
            assert!(matches!(
                resolve(&t.root, &loc, None, &PLAIN),
                Ok(Resolved::Directory { .. })
            ));
        }
    }

    #[test]
    fn encode_segment_is_strict() {
        assert_eq!(encode_bytes(b"a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            encode_bytes("sp ace/%?#:'&\"<>\\é".as_bytes()),
            "sp%20ace%2F%25%3F%23%3A%27%26%22%3C%3E%5C%C3%A9"
        );
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => Just(".".to_owned()),
            4 => Just("/".to_owned()),
            3 => Just("%".to_owned()),
            3 => Just("2e".to_owned()),
            3 => Just("2f".to_owned()),
            1 => Just("5c".to_owned()),
            2 => Just("25".to_owned()),
            2 => Just("..".to_owned()),
            2 => Just("%2e".to_owned()),
            2 => Just("%2f".to_owned()),
            1 => Just("%5c".to_owned()),
            1 => Just("%00".to_owned()),
            1 => Just("%c0%ae".to_owned()),
            2 => Just("secret.txt".to_owned()),
            2 => Just("out".to_owned()),
            2 => Just("outdir".to_owned()),
            1 => Just("sib".to_owned()),
            1 => Just("abs".to_owned()),
            1 => Just("a".to_owned()),
            1 => Just("indir".to_owned()),
            3 => Just("b.txt".to_owned()),
            2 => Just("index.html".to_owned()),
            2 => Just("inlink".to_owned()),
            2 => Just("/a/".to_owned()),
            1 => Just("root".to_owned()),
            1 => Just("\\".to_owned()),
            2 => any::<char>().prop_map(String::from),
        ]
    }

    /// Arbitrary request paths never resolve outside the root, and never panic. One tree is
    /// shared by all cases, so the runner is driven by hand rather than by `proptest!`.
    #[test]
    fn resolve_never_escapes() {
        let t = tree();
        let config = ProptestConfig {
            cases: 4000,
            failure_persistence: None,
            // ChaCha is slow unoptimized; the tests need variety, not cryptography.
            rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        };
        let strategy = (
            proptest::collection::vec(fragment(), 0..16),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of("[a-z=&%/?# \\r\\n]{0,8}"),
        );
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let seen = std::cell::RefCell::new([0u32; 6]);
        let outcome = runner.run(&strategy, |(parts, leading, hidden, query)| {
            let mut request: String = parts.concat();
            if leading {
                request.insert(0, '/');
            }
            let opts = FileOptions {
                follow_symlinks: false,
                hidden,
            };
            let result = resolve(&t.root, &request, query.as_deref(), &opts);
            assert_contained(&t.root, &request, &result);
            let kind = match result {
                Ok(Resolved::File { .. }) => 0,
                Ok(Resolved::Directory { .. }) => 1,
                Ok(Resolved::RedirectSlash { .. }) => 2,
                Err(Refused::NotFound | Refused::Hidden) => 3,
                Err(Refused::BadRequest) => 4,
                Err(Refused::Forbidden) => 5,
            };
            seen.borrow_mut()[kind] += 1;
            // Following symlinks may leave the root through a link, but never through the
            // request path itself: what is joined is only normal components.
            let followed = resolve(&t.root, &request, query.as_deref(), &FOLLOW);
            if let Ok(Resolved::File { path, .. } | Resolved::Directory { path, .. }) = &followed {
                let rest = path.strip_prefix(&t.root).unwrap();
                assert!(
                    rest.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{request:?} -> {}",
                    path.display()
                );
            }
            if let Ok(Resolved::RedirectSlash { location }) = &followed {
                assert!(location.starts_with('/') && !location.starts_with("//"));
            }
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
        // The generator reaches every outcome, so the property is not vacuous.
        let seen = seen.into_inner();
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}
