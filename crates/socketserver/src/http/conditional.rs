//! What a request's validators and `Range` ask of a file: one [`Decision`] for
//! `StaticFiles::serve_file`, which then only builds the answer it names.
//!
//! RFC 9110's order (§13.2.2): `If-Match`, else `If-Unmodified-Since` (a failure is `412`);
//! then `If-None-Match`, else `If-Modified-Since` (a match is `304`, for `GET` and `HEAD`,
//! the only methods the file service answers); then `Range`, honoured only when `If-Range`
//! allows it (`206`, or `416` when unsatisfiable), else the whole file. The validators are a
//! strong `ETag` (length and modification time, as nginx's) and `Last-Modified`; the content
//! type comes from the name ([`content_type`]). Several ranges ([`parse_ranges`]) are sorted,
//! merged and bounded here (at most [`MAX_RANGES`], and no more than the file in all, against
//! range amplification); `static_files.rs` writes their `multipart/byteranges` body.
//! Compression negotiation belongs here too when it comes: it chooses the representation.
//!
//! Pure: the functions look at header bytes and metadata, never at a socket or a file's
//! contents. Path resolution, the security-critical part, is `files.rs`'s.

use std::fs::Metadata;
use std::path::Path;
use std::str;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Request;

/// A file as it will be described: its length, validators and type.
#[derive(Clone, Debug)]
pub(crate) struct Representation {
    pub(crate) len: u64,
    /// A strong entity tag, quotes included (see [`etag`]).
    pub(crate) etag: String,
    /// The modification time as an HTTP-date.
    pub(crate) last_modified: String,
    pub(crate) content_type: String,
    mtime: SystemTime,
}

impl Representation {
    /// The representation of the file with metadata `meta`, requested as `name` (whose
    /// extension gives the content type).
    pub(crate) fn of(meta: &Metadata, name: &Path) -> Representation {
        Representation::with(meta, etag(meta), content_type(name))
    }

    /// The representation of a precompressed sibling with metadata `meta`, served as its
    /// file's `content_type`: its entity tag carries the coding's file extension, as
    /// `compress::tag_for` marks a tag, made in one go (no second content-type lookup, no
    /// tag made twice).
    pub(crate) fn sibling(meta: &Metadata, content_type: String, coding: &str) -> Representation {
        let (len, nanos) = tag_parts(meta);
        let etag = format!("\"{len:x}-{nanos:x}-{coding}\"");
        Representation::with(meta, etag, content_type)
    }

    fn with(meta: &Metadata, etag: String, content_type: String) -> Representation {
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        Representation {
            len: meta.len(),
            etag,
            last_modified: httpdate::fmt_http_date(mtime),
            content_type,
            mtime,
        }
    }
}

/// The request fields [`decide`] reads.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Conditions<'a> {
    pub(crate) if_match: Option<&'a [u8]>,
    pub(crate) if_unmodified_since: Option<&'a [u8]>,
    pub(crate) if_none_match: Option<&'a [u8]>,
    pub(crate) if_modified_since: Option<&'a [u8]>,
    pub(crate) if_range: Option<&'a [u8]>,
    pub(crate) range: Option<&'a [u8]>,
}

impl<'a> Conditions<'a> {
    pub(crate) fn of(req: &'a Request<'_>) -> Conditions<'a> {
        Conditions {
            if_match: req.header_bytes("if-match"),
            if_unmodified_since: req.header_bytes("if-unmodified-since"),
            if_none_match: req.header_bytes("if-none-match"),
            if_modified_since: req.header_bytes("if-modified-since"),
            if_range: req.header_bytes("if-range"),
            range: req.header_bytes("range"),
        }
    }
}

/// What to answer about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// `412`: `If-Match` or `If-Unmodified-Since` failed.
    PreconditionFailed,
    /// `304`: the client's copy is current.
    NotModified,
    /// `200` with the whole file.
    Whole,
    /// `206` with bytes `start..=end` (`start <= end < len`).
    Part { start: u64, end: u64 },
    /// `206 multipart/byteranges` with these ranges (inclusive, sorted, merged, two at
    /// least).
    Parts(Vec<(u64, u64)>),
    /// `416` with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// The one decision for a `GET` or `HEAD` of `file` under `conditions`, at `now` (a future
