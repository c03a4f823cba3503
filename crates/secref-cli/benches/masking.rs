//! Masking throughput (criterion). Run with
//! `cargo bench -p secref-cli --bench masking`.
//!
//! Each case feeds the same bytes in 16 KiB reads (what `secref run` reads
//! from a pipe) once through a plain copy — the `cat` floor — and once
//! through a [`mask::StreamMasker`], and prints both in MB/s with their
//! ratio:
//!
//! * `text`: log-like lines with a secret (plain, base64, JSON) every ~4 KiB;
//! * `zeros`: the adversarial case, the value `000` in 20 MB of `0`s (every
//!   position is an overlapping match);
//! * `base64_wrapped`: `base64`-style output wrapped at 76 columns with the
//!   secret's encoding every ~4 KiB.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

// The CLI is a binary crate; the module is self-contained, so the bench
// compiles it directly.
#[allow(dead_code)]
#[path = "../src/mask.rs"]
mod mask;

const READ: usize = 16 * 1024;
const SECRET: &str = "s3cr3t-Pa55w0rd/+=x";

fn text_input(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 256);
    let json = serde_json::to_string(SECRET).unwrap();
    let mut i = 0u64;
    while out.len() < len {
        i += 1;
        out.extend_from_slice(
            format!("2026-12-01T12:00:{:02}Z INFO request id={i:08x} path=/api/v1/items status=200 took=3ms\n", i % 60)
                .as_bytes(),
        );
        if i.is_multiple_of(48) {
            let line = match i % 3 {
                0 => format!("token={SECRET}\n"),
                1 => format!("auth={}\n", STANDARD.encode(SECRET)),
                _ => format!("{{\"password\":{json}}}\n"),
            };
            out.extend_from_slice(line.as_bytes());
        }
    }
    out
}

fn base64_wrapped_input(len: usize) -> Vec<u8> {
    let mut blob = Vec::with_capacity(len * 3 / 4);
    let mut i = 0u32;
    while blob.len() * 4 / 3 < len {
        i += 1;
        if i.is_multiple_of(64) {
            blob.extend_from_slice(SECRET.as_bytes());
        } else {
            blob.extend_from_slice(&i.to_le_bytes());
            blob.extend_from_slice(b"some binary-ish payload bytes");
        }
    }
    let encoded = STANDARD.encode(&blob);
    let mut out = Vec::with_capacity(encoded.len() * 77 / 76 + 1);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

fn copy(input: &[u8]) -> usize {
    let mut out = Vec::with_capacity(READ);
    let mut total = 0;
    for chunk in input.chunks(READ) {
        out.clear();
        out.extend_from_slice(chunk);
        total += black_box(&out).len();
    }
    total
}

fn masked(patterns: &Arc<mask::Patterns>, input: &[u8]) -> usize {
    let mut m = mask::StreamMasker::new(patterns.clone());
    let mut total = 0;
    for chunk in input.chunks(READ) {
        total += black_box(m.feed(chunk)).len();
    }
    total + m.finish().len()
}

/// MB/s of `f` over `input`, best of a few runs (for the printed ratio).
fn rate(input: &[u8], mut f: impl FnMut(&[u8]) -> usize) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        black_box(f(input));
        best = best.min(t.elapsed());
    }
    input.len() as f64 / best.as_secs_f64() / 1e6
}

fn bench(c: &mut Criterion) {
    let cases: [(&str, &str, Vec<u8>); 3] = [
        ("text", SECRET, text_input(8 << 20)),
        ("zeros", "000", vec![b'0'; 20 << 20]),
        ("base64_wrapped", SECRET, base64_wrapped_input(8 << 20)),
    ];
    for (name, value, input) in &cases {
        let patterns = Arc::new(mask::Patterns::new([value.as_bytes()]));
        let (cat, mask) = (rate(input, copy), rate(input, |i| masked(&patterns, i)));
        println!(
            "masking/{name}: copy {cat:.0} MB/s, masked {mask:.0} MB/s, ratio {:.1}x slower",
            cat / mask
        );
        let mut g = c.benchmark_group(format!("masking/{name}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.sample_size(10);
        g.bench_function("copy", |b| b.iter(|| copy(black_box(input))));
        g.bench_function("masked", |b| b.iter(|| masked(&patterns, black_box(input))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
