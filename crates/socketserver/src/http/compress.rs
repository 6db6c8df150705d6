//! Content codings (RFC 9110 §8.4): which one a request accepts ([`Encoding::negotiate`]),
//! which types are worth compressing ([`compressible`]), the settings ([`Compression`]), the
//! streamed encoder ([`Encoder`]) and the bounded cache of small compressed bodies
//! ([`Cache`]).
//!
//! The encoder never holds a whole file: it reads the source a piece at a time, feeds the
//! coding's own streaming writer (`zstd`, `brotli`, `flate2`) and hands out whatever
//! compressed bytes that produced. Each [`Encoder::step`] does a bounded amount of work, so the
//! event loop runs one step, sends it, and serves other connections before the next
//! (`mode/evented/engine.rs`'s `Output`); a blocking connection runs the steps one after the
//! other. How a representation is chosen for a file (precompressed siblings, ETags, `Range`)
//! is `static_files.rs`'s.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A content coding the server produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `zstd` (RFC 8878): about brotli's ratio at a fraction of the CPU.
    Zstd,
    /// `br` (RFC 7932).
    Brotli,
    /// `gzip` (RFC 1952): every client has it.
    Gzip,
}

impl Encoding {
    /// Every coding, in the server's order of preference when a client likes several
    /// equally (zstd compresses about as well as brotli for far less CPU; gzip is the
    /// fallback every client has).
    pub const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

    /// The `Content-Encoding` token: `zstd`, `br` or `gzip`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The extension of a precompressed sibling file: `zst`, `br` or `gz`.
    pub fn extension(self) -> &'static str {
        match self {
            Encoding::Zstd => "zst",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gz",
        }
    }

    /// The codings an `Accept-Encoding` field value accepts, best first: q-values honoured
    /// (`q=0` refuses), `*` standing for every coding not named, `x-gzip` for `gzip`, ties
    /// broken by [`ALL`](Self::ALL)'s order. Empty when the header is absent, empty or
    /// malformed, or when it prefers `identity` to every coding it accepts: then the
    /// response is not compressed.
    ///
    /// ```
    /// use socketserver::http::Encoding;
    ///
    /// let order = Encoding::negotiate(Some("gzip, deflate, br;q=0.9, zstd;q=0.5"));
    /// assert_eq!(order, [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd]);
    /// assert_eq!(Encoding::negotiate(Some("br;q=0, *")), [Encoding::Zstd, Encoding::Gzip]);
    /// assert!(Encoding::negotiate(None).is_empty());
    /// ```
    pub fn negotiate(accept_encoding: Option<&str>) -> Vec<Encoding> {
        let Some(value) = accept_encoding else {
            return Vec::new();
        };
        // The q-value (in thousandths) of each coding, of `*` and of `identity`.
        let mut named: [Option<u16>; 3] = [None; 3];
        let mut star: Option<u16> = None;
        let mut identity: Option<u16> = None;
        for element in value.split(',') {
            let mut params = element.split(';');
            let coding = params.next().unwrap_or("").trim_matches([' ', '\t']);
            if coding.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in params {
                let Some((name, v)) = param.split_once('=') else {
                    q = None;
                    break;
                };
                if name.trim_matches([' ', '\t']).eq_ignore_ascii_case("q") {
                    q = qvalue(v.trim_matches([' ', '\t']));
                }
            }
            let Some(q) = q else {
                continue; // a malformed element counts for nothing
            };
            let slot = if coding == "*" {
                &mut star
            } else if coding.eq_ignore_ascii_case("identity") {
                &mut identity
            } else if let Some(i) = Encoding::ALL.iter().position(|e| {
                coding.eq_ignore_ascii_case(e.token())
                    || (*e == Encoding::Gzip && coding.eq_ignore_ascii_case("x-gzip"))
            }) {
                &mut named[i]
            } else {
                continue;
            };
            // Named twice: the higher counts.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        let mut accepted: Vec<(u16, usize)> = Encoding::ALL
            .iter()
            .enumerate()
            .filter_map(|(i, _)| named[i].or(star).filter(|&q| q > 0).map(|q| (q, i)))
            .collect();
        accepted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        if let (Some(id), Some(&(best, _))) = (identity, accepted.first())
            && id > best
        {
            return Vec::new();
        }
        accepted
            .into_iter()
            .map(|(_, i)| Encoding::ALL[i])
            .collect()
    }
}