/// `If-Modified-Since` is ignored).
pub(crate) fn decide(
    conditions: &Conditions<'_>,
    file: &Representation,
    now: SystemTime,
) -> Decision {
    let (etag, mtime) = (file.etag.as_str(), file.mtime);
    if precondition_failed(
        conditions.if_match,
        conditions.if_unmodified_since,
        etag,
        mtime,
    ) {
        return Decision::PreconditionFailed;
    }
    if not_modified(
        conditions.if_none_match,
        conditions.if_modified_since,
        etag,
        mtime,
        now,
    ) {
        return Decision::NotModified;
    }
    if !if_range_allows(conditions.if_range, etag, mtime) {
        return Decision::Whole;
    }
    match parse_range(conditions.range, file.len) {
        RangeSpec::Full => match parse_ranges(conditions.range, file.len) {
            Several::Parts(parts) => Decision::Parts(parts),
            Several::One { start, end } => Decision::Part { start, end },
            Several::Unsatisfiable => Decision::Unsatisfiable,
            Several::Whole => Decision::Whole,
        },
        RangeSpec::Partial { start, end } => Decision::Part { start, end },
        RangeSpec::Unsatisfiable => Decision::Unsatisfiable,
    }
}

/// Most ranges one request may ask for; more get the whole file (the Apache Killer asked for
/// thousands of overlapping ones).
pub(crate) const MAX_RANGES: usize = 16;

/// A `Range` header with several ranges, as answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Several {
    /// Not several usable ranges (one, or none, malformed, too many, or adding up to more
    /// than the file): `200` with it all.
    Whole,
    /// They merge into one.
    One { start: u64, end: u64 },
    /// Two or more, sorted and merged (overlapping or adjacent ones become one).
    Parts(Vec<(u64, u64)>),
    /// None of them is inside the file: `416`.
    Unsatisfiable,
}

/// Interprets a `Range` header of several ranges (RFC 9110 §14.2) against `len` bytes, with
/// the rules against range amplification: at most [`MAX_RANGES`] ranges, and what they ask
/// for (before merging) at most the file's length, else the whole file. A malformed range
/// anywhere makes the header unusable (the whole file); a range starting past the end is
/// dropped (and all of them dropped is `416`).
pub(crate) fn parse_ranges(header: Option<&[u8]>, len: u64) -> Several {
    let Some(set) = range_set(header) else {
        return Several::Whole;
    };
    let specs: Vec<&str> = set.split(',').map(ows).filter(|s| !s.is_empty()).collect();
    if specs.len() < 2 || specs.len() > MAX_RANGES {
        return Several::Whole;
    }
    let mut ranges = Vec::with_capacity(specs.len());
    let mut asked: u64 = 0;
    for spec in specs {
        match one_range(spec, len) {
            Spec::Range { start, end } => {
                asked = asked.saturating_add(end - start + 1);
                ranges.push((start, end));
            }
            Spec::Outside => {}
            Spec::Malformed => return Several::Whole,
        }
    }
    if asked > len {
        return Several::Whole;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    match merged.as_slice() {
        [] => Several::Unsatisfiable,
        [(start, end)] => Several::One {
            start: *start,
            end: *end,
        },
        _ => Several::Parts(merged),
    }
}

/// The outcome of a `Range` header for a representation of a given length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeSpec {
    /// No usable range (absent, malformed, another unit, several ranges): `200` with it all.
    Full,
    /// `206` with bytes `start..=end`; `start <= end < len`.
    Partial { start: u64, end: u64 },
    /// `416` with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Interprets a `Range` header (RFC 9110 §14.2) against a representation of `len` bytes.
///
/// Only the `bytes` unit (case-insensitively) and a single range are honoured: `a-b`, `a-`
/// and the suffix form `-n`. A last position past the end is clamped. A first position at or
/// past the end, a zero suffix, or any range of an empty file is [`RangeSpec::Unsatisfiable`].
/// Anything malformed, and any multi-range request, is [`RangeSpec::Full`]: several ranges
/// are [`parse_ranges`]'s, which `decide` asks next. Spaces and tabs around `=`, `-` and `,`
/// are tolerated, as are empty list elements.
pub(crate) fn parse_range(header: Option<&[u8]>, len: u64) -> RangeSpec {
    let Some(set) = range_set(header) else {
        return RangeSpec::Full;
    };
    let mut specs = set.split(',').map(ows).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeSpec::Full;
    };
    match one_range(spec, len) {
        Spec::Range { start, end } => RangeSpec::Partial { start, end },
        Spec::Outside => RangeSpec::Unsatisfiable,
        Spec::Malformed => RangeSpec::Full,
    }
}

