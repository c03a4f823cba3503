//! Fuzz target bodies for the masker, shared by the cargo-fuzz targets in
//! `fuzz/` and the stable corpus test (`tests/fuzz_corpora.rs`). Not a
//! stable API.

use std::sync::Arc;

use crate::mask::{mask_all, Forms, Patterns, StreamMasker, MASK, MIN_SECRET_LEN};

/// Input layout: a byte for the value's length (mod 24), a byte for the
/// read size, the value, then the child's output.
///
/// Oracles: the output does not depend on how it was split into reads; and
/// where only the raw view can match (no `\` and no line break in the
/// output), it equals the output with every occurrence of every raw form of
/// the value replaced, overlapping occurrences merged into one [`MASK`] and
/// merely touching ones kept apart.
pub fn mask(data: &[u8]) {
    let [n, step, rest @ ..] = data else {
        return;
    };
    let n = usize::from(n % 24).min(rest.len());
    let (value, output) = rest.split_at(n);
    let patterns = Arc::new(Patterns::new([value]));
    assert!(patterns.is_usable(), "a value's patterns do not compile");
    let whole = mask_all(&patterns, output);
    let mut streamed = StreamMasker::new(patterns.clone());
    let mut out = Vec::new();
    for chunk in output.chunks(usize::from(*step).max(1)) {
        out.extend(streamed.feed(chunk));
    }
    out.extend(streamed.finish());
    assert!(out == whole, "masking depends on how the output is split");
    if value.len() >= MIN_SECRET_LEN && !output.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r')) {
        let forms = Forms::of([value]);
        let expected = naive(&forms.raw, output);
        assert!(
            whole == expected,
            "masked output differs from the naive replacement"
        );
    }
}

/// Every occurrence of every form, as ranges; overlapping ranges merged;
/// each merged range replaced by [`MASK`].
fn naive(forms: &[zeroize::Zeroizing<Vec<u8>>], input: &[u8]) -> Vec<u8> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for form in forms {
        if form.is_empty() || form.len() > input.len() {
            continue;
        }
        for start in 0..=input.len() - form.len() {
            if input[start..start + form.len()] == form[..] {
                ranges.push((start, start + form.len()));
            }
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s < last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    let mut at = 0;
    for (s, e) in merged {
        out.extend_from_slice(&input[at..s]);
        out.extend_from_slice(MASK);
        at = e;
    }
    out.extend_from_slice(&input[at..]);
    out
}
