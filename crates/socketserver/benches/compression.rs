//! What each coding and level costs on a 100 KiB text file (this repository's README and
//! sources): the time to compress it once, as a response body is compressed (step by step),
//! and the size it comes to, printed before the timings. The default levels of
//! `http::Compression` come from these figures (bench/COMPRESSION.md).
//!
//! `cargo bench -p socketserver --features bench-internals --bench compression`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use socketserver::__bench;
use socketserver::http::Encoding;

/// 100 KiB of text: the README, then sources, as a site's HTML, CSS and JavaScript would be.
fn corpus() -> Vec<u8> {
    let mut text = Vec::new();
    for part in [
        include_str!("../../../README.md"),
        include_str!("../src/http/conn.rs"),
        include_str!("../src/http/parse.rs"),
        include_str!("../src/http/static_files.rs"),
    ] {
        text.extend_from_slice(part.as_bytes());
    }
    assert!(
        text.len() >= 100 * 1024,
        "the corpus is {} bytes",
        text.len()
    );
    text.truncate(100 * 1024);
    text
}

const LEVELS: [(Encoding, &[i32]); 3] = [
    (Encoding::Zstd, &[1, 3, 6, 19]),
    (Encoding::Brotli, &[1, 2, 3, 4, 5, 11]),
    (Encoding::Gzip, &[1, 2, 3, 4, 6, 9]),
];

fn compression(c: &mut Criterion) {
    let text = corpus();
    for (encoding, levels) in LEVELS {
        for &level in levels {
            let size = __bench::compress(&text, encoding, level).len();
            eprintln!(
                "{:>4} level {level:>2}: {size:>6} bytes, ratio {:.2}",
                encoding.token(),
                text.len() as f64 / size as f64
            );
        }
    }
    let mut g = c.benchmark_group("compress_100KiB_text");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for (encoding, levels) in LEVELS {
        for &level in levels {
            g.bench_function(format!("{}_{level}", encoding.token()), |b| {
                b.iter(|| __bench::compress(black_box(&text), encoding, level))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, compression);
criterion_main!(benches);