/// The range set of a `bytes` `Range` header (what follows `bytes=`), if it is one.
fn range_set(header: Option<&[u8]>) -> Option<&str> {
    let value = header.and_then(|h| str::from_utf8(h).ok())?;
    let (unit, set) = value.split_once('=')?;
    ows(unit).eq_ignore_ascii_case("bytes").then_some(set)
}

/// One range-spec of a range set, against `len` bytes.
enum Spec {
    /// Bytes `start..=end`, inside the file (a last position past the end clamped).
    Range { start: u64, end: u64 },
    /// Well-formed, but nothing of it is inside the file (a first position at or past the
    /// end, a zero suffix, any range of an empty file).
    Outside,
    /// Not a range-spec.
    Malformed,
}

/// `a-b`, `a-` or the suffix form `-n`.
fn one_range(spec: &str, len: u64) -> Spec {
    let Some((first, last)) = spec.split_once('-') else {
        return Spec::Malformed;
    };
    let (first, last) = (ows(first), ows(last));
    if first.is_empty() {
        // Suffix range: the last `n` bytes.
        let Some(n) = position(last) else {
            return Spec::Malformed;
        };
        return match len.checked_sub(1) {
            Some(end) if n > 0 => Spec::Range {
                start: len.saturating_sub(n),
                end,
            },
            _ => Spec::Outside,
        };
    }
    let Some(start) = position(first) else {
        return Spec::Malformed;
    };
    let end = if last.is_empty() {
        None
    } else {
        match position(last) {
            Some(end) if end >= start => Some(end),
            // Not a number, or last < first: an invalid range-spec.
            _ => return Spec::Malformed,
        }
    };
    match len.checked_sub(1) {
        Some(last_byte) if start <= last_byte => Spec::Range {
            start,
            end: end.map_or(last_byte, |end| end.min(last_byte)),
        },
        _ => Spec::Outside,
    }
}