/// A `qvalue` (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: u16 = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, |n, b| n * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(digits),
        "1" if digits == 0 => Some(1000),
        _ => None,
    }
}

/// A strong entity tag for the `encoding` of the representation tagged `etag`: the coding's
/// extension inside the quotes (`"1f-5e"` becomes `"1f-5e-br"`). A weak tag (`W/"..."`) is
/// marked the same way; anything else is left as it is.
pub(crate) fn tag_for(etag: &str, encoding: Encoding) -> String {
    match etag.strip_suffix('"') {
        Some(open) if open.contains('"') => format!("{open}-{}\"", encoding.extension()),
        _ => etag.to_owned(),
    }
}

/// Whether a response of `content_type` is worth compressing: text, JSON, JavaScript, XML,
/// SVG, WebAssembly, fonts without their own compression, icons and bitmaps. Everything else
/// (images, audio, video, archives, fonts already compressed like WOFF2, PDFs, unknown binary
/// data) is left alone: compressing compressed bytes costs CPU and gains nothing.
///
/// ```
/// use socketserver::http::compressible;
///
/// assert!(compressible("text/html; charset=utf-8"));
/// assert!(compressible("application/manifest+json"));
/// assert!(!compressible("image/png"));
/// assert!(!compressible("application/gzip"));
/// ```
pub fn compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/ecmascript"
                | "application/x-javascript"
                | "application/xml"
                | "application/wasm"
                | "application/x-sh"
                | "application/x-tex"
                | "application/rtf"
                | "application/toml"
                | "application/yaml"
                | "application/x-yaml"
                | "application/vnd.ms-fontobject"
                | "font/ttf"
                | "font/otf"
                | "font/collection"
                | "image/bmp"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
        )
}

/// How responses are compressed: the level of each coding (`None`: never produced on the
/// fly), the smallest body worth it, precompressed siblings, and the cache.
///
/// The default levels were chosen by measuring (`cargo bench -p socketserver --features
/// bench-internals --bench compression`, figures in `bench/COMPRESSION.md`): zstd 3
/// (0.4 ms for a 100 KiB text file here), brotli 4 (1.8 ms) and gzip 3 (1.8 ms) come within
/// 2-4 % of the size of the next levels up, which cost two to three times the CPU; the cache
/// then pays that once per version of a hot file.
///
/// ```
/// use socketserver::http::{Compression, Encoding, StaticFiles};
///
/// # let dir = tempfile::tempdir()?;
/// let files = StaticFiles::new(dir.path())?
///     .compression(Compression::default().level(Encoding::Brotli, Some(5)).min_size(2048));
/// let plain = StaticFiles::new(dir.path())?.compression(Compression::off());
/// # let _ = (files, plain);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compression {
    levels: [Option<i32>; 3],
    min_size: u64,
    precompressed: bool,
    cache_bytes: usize,
}

impl Default for Compression {
    fn default() -> Compression {
        Compression {
            levels: [Some(3), Some(4), Some(3)],
            min_size: 1024,
            precompressed: true,
            cache_bytes: 32 << 20,
        }
    }
}

impl Compression {
    /// No compression at all: nothing on the fly, no precompressed siblings.
    pub fn off() -> Compression {
        Compression {
            levels: [None; 3],
            min_size: u64::MAX,
            precompressed: false,
            cache_bytes: 0,
        }
    }

    /// The level `encoding` is produced at on the fly, or `None` to never produce it
    /// (precompressed siblings of it are still served). Clamped to the coding's range: zstd
    /// 1-19, brotli 0-11, gzip 1-9.
    pub fn level(mut self, encoding: Encoding, level: Option<i32>) -> Compression {
        let (low, high) = match encoding {
            Encoding::Zstd => (1, 19),
            Encoding::Brotli => (0, 11),
            Encoding::Gzip => (1, 9),
        };
        self.levels[index(encoding)] = level.map(|l| l.clamp(low, high));
        self
    }

