//! A streaming `multipart/form-data` reader (RFC 7578) over any `Read`: part heads parsed and
//! bounded, part bodies handed out as they arrive, never a whole part in memory.
//!
//! Why our own: `multer`, the usual crate, is async-only (a `Stream` of bytes), and the
//! blocking crates are unmaintained or buffer whole parts. The format is small: a delimiter
//! `CRLF--BOUNDARY` before each part, a head of fields like an HTTP head, the last delimiter
//! followed by `--`. The reader keeps at most one read's worth of bytes plus a delimiter's
//! length, and bounds every head (8 KiB, 32 fields) and the preamble (64 KiB). It is fuzzed by a
//! property test below (any split of the input gives the same parts; any bytes give parts or
//! an error, never a panic).

use std::io::{self, Read};

/// The most bytes of one part's head.
const MAX_PART_HEAD: usize = 8 * 1024;
/// The most fields in one part's head.
const MAX_PART_FIELDS: usize = 32;
/// The most bytes before the first delimiter.
const MAX_PREAMBLE: usize = 64 * 1024;
/// Bytes asked for per read.
const READ: usize = 64 * 1024;

/// The head of one part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartHead {
    /// The form field's `name`.
    pub(crate) name: Option<String>,
    /// The `filename`, as sent (bytes: browsers send UTF-8; a path may come from old ones).
    pub(crate) filename: Option<Vec<u8>>,
}

/// The boundary of a `multipart/form-data` `Content-Type`, if it is one.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    for param in params {
        let (name, value) = param.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            // RFC 2046: 1 to 70 characters, not ending in a space.
            let ok = !value.is_empty()
                && value.len() <= 70
                && !value.ends_with(' ')
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b));
            return ok.then(|| value.to_owned());
        }
    }
    None
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed multipart body: {what}"),
    )
}

enum State {
    /// Before the first delimiter.
    Preamble,
    /// Inside a part's body.
    Data,
    /// Just after a delimiter: a head, or the end.
    Delimited,
    /// The closing delimiter was read.
    Done,
}

/// Reads the parts of a multipart body from `R`.
pub(crate) struct Multipart<R> {
    source: R,
    /// `CRLF--BOUNDARY`.
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    at: usize,
    eof: bool,
    state: State,
}

impl<R: Read> Multipart<R> {
    pub(crate) fn new(source: R, boundary: &str) -> Multipart<R> {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Multipart {
            source,
            delimiter,
            // The first delimiter need not follow a line end: pretend one came.
            buf: b"\r\n".to_vec(),
            at: 0,
            eof: false,
            state: State::Preamble,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// Reads more into the buffer; false at the end of the source.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + READ, 0);
        let n = loop {
            match self.source.read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        let n = n.inspect_err(|_| self.buf.truncate(start))?;
        self.buf.truncate(start + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    fn find(&self, needle: &[u8]) -> Option<usize> {
        self.pending()
            .windows(needle.len())
            .position(|w| w == needle)
    }

    /// The next part's head, or `None` after the last part. Whatever is left of the current
    /// part's body is skipped.
    pub(crate) fn next_part(&mut self) -> io::Result<Option<PartHead>> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Preamble => {
                    if let Some(p) = self.find(&self.delimiter.clone()) {
                        self.at += p + self.delimiter.len();
                        self.state = State::Delimited;
                    } else {
                        if self.pending().len() > MAX_PREAMBLE {
                            return Err(malformed("no boundary where one was announced"));
                        }
                        if !self.fill()? {
                            return Err(malformed("no boundary where one was announced"));
                        }
                    }
                }
                State::Data => {
                    let mut sink = [0u8; 16 * 1024];
                    while self.read_data(&mut sink)? > 0 {}
                }
                State::Delimited => return self.head(),
            }
        }
    }

    /// After a delimiter: `--` (the end) or optional spaces, CRLF, and a head.
    fn head(&mut self) -> io::Result<Option<PartHead>> {
        while self.pending().len() < 2 {
            if !self.fill()? {
                return Err(malformed("it ends after a boundary"));
            }
        }
        if self.pending().starts_with(b"--") {
            self.state = State::Done;
            return Ok(None);
        }
        let end = loop {
            if let Some(p) = self.find(b"\r\n\r\n") {
                break p;
            }
            if self.pending().len() > MAX_PART_HEAD {
                return Err(malformed("a part's head is too large"));
            }
            if !self.fill()? {
                return Err(malformed("it ends in a part's head"));
            }
        };
        if end > MAX_PART_HEAD {
            return Err(malformed("a part's head is too large"));
        }
        let raw = self.pending()[..end].to_vec();
        self.at += end + 4;
        // The rest of the delimiter line: transport padding (spaces, tabs) before its CRLF.
        let mut lines = raw.split(|&b| b == b'\n');
        let first = lines.next().unwrap_or(&[]);
        if !first.iter().all(|&b| b == b' ' || b == b'\t' || b == b'\r') {
            return Err(malformed("text after a boundary"));
        }
        let mut head = PartHead {
            name: None,
            filename: None,
        };
        let mut fields = 0;
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            fields += 1;
            if fields > MAX_PART_FIELDS {
                return Err(malformed("too many fields in a part's head"));
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| malformed("a part's head field without a colon"))?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.eq_ignore_ascii_case(b"content-disposition") {
                disposition(value, &mut head);
            }
        }
        self.state = State::Data;
        Ok(Some(head))
    }