/// A `1*DIGIT` byte position; values beyond `u64` saturate (they are past any end anyway).
/// `str::parse` is not used because it accepts a leading `+`.
fn position(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// `s` without the optional whitespace (`OWS`: spaces and tabs) around it.
fn ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// A strong entity tag for a file: `"<len>-<mtime in ns>-<inode>"`, all in lowercase hex,
/// quotes included. It changes whenever the file is replaced or modified (within the
/// file system's timestamp resolution); an unknown or pre-1970 mtime counts as 0.
pub(crate) fn etag(meta: &Metadata) -> String {
    let (len, nanos) = tag_parts(meta);
    format!("\"{len:x}-{nanos:x}\"")
}

/// What an entity tag is made of: length and modification time only, as nginx does. The
/// inode number would tell every client which file system object it is (a fingerprint
/// scanners flag) and would change the tag when a deployment copies identical files.
fn tag_parts(meta: &Metadata) -> (u64, u128) {
    let nanos = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (meta.len(), nanos)
}

/// Whether a request's preconditions fail, so it must get `412 Precondition Failed`
/// (RFC 9110 §13.2.2, steps 1 and 2).
///
/// `If-Match` decides when present: `*` matches (the file exists), otherwise one of its tags
/// must strongly match `etag` (a weak tag never does); a malformed field matches nothing.
/// Otherwise `If-Unmodified-Since`, when it is a valid HTTP-date, fails when the
/// modification time (truncated to whole seconds) is later than the date; an invalid date is
/// ignored.
fn precondition_failed(
    if_match: Option<&[u8]>,
    if_unmodified_since: Option<&[u8]>,
    etag: &str,
    mtime: SystemTime,
) -> bool {
    if let Some(field) = if_match {
        let Ok(field) = str::from_utf8(field) else {
            return true;
        };
        if ows(field) == "*" {
            return false;
        }
        let strong = !etag.starts_with("W/");
        let matched = entity_tags(field).is_some_and(|tags| {
            tags.iter()
                .any(|&(weak, tag)| strong && !weak && tag == etag)
        });
        return !matched;
    }
    http_date(if_unmodified_since).is_some_and(|date| whole_seconds(mtime) > date)
}

/// A date field's value as a time, `None` when absent or not a valid HTTP-date (which the
/// conditional fields then ignore).
fn http_date(field: Option<&[u8]>) -> Option<SystemTime> {
    let field = str::from_utf8(field?).ok()?;
    httpdate::parse_http_date(ows(field)).ok()
}

/// Whether a `GET`/`HEAD` should be answered `304 Not Modified` (RFC 9110 §13.1.2, §13.1.3,
/// §13.2.2).
///
/// When `If-None-Match` is present it decides alone: `*` matches, otherwise any tag of the
/// list that weakly matches `etag` (`W/"x"` matches `"x"`); a malformed field matches nothing.
/// Otherwise `If-Modified-Since`, when it is a valid HTTP-date, holds when the modification
/// time, truncated to whole seconds as `Last-Modified` is, is not later than the date; an
/// invalid date is ignored, and so is a date later than `now` (§13.1.3: such a date is
/// invalid; honouring it would let a client with a fast clock cache a file forever).
fn not_modified(
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
    etag: &str,
    mtime: SystemTime,
    now: SystemTime,
) -> bool {
    if let Some(field) = if_none_match {
        let Ok(field) = str::from_utf8(field) else {
            return false;
        };
        if ows(field) == "*" {
            return true;
        }
        let ours = opaque(etag);
        return entity_tags(field).is_some_and(|tags| tags.iter().any(|&(_, tag)| tag == ours));
    }
    http_date(if_modified_since).is_some_and(|date| date <= now && whole_seconds(mtime) <= date)
}

/// Whether a `Range` may be honoured given `If-Range` (RFC 9110 §13.1.5).
///
/// Absent: yes. An entity tag: only if it strongly matches `etag` (a weak tag never does). An
/// HTTP-date: only if it is exactly the modification time truncated to seconds. Anything else:
/// no, and the whole representation is sent.
fn if_range_allows(if_range: Option<&[u8]>, etag: &str, mtime: SystemTime) -> bool {
    let Some(field) = if_range else {
        return true;
    };
    let Ok(field) = str::from_utf8(field) else {
        return false;
    };
    let field = ows(field);
    if field.starts_with("W/") {
        return false;
    }
    if field.starts_with('"') {
        return !etag.starts_with("W/")
            && matches!(entity_tags(field).as_deref(), Some([(false, tag)]) if *tag == etag);
    }
    httpdate::parse_http_date(field).is_ok_and(|date| whole_seconds(mtime) == date)
}

/// The opaque part of an entity tag (with its quotes), without a `W/` prefix.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// Parses `#entity-tag` (RFC 9110 §8.8.3) into `(weak, opaque-tag)` pairs, the opaque tag
/// with its quotes. Empty list elements are skipped; `None` if anything is malformed.
fn entity_tags(field: &str) -> Option<Vec<(bool, &str)>> {
    let mut tags = Vec::new();
    let mut rest = field;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, tag) = match rest.strip_prefix("W/") {
            Some(tag) => (true, tag),
            None => (false, rest),
        };
        let inner = tag.strip_prefix('"')?;
        let close = inner.find('"')?;
        // etagc = %x21 / %x23-7E / obs-text: no controls, spaces or DEL inside.
        let body = inner.get(..close)?;
        if body.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return None;
        }
        tags.push((weak, tag.get(..close + 2)?));
        rest = inner.get(close + 1..)?.trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
}

/// `t` truncated to whole seconds, the precision of HTTP-dates.
fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH
            .checked_add(Duration::from_secs(d.as_secs()))
            .unwrap_or(t),
        Err(_) => t,
    }
}

