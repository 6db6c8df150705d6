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
    Order::default().sort(&mut entries);
    Ok(entries)
}

/// What a listing is sorted by (`?sort=name|size|time`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SortKey {
    #[default]
    Name,
    Size,
    Time,
}

/// How a listing is ordered: directories always first, then by `key`, `desc` reversing it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Order {
    pub(crate) key: SortKey,
    pub(crate) desc: bool,
}

impl Order {
    /// From a request's query: `sort=name|size|time`, `order=asc|desc` (anything else is the
    /// default: by name, ascending).
    pub(crate) fn from_query(query: Option<&str>) -> Order {
        let mut order = Order::default();
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("sort", "size") => order.key = SortKey::Size,
                ("sort", "time") => order.key = SortKey::Time,
                ("sort", _) => order.key = SortKey::Name,
                ("order", "desc") => order.desc = true,
                ("order", _) => order.desc = false,
                _ => {}
            }
        }
        order
    }

    /// Sorts `entries`: directories first, each group by the key (ties by name, then by the
    /// exact bytes, so the order is total), reversed within its group with `desc`.
    pub(crate) fn sort(self, entries: &mut [Entry]) {
        entries.sort_by(|a, b| {
            let by_name = || {
                a.name
                    .to_lowercase()
                    .cmp(&b.name.to_lowercase())
                    .then_with(|| a.raw.cmp(&b.raw))
            };
            let by_key = match self.key {
                SortKey::Name => by_name(),
                SortKey::Size => a.len.cmp(&b.len).then_with(by_name),
                SortKey::Time => a.modified.cmp(&b.modified).then_with(by_name),
            };
            b.is_dir
                .cmp(&a.is_dir)
                .then(if self.desc { by_key.reverse() } else { by_key })
        });
    }

    fn query(self, key: SortKey, desc: bool) -> String {
        let key = match key {
            SortKey::Name => "name",
            SortKey::Size => "size",
            SortKey::Time => "time",
        };
        format!(
            "?sort={key}&amp;order={}",
            if desc { "desc" } else { "asc" }
        )
    }

    /// A column heading that sorts by `key`: ascending, or descending when it already is
    /// the ascending sort.
    fn heading(self, key: SortKey, label: &str) -> String {
        let current = self.key == key;
        let desc = current && !self.desc;
        let mark = match (current, self.desc) {
            (true, false) => " \u{2191}",
            (true, true) => " \u{2193}",
            _ => "",
        };
        format!("<a href=\"{}\">{label}{mark}</a>", self.query(key, desc))
    }
}

/// The page's style: one small sheet, light and dark, that keeps the size and time columns on
/// a 390 px screen however long a name is (names wrap anywhere).
const STYLE: &str = "\
:root { color-scheme: light dark; --fg: #1b1b1b; --bg: #fff; --muted: #666; --line: #ddd; --link: #0645ad; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8e8; --bg: #161616; --muted: #9a9a9a; --line: #333; --link: #8ab4f8; } }
body { font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 60em; padding: 0 0.75em; }
h1 { font-size: 1.2em; font-weight: 600; overflow-wrap: anywhere; }
h1 a, td a, th a { color: var(--link); text-decoration: none; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; }
th, td { padding: 0.35em 0.4em; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-weight: 600; font-size: 0.9em; }
td.name { overflow-wrap: anywhere; }
.size, .time { white-space: nowrap; color: var(--muted); font-variant-numeric: tabular-nums; }
.size { width: 6.5em; text-align: right; }
.time { width: 12.5em; }
.time span { white-space: nowrap; }
@media (max-width: 30em) { .time { width: 6.4em; white-space: normal; } .size { width: 5.2em; } body { font-size: 14px; } }
";

