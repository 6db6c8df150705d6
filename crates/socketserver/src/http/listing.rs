//! Directory listings: reading a directory and rendering it as a small HTML page.
//!
//! The page is `SimpleHTTPRequestHandler.list_directory`'s, made safe by construction: every
//! name is HTML-escaped where it is shown and percent-encoded (every byte outside RFC 3986
//! `unreserved`) where it is linked, so a file called `<script>`, `a"b`, `%41`, `sp ace`,
//! `é` or `javascript:x` is displayed as such and its link leads back to exactly that file.
//!
//! Entries are sorted as Python sorts them, case-insensitively (`str.lower`), with ties broken
//! by the exact name so the order is total and stable across runs.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::files::{FileOptions, encode_bytes};

/// One directory entry, as the listing shows it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The file name as shown; names that are not UTF-8 are shown lossily (`U+FFFD` for bad
    /// bytes).
    pub(crate) name: String,
    /// The name's exact bytes: its link encodes these, so a name that is not UTF-8 can still
    /// be downloaded.
    pub(crate) raw: Vec<u8>,
    /// A directory, or a symlink to one.
    pub(crate) is_dir: bool,
    /// Size in bytes (of the target, for symlinks); 0 when the metadata cannot be read.
    pub(crate) len: u64,
    /// Modification time, when known.
    pub(crate) modified: Option<SystemTime>,
}

/// Reads `dir` into listing entries, sorted case-insensitively (see the module doc).
///
/// Names starting with `.` are skipped unless [`FileOptions::hidden`]. Metadata follows
/// symlinks, so a link to a directory is listed as a directory; entries whose metadata cannot
/// be read (a dangling link, a permission problem) are still listed, with length 0 and no
/// time. An entry the directory iterator itself fails on is skipped; only failing to open the
/// directory is an error.
pub(crate) fn list_directory(dir: &Path, opts: &FileOptions) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for item in fs::read_dir(dir)? {
        let Ok(item) = item else {
            continue;
        };
        let raw = std::os::unix::ffi::OsStrExt::as_bytes(item.file_name().as_os_str()).to_vec();
        let name = String::from_utf8_lossy(&raw).into_owned();
        if !opts.hidden && name.starts_with('.') {
            continue;
        }
        let entry = match fs::metadata(item.path()) {
            Ok(meta) => Entry {
                name,
                raw,
                is_dir: meta.is_dir(),
                len: meta.len(),
                modified: meta.modified().ok(),
            },
            Err(_) => Entry {
                name,
                raw,
                is_dir: false,
                len: 0,
                modified: None,
            },
        };
        entries.push(entry);
    }
    entries.sort_by_cached_key(|e| (e.name.to_lowercase(), e.name.clone()));
    Ok(entries)
}

/// Renders the listing page for the directory requested as `display_path` (decoded, with
/// leading and trailing `/`).
///
/// A complete HTML5 document: title and heading "Directory listing for {path}", a `../` row
/// unless this is the root, then one table row per entry with its link, its size in bytes
/// (`-` for directories) and its modification time as `YYYY-MM-DD HH:MM` UTC. Links are
/// relative, so the page is correct under whatever prefix it was reached by.
pub(crate) fn render_listing(display_path: &str, entries: &[Entry]) -> String {
    let title = escape_html(display_path);
    let mut page = String::with_capacity(1024 + entries.len() * 160);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n\
         <html>\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Directory listing for {title}</title>\n\
         <style>td, th {{ padding: 0 1em 0 0; text-align: left; }} \
         td.size {{ text-align: right; }}</style>\n\
         </head>\n\
         <body>\n\
         <h1>Directory listing for {title}</h1>\n\
         <hr>\n\
         <table>\n\
         <thead><tr><th>Name</th><th>Size</th><th>Modified</th></tr></thead>\n\
         <tbody>\n"
    );
    if !matches!(display_path, "/" | "") {
        page.push_str(
            "<tr><td><a href=\"../\">../</a></td><td class=\"size\">-</td><td></td></tr>\n",
        );
    }
    for entry in entries {
        let slash = if entry.is_dir { "/" } else { "" };
        let size = if entry.is_dir {
            "-".to_owned()
        } else {
            entry.len.to_string()
        };
        let modified = entry.modified.map(format_time).unwrap_or_default();
        // The encoded name only holds `unreserved` and `%`, so it needs no HTML escaping.
        let _ = writeln!(
            page,
            "<tr><td><a href=\"{href}{slash}\">{name}{slash}</a></td>\
             <td class=\"size\">{size}</td><td>{modified}</td></tr>",
            href = encode_bytes(&entry.raw),
            name = escape_html(&entry.name),
        );
    }
    page.push_str("</tbody>\n</table>\n<hr>\n</body>\n</html>\n");
    page
}

