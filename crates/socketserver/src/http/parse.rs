//! Sans-IO parsing of HTTP/1.x requests: the request head, the body framing it implies, and
//! chunked bodies.
//!
//! Nothing here touches a socket. The connection loop hands in the bytes it has so far and gets
//! back either a verdict or "need more bytes". Three entry points:
//!
//! - [`parse_head`]: the request line and header section, through the blank line that ends them.
//! - [`framing`]: how the body that follows a parsed head is delimited, with the
//!   request-smuggling defences of RFC 9112 §6.
//! - [`ChunkedDecoder`]: an incremental decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! # The head (RFC 9112 §2 to §5)
//!
//! ```text
//! HTTP-message   = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]   ; §2.1
//! request-line   = method SP request-target SP HTTP-version                   ; §3
//! method         = token                                                       ; §3.1
//! HTTP-version   = HTTP-name "/" DIGIT "." DIGIT                               ; §2.3
//! HTTP-name      = %s"HTTP"
//! field-line     = field-name ":" OWS field-value OWS                          ; §5
//! ```
//!
//! The request line and field lines are tokenised by `httparse`; this module adds the limits
//! and turns `httparse`'s errors into [`HeadError`]s. What that means in detail:
//!
//! - Empty lines before the request line are skipped (§2.2 allows a server to ignore them).
//!   They count towards the head's length and [`HeadLimits::max_head`], not towards
//!   [`HeadLimits::max_request_line`].
//! - A bare LF is accepted as a line terminator in the head, as §2.2 permits; a CR that is not
//!   followed by LF is an error.
//! - Exactly one SP separates the three parts of the request line. A request line without a
//!   version (the HTTP/0.9 form `GET /`) is malformed (400).
//! - A well-formed `HTTP-version` other than `HTTP/1.0` and `HTTP/1.1` (`HTTP/2.0`, `HTTP/0.9`,
//!   `HTTP/1.2`, ...) is [`HeadError::UnsupportedVersion`] (505). `httparse` reports every bad
//!   version alike, so the version field is re-examined here to tell the two apart; anything
//!   that is not `HTTP/` DIGIT `.` DIGIT is malformed (400). RFC 9110 §6.2 suggests treating
//!   `HTTP/1.2` as `HTTP/1.1`; this parser answers 505 instead, as `httparse` does not accept it.
//! - Obsolete line folding (a field line starting with SP or HTAB, §5.2) is rejected (400), as is
//!   whitespace between the request line and the first field (§2.2) and whitespace between a
//!   field name and its colon (§5.1).
//! - Field values keep their bytes (obs-text included) with surrounding whitespace removed.
//!
//! # Body framing and request smuggling (RFC 9112 §6)
//!
//! A request whose body length two parties could disagree on is refused, and the connection
//! must then be closed, since the end of the body, and so the start of the next request, is
//! unknown. [`framing`] applies, in order:
//!
//! 1. `Transfer-Encoding` together with `Content-Length`: 400 (§6.1 allows a server to reject
//!    this, and it is the classic smuggling vector).
//! 2. `Transfer-Encoding` in an HTTP/1.0 request: 400 (§6.1: the message is faulty).
//! 3. `Transfer-Encoding` whose final coding is not `chunked`: 400 (§6.3 rule 4, a MUST), as is
//!    `chunked` applied twice (§6.1 forbids it) and an empty coding list.
//! 4. Any coding other than `chunked` before a final `chunked` (`gzip, chunked`): 501, since
//!    only `chunked` is implemented (§6.1: "SHOULD respond with 501").
//! 5. `Content-Length` (RFC 9110 §8.6: `1*DIGIT`): every field and every element of a
//!    comma-separated list must be a non-empty run of ASCII digits fitting a `u64`, and all must
//!    be the same number; anything else (signs, inner spaces, hex, overflow, empty elements,
//!    differing values) is 400 (§6.3 rule 5). Identical duplicates are accepted.
//!
//! Field names are matched case-insensitively; several `Transfer-Encoding` fields are read as one
//! list, in order (RFC 9110 §5.3).
//!
//! # Chunked bodies (RFC 9112 §7.1)
//!
//! ```text
//! chunked-body    = *chunk last-chunk trailer-section CRLF
//! chunk           = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size      = 1*HEXDIG
//! last-chunk      = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext       = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! trailer-section = *( field-line CRLF )
//! ```
//!
//! Unlike the head, the chunked framing requires CRLF everywhere: a bare LF there is an error,
//! because lenient chunk parsing is a known way to desynchronise a proxy and its origin.
//! Extensions are skipped (any HTAB, SP, VCHAR or obs-text up to the CR); trailer fields are
//! checked for a token name and a colon, then discarded. The size line (digits and extensions,
//! without the CRLF) is limited to [`MAX_CHUNK_SIZE_LINE`] bytes and the trailer section
//! (everything after the last-chunk line, through the final CRLF) to [`MAX_TRAILER_SECTION`].

use super::StatusCode;

/// Limits the head parser enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLimits {
    /// The longest request line accepted, in bytes, not counting its CRLF (414 beyond).
    pub(crate) max_request_line: usize,
    /// The longest head accepted, in bytes, from the first byte of `buf` through the blank line
    /// that ends it, leading empty lines included (431 beyond).
    pub(crate) max_head: usize,
    /// The most header fields accepted (431 beyond).
    pub(crate) max_headers: usize,
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// The method token, as sent (methods are case-sensitive).
    pub(crate) method: String,
    /// The request-target, as sent (not decoded).
    pub(crate) target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor_version: u8,
    /// Header names as sent (compare case-insensitively), raw values.
    pub(crate) headers: Fields,
    /// Bytes the head took in the buffer, including the blank line.
    pub(crate) len: usize,
}

/// The outcome of [`parse_head`] when the bytes so far are acceptable.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    /// The head is not complete yet: read more and call again with the longer buffer.
    Partial,
    /// The head is complete; the body (or the next request) starts at `head.len`.
    Complete(Head),
}