/// Renders the listing page for the directory requested as `display_path` (decoded, with
/// leading and trailing `/`), its entries in `order`'s order.
///
/// A complete, self-contained HTML5 document (no script, no external asset): a breadcrumb of
/// the path as the heading, a `../` row unless this is the root, then one row per entry:
/// its link, its size (`-` for directories) in human units with the exact byte count in a
/// `<data>` value and a tooltip, and its modification time in UTC, machine-readable in a
/// `<time>`. Links are relative, so the page is correct under whatever prefix it was
/// reached by; the column headings re-sort it (`?sort=`, `?order=`).
pub(crate) fn render_listing(display_path: &str, entries: &[Entry], order: Order) -> String {
    let title = escape_html(display_path);
    let mut page = String::with_capacity(2048 + entries.len() * 220);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Directory listing for {title}</title>\n\
         <style>\n{STYLE}</style>\n\
         </head>\n\
         <body>\n\
         <h1>Directory listing for {crumbs}</h1>\n\
         <table>\n\
         <thead><tr><th class=\"name\">{name}</th><th class=\"size\">{size}</th>\
         <th class=\"time\">{time}</th></tr></thead>\n\
         <tbody>\n",
        crumbs = breadcrumb(display_path),
        name = order.heading(SortKey::Name, "Name"),
        size = order.heading(SortKey::Size, "Size"),
        time = order.heading(SortKey::Time, "Modified"),
    );
    if !matches!(display_path, "/" | "") {
        page.push_str(
            "<tr><td class=\"name\"><a href=\"../\">../</a></td><td class=\"size\">-</td>\
             <td class=\"time\"></td></tr>\n",
        );
    }
    for entry in entries {
        let slash = if entry.is_dir { "/" } else { "" };
        let size = if entry.is_dir {
            "-".to_owned()
        } else {
            format!(
                "<data value=\"{n}\" title=\"{n} bytes\">{human}</data>",
                n = entry.len,
                human = human_size(entry.len)
            )
        };
        let modified = entry
            .modified
            .map(|t| {
                // Date and time wrap apart on a narrow screen, never inside either.
                let shown = format_time(t);
                let (date, time) = shown.split_once(' ').unwrap_or((&shown, ""));
                format!(
                    "<time datetime=\"{}\"><span>{date}</span> <span>{time} UTC</span></time>",
                    format_rfc3339(t),
                )
            })
            .unwrap_or_default();
        // The encoded name only holds `unreserved` and `%`, so it needs no HTML escaping.
        let _ = writeln!(
            page,
            "<tr><td class=\"name\"><a href=\"{href}{slash}\">{name}{slash}</a></td>\
             <td class=\"size\">{size}</td><td class=\"time\">{modified}</td></tr>",
            href = encode_bytes(&entry.raw),
            name = escape_html(&entry.name),
        );
    }
    page.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    page
}

/// `page` (a listing) with an upload form at its foot: plain HTML, `POST` of
/// `multipart/form-data` to the page's own URL, several files at once, no script.
pub(crate) fn with_upload_form(mut page: String) -> String {
    const FORM: &str = "<form method=\"post\" enctype=\"multipart/form-data\" class=\"upload\">\n\
         <label>Upload files: <input type=\"file\" name=\"file\" multiple required></label>\n\
         <button type=\"submit\">Upload</button>\n\
         </form>\n";
    if let Some(at) = page.rfind("</body>") {
        page.insert_str(at, FORM);
    }
    page
}

/// The heading's path, each directory a relative link to it (the last one is this page).
fn breadcrumb(display_path: &str) -> String {
    let parts: Vec<&str> = display_path.split('/').filter(|p| !p.is_empty()).collect();
    let up = |n: usize| {
        if n == 0 {
            "./".to_string()
        } else {
            "../".repeat(n)
        }
    };
    let mut out = format!("<a href=\"{}\">/</a>", up(parts.len()));
    for (i, part) in parts.iter().enumerate() {
        let _ = write!(
            out,
            "<a href=\"{}\">{}</a>/",
            up(parts.len() - 1 - i),
            escape_html(part)
        );
    }
    out
}

