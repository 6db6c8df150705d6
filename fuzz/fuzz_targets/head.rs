//! The request-head parser, on any bytes: never panics, and a complete head never claims
//! more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::__bench::{Parsed, parse_head};

fuzz_target!(|data: &[u8]| {
    let whole = parse_head(data);
    // A prefix of a complete head is never refused for being short: only more bytes can
    // complete it.
    if whole == Parsed::Complete && !data.is_empty() {
        let _ = parse_head(&data[..data.len() - 1]);
    }
});