    /// The smallest body compressed on the fly (default 1 KiB: below it the coding's own
    /// header eats the gain).
    pub fn min_size(mut self, bytes: u64) -> Compression {
        self.min_size = bytes;
        self
    }

    /// Serves `NAME.zst`, `NAME.br` or `NAME.gz` for `NAME` when the client accepts that
    /// coding and the sibling is not older than `NAME` (default: on).
    pub fn precompressed(mut self, on: bool) -> Compression {
        self.precompressed = on;
        self
    }

    /// Keeps the compressed bodies of recently served files, up to `bytes` in all (default
    /// 32 MiB; 0 turns the cache off), so a hot file is compressed once, not per request.
    /// An entry is keyed by the file's identity, length and modification time, so an edited
    /// file is never answered from an old entry.
    pub fn cache_bytes(mut self, bytes: usize) -> Compression {
        self.cache_bytes = bytes;
        self
    }

    /// The level `encoding` is produced at on the fly, if it is.
    pub fn level_of(&self, encoding: Encoding) -> Option<i32> {
        self.levels[index(encoding)]
    }

    /// The smallest body compressed on the fly.
    pub fn min_size_of(&self) -> u64 {
        self.min_size
    }

    /// Whether precompressed siblings are served.
    pub fn serves_precompressed(&self) -> bool {
        self.precompressed
    }

    /// The cache's bound in bytes.
    pub fn cache_bytes_of(&self) -> usize {
        self.cache_bytes
    }

    /// Whether nothing is ever compressed or looked up.
    pub fn is_off(&self) -> bool {
        !self.precompressed && self.levels.iter().all(Option::is_none)
    }

    /// The first of `accepted` produced on the fly, with its level.
    pub(crate) fn on_the_fly(&self, accepted: &[Encoding]) -> Option<(Encoding, i32)> {
        accepted
            .iter()
            .find_map(|&e| self.level_of(e).map(|level| (e, level)))
    }
}

fn index(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Zstd => 0,
        Encoding::Brotli => 1,
        Encoding::Gzip => 2,
    }
}

/// Source bytes fed to the coding per `write`.
const PIECE: usize = 16 * 1024;
/// Most source bytes one [`Encoder::step`] feeds before it forces the coding to emit what it
/// has: the unit of work the event loop interleaves with other connections.
pub(crate) const STEP: usize = 64 * 1024;

/// What an encoder reads.
enum Source {
    /// `left` bytes of `file` from `offset`.
    File { file: File, offset: u64, left: u64 },
    /// Bytes in memory, from `pos`.
    Bytes { bytes: Vec<u8>, pos: usize },
}

/// The coding's streaming writer, into a `Vec` the encoder empties after every step.
enum Coder {
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl Coder {
    fn new(encoding: Encoding, level: i32, len: u64) -> io::Result<Coder> {
        Ok(match encoding {
            Encoding::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), level)?;
                // The length up front lets zstd size its window and tables to the input
                // (a small file costs a small context), and records it in the frame.
                z.set_pledged_src_size(Some(len))?;
                Coder::Zstd(z)
            }
            Encoding::Brotli => {
                // A window no larger than the input (at least 1 KiB, at most 4 MiB): the
                // encoder's memory follows the file, not the maximum.
                let lgwin = (64 - len.max(1).leading_zeros()).clamp(10, 22);
                let quality = u32::try_from(level).unwrap_or(4);
                Coder::Brotli(Box::new(brotli::CompressorWriter::new(
                    Vec::new(),
                    4096,
                    quality,
                    lgwin,
                )))
            }
            Encoding::Gzip => Coder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(u32::try_from(level).unwrap_or(6)),
            )),
        })
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Coder::Zstd(z) => z.write_all(data),
            Coder::Brotli(b) => b.write_all(data),
            Coder::Gzip(g) => g.write_all(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Coder::Zstd(z) => z.flush(),
            Coder::Brotli(b) => b.flush(),
            Coder::Gzip(g) => g.flush(),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Coder::Zstd(z) => z.get_mut(),
            Coder::Brotli(b) => b.get_mut(),
            Coder::Gzip(g) => g.get_mut(),
        }
    }

    /// Ends the stream: its last bytes.
    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Coder::Zstd(z) => z.finish(),
            Coder::Brotli(b) => Ok(b.into_inner()),
            Coder::Gzip(g) => g.finish(),
        }
    }
}

