//! `Range` parsing, on any header value and length: never panics, and a partial range always
//! lies inside the representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::__bench::parse_range;

fuzz_target!(|data: &[u8]| {
    let (len, header) = match data.split_first_chunk::<8>() {
        Some((len, header)) => (u64::from_le_bytes(*len) % (1 << 40), header),
        None => (1000, data),
    };
    if let Some((start, end)) = parse_range(header, len) {
        assert!(start <= end && end < len, "{start}-{end} of {len}");
    }
});