/// Escapes the five characters that are special in HTML text and attribute values.
fn escape_html(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `YYYY-MM-DD HH:MM` in UTC; times before 1970 are handled too.
fn format_time(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            // Before the epoch: round down to the whole second at or before `t`.
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let up = i64::from(d.subsec_nanos() > 0);
            whole.saturating_add(up).saturating_neg()
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`). Exact for any `i64` second count divided into days.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::super::files::{Refused, Resolved, resolve};

    const PLAIN: FileOptions = FileOptions {
        follow_symlinks: false,
        hidden: false,
    };
    const HIDDEN: FileOptions = FileOptions {
        follow_symlinks: false,
        hidden: true,
    };

    fn entry(name: &str, is_dir: bool) -> Entry {
        Entry {
            name: name.to_owned(),
            raw: name.as_bytes().to_vec(),
            is_dir,
            len: 42,
            modified: Some(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
        }
    }

    /// The `href` values of a page, in order.
    fn hrefs(page: &str) -> Vec<&str> {
        page.split("href=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect()
    }

    fn names(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    const HOSTILE: &[&str] = &[
        "<img src=x onerror=alert(1)>",
        "a\"b",
        "it's",
        "%41",
        "sp ace",
        "é",
        "a&amp;b",
        "q?x#y",
        "javascript:alert(1)",
        "back\\slash",
        "tab\there",
        "new\nline",
        "..a",
        "+plus",
    ];

    #[test]
    fn page_structure() {
        let page = render_listing("/sub/", &[entry("b.txt", false), entry("d", true)]);
        assert!(page.starts_with("<!DOCTYPE html>\n"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(page.contains("<title>Directory listing for /sub/</title>"));
        assert!(page.contains("<h1>Directory listing for /sub/</h1>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert_eq!(hrefs(&page), ["../", "b.txt", "d/"]);
        assert!(page.contains(
            "<a href=\"b.txt\">b.txt</a></td><td class=\"size\">42</td>\
             <td>2024-02-29 12:34</td>"
        ));
        assert!(page.contains("<a href=\"d/\">d/</a></td><td class=\"size\">-</td>"));
    }

    #[test]
    fn parent_link_only_below_root() {
        assert_eq!(hrefs(&render_listing("/", &[entry("x", false)])), ["x"]);
        assert_eq!(hrefs(&render_listing("/a/", &[])), ["../"]);
        assert_eq!(hrefs(&render_listing("/a/b/", &[])), ["../"]);
    }

    #[test]
    fn unknown_time_is_blank() {
        let mut e = entry("x", false);
        e.modified = None;
        assert!(render_listing("/", &[e]).contains("<td class=\"size\">42</td><td></td>"));
    }

    #[test]
    fn hostile_names_are_escaped_and_encoded() {
        let entries = [
            entry("<script>alert(1)</script>", false),
            entry("a\"b", false),
            entry("%41", false),
            entry("sp ace", true),
            entry("é", false),
            entry("javascript:alert(1)", false),
            entry("'onmouseover='x", false),
        ];
        let page = render_listing("/<b>&\"'/", &entries);
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("Directory listing for /&lt;b&gt;&amp;&quot;&#x27;/</title>"));
        assert!(page.contains(
            "<a href=\"%3Cscript%3Ealert%281%29%3C%2Fscript%3E\">\
             &lt;script&gt;alert(1)&lt;/script&gt;</a>"
        ));
        assert!(page.contains("<a href=\"a%22b\">a&quot;b</a>"));
        assert!(page.contains("<a href=\"%2541\">%41</a>"));
        assert!(page.contains("<a href=\"sp%20ace/\">sp ace/</a>"));
        assert!(page.contains("<a href=\"%C3%A9\">é</a>"));
        assert!(page.contains("<a href=\"javascript%3Aalert%281%29\">"));
        assert!(page.contains("<a href=\"%27onmouseover%3D%27x\">&#x27;onmouseover=&#x27;x</a>"));
        for href in hrefs(&page) {
            assert!(
                href.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%/".contains(&b)),
                "{href}"
            );
        }
    }

    #[test]
    fn links_lead_back_to_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        let dir = root.join("sub");
        for name in HOSTILE {
            fs::write(dir.join(name), name).unwrap();
        }
        fs::create_dir(dir.join("dir é%20")).unwrap();
        let entries = list_directory(&dir, &HIDDEN).unwrap();
        let page = render_listing("/sub/", &entries);
        let links = hrefs(&page);
        assert_eq!(links.len(), HOSTILE.len() + 2);
        assert_eq!(links[0], "../");
        for (href, e) in links[1..].iter().zip(&entries) {
            // What a browser requests: the directory's path plus the relative link.
            let request = format!("/sub/{href}");
            let result = resolve(&root, &request, None, &HIDDEN);
            if e.name.contains('\\') {
                // Listed, but backslashes are refused in request paths by design.
                assert_eq!(result.err(), Some(Refused::BadRequest));
                continue;
            }
            match result {
                Ok(Resolved::File { path, .. }) => {
                    assert!(!e.is_dir);
                    assert_eq!(path.file_name().unwrap().to_str().unwrap(), e.name);
                    assert_eq!(fs::read_to_string(&path).unwrap(), e.name);
                }
                Ok(Resolved::Directory { path, display }) => {
                    assert!(e.is_dir);
                    assert_eq!(path, dir.join(&e.name));
                    assert_eq!(display, format!("/sub/{}/", e.name));
                }
                other => panic!("{href:?} for {:?}: {other:?}", e.name),
            }
        }
    }

    #[test]
    fn sorting_is_case_insensitive_then_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for name in [
            "b", "B", "a", "C", "_x", "10", "9", "Zeta", "alpha", "Émile", "émile",
        ] {
            fs::write(dir.join(name), "").unwrap();
        }
        let entries = list_directory(dir, &PLAIN).unwrap();
        assert_eq!(
            names(&entries),
            [
                "10", "9", "_x", "a", "alpha", "B", "b", "C", "Zeta", "Émile", "émile"
            ]
        );
    }

    #[test]
    fn hidden_filtering() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(".env"), "").unwrap();
        fs::create_dir(dir.join(".git")).unwrap();
        fs::write(dir.join("visible"), "").unwrap();
        fs::write(dir.join("..double"), "").unwrap();
        assert_eq!(names(&list_directory(dir, &PLAIN).unwrap()), ["visible"]);
        assert_eq!(
            names(&list_directory(dir, &HIDDEN).unwrap()),
            ["..double", ".env", ".git", "visible"]
        );
    }

    #[test]
    fn metadata_follows_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir(dir.join("real")).unwrap();
        fs::write(dir.join("file"), "12345").unwrap();
        symlink("real", dir.join("to_dir")).unwrap();
        symlink("file", dir.join("to_file")).unwrap();
        symlink("missing", dir.join("dangling")).unwrap();
        let entries = list_directory(dir, &PLAIN).unwrap();
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert!(get("real").is_dir);
        assert!(get("to_dir").is_dir);
        assert!(!get("file").is_dir);
        assert_eq!(get("file").len, 5);
        assert!(get("file").modified.is_some());
        assert!(!get("to_file").is_dir);
        assert_eq!(get("to_file").len, 5);
        let dangling = get("dangling");
        assert!(!dangling.is_dir);
        assert_eq!(dangling.len, 0);
        assert_eq!(dangling.modified, None);
        let page = render_listing("/", &entries);
        assert!(page.contains("<a href=\"to_dir/\">to_dir/</a>"));
        assert!(page.contains("<a href=\"dangling\">dangling</a>"));
    }

    #[test]
    fn non_utf8_names_are_shown_lossily_and_linked_by_their_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let raw = OsStr::from_bytes(b"bad\xff\xfe<name>");
        fs::write(dir.join(raw), "x").unwrap();
        let entries = list_directory(dir, &PLAIN).unwrap();
        assert_eq!(names(&entries), ["bad\u{fffd}\u{fffd}<name>"]);
        assert_eq!(entries[0].len, 1);
        let page = render_listing("/", &entries);
        assert!(
            page.contains("<a href=\"bad%FF%FE%3Cname%3E\">bad\u{fffd}\u{fffd}&lt;name&gt;</a>")
        );
    }

    #[test]
    fn missing_directory_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = list_directory(&tmp.path().join("nope"), &PLAIN).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn times() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00");
        assert_eq!(format_time(at(59)), "1970-01-01 00:00");
        assert_eq!(format_time(at(951_782_400)), "2000-02-29 00:00");
        assert_eq!(format_time(at(1_709_210_096)), "2024-02-29 12:34");
        assert_eq!(format_time(at(4_102_444_799)), "2099-12-31 23:59");
        assert_eq!(format_time(at(253_402_300_799)), "9999-12-31 23:59");
        assert_eq!(
            format_time(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31 23:59"
        );
        assert_eq!(
            format_time(UNIX_EPOCH - Duration::from_secs(86_400 * 365)),
            "1969-01-01 00:00"
        );
    }

    /// `Thu, 29 Feb 2024 12:34:56 GMT` → `2024-02-29 12:34`.
    fn via_httpdate(t: SystemTime) -> String {
        let s = httpdate::fmt_http_date(t);
        let f: Vec<&str> = s.split([' ', ':']).collect();
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| *m == f[2])
        .unwrap()
            + 1;
        format!("{}-{month:02}-{} {}:{}", f[3], f[1], f[4], f[5])
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            // ChaCha is slow unoptimized; the tests need variety, not cryptography.
            rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        })]

        #[test]
        fn time_matches_httpdate(secs in 0u64..253_402_300_800) {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            prop_assert_eq!(format_time(t), via_httpdate(t));
        }

        #[test]
        fn any_name_round_trips(name in "\\PC{1,12}", is_dir in any::<bool>()) {
            let page = render_listing("/", &[entry(&name, is_dir)]);
            let links = hrefs(&page);
            prop_assert_eq!(links.len(), 1);
            let href = links[0].strip_suffix('/').filter(|_| is_dir).unwrap_or(links[0]);
            let decoded = percent_encoding::percent_decode_str(href).decode_utf8().unwrap();
            prop_assert_eq!(decoded.as_ref(), name.as_str());
            let shown = escape_html(&name);
            let shown_with_slash = format!(">{shown}{}</a>", if is_dir { "/" } else { "" });
            prop_assert!(page.contains(&shown_with_slash));
        }
    }
}