/// The body of a response compressed as it is sent: a file (or bytes) through one coding,
/// a bounded step at a time, never all of it in memory. Made by [`crate::http::Response`]'s
/// compressing constructors; the server runs it.
pub struct Encoder {
    source: Source,
    coder: Option<Coder>,
    encoding: Encoding,
    /// A read buffer of [`PIECE`] bytes, once needed.
    buf: Vec<u8>,
    /// Compressed bytes produced so far (the access log's size).
    produced: Arc<AtomicU64>,
    /// Where the whole compressed body goes once complete, if it is small enough.
    tee: Option<Tee>,
}

/// The compressed body collected for the cache while it is sent.
struct Tee {
    cache: Arc<Cache>,
    key: Key,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoder({})", self.encoding.token())
    }
}

/// What one [`Encoder::step`] did.
pub(crate) struct Stepped {
    /// Source bytes consumed: the work done.
    pub(crate) work: usize,
    /// The stream is complete (its last bytes were appended).
    pub(crate) done: bool,
}

impl Encoder {
    /// `len` bytes of `file` from `offset`, through `encoding` at `level`.
    pub(crate) fn file(
        file: File,
        offset: u64,
        len: u64,
        encoding: Encoding,
        level: i32,
    ) -> io::Result<Encoder> {
        Encoder::new(
            Source::File {
                file,
                offset,
                left: len,
            },
            len,
            encoding,
            level,
        )
    }

    /// `bytes` through `encoding` at `level`.
    pub(crate) fn bytes(bytes: Vec<u8>, encoding: Encoding, level: i32) -> io::Result<Encoder> {
        let len = bytes.len() as u64;
        Encoder::new(Source::Bytes { bytes, pos: 0 }, len, encoding, level)
    }

    fn new(source: Source, len: u64, encoding: Encoding, level: i32) -> io::Result<Encoder> {
        Ok(Encoder {
            source,
            coder: Some(Coder::new(encoding, level, len)?),
            encoding,
            buf: Vec::new(),
            produced: Arc::new(AtomicU64::new(0)),
            tee: None,
        })
    }

    /// Collects the compressed body for `cache` under `key` as it is produced; it is kept
    /// once complete, if it fits the cache's entry bound.
    pub(crate) fn tee(mut self, cache: Arc<Cache>, key: Key) -> Encoder {
        self.tee = Some(Tee {
            cache,
            key,
            bytes: Vec::new(),
        });
        self
    }