/// The `Content-Type` for a file, guessed from its extension.
///
/// Textual types (`text/*`, JavaScript, JSON, XML and their `+json`/`+xml` structured
/// suffixes such as `image/svg+xml`) get `; charset=utf-8`; unknown extensions are
/// `application/octet-stream`, so browsers download rather than sniff them.
pub(crate) fn content_type(path: &Path) -> String {
    // The table's own text (lowercase `type/subtype`), not a parsed `Mime`: nothing to
    // allocate but the answer.
    let Some(essence) = mime_guess::from_path(path).first_raw() else {
        return "application/octet-stream".to_owned();
    };
    let textual = essence.starts_with("text/")
        || matches!(
            essence,
            "application/javascript"
                | "application/ecmascript"
                | "application/x-javascript"
                | "application/json"
                | "application/xml"
                | "application/xhtml+xml"
        )
        || essence.ends_with("+xml")
        || essence.ends_with("+json");
    if textual {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use proptest::prelude::*;

    fn file(len: u64, mtime: SystemTime) -> Representation {
        Representation {
            len,
            etag: "\"a-b\"".to_owned(),
            last_modified: httpdate::fmt_http_date(mtime),
            content_type: "text/plain; charset=utf-8".to_owned(),
            mtime,
        }
    }

    #[test]
    fn one_decision_in_the_order_of_rfc_9110() {
        let mtime = at(1_700_000_000);
        let now = at(1_800_000_000);
        let f = file(10, mtime);
        let date = httpdate::fmt_http_date(mtime);
        let earlier = httpdate::fmt_http_date(at(1_600_000_000));
        let decide = |c: Conditions<'_>| decide(&c, &f, now);
        let none = Conditions::default();
        assert_eq!(decide(none), Decision::Whole);
        let range = Conditions {
            range: Some(b"bytes=2-4"),
            ..none
        };
        assert_eq!(decide(range), Decision::Part { start: 2, end: 4 });
        assert_eq!(
            decide(Conditions {
                range: Some(b"bytes=10-"),
                ..none
            }),
            Decision::Unsatisfiable
        );
        // If-Match decides over If-Unmodified-Since, and a failure over everything after.
        let failing = Conditions {
            if_match: Some(b"\"other\""),
            if_unmodified_since: Some(date.as_bytes()),
            if_none_match: Some(b"\"a-b\""),
            ..range
        };
        assert_eq!(decide(failing), Decision::PreconditionFailed);
        let matching = Conditions {
            if_match: Some(b"\"a-b\""),
            if_unmodified_since: Some(earlier.as_bytes()),
            ..range
        };
        assert_eq!(decide(matching), Decision::Part { start: 2, end: 4 });
        assert_eq!(
            decide(Conditions {
                if_unmodified_since: Some(earlier.as_bytes()),
                ..range
            }),
            Decision::PreconditionFailed
        );
        // If-None-Match decides over If-Modified-Since, and a match wins over Range.
        assert_eq!(
            decide(Conditions {
                if_none_match: Some(b"W/\"a-b\""),
                if_modified_since: Some(earlier.as_bytes()),
                ..range
            }),
            Decision::NotModified
        );
        assert_eq!(
            decide(Conditions {
                if_none_match: Some(b"\"other\""),
                if_modified_since: Some(date.as_bytes()),
                ..range
            }),
            Decision::Part { start: 2, end: 4 }
        );
        assert_eq!(
            decide(Conditions {
                if_modified_since: Some(date.as_bytes()),
                ..range
            }),
            Decision::NotModified
        );
        // If-Range: a stale validator sends the whole file, even for an unsatisfiable range.
        assert_eq!(
            decide(Conditions {
                if_range: Some(b"\"other\""),
                range: Some(b"bytes=10-"),
                ..none
            }),
            Decision::Whole
        );
        assert_eq!(
            decide(Conditions {
                if_range: Some(date.as_bytes()),
                ..range
            }),
            Decision::Part { start: 2, end: 4 }
        );
    }

    #[test]
    fn a_sibling_is_tagged_as_tag_for_marks_its_own_tag() {
        use crate::http::compress::{Encoding, tag_for};
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("app.js.br");
        fs::write(&path, b"\x0b\x02\x80").unwrap();
        let meta = fs::metadata(&path).unwrap();
        for encoding in Encoding::ALL {
            let r = Representation::sibling(&meta, "text/javascript".into(), encoding.extension());
            assert_eq!(r.etag, tag_for(&etag(&meta), encoding));
            assert_eq!((r.len, r.content_type.as_str()), (3, "text/javascript"));
            assert_eq!(
                r.last_modified,
                Representation::of(&meta, &path).last_modified
            );
        }
    }

    #[test]
    fn a_representation_describes_the_file_and_its_name() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("page.html");
        fs::write(&path, "<p>hi</p>").unwrap();
        let meta = fs::metadata(&path).unwrap();
        let r = Representation::of(&meta, Path::new("page.html"));
        assert_eq!(r.len, 9);
        assert_eq!(r.etag, etag(&meta));
        assert_eq!(r.content_type, "text/html; charset=utf-8");
        assert_eq!(
            httpdate::parse_http_date(&r.last_modified).unwrap(),
            whole_seconds(meta.modified().unwrap())
        );
    }

    #[test]
    fn several_ranges_merge_and_are_bounded() {
        let r = |h: &str, len| parse_ranges(Some(h.as_bytes()), len);
        assert_eq!(
            r("bytes=0-9,20-29", 100),
            Several::Parts(vec![(0, 9), (20, 29)])
        );
        // Sorted, overlapping and adjacent ones merged.
        assert_eq!(
            r("bytes=50-59, 0-4, 5-9, 3-6", 100),
            Several::Parts(vec![(0, 9), (50, 59)])
        );
        assert_eq!(r("bytes=0-9,5-14", 100), Several::One { start: 0, end: 14 });
        // Suffixes and open ends.
        assert_eq!(
            r("bytes=-10,0-0", 100),
            Several::Parts(vec![(0, 0), (90, 99)])
        );
        assert_eq!(
            r("bytes=0-0,98-", 100),
            Several::Parts(vec![(0, 0), (98, 99)])
        );
        // Past the end: dropped; all of them: 416.
        assert_eq!(
            r("bytes=0-1,500-600", 100),
            Several::One { start: 0, end: 1 }
        );
        assert_eq!(r("bytes=200-300,400-", 100), Several::Unsatisfiable);
        // Amplification: more than 16, or more than the file in all.
        let seventeen = (0..17)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(r(&format!("bytes={seventeen}"), 100), Several::Whole);
        let sixteen = (0..16)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect::<Vec<_>>()
            .join(",");
        assert!(matches!(r(&format!("bytes={sixteen}"), 100), Several::Parts(p) if p.len() == 16));
        assert_eq!(r("bytes=0-99,0-99", 100), Several::Whole);
        assert_eq!(r("bytes=0-60,-50", 100), Several::Whole);
        // Malformed anywhere: the whole file.
        assert_eq!(r("bytes=0-9,x-1", 100), Several::Whole);
        assert_eq!(r("bytes=9-0,1-2", 100), Several::Whole);
        assert_eq!(r("items=0-1,2-3", 100), Several::Whole);
        assert_eq!(
            r("bytes=0-9", 100),
            Several::Whole,
            "one range is not several"
        );
    }

    #[test]
    fn ranges() {
        use RangeSpec::{Full, Partial, Unsatisfiable as Unsat};
        let p = |start, end| Partial { start, end };
        let cases: &[(Option<&str>, u64, RangeSpec)] = &[
            (None, 10, Full),
            (Some("bytes=0-0"), 10, p(0, 0)),
            (Some("bytes=0-4"), 10, p(0, 4)),
            (Some("bytes=2-"), 10, p(2, 9)),
            (Some("bytes=9-"), 10, p(9, 9)),
            (Some("bytes=-1"), 10, p(9, 9)),
            (Some("bytes=-3"), 10, p(7, 9)),
            (Some("bytes=-10"), 10, p(0, 9)),
            (Some("bytes=-99"), 10, p(0, 9)),
            (Some("bytes=0-99999"), 10, p(0, 9)),
            (Some("bytes=3-3"), 10, p(3, 3)),
            (Some("bytes=0-99999999999999999999999"), 10, p(0, 9)),
            (Some("bytes=-99999999999999999999999"), 10, p(0, 9)),
            (Some("bytes=99999999999999999999999-"), 10, Unsat),
            (Some("BYTES=1-2"), 10, p(1, 2)),
            (Some("bytes = 1 - 2"), 10, p(1, 2)),
            (Some("bytes=\t1-2\t"), 10, p(1, 2)),
            (Some("bytes=1-2,"), 10, p(1, 2)),
            (Some("bytes=, 1-2"), 10, p(1, 2)),
            (Some("bytes=5-"), 5, Unsat),
            (Some("bytes=5-9"), 5, Unsat),
            (Some("bytes=10-20"), 5, Unsat),
            (Some("bytes=-0"), 5, Unsat),
            (Some("bytes=0-0"), 0, Unsat),
            (Some("bytes=0-"), 0, Unsat),
            (Some("bytes=-1"), 0, Unsat),
            (Some("bytes=1-2,4-5"), 10, Full),
            (Some("bytes=1-2, 4-5"), 10, Full),
            (Some("bytes=0-0,-1"), 10, Full),
            (Some("items=0-1"), 10, Full),
            (Some("bytes 0-1"), 10, Full),
            (Some("bytes=2-1"), 10, Full),
            (Some("bytes=-"), 10, Full),
            (Some("bytes="), 10, Full),
            (Some("bytes=,"), 10, Full),
            (Some(""), 10, Full),
            (Some("bytes=a-b"), 10, Full),
            (Some("bytes=+1-2"), 10, Full),
            (Some("bytes=1-+2"), 10, Full),
            (Some("bytes=-+2"), 10, Full),
            (Some("bytes=0x1-2"), 10, Full),
            (Some("bytes=1"), 10, Full),
            (Some("bytes=1-2-3"), 10, Full),
            (Some("bytes=1 2-3"), 10, Full),
            (Some("bytes=١-٢"), 10, Full),
            (Some("bytes==1-2"), 10, Full),
        ];
        for (header, len, expected) in cases {
            assert_eq!(
                parse_range(header.map(str::as_bytes), *len),
                *expected,
                "{header:?} len {len}"
            );
        }
        assert_eq!(parse_range(Some(b"bytes=0-\xff"), 10), Full);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1000,
            failure_persistence: None,
            // ChaCha is slow unoptimized; the tests need variety, not cryptography.
            rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
            ..ProptestConfig::default()
        })]

        #[test]
        fn partial_ranges_are_in_bounds(header in "[bytes=0-9, -]{0,16}", len in 0u64..20) {
            if let RangeSpec::Partial { start, end } = parse_range(Some(header.as_bytes()), len) {
                prop_assert!(start <= end && end < len, "{header:?} {len}");
            }
        }

        /// Several ranges: sorted, apart (merged), inside the file, at most 16, and never
        /// more bytes than the file.
        #[test]
        fn several_ranges_are_bounded(header in "bytes=[0-9, -]{0,40}", len in 0u64..50) {
            if let Several::Parts(parts) = parse_ranges(Some(header.as_bytes()), len) {
                prop_assert!(parts.len() >= 2 && parts.len() <= MAX_RANGES, "{header:?}");
                let total: u64 = parts.iter().map(|(s, e)| e - s + 1).sum();
                prop_assert!(total <= len, "{header:?} {len}");
                for pair in parts.windows(2) {
                    prop_assert!(pair[0].1 + 1 < pair[1].0, "{header:?}: {parts:?}");
                }
                for &(start, end) in &parts {
                    prop_assert!(start <= end && end < len, "{header:?} {len}");
                }
            }
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn etag_shape() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("b.txt");
        fs::write(&file, "b").unwrap();
        let meta = fs::metadata(&file).unwrap();
        let tag = etag(&meta);
        assert!(tag.starts_with("\"1-") && tag.ends_with('"'), "{tag}");
        let inner = &tag[1..tag.len() - 1];
        let parts: Vec<&str> = inner.split('-').collect();
        // Length and modification time; no inode number (issue 9: a fingerprint).
        assert_eq!(parts.len(), 2, "{tag}");
        assert!(parts.iter().all(|p| u128::from_str_radix(p, 16).is_ok()));
        let ino = std::os::unix::fs::MetadataExt::ino(&meta);
        assert!(!parts.contains(&format!("{ino:x}").as_str()), "{tag}");
        assert_eq!(etag(&meta), tag);
        // A change of content changes the tag.
        fs::write(&file, "bb").unwrap();
        assert_ne!(etag(&fs::metadata(&file).unwrap()), tag);
    }

    #[test]
    fn conditionals() {
        let tag = "\"a-b-c\"";
        let mtime = at(1_700_000_000) + Duration::from_millis(750);
        let date = httpdate::fmt_http_date(at(1_700_000_000));
        let before = httpdate::fmt_http_date(at(1_699_999_999));
        let after = httpdate::fmt_http_date(at(1_700_000_001));
        let rfc850 = "Tuesday, 14-Nov-23 22:13:20 GMT"; // 1_700_000_000
        let asctime = "Tue Nov 14 22:13:20 2023";
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            (None, None, false),
            (Some(tag), None, true),
            (Some("W/\"a-b-c\""), None, true),
            (Some("\"x\", \"a-b-c\""), None, true),
            (Some("\"x\",W/\"a-b-c\""), None, true),
            (Some(" ,\"x\" , \"a-b-c\" ,"), None, true),
            (Some("*"), None, true),
            (Some(" * "), None, true),
            (Some("\"x\""), None, false),
            (Some("\"a-b-c"), None, false),
            (Some("a-b-c"), None, false),
            (Some("\"a-b-c\"x"), None, false),
            (Some("\"x\" \"a-b-c\""), None, false),
            (Some("w/\"a-b-c\""), None, false),
            (Some(""), None, false),
            // If-None-Match decides alone, even when it does not match.
            (Some("\"x\""), Some(&date), false),
            (Some(tag), Some(&before), true),
            (None, Some(&date), true),
            (None, Some(&after), true),
            (None, Some(&before), false),
            (None, Some(rfc850), true),
            (None, Some(asctime), true),
            (None, Some("yesterday"), false),
            (None, Some(""), false),
        ];
        for (inm, ims, expected) in cases {
            assert_eq!(
                not_modified(
                    inm.map(str::as_bytes),
                    ims.map(str::as_bytes),
                    tag,
                    mtime,
                    SystemTime::now()
                ),
                *expected,
                "{inm:?} {ims:?}"
            );
        }
        let now = SystemTime::now();
        assert!(!not_modified(Some(b"\"\xff\""), None, tag, mtime, now));
        assert!(not_modified(
            Some(b"W/\"a-b-c\""),
            None,
            "W/\"a-b-c\"",
            mtime,
            now
        ));
        // A date later than now is invalid (RFC 9110 §13.1.3): ignored, whatever the file.
        let future = httpdate::fmt_http_date(at(1_700_000_100));
        assert!(!not_modified(
            None,
            Some(future.as_bytes()),
            tag,
            mtime,
            at(1_700_000_050)
        ));
        assert!(not_modified(
            None,
            Some(future.as_bytes()),
            tag,
            mtime,
            at(1_700_000_200)
        ));
    }

    #[test]
    fn preconditions() {
        let tag = "\"a-b\"";
        let mtime = at(1_700_000_000) + Duration::from_millis(750);
        let date = httpdate::fmt_http_date(at(1_700_000_000));
        let before = httpdate::fmt_http_date(at(1_699_999_999));
        let after = httpdate::fmt_http_date(at(1_700_000_001));
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            (None, None, false),
            (Some("*"), None, false),
            (Some(tag), None, false),
            (Some("\"x\", \"a-b\""), None, false),
            (Some("\"x\""), None, true),
            // If-Match uses the strong comparison: a weak tag never matches.
            (Some("W/\"a-b\""), None, true),
            (Some("garbage"), None, true),
            // If-Match decides alone.
            (Some(tag), Some(&before), false),
            (None, Some(&date), false),
            (None, Some(&after), false),
            (None, Some(&before), true),
            (None, Some("not a date"), false),
        ];
        for (im, ius, expected) in cases {
            assert_eq!(
                precondition_failed(im.map(str::as_bytes), ius.map(str::as_bytes), tag, mtime),
                *expected,
                "{im:?} {ius:?}"
            );
        }
    }

    #[test]
    fn if_range() {
        let tag = "\"a-b-c\"";
        let mtime = at(1_700_000_000) + Duration::from_millis(750);
        let date = httpdate::fmt_http_date(at(1_700_000_000));
        let before = httpdate::fmt_http_date(at(1_699_999_999));
        let after = httpdate::fmt_http_date(at(1_700_000_001));
        let cases: &[(Option<&str>, bool)] = &[
            (None, true),
            (Some(tag), true),
            (Some(" \"a-b-c\" "), true),
            (Some("W/\"a-b-c\""), false),
            (Some("\"x\""), false),
            (Some("\"a-b-c\", \"x\""), false),
            (Some("\"a-b-c"), false),
            (Some(&date), true),
            (Some(&before), false),
            (Some(&after), false),
            (Some("*"), false),
            (Some("garbage"), false),
            (Some(""), false),
        ];
        for (field, expected) in cases {
            assert_eq!(
                if_range_allows(field.map(str::as_bytes), tag, mtime),
                *expected,
                "{field:?}"
            );
        }
        // A weak validator of ours never allows a range either.
        assert!(!if_range_allows(Some(b"W/\"x\""), "W/\"x\"", mtime));
        assert!(!if_range_allows(Some(b"\"x\""), "W/\"x\"", mtime));
        assert!(!if_range_allows(Some(b"\xff"), tag, mtime));
    }

    #[test]
    fn content_types() {
        let cases = [
            ("index.html", "text/html; charset=utf-8"),
            ("notes.txt", "text/plain; charset=utf-8"),
            ("style.CSS", "text/css; charset=utf-8"),
            ("data.json", "application/json; charset=utf-8"),
            ("logo.svg", "image/svg+xml; charset=utf-8"),
            ("photo.png", "image/png"),
            ("photo.jpeg", "image/jpeg"),
            ("archive.tar.gz", "application/gzip"),
            ("doc.pdf", "application/pdf"),
            ("clip.mp4", "video/mp4"),
            ("font.woff2", "font/woff2"),
            ("Makefile", "application/octet-stream"),
            ("weird.zzzunknown", "application/octet-stream"),
            (".hidden", "application/octet-stream"),
        ];
        for (name, expected) in cases {
            assert_eq!(content_type(Path::new(name)), expected, "{name}");
        }
        let js = content_type(Path::new("app.js"));
        assert!(js.ends_with("javascript; charset=utf-8"), "{js}");
    }
}