/// `1023 B`, `1.0 KiB`, `52.4 MiB`, ... (binary units, one decimal below 100).
fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 100.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// The listing as JSON: `{"path": ..., "entries": [{"name", "dir", "size", "modified"}]}`,
/// in the page's order; `size` and `modified` are `null` for directories and unknown times.
pub(crate) fn render_json(display_path: &str, entries: &[Entry]) -> String {
    // Written in the contract's key order (a `serde_json::Value` would sort the keys);
    // `serde_json` escapes every string.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut text = format!("{{\"path\":{},\"entries\":[", quote(display_path));
    for (i, e) in entries.iter().enumerate() {
        let size = if e.is_dir {
            "null".to_string()
        } else {
            e.len.to_string()
        };
        let modified = e
            .modified
            .map_or_else(|| "null".to_string(), |t| quote(&format_rfc3339(t)));
        let _ = write!(
            text,
            "{}{{\"name\":{},\"dir\":{},\"size\":{size},\"modified\":{modified}}}",
            if i == 0 { "" } else { "," },
            quote(&e.name),
            e.is_dir
        );
    }
    text.push_str("]}\n");
    text
}

/// Whether a request for a listing wants JSON: `?json` in the query, or an `Accept` that
/// ranks `application/json` above HTML (q-values honoured; `*/*` and `text/*` count for
/// HTML).
pub(crate) fn wants_json(query: Option<&str>, accept: Option<&str>) -> bool {
    if query
        .unwrap_or("")
        .split('&')
        .any(|p| p == "json" || p.starts_with("json="))
    {
        return true;
    }
    let Some(accept) = accept else {
        return false;
    };
    let (mut json, mut html) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut params = range.split(';');
        let kind = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match kind.as_str() {
            "application/json" => json = json.max(q),
            "text/html" | "text/*" | "*/*" => html = html.max(q),
            _ => {}
        }
    }
    json > html
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

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC).
fn format_rfc3339(t: SystemTime) -> String {
    let secs = seconds_since_epoch(t);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Whole seconds since 1970 (rounded down, before it too).
fn seconds_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let up = i64::from(d.subsec_nanos() > 0);
            whole.saturating_add(up).saturating_neg()
        }
    }
}