    /// The coding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Compressed bytes produced so far, counted as they are.
    pub(crate) fn produced(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.produced)
    }

    /// Feeds up to [`STEP`] source bytes and appends what the coding made of them to `out`:
    /// at least one byte unless the source is empty, the last bytes when the source ends.
    /// Fails when the file cannot be read or shrank (the promised body cannot be kept).
    pub(crate) fn step(&mut self, out: &mut Vec<u8>) -> io::Result<Stepped> {
        let Some(coder) = self.coder.as_mut() else {
            return Ok(Stepped {
                work: 0,
                done: true,
            });
        };
        let mut work = 0;
        let mut ended = false;
        while work < STEP && coder.output().is_empty() {
            let n = match &mut self.source {
                Source::Bytes { bytes, pos } => {
                    let n = (bytes.len() - *pos).min(PIECE);
                    coder.write_all(&bytes[*pos..*pos + n])?;
                    *pos += n;
                    n
                }
                Source::File { file, offset, left } => {
                    use std::os::unix::fs::FileExt;
                    let want = usize::try_from((*left).min(PIECE as u64)).unwrap_or(PIECE);
                    if want == 0 {
                        0
                    } else {
                        self.buf.resize(PIECE, 0);
                        let got = loop {
                            match file.read_at(&mut self.buf[..want], *offset) {
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                other => break other?,
                            }
                        };
                        if got == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the file shrank while it was being sent",
                            ));
                        }
                        coder.write_all(&self.buf[..got])?;
                        *offset += got as u64;
                        *left -= got as u64;
                        got
                    }
                }
            };
            work += n;
            if n == 0 {
                ended = true;
                break;
            }
        }
        let start = out.len();
        if ended {
            if let Some(coder) = self.coder.take() {
                out.extend_from_slice(&coder.finish()?);
            }
        } else {
            if coder.output().is_empty() {
                // Very compressible input: make the coding emit what it has, so every step
                // sends something and the loop's work per step stays bounded.
                coder.flush()?;
            }
            out.append(coder.output());
        }
        let made = &out[start..];
        self.produced
            .fetch_add(made.len() as u64, Ordering::Relaxed);
        if let Some(tee) = &mut self.tee {
            if tee.bytes.len() + made.len() > tee.cache.entry_max {
                self.tee = None; // too large to keep
            } else {
                tee.bytes.extend_from_slice(made);
            }
        }
        if ended && let Some(tee) = self.tee.take() {
            tee.cache.insert(tee.key, tee.bytes);
        }
        if ended {
            self.buf = Vec::new();
        }
        Ok(Stepped { work, done: ended })
    }
}

/// What identifies one compressed body: the file (device, inode), its length and
/// modification time, the coding and its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) len: u64,
    pub(crate) mtime_ns: i128,
    pub(crate) encoding: Encoding,
    pub(crate) level: i32,
}

impl Key {
    pub(crate) fn of(meta: &std::fs::Metadata, encoding: Encoding, level: i32) -> Key {
        use std::os::unix::fs::MetadataExt;
        Key {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            encoding,
            level,
        }
    }
}

/// Compressed bodies of recently served files, at most `max` bytes in all, the least
/// recently used dropped first. Shared by every connection of a server (one lock, held for a
/// map lookup or insert, never while compressing).
pub(crate) struct Cache {
    max: usize,
    /// The largest entry kept: an eighth of the bound, so one file cannot empty the cache.
    entry_max: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, (Arc<[u8]>, u64)>,
    bytes: usize,
    clock: u64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache(max {} bytes)", self.max)
    }
}

