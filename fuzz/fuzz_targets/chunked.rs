//! The chunked decoder, on any bytes fed in any read sizes: never panics, and the outcome does
//! not depend on how the bytes were split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::__bench::decode_chunked;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    let mut pieces = Vec::new();
    let ok_whole = decode_chunked(body, body.len().max(1), &mut whole);
    let ok_pieces = decode_chunked(body, usize::from(split % 16) + 1, &mut pieces);
    assert_eq!(ok_whole, ok_pieces, "the outcome depends on the read size");
    if ok_whole {
        assert_eq!(whole, pieces, "the data depends on the read size");
        assert!(whole.len() <= body.len());
    }
});