    /// Reads the current part's body into `out`: `Ok(0)` at its end.
    pub(crate) fn read_data(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !matches!(self.state, State::Data) || out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(p) = self.find(&self.delimiter.clone()) {
                if p == 0 {
                    self.at += self.delimiter.len();
                    self.state = State::Delimited;
                    return Ok(0);
                }
                let n = p.min(out.len());
                out[..n].copy_from_slice(&self.pending()[..n]);
                self.at += n;
                return Ok(n);
            }
            // Everything but a possible start of the delimiter is the part's.
            let safe = self
                .pending()
                .len()
                .saturating_sub(self.delimiter.len() - 1);
            if safe > 0 {
                let n = safe.min(out.len());
                out[..n].copy_from_slice(&self.pending()[..n]);
                self.at += n;
                return Ok(n);
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the multipart body ended inside a part",
                ));
            }
        }
    }
}

/// `form-data; name="field"; filename="a.txt"` into `head`.
fn disposition(value: &[u8], head: &mut PartHead) {
    let mut rest = value;
    // The disposition type, then `; param=value` pairs.
    let Some(semi) = rest.iter().position(|&b| b == b';') else {
        return;
    };
    rest = &rest[semi + 1..];
    while !rest.is_empty() {
        let trimmed = trim_start(rest);
        let Some(eq) = trimmed.iter().position(|&b| b == b'=') else {
            return;
        };
        let name = trim_end(&trimmed[..eq]).to_ascii_lowercase();
        let after = trim_start(&trimmed[eq + 1..]);
        let (value, next) = if after.first() == Some(&b'"') {
            let mut value = Vec::new();
            let mut i = 1;
            while i < after.len() && after[i] != b'"' {
                if after[i] == b'\\' && i + 1 < after.len() && after[i + 1] == b'"' {
                    i += 1;
                }
                value.push(after[i]);
                i += 1;
            }
            let rest = after.get(i + 1..).unwrap_or(&[]);
            let next = rest
                .iter()
                .position(|&b| b == b';')
                .map_or(&[][..], |p| &rest[p + 1..]);
            (value, next)
        } else {
            let end = after.iter().position(|&b| b == b';').unwrap_or(after.len());
            (
                trim_end(&after[..end]).to_vec(),
                after.get(end + 1..).unwrap_or(&[]),
            )
        };
        match name.as_slice() {
            b"name" => head.name = Some(String::from_utf8_lossy(&value).into_owned()),
            b"filename" => head.filename = Some(value),
            _ => {}
        }
        rest = next;
    }
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_whitespace())
        .count();
    &b[..b.len() - n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads a source in pieces of the given sizes (cycled).
    struct Pieces<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        i: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.i % self.sizes.len()].max(1);
            self.i += 1;
            let n = size.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn all_parts<R: Read>(m: &mut Multipart<R>) -> io::Result<Vec<(PartHead, Vec<u8>)>> {
        let mut parts = Vec::new();
        while let Some(head) = m.next_part()? {
            let mut body = Vec::new();
            let mut buf = [0u8; 7];
            loop {
                let n = m.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
            parts.push((head, body));
        }
        Ok(parts)
    }

    fn body(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = b"preamble to ignore\r\n".to_vec();
        for (name, filename, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\nepilogue").as_bytes());
        out
    }

    #[test]
    fn parts_come_out_byte_exact() {
        let tricky: &[u8] = b"\r\n--not-the-boundary\r\n--bound\r\n-x";
        let data = body(
            "bound-ary",
            &[
                ("file", Some("a.txt"), b"first file\n"),
                ("note", None, b"a field"),
                ("file", Some("b \\\"q\\\".bin"), tricky),
                ("file", Some(""), b""),
            ],
        );
        let mut m = Multipart::new(&data[..], "bound-ary");
        let parts = all_parts(&mut m).unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].0.filename.as_deref(), Some(&b"a.txt"[..]));
        assert_eq!(parts[0].1, b"first file\n");
        assert_eq!(parts[1].0.name.as_deref(), Some("note"));
        assert_eq!(parts[1].0.filename, None);
        assert_eq!(parts[2].0.filename.as_deref(), Some(&b"b \"q\".bin"[..]));
        assert_eq!(parts[2].1, tricky);
        assert_eq!(parts[3].0.filename.as_deref(), Some(&b""[..]));
        assert_eq!(m.next_part().unwrap(), None);
    }

    #[test]
    fn boundaries_from_content_types() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"").as_deref(),
            Some("a b:c")
        );
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/mixed; boundary=abc",
            "text/plain; boundary=abc",
            "multipart/form-data; boundary=a\"b",
        ] {
            assert_eq!(boundary(bad), None, "{bad}");
        }
        let long = format!("multipart/form-data; boundary={}", "x".repeat(71));
        assert_eq!(boundary(&long), None);
    }

    #[test]
    fn truncated_and_malformed_bodies_are_errors() {
        let data = body("b", &[("file", Some("a"), b"0123456789")]);
        for cut in [0, 10, 25, 60, data.len() - 12] {
            let mut m = Multipart::new(&data[..cut], "b");
            assert!(all_parts(&mut m).is_err(), "cut at {cut}");
        }
        let mut m = Multipart::new(&b"no boundary at all"[..], "b");
        assert!(m.next_part().is_err());
        let huge_head = format!("--b\r\nX: {}\r\n\r\n", "y".repeat(MAX_PART_HEAD));
        let mut m = Multipart::new(huge_head.as_bytes(), "b");
        assert!(m.next_part().is_err());
        let many = format!("--b\r\n{}\r\n", "X: y\r\n".repeat(MAX_PART_FIELDS + 1));
        let mut m = Multipart::new(many.as_bytes(), "b");
        assert!(m.next_part().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any split of the input into reads gives the same parts.
        #[test]
        fn any_split_gives_the_same_parts(
            a in proptest::collection::vec(any::<u8>(), 0..300),
            b in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'x')], 0..100),
            sizes in proptest::collection::vec(1usize..40, 1..6),
        ) {
            let data = body("xyz", &[("f", Some("one"), &a), ("g", None, &b)]);
            let whole = all_parts(&mut Multipart::new(&data[..], "xyz")).unwrap();
            prop_assert_eq!(&whole[0].1, &a);
            prop_assert_eq!(&whole[1].1, &b);
            let split = all_parts(&mut Multipart::new(Pieces { data: &data, sizes, i: 0 }, "xyz")).unwrap();
            prop_assert_eq!(whole, split);
        }

        /// Arbitrary bytes give parts or an error, never a panic or a loop.
        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'b'), Just(b':'), any::<u8>()], 0..400),
        ) {
            let mut m = Multipart::new(&data[..], "b");
            let _ = all_parts(&mut m);
        }
    }
}