/// `YYYY-MM-DD HH:MM` in UTC; times before 1970 are handled too.
fn format_time(t: SystemTime) -> String {
    // Before the epoch: rounded down to the whole second at or before `t`.
    let secs = seconds_since_epoch(t);
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

    /// The `href` values of a page's entries (its table body), in order.
    fn hrefs(page: &str) -> Vec<&str> {
        let body = &page[page.find("<tbody>").unwrap()..];
        body.split("href=\"")
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
    fn sizes_read_in_human_units() {
        for (n, shown) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (52_428_800, "50.0 MiB"),
            (200 * 1024 * 1024, "200 MiB"),
            (3 << 40, "3.0 TiB"),
            (u64::MAX, "16.0 EiB"),
        ] {
            assert_eq!(human_size(n), shown, "{n}");
        }
    }

    #[test]
    fn orders_keep_directories_first() {
        let mut a = entry("a.txt", false);
        a.len = 300;
        a.modified = Some(UNIX_EPOCH + Duration::from_secs(30));
        let mut b = entry("B.txt", false);
        b.len = 100;
        b.modified = Some(UNIX_EPOCH + Duration::from_secs(10));
        let mut c = entry("c.txt", false);
        c.len = 200;
        c.modified = None;
        let d = entry("zdir", true);
        let sorted = |query: &str| {
            let mut entries = vec![c.clone(), a.clone(), d.clone(), b.clone()];
            Order::from_query(Some(query)).sort(&mut entries);
            names(&entries)
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(sorted(""), ["zdir", "a.txt", "B.txt", "c.txt"]);
        assert_eq!(sorted("order=desc"), ["zdir", "c.txt", "B.txt", "a.txt"]);
        assert_eq!(sorted("sort=size"), ["zdir", "B.txt", "c.txt", "a.txt"]);
        assert_eq!(
            sorted("sort=size&order=desc"),
            ["zdir", "a.txt", "c.txt", "B.txt"]
        );
        // An unknown time sorts first, as the oldest.
        assert_eq!(sorted("sort=time"), ["zdir", "c.txt", "B.txt", "a.txt"]);
        assert_eq!(sorted("sort=bogus&order=sideways"), sorted(""));
    }

    #[test]
    fn json_is_asked_for_by_query_or_accept() {
        assert!(wants_json(Some("json"), None));
        assert!(wants_json(Some("sort=size&json"), Some("text/html")));
        assert!(wants_json(None, Some("application/json")));
        assert!(wants_json(None, Some("application/json, text/html;q=0.9")));
        assert!(!wants_json(
            None,
            Some("text/html,application/xhtml+xml,*/*;q=0.8")
        ));
        assert!(!wants_json(None, Some("application/json;q=0.5, */*")));
        assert!(!wants_json(None, None));
        assert!(!wants_json(Some("jsonp=1"), None));
    }

    #[test]
    fn the_json_form_has_the_pages_entries_in_its_order() {
        let mut none = entry("n", false);
        none.modified = None;
        let text = render_json("/sub/", &[entry("d", true), entry("b.txt", false), none]);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "path": "/sub/",
                "entries": [
                    {"name": "d", "dir": true, "size": null, "modified": "2024-02-29T12:34:56Z"},
                    {"name": "b.txt", "dir": false, "size": 42, "modified": "2024-02-29T12:34:56Z"},
                    {"name": "n", "dir": false, "size": 42, "modified": null},
                ]
            })
        );
    }

    #[test]
    fn page_structure() {
        let page = render_listing(
            "/sub/",
            &[entry("b.txt", false), entry("d", true)],
            Order::default(),
        );
        assert!(page.starts_with("<!DOCTYPE html>\n"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(page.contains("<title>Directory listing for /sub/</title>"));
        // The heading is a breadcrumb: each directory a relative link to itself.
        assert!(page.contains(
            "<h1>Directory listing for <a href=\"../\">/</a><a href=\"./\">sub</a>/</h1>"
        ));
        assert!(page.contains("@media (prefers-color-scheme: dark)"));
        assert!(page.contains("name=\"viewport\""));
        assert!(!page.contains("<script"), "no script");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external asset"
        );
        assert!(page.trim_end().ends_with("</html>"));
        // In the order given (the caller sorts: `Order::sort`).
        assert_eq!(hrefs(&page), ["../", "b.txt", "d/"]);
        assert!(page.contains(
            "<a href=\"b.txt\">b.txt</a></td><td class=\"size\">\
             <data value=\"42\" title=\"42 bytes\">42 B</data></td>\
             <td class=\"time\"><time datetime=\"2024-02-29T12:34:56Z\"><span>2024-02-29</span> <span>12:34 UTC</span></time></td>"
        ));
        assert!(page.contains("<a href=\"d/\">d/</a></td><td class=\"size\">-</td>"));
        // The headings sort: by name descending from the default, by size or time ascending.
        for query in [
            "?sort=name&amp;order=desc",
            "?sort=size&amp;order=asc",
            "?sort=time&amp;order=asc",
        ] {
            assert!(page.contains(&format!("<a href=\"{query}\">")), "{query}");
        }
    }

    #[test]
    fn parent_link_only_below_root() {
        assert_eq!(
            hrefs(&render_listing("/", &[entry("x", false)], Order::default())),
            ["x"]
        );
        assert_eq!(
            hrefs(&render_listing("/a/", &[], Order::default())),
            ["../"]
        );
        assert_eq!(
            hrefs(&render_listing("/a/b/", &[], Order::default())),
            ["../"]
        );
    }

    #[test]
    fn unknown_time_is_blank() {
        let mut e = entry("x", false);
        e.modified = None;
        assert!(
            render_listing("/", &[e], Order::default())
                .contains("42 B</data></td><td class=\"time\"></td>")
        );
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
        let page = render_listing("/<b>&\"'/", &entries, Order::default());
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
        let page = render_listing("/sub/", &entries, Order::default());
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
            [".git", "..double", ".env", "visible"],
            "directories first"
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
        let page = render_listing("/", &entries, Order::default());
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
        let page = render_listing("/", &entries, Order::default());
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
            let page = render_listing("/", &[entry(&name, is_dir)], Order::default());
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