impl Cache {
    pub(crate) fn new(max: usize) -> Cache {
        Cache {
            max,
            entry_max: max / 8,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// The body kept under `key`, if any (and it counts as used now).
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<[u8]>> {
        let mut entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        entries.clock += 1;
        let now = entries.clock;
        let (body, used) = entries.map.get_mut(key)?;
        *used = now;
        Some(Arc::clone(body))
    }

    fn insert(&self, key: Key, body: Vec<u8>) {
        if body.len() > self.entry_max {
            return;
        }
        let mut entries = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Older versions of the same file are dead weight: drop them with the new one in.
        entries.map.retain(|k, _| {
            (k.dev, k.ino, k.encoding) != (key.dev, key.ino, key.encoding) || *k == key
        });
        entries.bytes = entries.map.values().map(|(b, _)| b.len()).sum();
        while entries.bytes + body.len() > self.max {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((gone, _)) = entries.map.remove(&oldest) {
                entries.bytes -= gone.len();
            }
        }
        entries.clock += 1;
        let now = entries.clock;
        entries.bytes += body.len();
        if let Some((old, _)) = entries.map.insert(key, (body.into(), now)) {
            entries.bytes -= old.len();
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let entries = self.inner.lock().unwrap();
        (entries.map.len(), entries.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(encoding: Encoding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Zstd => {
                zstd::stream::read::Decoder::new(bytes)
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Brotli => {
                brotli::Decompressor::new(bytes, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    fn run(mut encoder: Encoder) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut steps = 0;
        loop {
            let before = out.len();
            let stepped = encoder.step(&mut out).unwrap();
            steps += 1;
            assert!(stepped.work <= STEP);
            if stepped.done {
                break;
            }
            assert!(
                out.len() > before,
                "a step that is not the last sends something"
            );
        }
        (out, steps)
    }

    fn text(len: usize) -> Vec<u8> {
        let mut text = Vec::with_capacity(len);
        let mut i = 0u64;
        while text.len() < len {
            text.extend_from_slice(
                format!("line {i}: the quick brown fox {}\n", i * 7919 % 1013).as_bytes(),
            );
            i += 1;
        }
        text.truncate(len);
        text
    }

    #[test]
    fn every_coding_round_trips_byte_exact_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 1000, PIECE - 1, STEP, STEP + 1, 700_000] {
            let data = text(len);
            let path = dir.path().join("f.txt");
            std::fs::write(&path, &data).unwrap();
            for encoding in Encoding::ALL {
                let file = File::open(&path).unwrap();
                let (out, steps) = run(Encoder::file(file, 0, len as u64, encoding, 3).unwrap());
                assert_eq!(decode(encoding, &out), data, "{encoding:?} {len}");
                assert!(steps >= len / STEP, "{encoding:?} {len}: {steps} steps");
                let (out, _) = run(Encoder::bytes(data.clone(), encoding, 3).unwrap());
                assert_eq!(decode(encoding, &out), data, "{encoding:?} {len} bytes");
            }
        }
        // Zeros compress a thousandfold: steps stay bounded all the same.
        let zeros = vec![0u8; 1 << 20];
        for encoding in Encoding::ALL {
            let (out, steps) = run(Encoder::bytes(zeros.clone(), encoding, 3).unwrap());
            assert_eq!(decode(encoding, &out), zeros);
            assert!(steps >= 16, "{encoding:?}: {steps}");
        }
    }

    #[test]
    fn a_range_of_a_file_and_a_file_that_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        let data = text(200_000);
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let (out, _) = run(Encoder::file(file, 10, 150_000, Encoding::Gzip, 6).unwrap());
        assert_eq!(decode(Encoding::Gzip, &out), &data[10..150_010]);
        let file = File::open(&path).unwrap();
        let mut encoder = Encoder::file(file, 0, 200_000, Encoding::Zstd, 3).unwrap();
        std::fs::write(&path, &data[..1000]).unwrap();
        let mut out = Vec::new();
        let err = loop {
            match encoder.step(&mut out) {
                Ok(s) if s.done => panic!("a shrunk file must not end the stream cleanly"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn negotiation() {
        use Encoding::*;
        let cases: &[(Option<&str>, &[Encoding])] = &[
            (None, &[]),
            (Some(""), &[]),
            (Some("identity"), &[]),
            (Some("gzip"), &[Gzip]),
            (Some("x-gzip"), &[Gzip]),
            (Some("GZIP, BR"), &[Brotli, Gzip]),
            (Some("gzip, deflate, br, zstd"), &[Zstd, Brotli, Gzip]),
            (Some("gzip;q=1.0, br;q=0.8"), &[Gzip, Brotli]),
            (
                Some("br;q=0.5, gzip;q=0.5, zstd;q=0.4"),
                &[Brotli, Gzip, Zstd],
            ),
            (Some("*"), &[Zstd, Brotli, Gzip]),
            (Some("*;q=0.1, gzip"), &[Gzip, Zstd, Brotli]),
            (Some("zstd;q=0, *"), &[Brotli, Gzip]),
            (Some("gzip;q=0"), &[]),
            (Some("*;q=0"), &[]),
            (Some("gzip;q=0.5, identity"), &[]),
            (Some("gzip, identity;q=0.5"), &[Gzip]),
            (Some("gzip;q=0.5, identity;q=0.5"), &[Gzip]),
            (Some("gzip;q=2"), &[]),
            (Some("gzip;q=0.1234"), &[]),
            (Some("gzip;q=.5"), &[]),
            (Some("gzip;q"), &[]),
            (Some("gzip ; q = 0.5 , br"), &[Brotli, Gzip]),
            (Some(",,gzip,,"), &[Gzip]),
            (Some("compress, deflate"), &[]),
            (Some("gzip;q=0.2, gzip;q=0.9, br;q=0.5"), &[Gzip, Brotli]),
            (Some("gzip;level=9"), &[Gzip]),
        ];
        for (header, expected) in cases {
            assert_eq!(Encoding::negotiate(*header), *expected, "{header:?}");
        }
    }

    #[test]
    fn types() {
        for t in [
            "text/plain",
            "text/css; charset=utf-8",
            "application/javascript; charset=utf-8",
            "application/json",
            "image/svg+xml; charset=utf-8",
            "application/wasm",
            "application/ld+json",
            "TEXT/HTML",
        ] {
            assert!(compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "image/jpeg",
            "image/webp",
            "video/mp4",
            "audio/mpeg",
            "application/zip",
            "application/gzip",
            "application/zstd",
            "font/woff2",
            "application/octet-stream",
            "application/pdf",
            "",
        ] {
            assert!(!compressible(t), "{t}");
        }
    }

    #[test]
    fn levels_are_clamped_and_off_is_off() {
        let c = Compression::default()
            .level(Encoding::Gzip, Some(42))
            .level(Encoding::Zstd, Some(-5))
            .level(Encoding::Brotli, None);
        assert_eq!(c.level_of(Encoding::Gzip), Some(9));
        assert_eq!(c.level_of(Encoding::Zstd), Some(1));
        assert_eq!(c.level_of(Encoding::Brotli), None);
        assert_eq!(
            c.on_the_fly(&[Encoding::Brotli, Encoding::Gzip]),
            Some((Encoding::Gzip, 9))
        );
        assert!(Compression::off().is_off());
        assert!(!Compression::default().is_off());
    }

    fn key(ino: u64, len: u64) -> Key {
        Key {
            dev: 1,
            ino,
            len,
            mtime_ns: 5,
            encoding: Encoding::Gzip,
            level: 6,
        }
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_least_recently_used() {
        let cache = Cache::new(8000);
        for ino in 0..8 {
            cache.insert(key(ino, 10), vec![0; 1000]);
        }
        assert_eq!(cache.len(), (8, 8000));
        assert!(cache.get(&key(0, 10)).is_some()); // 0 is now the most recent
        cache.insert(key(9, 10), vec![0; 1000]);
        assert_eq!(cache.len(), (8, 8000));
        assert!(cache.get(&key(1, 10)).is_none(), "the oldest went");
        assert!(cache.get(&key(0, 10)).is_some());
        // Too large for an entry: not kept.
        cache.insert(key(20, 10), vec![0; 1001]);
        assert!(cache.get(&key(20, 10)).is_none());
        // A new version of a file replaces the old one.
        cache.insert(key(0, 11), vec![0; 10]);
        assert!(cache.get(&key(0, 10)).is_none());
        assert_eq!(cache.get(&key(0, 11)).unwrap().len(), 10);
        let (n, bytes) = cache.len();
        assert!(bytes <= 8000 && n <= 8, "{n} {bytes}");
    }

    #[test]
    fn a_complete_stream_fills_the_cache() {
        let cache = Arc::new(Cache::new(1 << 20));
        let data = text(50_000);
        let (out, _) = run(Encoder::bytes(data.clone(), Encoding::Brotli, 4)
            .unwrap()
            .tee(Arc::clone(&cache), key(1, 50_000)));
        assert_eq!(&*cache.get(&key(1, 50_000)).unwrap(), &out[..]);
        // A stream dropped halfway leaves nothing.
        let mut encoder = Encoder::bytes(text(500_000), Encoding::Gzip, 6)
            .unwrap()
            .tee(Arc::clone(&cache), key(2, 500_000));
        encoder.step(&mut Vec::new()).unwrap();
        drop(encoder);
        assert!(cache.get(&key(2, 500_000)).is_none());
    }
}