/// Why a request head (or its body framing, or a chunked body) is refused. Every error means the
/// connection cannot be trusted to stay in sync: answer with [`HeadError::status`] and close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// The bytes do not follow the grammar (400). The reason is for logs, not for clients.
    Malformed(&'static str),
    /// The request line is longer than [`HeadLimits::max_request_line`] (414).
    RequestLineTooLong,
    /// The head is longer than [`HeadLimits::max_head`] (431).
    HeadTooLarge,
    /// The head has more than [`HeadLimits::max_headers`] fields (431).
    TooManyHeaders,
    /// A well-formed HTTP version other than 1.0 and 1.1 (505).
    UnsupportedVersion,
    /// The body length cannot be determined safely (400); see the module docs.
    BadFraming(&'static str),
    /// A transfer coding other than a lone `chunked` (501).
    UnsupportedTransferEncoding,
}

impl HeadError {
    /// The response status for this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            HeadError::Malformed(_) | HeadError::BadFraming(_) => StatusCode::BAD_REQUEST,
            HeadError::RequestLineTooLong => StatusCode::URI_TOO_LONG,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// How a request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`: the request has no body.
    None,
    /// A body of exactly this many bytes.
    Length(u64),
    /// A chunked body: decode it with [`ChunkedDecoder`].
    Chunked,
}

/// The smallest number of bytes a header field line can take (`x:` and a bare LF).
const MIN_FIELD_LINE: usize = 3;

/// Parses the request head at the start of `buf`, the bytes received so far on the connection.
///
/// Returns [`Parse::Partial`] while the head is incomplete and within the limits, and
/// [`Parse::Complete`] once the blank line that ends it has arrived; bytes after `head.len` are
/// not examined. Limits are checked as early as possible: a request line or head that has
/// already outgrown its limit is refused without waiting for its end.
///
/// Limit errors are reported only when the bytes are otherwise acceptable so far; a syntax
/// error that `httparse` finds first (binary garbage, for instance) is [`HeadError::Malformed`].
pub(crate) fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<Parse, HeadError> {
    let line = RequestLine::find(buf);
    // `httparse` wants one slot per field. A head of `n` bytes cannot hold more than
    // `n / MIN_FIELD_LINE` fields, so a larger array would never be used: capping it keeps a huge
    // `max_headers` from turning into a huge allocation.
    let bound = buf.len().min(limits.max_head) / MIN_FIELD_LINE + 1;
    let slots = limits.max_headers.min(bound);
    // Most heads have a handful of fields: their slots live on the stack, and only a head
    // with more than that is parsed again with as many as it may have.
    let mut stack = [httparse::EMPTY_HEADER; STACK_SLOTS];
    let room = slots.min(STACK_SLOTS);
    if let Some(verdict) = parse_in(buf, limits, &line, &mut stack[..room], slots) {
        return verdict;
    }
    let mut headers = vec![httparse::EMPTY_HEADER; slots];
    parse_in(buf, limits, &line, &mut headers, slots).unwrap_or(Err(HeadError::TooManyHeaders))
}

/// Header slots [`parse_head`] keeps on the stack.
const STACK_SLOTS: usize = 24;

/// [`parse_head`] with these slots; `None` when they ran out but `slots` would be allowed.
fn parse_in<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
    line: &RequestLine<'_>,
    headers: &mut [httparse::Header<'b>],
    slots: usize,
) -> Option<Result<Parse, HeadError>> {
    let given = headers.len();
    let mut req = httparse::Request::new(headers);
    Some(match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if let Err(e) = line.check(limits) {
                return Some(Err(e));
            }
            if len > limits.max_head {
                return Some(Err(HeadError::HeadTooLarge));
            }
            let (Some(method), Some(target), Some(minor_version)) =
                (req.method, req.path, req.version)
            else {
                return Some(Err(HeadError::Malformed("incomplete request line")));
            };
            Ok(Parse::Complete(Head {
                method: method.to_owned(),
                target: target.to_owned(),
                minor_version,
                headers: Fields::parsed(req.headers),
                len,
            }))
        }
        Ok(httparse::Status::Partial) => partial(buf, line, limits),
        Err(httparse::Error::Version) => match line.version() {
            Version::Unsupported => Err(HeadError::UnsupportedVersion),
            Version::Pending => partial(buf, line, limits),
            Version::Invalid => Err(HeadError::Malformed("invalid HTTP version")),
        },
        // Out of the stack's slots: try again with all that are allowed.
        Err(httparse::Error::TooManyHeaders) if given < slots => return None,
        // Out of slots because of the cap, not `max_headers`: the head is longer than
        // `max_head` (see `bound`).
        Err(httparse::Error::TooManyHeaders) if slots < limits.max_headers => {
            Err(HeadError::HeadTooLarge)
        }
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Token) if line.lacks_version() => Err(HeadError::Malformed(
            "request line has no HTTP version (HTTP/0.9 is not supported)",
        )),
        Err(httparse::Error::Token) => {
            Err(HeadError::Malformed("invalid method or request-target"))
        }
        Err(httparse::Error::HeaderName) => Err(HeadError::Malformed(
            "invalid header field name, or obsolete line folding",
        )),
        Err(httparse::Error::HeaderValue) => {
            Err(HeadError::Malformed("invalid header field value"))
        }
        Err(httparse::Error::NewLine) => Err(HeadError::Malformed("invalid line ending")),
        Err(httparse::Error::Status) => Err(HeadError::Malformed("malformed request line")),
    })
}

/// The verdict for an incomplete head: [`Parse::Partial`] unless a limit is already exceeded.
fn partial(buf: &[u8], line: &RequestLine<'_>, limits: &HeadLimits) -> Result<Parse, HeadError> {
    line.check(limits)?;
    if buf.len() > limits.max_head {
        return Err(HeadError::HeadTooLarge);
    }
    Ok(Parse::Partial)
}

/// The request line as far as it has arrived, without leading empty lines or its line end.
struct RequestLine<'a> {
    /// The line's bytes. Without a line end yet, a final CR is left out too, since it may be the
    /// start of the CRLF: the length is then a lower bound of the final length.
    bytes: &'a [u8],
    /// Whether the LF ending the line has arrived.
    complete: bool,
    /// Whether the line has no LF yet but ends with a CR (left out of `bytes`).
    cr_pending: bool,
}

/// What the version field of a request line that `httparse` refused turns out to be.
enum Version {
    /// A well-formed `HTTP-version` that is not 1.0 or 1.1.
    Unsupported,
    /// Could still become a well-formed version: more bytes are needed.
    Pending,
    /// Not an `HTTP-version`.
    Invalid,
}

impl<'a> RequestLine<'a> {
    /// Finds the request line in `buf`, skipping empty lines the way `httparse` does.
    fn find(buf: &'a [u8]) -> RequestLine<'a> {
        let mut start = 0;
        loop {
            match (buf.get(start), buf.get(start + 1)) {
                (Some(b'\r'), Some(b'\n')) => start += 2,
                (Some(b'\n'), _) => start += 1,
                _ => break,
            }
        }
        let rest = buf.get(start..).unwrap_or_default();
        let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => (rest.get(..lf).unwrap_or_default(), true),
            None => (rest, false),
        };
        let bytes = line.strip_suffix(b"\r").unwrap_or(line);
        let cr_pending = !complete && bytes.len() < line.len();
        RequestLine {
            bytes,
            complete,
            cr_pending,
        }
    }

    /// [`HeadError::RequestLineTooLong`] if the line is (or is sure to become) too long.
    fn check(&self, limits: &HeadLimits) -> Result<(), HeadError> {
        if self.bytes.len() > limits.max_request_line {
            return Err(HeadError::RequestLineTooLong);
        }
        Ok(())
    }

    /// Whether the line is complete with only method and target: the HTTP/0.9 form.
    fn lacks_version(&self) -> bool {
        self.complete && self.bytes.iter().filter(|&&b| b == b' ').count() == 1
    }

    /// Classifies the version field (the part after the second SP), for a line whose method and
    /// target `httparse` accepted but whose version it did not.
    fn version(&self) -> Version {
        let Some(version) = self.bytes.splitn(3, |&b| b == b' ').nth(2) else {
            return Version::Invalid;
        };
        const PATTERN: &[u8; 8] = b"HTTP/#.#";
        let fits = version.len() <= PATTERN.len()
            && version.iter().zip(PATTERN).all(|(&b, &p)| match p {
                b'#' => b.is_ascii_digit(),
                _ => b == p,
            });
        let full = version.len() == PATTERN.len();
        match (fits, self.complete) {
            (true, true) if full => Version::Unsupported,
            // A pending CR can only end the line, so the version must be whole already.
            (true, false) if full || !self.cr_pending => Version::Pending,
            _ => Version::Invalid,
        }
    }
}

/// A request's header fields, in the order received: every name and value in one buffer,
/// so a head costs two allocations however many fields it has, not two per field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    bytes: Vec<u8>,
    /// Per field, where its name and then its value end in `bytes` (each starts where the
    /// one before ended).
    ends: Vec<(usize, usize)>,
}

impl Fields {
    /// The fields `httparse` found.
    fn parsed(headers: &[httparse::Header<'_>]) -> Fields {
        let size = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
        let mut fields = Fields {
            bytes: Vec::with_capacity(size),
            ends: Vec::with_capacity(headers.len()),
        };
        for h in headers {
            fields.push(h.name, h.value);
        }
        fields
    }

    fn push(&mut self, name: &str, value: &[u8]) {
        self.bytes.extend_from_slice(name.as_bytes());
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((name_end, self.bytes.len()));
    }

    /// Every field's name and value, as bytes.
    fn raw(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, end)| {
            let name = &self.bytes[start..name_end];
            start = end;
            (name, &self.bytes[name_end..end])
        })
    }

    /// Every field: its name as sent, its raw value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        // Names went in as `&str` (tokens, checked by httparse): always UTF-8.
        self.raw()
            .map(|(name, value)| (std::str::from_utf8(name).unwrap_or_default(), value))
    }

    /// The first value of the field `name` (case-insensitive). Compares bytes: a request
    /// asks for a dozen fields, and a UTF-8 check of every name each time adds up.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.raw()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// How many fields there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}

impl<'a> FromIterator<(&'a str, &'a [u8])> for Fields {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a [u8])>>(fields: I) -> Fields {
        let mut all = Fields::default();
        for (name, value) in fields {
            all.push(name, value);
        }
        all
    }
}

/// Determines how the body of the request with this head is delimited, refusing ambiguous
/// framing (see the module docs for the rules and their sources).
///
/// Any error means the end of the body is unknown: the connection must be closed after the
/// error response.
pub(crate) fn framing(head: &Head) -> Result<Framing, HeadError> {
    let has = |name: &str| head.headers.get(name).is_some();
    let chunked = has("transfer-encoding");
    let length = has("content-length");
    if chunked {
        if length {
            return Err(HeadError::BadFraming(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if head.minor_version == 0 {
            return Err(HeadError::BadFraming(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        transfer_codings(head)
    } else if length {
        content_length(head).map(Framing::Length)
    } else {
        Ok(Framing::None)
    }
}

/// Whether the `Connection` fields, read together as one list (RFC 9110 §7.6.1, §5.3: several
/// fields are one comma-separated list), name `option` (case-insensitively).
pub(crate) fn connection_has(head: &Head, option: &str) -> bool {
    list_elements(head, "connection").any(|element| element.eq_ignore_ascii_case(option.as_bytes()))
}

/// Checks the `Host` field (RFC 9112 §3.2): an HTTP/1.1 request must have exactly one, and
/// any request's `Host` must be a valid `uri-host [ ":" port ]` (RFC 3986 §3.2.2); a server
/// MUST answer 400 otherwise. The reason is returned for the error body.
pub(crate) fn check_host(head: &Head) -> Result<(), &'static str> {
    let mut hosts = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"));
    let Some((_, value)) = hosts.next() else {
        return if head.minor_version == 0 {
            Ok(())
        } else {
            Err("an HTTP/1.1 request needs a Host field")
        };
    };
    if hosts.next().is_some() {
        return Err("the request has more than one Host field");
    }
    if valid_host(trim_ows(value)) {
        Ok(())
    } else {
        Err("the Host field is not a valid host name or address")
    }
}

/// `uri-host [ ":" port ]`: an IP literal in brackets, or a reg-name (which covers IPv4
/// addresses) of unreserved, percent-encoded and sub-delimiter bytes, then digits after a colon.
fn valid_host(value: &[u8]) -> bool {
    let (host_ok, rest) = if let Some(inner) = value.strip_prefix(b"[") {
        let Some(close) = inner.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &inner[..close];
        let ok = !literal.is_empty()
            && literal.iter().all(|&b| {
                b.is_ascii_hexdigit() || b":.vV".contains(&b) || is_sub_delim(b) || is_unreserved(b)
            });
        (ok, &inner[close + 1..])
    } else {
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        (valid_reg_name(&value[..end]), &value[end..])
    };
    host_ok
        && match rest.split_first() {
            None => true,
            Some((b':', port)) => port.iter().all(u8::is_ascii_digit) && port.len() <= 5,
            Some(_) => false,
        }
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`.
fn valid_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = name.get(i) {
        if b == b'%' {
            let hex = name.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if is_unreserved(b) || is_sub_delim(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn is_sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// The values of the fields named `name` (case-insensitively), split into list elements with
/// surrounding optional whitespace removed (RFC 9110 §5.6.1). Empty elements are kept.
fn list_elements<'h>(head: &'h Head, name: &'h str) -> impl Iterator<Item = &'h [u8]> + 'h {
    head.headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .map(trim_ows)
}

/// `bytes` without leading and trailing SP and HTAB.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// The framing a `Transfer-Encoding` list allows: only a lone `chunked` is accepted.
fn transfer_codings(head: &Head) -> Result<Framing, HeadError> {
    let mut codings = 0usize;
    let mut chunked = 0usize;
    let mut last_is_chunked = false;
    // Empty list elements are ignored, as RFC 9110 §5.6.1.2 asks of recipients.
    for coding in list_elements(head, "transfer-encoding").filter(|c| !c.is_empty()) {
        codings += 1;
        last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
        chunked += usize::from(last_is_chunked);
    }
    if codings == 0 {
        Err(HeadError::BadFraming("empty Transfer-Encoding"))
    } else if !last_is_chunked {
        Err(HeadError::BadFraming(
            "chunked is not the final transfer coding",
        ))
    } else if chunked > 1 {
        Err(HeadError::BadFraming("chunked applied more than once"))
    } else if codings > 1 {
        Err(HeadError::UnsupportedTransferEncoding)
    } else {
        Ok(Framing::Chunked)
    }
}

/// The body length from the `Content-Length` fields: all elements of all fields must be the same
/// decimal number.
fn content_length(head: &Head) -> Result<u64, HeadError> {
    let mut length = None;
    for element in list_elements(head, "content-length") {
        let value =
            parse_decimal(element).ok_or(HeadError::BadFraming("invalid Content-Length"))?;
        match length {
            Some(previous) if previous != value => {
                return Err(HeadError::BadFraming("conflicting Content-Length values"));
            }
            _ => length = Some(value),
        }
    }
    length.ok_or(HeadError::BadFraming("invalid Content-Length"))
}

/// `1*DIGIT` as a `u64`; `None` if empty, not all ASCII digits, or too large.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The longest chunk size line accepted: size and extensions, without the CRLF.
const MAX_CHUNK_SIZE_LINE: usize = 1024;

/// The largest trailer section accepted: every byte after the last-chunk line, through the CRLF
/// that ends the chunked body.
const MAX_TRAILER_SECTION: usize = 64 * 1024;

/// Where a [`ChunkedDecoder`] is in the chunked-body grammar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// In the hex digits of a chunk size (at the start of a chunk when no digit has come yet).
    #[default]
    Size,
    /// After the chunk size: optional whitespace before `;` or the CR.
    SizeSpace,
    /// In chunk extensions, up to the CR.
    Extension,
    /// After the CR ending a chunk size line.
    SizeLf,
    /// In chunk data.
    Data,
    /// After chunk data: its CR is due.
    DataCr,
    /// After the CR following chunk data.
    DataLf,
    /// At the start of a trailer field line, or of the empty line ending the body.
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value, up to the CR.
    TrailerValue,
    /// After the CR ending a trailer field line.
    TrailerLf,
    /// After the CR of the empty line ending the body.
    EndLf,
    /// The chunked body is complete.
    Done,
    /// An error was found; it is reported again on every call.
    Failed(&'static str),
}

/// An incremental decoder of one chunked request body (RFC 9112 §7.1).
///
/// Feed it the bytes after the head as they arrive, in slices split anywhere. It appends chunk
/// data to the output as soon as it sees it and stops right after the CRLF that ends the trailer
/// section, leaving any later bytes (a pipelined request) unconsumed.
#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    /// Where in the grammar the next byte falls.
    state: State,
    /// The chunk size read so far, in the size line; the data left, in the chunk data.
    size: u64,
    /// Bytes of the current size line so far, without its CRLF.
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub(crate) fn new() -> ChunkedDecoder {
        ChunkedDecoder::default()
    }

    /// Decodes as much of `input` as possible, appending chunk data to `out`.
    ///
    /// Returns how many bytes of `input` were used and whether the body is complete. Until it is
    /// complete, all of `input` is used; once it is, the bytes after its end are left alone and
    /// later calls use nothing. Errors are [`HeadError::Malformed`] (400): the body cannot be
    /// delimited any more and the connection must be closed. Data decoded in the call that finds
    /// an error is still appended to `out`; the error is returned again by every later call.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), HeadError> {
        let mut used = 0;
        loop {
            match self.state {
                State::Failed(reason) => return Err(HeadError::Malformed(reason)),
                State::Done => return Ok((used, true)),
                State::Data => {
                    let rest = input.get(used..).unwrap_or_default();
                    let take = usize::try_from(self.size).map_or(rest.len(), |n| n.min(rest.len()));
                    let data = rest.get(..take).unwrap_or_default();
                    if data.is_empty() {
                        return Ok((used, false));
                    }
                    out.extend_from_slice(data);
                    used += data.len();
                    self.size = self.size.saturating_sub(data.len() as u64);
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let Some(&byte) = input.get(used) else {
                        return Ok((used, false));
                    };
                    used += 1;
                    if let Err(reason) = self.step(byte) {
                        self.state = State::Failed(reason);
                    }
                }
            }
        }
    }

    /// Advances the state machine by one byte outside chunk data.
    fn step(&mut self, byte: u8) -> Result<(), &'static str> {
        self.state = match self.state {
            State::Size => match char::from(byte).to_digit(16) {
                Some(digit) => {
                    self.size_line_byte()?;
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|size| size.checked_add(u64::from(digit)))
                        .ok_or("chunk size overflows u64")?;
                    State::Size
                }
                // The first byte of a size line must be a digit.
                None if self.line_len == 0 => return Err("invalid chunk size"),
                None => match byte {
                    b'\r' => State::SizeLf,
                    b';' => self.size_line_byte().map(|()| State::Extension)?,
                    b' ' | b'\t' => self.size_line_byte().map(|()| State::SizeSpace)?,
                    _ => return Err("invalid chunk size"),
                },
            },
            // chunk-ext = *( BWS ";" BWS ext-name ... ) (RFC 9112 §7.1.1): whitespace after the
            // size may only come before an extension, never just before the CRLF.
            State::SizeSpace => match byte {
                b'\r' => return Err("whitespace after a chunk size"),
                b';' => self.size_line_byte().map(|()| State::Extension)?,
                b' ' | b'\t' => self.size_line_byte().map(|()| State::SizeSpace)?,
                _ => return Err("invalid chunk size line"),
            },
            State::Extension => match byte {
                b'\r' => State::SizeLf,
                _ if is_field_content(byte) => self.size_line_byte().map(|()| State::Extension)?,
                _ => return Err("invalid byte in chunk extension"),
            },
            State::SizeLf => match byte {
                b'\n' => {
                    self.line_len = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                _ => return Err("chunk size line not ended by CRLF"),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err("chunk data not followed by CRLF"),
            },
            State::DataLf => match byte {
                b'\n' => State::Size,
                _ => return Err("chunk data not followed by CRLF"),
            },
            State::TrailerStart => match byte {
                b'\r' => self.trailer_byte().map(|()| State::EndLf)?,
                _ if is_tchar(byte) => self.trailer_byte().map(|()| State::TrailerName)?,
                _ => return Err("invalid trailer field line"),
            },
            State::TrailerName => match byte {
                b':' => self.trailer_byte().map(|()| State::TrailerValue)?,
                _ if is_tchar(byte) => self.trailer_byte().map(|()| State::TrailerName)?,
                _ => return Err("invalid trailer field name"),
            },
            State::TrailerValue => match byte {
                b'\r' => self.trailer_byte().map(|()| State::TrailerLf)?,
                _ if is_field_content(byte) => self.trailer_byte().map(|()| State::TrailerValue)?,
                _ => return Err("invalid trailer field value"),
            },
            State::TrailerLf => match byte {
                b'\n' => self.trailer_byte().map(|()| State::TrailerStart)?,
                _ => return Err("trailer field line not ended by CRLF"),
            },
            State::EndLf => match byte {
                b'\n' => self.trailer_byte().map(|()| State::Done)?,
                _ => return Err("chunked body not ended by CRLF"),
            },
            // `decode` handles these without calling `step`.
            State::Data | State::Done | State::Failed(_) => self.state,
        };
        Ok(())
    }

    /// Counts one byte of a chunk size line against [`MAX_CHUNK_SIZE_LINE`].
    fn size_line_byte(&mut self) -> Result<(), &'static str> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_SIZE_LINE {
            return Err("chunk size line too long");
        }
        Ok(())
    }

    /// Counts one byte of the trailer section against [`MAX_TRAILER_SECTION`].
    fn trailer_byte(&mut self) -> Result<(), &'static str> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILER_SECTION {
            return Err("trailer section too large");
        }
        Ok(())
    }
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// HTAB, SP, VCHAR and obs-text: what may appear in a field value or a chunk extension.
fn is_field_content(byte: u8) -> bool {
    matches!(byte, b'\t' | b' '..=b'~' | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_request_line: 8192,
        max_head: 16384,
        max_headers: 100,
    };

    const SAMPLE: &[u8] =
        b"POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\
        X-Empty:\r\nX-Bytes: caf\xc3\xa9 \xff\t \r\n\r\n";

    fn head(buf: &[u8]) -> Head {
        match parse_head(buf, &LIMITS) {
            Ok(Parse::Complete(head)) => head,
            other => panic!(
                "{:?}: expected a complete head, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn pairs(fields: &Fields) -> Vec<(String, Vec<u8>)> {
        fields
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect()
    }

    fn head_with(minor_version: u8, headers: &[(&str, &[u8])]) -> Head {
        Head {
            method: "POST".into(),
            target: "/".into(),
            minor_version,
            headers: headers.iter().copied().collect(),
            len: 0,
        }
    }

    #[test]
    fn sample_head_fields() {
        let h = head(SAMPLE);
        assert_eq!(h.method, "POST");
        assert_eq!(h.target, "/upload?x=1");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.len, SAMPLE.len());
        let expected: Vec<(String, Vec<u8>)> = vec![
            ("Host".into(), b"example.com".to_vec()),
            ("Content-Length".into(), b"5".to_vec()),
            ("X-Empty".into(), b"".to_vec()),
            ("X-Bytes".into(), b"caf\xc3\xa9 \xff".to_vec()),
        ];
        assert_eq!(pairs(&h.headers), expected);
        assert_eq!(framing(&h), Ok(Framing::Length(5)));
    }

    #[test]
    fn every_split_point_of_sample() {
        let samples: &[&[u8]] = &[
            SAMPLE,
            b"GET / HTTP/1.0\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\nGET /a HTTP/1.1\nHost: a\nX: y\n\n",
        ];
        for sample in samples {
            for cut in 0..sample.len() {
                let prefix = sample.get(..cut).unwrap_or_default();
                assert_eq!(
                    parse_head(prefix, &LIMITS),
                    Ok(Parse::Partial),
                    "prefix {:?}",
                    String::from_utf8_lossy(prefix)
                );
            }
            let full = head(sample);
            assert_eq!(full.len, sample.len());
            // What follows the head (a body, the next request) is not part of it.
            for tail in [
                &b"hello"[..],
                b"GET / HTTP/1.1\r\n\r\n",
                b"\r\n",
                b"\x00\xff garbage",
            ] {
                let buf = [*sample, tail].concat();
                assert_eq!(head(&buf), full);
            }
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let h = head(b"\r\n\r\n\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.len),
            ("GET", "/", 23)
        );
        assert_eq!(parse_head(b"\r\n\r\n", &LIMITS), Ok(Parse::Partial));
        assert_eq!(parse_head(b"\r\n\r", &LIMITS), Ok(Parse::Partial));
        assert!(matches!(
            parse_head(b"\r\r\nGET / HTTP/1.1\r\n\r\n", &LIMITS),
            Err(HeadError::Malformed(_))
        ));
        // They do not count against the request line limit, but against the head limit.
        let limits = HeadLimits {
            max_request_line: 14,
            max_head: 20,
            max_headers: 10,
        };
        assert!(matches!(
            parse_head(b"\r\nGET / HTTP/1.1\r\n\r\n", &limits),
            Ok(Parse::Complete(_))
        ));
        assert_eq!(
            parse_head(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", &limits),
            Err(HeadError::HeadTooLarge)
        );
        assert_eq!(
            parse_head(&[b'\n'; 21], &limits),
            Err(HeadError::HeadTooLarge)
        );
    }

    #[test]
    fn bare_lf_is_accepted_in_the_head() {
        let h = head(b"GET / HTTP/1.1\nHost: a\r\nX: b\n\n");
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.len, 30);
    }

    #[test]
    fn versions() {
        assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").minor_version, 0);
        assert_eq!(head(b"GET / HTTP/1.1\r\n\r\n").minor_version, 1);
        let cases: &[(&[u8], Result<Parse, HeadError>)] = &[
            (
                b"GET / HTTP/2.0\r\n\r\n",
                Err(HeadError::UnsupportedVersion),
            ),
            (b"GET / HTTP/2.0\r\n", Err(HeadError::UnsupportedVersion)),
            (b"GET / HTTP/2.0\n", Err(HeadError::UnsupportedVersion)),
            (
                b"GET / HTTP/1.2\r\n\r\n",
                Err(HeadError::UnsupportedVersion),
            ),
            (
                b"GET / HTTP/0.9\r\n\r\n",
                Err(HeadError::UnsupportedVersion),
            ),
            (
                b"GET / HTTP/3.0\r\nHost: a\r\n\r\n",
                Err(HeadError::UnsupportedVersion),
            ),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Err(HeadError::UnsupportedVersion),
            ),
            // Not complete yet, but could still be a well-formed version.
            (b"GET / HTTP/2", Ok(Parse::Partial)),
            (b"GET / HTTP/2.", Ok(Parse::Partial)),
            (b"GET / HTTP/2.0", Ok(Parse::Partial)),
            (b"GET / HTTP/2.0\r", Ok(Parse::Partial)),
            (b"GET / HTTP/1.", Ok(Parse::Partial)),
            // Not versions at all.
            (
                b"GET / HTTP/2.0x",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / HTTP/2.0\r\r\n",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / HTTP/2\r",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / HTTP/1\r\n\r\n",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / HTTP/1.10\r\n\r\n",
                Err(HeadError::Malformed("invalid line ending")),
            ),
            (
                b"GET / HTTP/10.0\r\n\r\n",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / http/1.1\r\n\r\n",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / HTTPS/1.1\r\n\r\n",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / FOO\r\n\r\n",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / \r\n\r\n",
                Err(HeadError::Malformed("invalid HTTP version")),
            ),
            (
                b"GET / HTTP/1.1 \r\n\r\n",
                Err(HeadError::Malformed("invalid line ending")),
            ),
        ];
        for (buf, expected) in cases {
            assert_eq!(
                &parse_head(buf, &LIMITS),
                expected,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn malformed_heads() {
        let cases: &[&[u8]] = &[
            // HTTP/0.9 and other short request lines.
            b"GET /\r\n\r\n",
            b"GET /\r\n",
            b"GET\r\n\r\n",
            // Garbage: a TLS ClientHello, NUL, control bytes.
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\x00GET / HTTP/1.1\r\n\r\n",
            b"GET /a\x7fb HTTP/1.1\r\n\r\n",
            b"GET /a\tb HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b" GET / HTTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET /  HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\r\n\r\n",
            b"GET / HTTP/1.1\rX",
            // Obsolete line folding, and whitespace before the first field.
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n b\n\n",
            // Bad field names and values.
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX(y): a\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo-colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n\r\r\n",
        ];
        for buf in cases {
            let result = parse_head(buf, &LIMITS);
            assert!(
                matches!(result, Err(HeadError::Malformed(_))),
                "{:?}: {result:?}",
                String::from_utf8_lossy(buf)
            );
        }
        assert_eq!(
            parse_head(b"GET /\r\n\r\n", &LIMITS),
            Err(HeadError::Malformed(
                "request line has no HTTP version (HTTP/0.9 is not supported)"
            ))
        );
    }

    #[test]
    fn request_line_limit() {
        // "GET /" + padding + " HTTP/1.1" is exactly `n` bytes.
        let line = |n: usize| [&b"GET /"[..], &vec![b'a'; n - 14], b" HTTP/1.1"].concat();
        let limits = HeadLimits {
            max_request_line: 100,
            max_head: 1000,
            max_headers: 10,
        };
        let at = line(100);
        let over = line(101);
        let cases: Vec<(Vec<u8>, Result<Parse, HeadError>)> = vec![
            (
                [&at[..], b"\r\n\r\n"].concat(),
                Ok(Parse::Complete(Head {
                    method: "GET".into(),
                    target: String::from_utf8_lossy(at.get(4..91).unwrap_or_default()).into_owned(),
                    minor_version: 1,
                    headers: Fields::default(),
                    len: 104,
                })),
            ),
            ([&at[..], b"\r\n"].concat(), Ok(Parse::Partial)),
            ([&at[..], b"\r"].concat(), Ok(Parse::Partial)),
            (at.clone(), Ok(Parse::Partial)),
            (
                [&at[..], b"\n\n"].concat(),
                Ok(Parse::Complete(Head {
                    method: "GET".into(),
                    target: String::from_utf8_lossy(at.get(4..91).unwrap_or_default()).into_owned(),
                    minor_version: 1,
                    headers: Fields::default(),
                    len: 102,
                })),
            ),
            (
                [&over[..], b"\r\n\r\n"].concat(),
                Err(HeadError::RequestLineTooLong),
            ),
            (
                [&over[..], b"\r\nHost: a\r\n"].concat(),
                Err(HeadError::RequestLineTooLong),
            ),
            (
                [&over[..], b"\r\n"].concat(),
                Err(HeadError::RequestLineTooLong),
            ),
            (
                [&over[..], b"\r"].concat(),
                Err(HeadError::RequestLineTooLong),
            ),
            (over.clone(), Err(HeadError::RequestLineTooLong)),
            // No line end yet, and already too long, in the target.
            (
                [&b"GET /"[..], &[b'a'; 96]].concat(),
                Err(HeadError::RequestLineTooLong),
            ),
            ([&b"GET /"[..], &[b'a'; 95]].concat(), Ok(Parse::Partial)),
            // A CR inside the target is an error whatever the length.
            (
                [&b"GET /"[..], &[b'a'; 94], b"\r"].concat(),
                Err(HeadError::Malformed("invalid method or request-target")),
            ),
        ];
        for (buf, expected) in cases {
            assert_eq!(parse_head(&buf, &limits), expected, "{}", buf.len());
        }
        assert_eq!(HeadError::RequestLineTooLong.status().as_u16(), 414);
    }

    #[test]
    fn head_size_limit() {
        // Request line (16) + "X: " + padding + CRLF + CRLF, `n` bytes in all.
        let request = |n: usize| {
            [
                &b"GET / HTTP/1.1\r\nX: "[..],
                &vec![b'v'; n - 23],
                b"\r\n\r\n",
            ]
            .concat()
        };
        let limits = HeadLimits {
            max_request_line: 100,
            max_head: 200,
            max_headers: 10,
        };
        assert_eq!(head_len(&request(200), &limits), Ok(200));
        assert_eq!(
            parse_head(&request(201), &limits),
            Err(HeadError::HeadTooLarge)
        );
        let partial = request(300);
        assert_eq!(
            parse_head(partial.get(..200).unwrap_or_default(), &limits),
            Ok(Parse::Partial)
        );
        assert_eq!(
            parse_head(partial.get(..201).unwrap_or_default(), &limits),
            Err(HeadError::HeadTooLarge)
        );
        assert_eq!(HeadError::HeadTooLarge.status().as_u16(), 431);
    }

    fn head_len(buf: &[u8], limits: &HeadLimits) -> Result<usize, HeadError> {
        match parse_head(buf, limits)? {
            Parse::Complete(head) => Ok(head.len),
            Parse::Partial => Err(HeadError::Malformed("partial")),
        }
    }

    #[test]
    fn header_count_limit() {
        let request = |n: usize| {
            let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                buf.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
            }
            buf.extend_from_slice(b"\r\n");
            buf
        };
        for max in [0, 1, 5, 100] {
            let limits = HeadLimits {
                max_request_line: 100,
                max_head: 10_000,
                max_headers: max,
            };
            let at = request(max);
            assert_eq!(head_len(&at, &limits), Ok(at.len()), "max {max}");
            assert_eq!(
                parse_head(&request(max + 1), &limits),
                Err(HeadError::TooManyHeaders)
            );
            // The error does not wait for the end of the head.
            let over = request(max + 1);
            let cut = over.len() - 2;
            assert_eq!(
                parse_head(over.get(..cut).unwrap_or_default(), &limits),
                Err(HeadError::TooManyHeaders)
            );
        }
        assert_eq!(HeadError::TooManyHeaders.status().as_u16(), 431);
    }

    #[test]
    fn huge_header_limit_is_bounded_by_head_size() {
        let limits = HeadLimits {
            max_request_line: 100,
            max_head: 64,
            max_headers: usize::MAX,
        };
        assert_eq!(
            head_len(b"GET / HTTP/1.1\r\na:\r\nb:\r\n\r\n", &limits),
            Ok(26)
        );
        // Minimal fields: more of them than fit in `max_head` is a head that is too large.
        let mut many = b"GET / HTTP/1.1\n".to_vec();
        many.extend(b"a:\n".repeat(40));
        many.push(b'\n');
        assert_eq!(parse_head(&many, &limits), Err(HeadError::HeadTooLarge));
        let limits = HeadLimits {
            max_head: 1000,
            ..limits
        };
        assert_eq!(head_len(&many, &limits), Ok(many.len()));
        assert_eq!(head(&many).headers.len(), 40);
    }

    #[test]
    fn header_values_are_raw() {
        let h = head(b"GET / HTTP/1.1\r\nX-A:  \t spaced\tvalue \t \r\nx-b: \x80\xfe\r\ncontent-TYPE:a/b\r\n\r\n");
        let expected: Vec<(String, Vec<u8>)> = vec![
            ("X-A".into(), b"spaced\tvalue".to_vec()),
            ("x-b".into(), b"\x80\xfe".to_vec()),
            ("content-TYPE".into(), b"a/b".to_vec()),
        ];
        assert_eq!(pairs(&h.headers), expected);
        let h = head(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!((h.method.as_str(), h.target.as_str()), ("OPTIONS", "*"));
        let h = head(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
        assert_eq!(h.target, "example.com:443");
        let h = head("GET /caf\u{e9} HTTP/1.1\r\n\r\n".as_bytes());
        assert_eq!(h.target, "/caf\u{e9}");
    }

    #[test]
    fn statuses() {
        let cases = [
            (HeadError::Malformed("x"), 400),
            (HeadError::RequestLineTooLong, 414),
            (HeadError::HeadTooLarge, 431),
            (HeadError::TooManyHeaders, 431),
            (HeadError::UnsupportedVersion, 505),
            (HeadError::BadFraming("x"), 400),
            (HeadError::UnsupportedTransferEncoding, 501),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
    }

    #[test]
    fn framing_cases() {
        use Framing::{Chunked, Length};
        let te = "Transfer-Encoding";
        let cl = "Content-Length";
        type Case<'a> = (u8, &'a [(&'a str, &'a [u8])], Result<Framing, HeadError>);
        let bad = |reason: &'static str| Err(HeadError::BadFraming(reason));
        let cases: &[Case<'_>] = &[
            (1, &[], Ok(Framing::None)),
            (0, &[("Host", b"a")], Ok(Framing::None)),
            (1, &[(cl, b"0")], Ok(Length(0))),
            (1, &[(cl, b"5")], Ok(Length(5))),
            (0, &[(cl, b"5")], Ok(Length(5))),
            (1, &[("content-length", b"005")], Ok(Length(5))),
            (1, &[(cl, b"5, 5")], Ok(Length(5))),
            (1, &[(cl, b"5,5,\t5")], Ok(Length(5))),
            (1, &[(cl, b"5"), ("CONTENT-LENGTH", b"5")], Ok(Length(5))),
            (1, &[(cl, b" 5 ")], Ok(Length(5))),
            (1, &[(cl, b"18446744073709551615")], Ok(Length(u64::MAX))),
            (
                1,
                &[(cl, b"5, 6")],
                bad("conflicting Content-Length values"),
            ),
            (
                1,
                &[(cl, b"5"), (cl, b"6")],
                bad("conflicting Content-Length values"),
            ),
            (
                1,
                &[(cl, b"5"), ("Host", b"a"), (cl, b"0")],
                bad("conflicting Content-Length values"),
            ),
            (1, &[(cl, b"+5")], bad("invalid Content-Length")),
            (1, &[(cl, b"-5")], bad("invalid Content-Length")),
            (1, &[(cl, b"5 5")], bad("invalid Content-Length")),
            (1, &[(cl, b"\x0b5")], bad("invalid Content-Length")),
            (1, &[(cl, b"0x5")], bad("invalid Content-Length")),
            (1, &[(cl, b"5a")], bad("invalid Content-Length")),
            (1, &[(cl, b"1e3")], bad("invalid Content-Length")),
            (1, &[(cl, b"5.0")], bad("invalid Content-Length")),
            (1, &[(cl, b"\xd9\xa5")], bad("invalid Content-Length")),
            (1, &[(cl, b"")], bad("invalid Content-Length")),
            (1, &[(cl, b"5,")], bad("invalid Content-Length")),
            (1, &[(cl, b",")], bad("invalid Content-Length")),
            (
                1,
                &[(cl, b"18446744073709551616")],
                bad("invalid Content-Length"),
            ),
            (
                1,
                &[(cl, b"99999999999999999999999999")],
                bad("invalid Content-Length"),
            ),
            (1, &[(te, b"chunked")], Ok(Chunked)),
            (1, &[("transfer-encoding", b"CHUNKED")], Ok(Chunked)),
            (1, &[(te, b"Chunked")], Ok(Chunked)),
            (1, &[(te, b"chunked,")], Ok(Chunked)),
            (1, &[(te, b" , chunked")], Ok(Chunked)),
            (
                1,
                &[(te, b"chunked"), (cl, b"5")],
                bad("both Transfer-Encoding and Content-Length"),
            ),
            (
                1,
                &[(cl, b"0"), (te, b"chunked")],
                bad("both Transfer-Encoding and Content-Length"),
            ),
            (
                1,
                &[(cl, b"x"), (te, b"gzip")],
                bad("both Transfer-Encoding and Content-Length"),
            ),
            (
                0,
                &[(te, b"chunked")],
                bad("Transfer-Encoding in an HTTP/1.0 request"),
            ),
            (
                1,
                &[(te, b"gzip, chunked")],
                Err(HeadError::UnsupportedTransferEncoding),
            ),
            (
                1,
                &[(te, b"gzip"), (te, b"chunked")],
                Err(HeadError::UnsupportedTransferEncoding),
            ),
            (
                1,
                &[(te, b"identity, chunked")],
                Err(HeadError::UnsupportedTransferEncoding),
            ),
            (
                1,
                &[(te, b"chunked, gzip")],
                bad("chunked is not the final transfer coding"),
            ),
            (
                1,
                &[(te, b"chunked"), (te, b"gzip")],
                bad("chunked is not the final transfer coding"),
            ),
            (
                1,
                &[(te, b"gzip")],
                bad("chunked is not the final transfer coding"),
            ),
            (
                1,
                &[(te, b"identity")],
                bad("chunked is not the final transfer coding"),
            ),
            (
                1,
                &[(te, b"chunked;ext=1")],
                bad("chunked is not the final transfer coding"),
            ),
            (
                1,
                &[(te, b"chunked\x0b")],
                bad("chunked is not the final transfer coding"),
            ),
            (
                1,
                &[(te, b"chunk")],
                bad("chunked is not the final transfer coding"),
            ),
            (
                1,
                &[(te, b"\"chunked\"")],
                bad("chunked is not the final transfer coding"),
            ),
            (
                1,
                &[(te, b"chunked, chunked")],
                bad("chunked applied more than once"),
            ),
            (
                1,
                &[(te, b"chunked"), (te, b"chunked")],
                bad("chunked applied more than once"),
            ),
            (1, &[(te, b"")], bad("empty Transfer-Encoding")),
            (1, &[(te, b" , ")], bad("empty Transfer-Encoding")),
        ];
        for (minor, headers, expected) in cases {
            let h = head_with(*minor, headers);
            assert_eq!(&framing(&h), expected, "HTTP/1.{minor} {headers:?}");
        }
        assert_eq!(
            HeadError::UnsupportedTransferEncoding.status().as_u16(),
            501
        );
    }

    #[test]
    fn framing_from_parsed_heads() {
        let cases: &[(&[u8], Result<Framing, HeadError>)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length:   5\t\r\n\r\n",
                Ok(Framing::Length(5)),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Framing::Chunked),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(HeadError::BadFraming(
                    "both Transfer-Encoding and Content-Length",
                )),
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(HeadError::BadFraming(
                    "Transfer-Encoding in an HTTP/1.0 request",
                )),
            ),
        ];
        for (buf, expected) in cases {
            assert_eq!(&framing(&head(buf)), expected);
        }
        // The smuggling classic "Content-Length : 5" never gets as far as framing.
        assert!(matches!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n", &LIMITS),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(
                b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
                &LIMITS
            ),
            Err(HeadError::Malformed(_))
        ));
    }

    /// Decodes `input` in one call.
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), HeadError> {
        let mut out = Vec::new();
        let (used, done) = ChunkedDecoder::new().decode(input, &mut out)?;
        Ok((out, used, done))
    }

    /// Decodes `input` one byte per call, stopping when done.
    fn decode_bytewise(input: &[u8]) -> Result<(Vec<u8>, usize, bool), HeadError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut total = 0;
        for byte in input.chunks(1) {
            let (used, done) = decoder.decode(byte, &mut out)?;
            total += used;
            if done {
                assert_eq!(decoder.decode(byte, &mut out)?, (0, true));
                return Ok((out, total, true));
            }
            assert_eq!(used, 1);
        }
        Ok((out, total, false))
    }

    /// Valid chunked bodies: (input, decoded, bytes used, done).
    const CHUNKED: &[(&[u8], &[u8], usize, bool)] = &[
        (b"0\r\n\r\n", b"", 5, true),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 15, true),
        (
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"hello world",
            26,
            true,
        ),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 20, true),
        (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 20, true),
        (b"000005\r\nhello\r\n000\r\n\r\n", b"hello", 22, true),
        (b"1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n", b"\r\n", 17, true),
        // Extensions, with and without values, quoted, with whitespace around ";".
        (b"5;name=value\r\nhello\r\n0\r\n\r\n", b"hello", 26, true),
        (
            b"5;a;b=\"c;d\\\"\"\r\nhello\r\n0;last\r\n\r\n",
            b"hello",
            32,
            true,
        ),
        (b"5 ;a\r\nhello\r\n0\t; x = y\r\n\r\n", b"hello", 26, true),
        (b"5;\xff\r\nhello\r\n0\r\n\r\n", b"hello", 17, true),
        // Trailers are checked and dropped.
        (
            b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nY:\r\nZ: a \xff\tb\r\n\r\n",
            b"hello",
            39,
            true,
        ),
        // Pipelined bytes after the end are not used.
        (
            b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"hello",
            15,
            true,
        ),
        (b"0\r\n\r\n0\r\n\r\n", b"", 5, true),
        (b"0\r\nX: y\r\n\r\n\r\n", b"", 11, true),
        // Incomplete bodies: everything is used, data is returned as it comes.
        (b"", b"", 0, false),
        (b"5", b"", 1, false),
        (b"5\r\nhel", b"hel", 6, false),
        (b"5\r\nhello", b"hello", 8, false),
        (b"5\r\nhello\r", b"hello", 9, false),
        (b"5\r\nhello\r\n0\r\n", b"hello", 13, false),
        (b"5\r\nhello\r\n0\r\n\r", b"hello", 14, false),
        (b"5\r\nhello\r\n0\r\nX: y\r\n", b"hello", 19, false),
        (b"ffffffffffffffff\r\nab", b"ab", 20, false),
        (b"0000000000000000000000000000001\r\n", b"", 33, false),
    ];

    #[test]
    fn chunked_valid() {
        for &(input, decoded, used, done) in CHUNKED {
            let expected = Ok((decoded.to_vec(), used, done));
            let name = String::from_utf8_lossy(input);
            assert_eq!(decode_all(input), expected, "whole: {name:?}");
            assert_eq!(decode_bytewise(input), expected, "bytewise: {name:?}");
        }
    }

    #[test]
    fn chunked_invalid() {
        let cases: &[(&[u8], &str)] = &[
            (b"\r\n", "invalid chunk size"),
            (b";a\r\n", "invalid chunk size"),
            (b" 5\r\n", "invalid chunk size"),
            (b"g\r\n", "invalid chunk size"),
            (b"5x\r\nhello", "invalid chunk size"),
            (b"-5\r\n", "invalid chunk size"),
            (b"+5\r\n", "invalid chunk size"),
            (b"0x5\r\n", "invalid chunk size"),
            (b"5\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b"5 5\r\n", "invalid chunk size line"),
            (b"5 \n", "invalid chunk size line"),
            // Whitespace may only precede an extension (issue 9: "5 " was accepted).
            (b"5 \r\nhello\r\n0\r\n\r\n", "whitespace after a chunk size"),
            (b"5\t\r\nhello", "whitespace after a chunk size"),
            (b"0  \r\n\r\n", "whitespace after a chunk size"),
            (b"5\r\r\n", "chunk size line not ended by CRLF"),
            (b"5;a\nhello", "invalid byte in chunk extension"),
            (b"5;a\x00\r\n", "invalid byte in chunk extension"),
            (b"5;a\x7f\r\n", "invalid byte in chunk extension"),
            (b"5;a\r\r\n", "chunk size line not ended by CRLF"),
            (b"10000000000000000\r\n", "chunk size overflows u64"),
            (b"fffffffffffffffff", "chunk size overflows u64"),
            (b"5\r\nhelloX\r\n", "chunk data not followed by CRLF"),
            (b"5\r\nhello\n0\r\n\r\n", "chunk data not followed by CRLF"),
            (b"5\r\nhello\r0\r\n\r\n", "chunk data not followed by CRLF"),
            (b"5\r\nhello\r\n\r\n", "invalid chunk size"),
            (b"0\r\n\n", "invalid trailer field line"),
            (b"0\r\n\r\r", "chunked body not ended by CRLF"),
            (b"0\r\n\rX", "chunked body not ended by CRLF"),
            (b"0\r\nX: y\r\n y\r\n\r\n", "invalid trailer field line"),
            (b"0\r\n X: y\r\n\r\n", "invalid trailer field line"),
            (b"0\r\nX : y\r\n\r\n", "invalid trailer field name"),
            (b"0\r\nXy\r\n\r\n", "invalid trailer field name"),
            (b"0\r\nX: y\n\r\n", "invalid trailer field value"),
            (b"0\r\nX: y\x00\r\n\r\n", "invalid trailer field value"),
            (b"0\r\nX: y\r\r\n", "trailer field line not ended by CRLF"),
        ];
        for &(input, reason) in cases {
            let expected = Err(HeadError::Malformed(reason));
            let name = String::from_utf8_lossy(input);
            assert_eq!(decode_all(input), expected, "whole: {name:?}");
            assert_eq!(decode_bytewise(input), expected, "bytewise: {name:?}");
        }
    }

    #[test]
    fn chunk_size_line_limit() {
        // "1;" + padding: the size line is `n` bytes without its CRLF.
        let line = |n: usize| [&b"1;"[..], &vec![b'x'; n - 2], b"\r\na\r\n0\r\n\r\n"].concat();
        assert_eq!(
            decode_all(&line(1024)),
            Ok((b"a".to_vec(), 1024 + 10, true))
        );
        assert_eq!(
            decode_all(&line(1025)),
            Err(HeadError::Malformed("chunk size line too long"))
        );
        // All digits (leading zeros), and whitespace, count too.
        let zeros = |n: usize| [&vec![b'0'; n - 1], &b"1\r\na\r\n0\r\n\r\n"[..]].concat();
        assert_eq!(
            decode_all(&zeros(1024)),
            Ok((b"a".to_vec(), 1024 + 10, true))
        );
        assert_eq!(
            decode_all(&zeros(1025)),
            Err(HeadError::Malformed("chunk size line too long"))
        );
        // (Whitespace may only precede an extension.)
        let spaces = |n: usize| [&b"1"[..], &vec![b' '; n - 2], b";\r\na\r\n0\r\n\r\n"].concat();
        assert_eq!(
            decode_all(&spaces(1024)),
            Ok((b"a".to_vec(), 1024 + 10, true))
        );
        assert_eq!(
            decode_all(&spaces(1025)),
            Err(HeadError::Malformed("chunk size line too long"))
        );
        // The error comes before the line ends.
        let endless = vec![b'0'; 1025];
        assert_eq!(
            decode_bytewise(&endless),
            Err(HeadError::Malformed("chunk size line too long"))
        );
        assert_eq!(decode_bytewise(&endless[..1024]), Ok((vec![], 1024, false)));
    }

    #[test]
    fn trailer_section_limit() {
        // A trailer section of exactly `n` bytes, final CRLF included.
        let body = |n: usize| {
            let mut body = b"0\r\n".to_vec();
            let mut left = n - 2;
            while left > 0 {
                let line = left.min(1000);
                assert!(line >= 5, "unrepresentable trailer size");
                body.extend_from_slice(b"X:");
                body.extend(vec![b'v'; line - 4]);
                body.extend_from_slice(b"\r\n");
                left -= line;
            }
            body.extend_from_slice(b"\r\n");
            body
        };
        let at = body(MAX_TRAILER_SECTION);
        assert_eq!(decode_all(&at), Ok((vec![], at.len(), true)));
        let over = body(MAX_TRAILER_SECTION + 1);
        assert_eq!(
            decode_all(&over),
            Err(HeadError::Malformed("trailer section too large"))
        );
        // No end in sight: the error does not wait for one.
        let endless = [&b"0\r\nX: "[..], &vec![b'v'; MAX_TRAILER_SECTION]].concat();
        assert_eq!(
            decode_all(&endless),
            Err(HeadError::Malformed("trailer section too large"))
        );
    }

    #[test]
    fn chunked_errors_are_sticky_and_done_is_final() {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b"5\r\nhel", &mut out), Ok((6, false)));
        assert_eq!(
            decoder.decode(b"loX", &mut out),
            Err(HeadError::Malformed("chunk data not followed by CRLF"))
        );
        assert_eq!(out, b"hello");
        assert_eq!(
            decoder.decode(b"\r\n0\r\n\r\n", &mut out),
            Err(HeadError::Malformed("chunk data not followed by CRLF"))
        );
        assert_eq!(
            decoder.decode(b"", &mut out),
            Err(HeadError::Malformed("chunk data not followed by CRLF"))
        );

        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(b"3\r\nabc\r\n0\r\n\r", &mut out),
            Ok((12, false))
        );
        assert_eq!(decoder.decode(b"", &mut out), Ok((0, false)));
        assert_eq!(decoder.decode(b"\nnext", &mut out), Ok((1, true)));
        assert_eq!(decoder.decode(b"next", &mut out), Ok((0, true)));
        assert_eq!(decoder.decode(b"", &mut out), Ok((0, true)));
        assert_eq!(out, b"abc");
    }

    #[test]
    fn chunked_data_is_appended_as_it_arrives() {
        let mut decoder = ChunkedDecoder::new();
        let mut out = b"before:".to_vec();
        let mut seen = Vec::new();
        for piece in [
            &b"1"[..],
            b"0\r",
            b"\n01234",
            b"56789a",
            b"bcdef",
            b"\r\n0\r\n\r\n",
        ] {
            let (used, done) = decoder.decode(piece, &mut out).unwrap_or((0, false));
            assert_eq!(used, piece.len());
            seen.push((out.len(), done));
        }
        assert_eq!(out, b"before:0123456789abcdef");
        assert_eq!(
            seen,
            [
                (7, false),
                (7, false),
                (12, false),
                (18, false),
                (23, false),
                (23, true)
            ]
        );
    }

    /// Encodes `body` as chunks of the given sizes (cycled), with optional extensions and
    /// trailers, in upper or lower case hex.
    fn encode(
        body: &[u8],
        sizes: &[usize],
        extensions: bool,
        trailers: &[(String, String)],
        upper: bool,
    ) -> Vec<u8> {
        let mut encoded = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().copied().filter(|&s| s > 0).cycle();
        while !rest.is_empty() {
            let size = sizes.next().unwrap_or(rest.len()).min(rest.len());
            let (chunk, tail) = rest.split_at(size);
            if upper {
                encoded.extend(format!("{size:X}").as_bytes());
            } else {
                encoded.extend(format!("{size:x}").as_bytes());
            }
            if extensions {
                encoded.extend_from_slice(b" ; n=v;q=\"a;b\"");
            }
            encoded.extend_from_slice(b"\r\n");
            encoded.extend_from_slice(chunk);
            encoded.extend_from_slice(b"\r\n");
            rest = tail;
        }
        encoded.extend_from_slice(if extensions { b"0;end\r\n" } else { b"0\r\n" });
        for (name, value) in trailers {
            encoded.extend(format!("{name}: {value}\r\n").as_bytes());
        }
        encoded.extend_from_slice(b"\r\n");
        encoded
    }

    proptest! {
        #[test]
        fn any_split_decodes_to_the_original(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(0usize..80, 0..8),
            extensions in any::<bool>(),
            upper in any::<bool>(),
            trailers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..3),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
            next in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let trailers: Vec<(String, String)> =
                trailers.into_iter().map(|(n, v)| (n, v.trim().to_owned())).collect();
            let encoded = encode(&body, &sizes, extensions, &trailers, upper);
            let stream = [&encoded[..], &next[..]].concat();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();

            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            let mut position = 0;
            let mut finished = false;
            for pair in cuts.windows(2) {
                let (from, to) = (pair[0], pair[1]);
                let piece = &stream[from..to];
                let (used, done) = decoder
                    .decode(piece, &mut out)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert!(used <= piece.len());
                if finished {
                    prop_assert_eq!((used, done), (0, true));
                    continue;
                }
                position += used;
                if done {
                    finished = true;
                } else {
                    prop_assert_eq!(used, piece.len());
                }
            }
            prop_assert!(finished);
            prop_assert_eq!(position, encoded.len());
            prop_assert_eq!(out, body);
        }

        #[test]
        fn decoder_never_panics_or_overreads(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b'5'), Just(b';'), Just(b':'), any::<u8>()],
                0..200,
            ),
            cut in any::<prop::sample::Index>(),
        ) {
            let at = cut.index(input.len() + 1);
            let (first, second) = input.split_at(at);
            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            if let Ok((used, done)) = decoder.decode(first, &mut out) {
                prop_assert!(used <= first.len());
                prop_assert!(done || used == first.len());
                if let Ok((used, _)) = decoder.decode(second, &mut out) {
                    prop_assert!(used <= second.len());
                }
            }
            prop_assert!(out.len() <= input.len());
        }

        #[test]
        fn head_prefixes_are_partial(cut in 0..SAMPLE.len(), tail in proptest::collection::vec(any::<u8>(), 0..50)) {
            prop_assert_eq!(parse_head(&SAMPLE[..cut], &LIMITS), Ok(Parse::Partial));
            let buf = [SAMPLE, &tail[..]].concat();
            let parsed = parse_head(&buf, &LIMITS);
            prop_assert!(matches!(parsed, Ok(Parse::Complete(ref h)) if h.len == SAMPLE.len()));
        }

        #[test]
        fn generated_heads_parse_back_exactly(
            method in "[A-Z]{1,10}",
            target in "/[A-Za-z0-9._~%/?=&-]{0,40}",
            minor in 0u8..2,
            headers in proptest::collection::vec(
                ("[A-Za-z][A-Za-z0-9-]{0,15}", "([!-~]([ -~]{0,30}[!-~])?)?"),
                0..10,
            ),
            tail in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut raw = format!("{method} {target} HTTP/1.{minor}\r\n");
            for (name, value) in &headers {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str("\r\n");
            let buf = [raw.as_bytes(), &tail[..]].concat();
            let Ok(Parse::Complete(head)) = parse_head(&buf, &LIMITS) else {
                return Err(TestCaseError::fail(format!("{raw:?} did not parse")));
            };
            prop_assert_eq!(head.len, raw.len());
            prop_assert_eq!(&head.method, &method);
            prop_assert_eq!(&head.target, &target);
            prop_assert_eq!(head.minor_version, minor);
            let got: Vec<(String, Vec<u8>)> = pairs(&head.headers);
            let want: Vec<(String, Vec<u8>)> = headers
                .iter()
                .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
                .collect();
            prop_assert_eq!(got, want);
            // The checks on a parsed head never panic either.
            let _ = check_host(&head);
            let _ = connection_has(&head, "close");
            let _ = framing(&head);
        }

        #[test]
        fn parse_head_never_panics(
            buf in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b' '), Just(b':'), Just(b'H'), any::<u8>()],
                0..120,
            ),
            max_request_line in 0usize..40,
            max_head in 0usize..120,
            max_headers in 0usize..8,
        ) {
            let limits = HeadLimits { max_request_line, max_head, max_headers };
            if let Ok(Parse::Complete(head)) = parse_head(&buf, &limits) {
                prop_assert!(head.len <= buf.len() && head.len <= max_head);
                prop_assert!(head.headers.len() <= max_headers);
                let _ = framing(&head);
            }
            // The same request behind a valid prefix: limits only grow the error set.
            let mut valid = b"GET / HTTP/1.1\r\n".to_vec();
            valid.extend_from_slice(&buf);
            let _ = parse_head(&valid, &LIMITS);
        }
    }
}
