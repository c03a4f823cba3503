//! Streaming output masking for `secref run`.
//!
//! Every secret value handed to the child is turned into a set of byte
//! patterns ([`variants`]): the value itself, its base64 forms (standard and
//! URL-safe, padded and unpadded), its URL-encoded forms (`%20` and `+` for a
//! space, upper- and lower-case hex, with the literal-character sets of RFC
//! 3986, JavaScript, Python and encode-everything), its JSON-escaped forms (as
//! `serde_json::to_string` writes it, and with non-ASCII as `\uXXXX`, both
//! without the quotes) and, for a multi-line value, each line of at least
//! [`MIN_LINE_LEN`] bytes. Values over [`MAX_ENCODED_LEN`] bytes are masked
//! as themselves and line by line only. Values shorter than [`MIN_SECRET_LEN`] bytes are not
//! masked: masking a one- or two-character value would destroy the output
//! while protecting nothing.
//!
//! The child's output is fed through a [`StreamMasker`] one read at a time.
//! All occurrences of all patterns are found with one Aho-Corasick automaton
//! (overlapping matches included) and the *union* of the matched ranges is
//! replaced by [`MASK`]: two overlapping values are concealed as one region,
//! so no fragment of either survives (plain leftmost-longest matching would
//! reveal the tail of the second). Between reads the masker keeps only bytes
//! that could still become part of a match: the tail that is a proper prefix
//! of some pattern (at most the longest pattern's length − 1 bytes), plus a
//! masked region that such a tail could still extend. Everything else is
//! released at once, so output is never delayed while no partial match is
//! possible, and all of it is flushed at end of stream.
//!
//! A value base64-encoded as part of a longer byte string (an HTTP Basic
//! `Authorization` header) is found too: for each of the three alignments the
//! characters that depend on the value alone are a pattern (when at least
//! [`MIN_BASE64_CORE`] long). The one or two characters at either edge, which
//! mix in a few bits of the neighbouring bytes, are left as they are.
//!
//! Limitations (documented, not bugs): other transformations (hex, reversed,
//! split by the child with other bytes in between) are not recognised.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

/// What replaces every occurrence of a secret in masked output.
pub const MASK: &[u8] = b"<concealed by secref>";

/// Values shorter than this many bytes are not masked.
pub const MIN_SECRET_LEN: usize = 3;

/// Lines of a multi-line value are masked on their own when at least this
/// long (shorter lines such as `{` or `-----` would mask unrelated output).
pub const MIN_LINE_LEN: usize = 8;

/// The shortest base64 core (see [`base64_cores`]) that is masked.
const MIN_BASE64_CORE: usize = 6;

/// Encoded forms are generated only for values up to this size: beyond it
/// (certificates, key files) the automaton would grow by ~20 copies of the
/// value, and such values are masked as themselves and line by line.
pub const MAX_ENCODED_LEN: usize = 8 * 1024;

/// A held masked region is released once it grows past this many bytes, so
/// that an endless run of back-to-back matches cannot stall the output.
const MAX_HELD_REGION: usize = 1 << 20;

/// RFC 3986 unreserved characters stay literal; everything else is `%XX`
/// (Go's `url.QueryEscape`, Python's `quote_plus`).
const URL_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The sets of characters that common encoders leave literal: RFC 3986
/// unreserved, everything but alphanumerics, JavaScript's
/// `encodeURIComponent`, and Python's `quote` (which keeps `/`).
const URL_ENCODE_SETS: &[&AsciiSet] = &[
    URL_ENCODE_SET,
    NON_ALPHANUMERIC,
    &URL_ENCODE_SET
        .remove(b'!')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')'),
    &URL_ENCODE_SET.remove(b'/'),
];

/// The compiled patterns of every value to conceal. Shared by the masker of
/// each output stream.
pub struct Patterns {
    /// `None` when there is nothing to mask.
    matcher: Option<AhoCorasick>,
    /// The patterns again, for the "could this tail still become a match"
    /// check, which the automaton's API does not expose.
    patterns: Vec<Zeroizing<Vec<u8>>>,
    /// Whether any pattern starts with this byte (cheap pre-filter).
    first_bytes: [bool; 256],
    max_len: usize,
}

impl Patterns {
    /// Compiles the patterns of `values` (values shorter than
    /// [`MIN_SECRET_LEN`] are skipped).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Patterns {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for value in values {
            for v in variants(value) {
                if !patterns.iter().any(|p| **p == *v) {
                    patterns.push(v);
                }
            }
        }
        let mut first_bytes = [false; 256];
        for p in &patterns {
            first_bytes[usize::from(p[0])] = true;
        }
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let matcher = if patterns.is_empty() {
            None
        } else {
            // Standard match kind: the only one that reports overlapping
            // matches, which the union-of-ranges masking needs. A contiguous
            // NFA builds in milliseconds even for multi-KiB values, where the
            // DFA the builder would pick for few patterns takes seconds.
            let built = AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(patterns.iter().map(|p| p.as_slice()));
            // Building only fails past internal size limits; refusing to run
            // unmasked would be the safe answer, so the caller checks
            // `is_usable`.
            built.ok()
        };
        Patterns {
            matcher,
            patterns,
            first_bytes,
            max_len,
        }
    }

    /// Whether there is at least one pattern to conceal.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// False when patterns exist but could not be compiled.
    pub fn is_usable(&self) -> bool {
        self.patterns.is_empty() || self.matcher.is_some()
    }

    /// The smallest index `i >= from` such that `buf[i..]` is a proper prefix
    /// of some pattern (so more input could complete a match starting there),
    /// or `buf.len()` when there is none.
    fn partial_start(&self, buf: &[u8], from: usize) -> usize {
        let len = buf.len();
        let start = from.max(len.saturating_sub(self.max_len.saturating_sub(1)));
        (start..len)
            .find(|&i| {
                self.first_bytes[usize::from(buf[i])]
                    && self
                        .patterns
                        .iter()
                        .any(|p| p.len() > len - i && p.starts_with(&buf[i..]))
            })
            .unwrap_or(len)
    }

    /// The merged ranges of all (overlapping) matches in `buf`, in order.
    fn masked_ranges(&self, buf: &[u8]) -> Vec<(usize, usize)> {
        let Some(matcher) = &self.matcher else {
            return Vec::new();
        };
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for m in matcher.find_overlapping_iter(buf) {
            // Overlapping matches are reported by end position, so starts can
            // go backwards: merge with every range they overlap. Ranges that
            // merely touch stay apart, so the output does not depend on
            // whether the first was released before the second arrived.
            let (mut s, mut e) = (m.start(), m.end());
            while let Some(&(ls, le)) = ranges.last() {
                if s < le && ls < e {
                    s = s.min(ls);
                    e = e.max(le);
                    ranges.pop();
                } else {
                    break;
                }
            }
            ranges.push((s, e));
        }
        ranges
    }
}

/// Every byte pattern under which `value` is concealed (see module docs).
pub fn variants(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    if value.len() < MIN_SECRET_LEN {
        return out;
    }
    let mut add = |v: Vec<u8>| {
        let v = Zeroizing::new(v);
        if v.len() >= MIN_SECRET_LEN.min(value.len()) && !out.iter().any(|o| **o == *v) {
            out.push(v);
        }
    };
    add(value.to_vec());
    if value.contains(&b'\n') {
        for line in value.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= MIN_LINE_LEN {
                add(line.to_vec());
            }
        }
    }
    if value.len() > MAX_ENCODED_LEN {
        return out;
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        add(engine.encode(value).into_bytes());
    }
    for core in base64_cores(value) {
        add(core);
    }
    for set in URL_ENCODE_SETS {
        let percent = Zeroizing::new(percent_encode(value, set).to_string());
        let plus = Zeroizing::new(percent.replace("%20", "+"));
        for form in [&percent, &plus] {
            add(form.as_bytes().to_vec());
            add(lowercase_hex_escapes(form.as_bytes()));
        }
    }
    if let Ok(text) = std::str::from_utf8(value) {
        if let Ok(quoted) = serde_json::to_string(text) {
            let quoted = Zeroizing::new(quoted);
            add(quoted.as_bytes()[1..quoted.len() - 1].to_vec());
            add(ascii_only_json(&quoted[1..quoted.len() - 1]).into_bytes());
        }
    }
    out
}

/// Base64 characters that depend on `value` alone when it sits inside a
/// longer encoded byte string (`Basic base64(user:password)`), for each of
/// the three alignments, in both alphabets. Cores shorter than
/// [`MIN_BASE64_CORE`] are skipped: they would match unrelated base64 text.
fn base64_cores(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut shifted = Zeroizing::new(vec![0u8; offset]);
        shifted.extend_from_slice(value);
        let encoded = Zeroizing::new(STANDARD_NO_PAD.encode(&shifted[..]));
        // Character j holds bits 6j..6j+6; keep those wholly inside the value.
        let start = (8 * offset).div_ceil(6);
        let end = 8 * (offset + value.len()) / 6;
        if end >= start + MIN_BASE64_CORE {
            let core = encoded.as_bytes()[start..end].to_vec();
            let url_safe = core
                .iter()
                .map(|&b| match b {
                    b'+' => b'-',
                    b'/' => b'_',
                    b => b,
                })
                .collect();
            out.push(core);
            out.push(url_safe);
        }
    }
    out
}

/// `%2F` → `%2f` (some encoders write lower-case hex).
fn lowercase_hex_escapes(encoded: &[u8]) -> Vec<u8> {
    let mut out = encoded.to_vec();
    let mut i = 0;
    while i + 2 < out.len() {
        if out[i] == b'%' {
            out[i + 1] = out[i + 1].to_ascii_lowercase();
            out[i + 2] = out[i + 2].to_ascii_lowercase();
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// A JSON-escaped string with every non-ASCII character written as
/// `\uXXXX` (surrogate pairs above the BMP), as Python's `json.dumps` does.
fn ascii_only_json(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Masks one output stream, read by read.
pub struct StreamMasker {
    patterns: Arc<Patterns>,
    /// Bytes received but not yet released (may hold a secret's prefix).
    pending: Zeroizing<Vec<u8>>,
}

impl StreamMasker {
    /// A masker for one stream.
    pub fn new(patterns: Arc<Patterns>) -> StreamMasker {
        StreamMasker {
            patterns,
            pending: Zeroizing::new(Vec::new()),
        }
    }

    /// Takes the next read and returns what is safe to write now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        self.release(false)
    }

    /// Ends the stream: returns everything still held, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        self.release(true)
    }

    fn release(&mut self, eof: bool) -> Vec<u8> {
        let buf = &self.pending[..];
        let ranges = self.patterns.masked_ranges(buf);
        // Everything before `commit` is final: no future byte can start a
        // match before it (partial_start), and no masked region crosses it.
        let mut commit = if eof {
            buf.len()
        } else {
            self.patterns.partial_start(buf, 0)
        };
        if let Some(&(s, _)) = ranges.iter().find(|&&(s, e)| s < commit && commit < e) {
            // A masked region that the held tail belongs to could still grow:
            // hold it whole, unless it is absurdly long.
            if commit - s < MAX_HELD_REGION {
                commit = s;
            }
        }
        let mut out = Vec::with_capacity(commit + MASK.len());
        let mut pos = 0;
        for &(s, e) in ranges.iter().take_while(|&&(s, _)| s < commit) {
            out.extend_from_slice(&buf[pos..s]);
            out.extend_from_slice(MASK);
            pos = e.min(commit);
        }
        if pos < commit {
            out.extend_from_slice(&buf[pos..commit]);
        }
        // Shift the held bytes to the front; zero the freed tail.
        let held = buf.len() - commit;
        self.pending.copy_within(commit.., 0);
        zeroize::Zeroize::zeroize(&mut self.pending[held..]);
        self.pending.truncate(held);
        out
    }
}

/// Masks a whole byte string at once (tests and small outputs).
#[cfg(test)]
pub fn mask_all(patterns: &Arc<Patterns>, input: &[u8]) -> Vec<u8> {
    let mut m = StreamMasker::new(patterns.clone());
    let mut out = m.feed(input);
    out.extend(m.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(values: &[&str]) -> Arc<Patterns> {
        Arc::new(Patterns::new(values.iter().map(|v| v.as_bytes())))
    }

    fn masked(values: &[&str], input: &str) -> String {
        String::from_utf8(mask_all(&patterns(values), input.as_bytes())).unwrap()
    }

    /// Feeds `input` in pieces of `step` bytes and checks the result does not
    /// depend on how the input was split.
    fn masked_in_steps(values: &[&str], input: &str, step: usize) -> String {
        let p = patterns(values);
        let mut m = StreamMasker::new(p);
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(step) {
            out.extend(m.feed(piece));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    const M: &str = "<concealed by secref>";

    #[test]
    fn masks_plain_occurrences() {
        assert_eq!(masked(&["hunter2"], "pw=hunter2!"), format!("pw={M}!"));
        assert_eq!(
            masked(&["hunter2"], "hunter2hunter2 x hunter2"),
            format!("{M}{M} x {M}")
        );
        assert_eq!(masked(&["hunter2"], "hunter"), "hunter");
        assert_eq!(masked(&["hunter2"], ""), "");
    }

    #[test]
    fn split_reads_byte_by_byte_match_whole_reads() {
        let values = ["s3cr3t-value", "other\nmulti line"];
        let inputs = [
            "a s3cr3t-value b s3cr3t-valu c s3cr3t-value",
            "other\nmulti line!",
            "s3cr3s3cr3t-value",
            "no secrets here at all",
            "ends with partial s3cr3t-val",
        ];
        for input in inputs {
            let whole = masked(&values, input);
            for step in 1..=input.len() {
                assert_eq!(
                    masked_in_steps(&values, input, step),
                    whole,
                    "{input} / {step}"
                );
            }
            assert!(!whole.contains("s3cr3t-value"));
        }
        assert_eq!(
            masked(&values, "ends with partial s3cr3t-val"),
            "ends with partial s3cr3t-val"
        );
    }

    #[test]
    fn releases_output_as_soon_as_no_match_is_possible() {
        let mut m = StreamMasker::new(patterns(&["s3cr3t"]));
        assert_eq!(m.feed(b"hello "), b"hello ");
        // "s3c" could be the start of the secret: held back.
        assert_eq!(m.feed(b"x s3c"), b"x ");
        // "s3cX" cannot: released.
        assert_eq!(m.feed(b"X\n"), b"s3cX\n");
        assert_eq!(m.feed(b"s3cr3t\n"), format!("{M}\n").as_bytes());
        assert_eq!(m.feed(b"s3"), b"");
        assert_eq!(m.finish(), b"s3");
    }

    #[test]
    fn multi_line_values_and_their_lines() {
        let pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----";
        let out = masked(&[pem], &format!("key:\n{pem}\ndone"));
        assert_eq!(out, format!("key:\n{M}\ndone"));
        // One line of it on its own is still concealed.
        let out = masked(&[pem], "line MIIBOgIBAAJBAKj34GkxFhD9 here");
        assert_eq!(out, format!("line {M} here"));
        // Byte-by-byte too.
        assert_eq!(
            masked_in_steps(&[pem], &format!("key:\n{pem}\ndone"), 1),
            format!("key:\n{M}\ndone")
        );
    }

    #[test]
    fn encodings_are_masked() {
        let value = "p@ss wörd/+?&=\"\\\n";
        let b64 = [
            STANDARD.encode(value),
            STANDARD_NO_PAD.encode(value),
            URL_SAFE.encode(value),
            URL_SAFE_NO_PAD.encode(value),
        ];
        let json = serde_json::to_string(value).unwrap();
        let json = &json[1..json.len() - 1];
        let url20 = percent_encode(value.as_bytes(), URL_ENCODE_SET).to_string();
        assert!(url20.contains("%20"));
        let url_plus = url20.replace("%20", "+");
        let url_lower = String::from_utf8(lowercase_hex_escapes(url20.as_bytes())).unwrap();
        let ascii_json = r#"p@ss w\u00f6rd/+?&=\"\\\n"#;
        for form in b64
            .iter()
            .map(String::as_str)
            .chain([json, &url20, &url_plus, &url_lower, ascii_json])
        {
            assert_eq!(
                masked(&[value], &format!("[{form}]")),
                format!("[{M}]"),
                "{form}"
            );
            for step in [1, 2, 5] {
                assert_eq!(
                    masked_in_steps(&[value], &format!("<{form}>"), step),
                    format!("<{M}>")
                );
            }
        }
    }

    #[test]
    fn base64_inside_a_longer_encoding_is_masked() {
        let secret = "pa55-w0rd!";
        for user in ["u", "us", "usr", "admin"] {
            let header = STANDARD.encode(format!("{user}:{secret}"));
            let out = masked(&[secret], &format!("Authorization: Basic {header}"));
            assert!(out.contains(M), "{user}: {out}");
            // Left unmasked: the user's characters, one mixed character on
            // each side of the value, and the padding.
            let remaining = out.len() - "Authorization: Basic ".len() - M.len();
            let user_chars = ((user.len() + 1) * 8).div_ceil(6);
            assert!(remaining <= user_chars + 1 + 2, "{user}: {out}");
        }
        // Followed by more data, aligned at the start.
        let blob = URL_SAFE_NO_PAD.encode(format!("{secret} and more"));
        assert!(masked(&[secret], &blob).starts_with(M));
    }

    #[test]
    fn overlapping_values_are_concealed_as_one_region() {
        let values = ["abcdef", "defghi"];
        assert_eq!(masked(&values, "x abcdefghi y"), format!("x {M} y"));
        assert_eq!(
            masked_in_steps(&values, "x abcdefghi y", 1),
            format!("x {M} y")
        );
        // Nested: the longer value contains the shorter one.
        let values = ["token", "my-token-42"];
        assert_eq!(masked(&values, "my-token-42 token"), format!("{M} {M}"));
        assert_eq!(
            masked_in_steps(&values, "my-token-42 token", 1),
            format!("{M} {M}")
        );
    }

    #[test]
    fn short_values_are_not_masked() {
        assert!(Patterns::new([b"ab".as_slice()]).is_empty());
        assert_eq!(masked(&["ab", "x"], "abc x"), "abc x");
        assert_eq!(masked(&["abc"], "abc"), M);
    }

    #[test]
    fn binary_values_are_masked() {
        let value = [0xffu8, 0x00, 0x10, 0x80, 0x7f];
        let p = Arc::new(Patterns::new([value.as_slice()]));
        let mut input = b"x".to_vec();
        input.extend_from_slice(&value);
        input.extend_from_slice(b"y");
        let mut want = b"x".to_vec();
        want.extend_from_slice(MASK);
        want.push(b'y');
        assert_eq!(mask_all(&p, &input), want);
        let b64 = format!("={}=", STANDARD.encode(value));
        assert_eq!(mask_all(&p, b64.as_bytes()), [b"=", MASK, b"="].concat());
    }

    /// A tiny deterministic generator, so failures reproduce.
    struct XorShift(u64);
    impl XorShift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn random_inputs_and_splits_never_leak_and_do_not_depend_on_splits() {
        // Digits only: the mask text has none, so any secret left in the
        // output is a miss. A small alphabet makes partial matches frequent.
        let mut rng = XorShift(0x5eed_1234_abcd_ef01);
        for _case in 0..300 {
            let secrets: Vec<String> = (0..1 + rng.below(3))
                .map(|_| {
                    (0..3 + rng.below(6))
                        .map(|_| char::from(b'0' + rng.below(4) as u8))
                        .collect()
                })
                .collect();
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let mut input = String::new();
            for _ in 0..rng.below(40) {
                if rng.below(4) == 0 {
                    input.push_str(&secrets[rng.below(secrets.len())]);
                } else {
                    input.push(char::from(b"0123456789\n"[rng.below(11)]));
                }
            }
            let whole = masked(&refs, &input);
            for s in &secrets {
                assert!(
                    !whole.contains(s.as_str()),
                    "{s} in {whole:?} (input {input:?})"
                );
            }
            // Random split points.
            let p = patterns(&refs);
            let mut m = StreamMasker::new(p);
            let mut out = Vec::new();
            let bytes = input.as_bytes();
            let mut at = 0;
            while at < bytes.len() {
                let n = 1 + rng.below(5).min(bytes.len() - at - 1);
                out.extend(m.feed(&bytes[at..at + n]));
                at += n;
            }
            out.extend(m.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                whole,
                "input {input:?} secrets {secrets:?}"
            );
        }
    }

    #[test]
    fn large_values_are_masked_without_encodings() {
        let big: String = (0..20_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let p = patterns(&[&big]);
        assert_eq!(p.patterns.len(), 1);
        let input = format!("<{big}>");
        assert_eq!(masked_in_steps(&[&big], &input, 4096), format!("<{M}>"));
    }

    #[test]
    fn repeated_overlaps_do_not_leak_fragments() {
        // "aaa" overlaps itself; every byte of a long run is concealed.
        let out = masked_in_steps(&["aaa"], "xaaaaaaay", 1);
        assert_eq!(out, format!("x{M}y"));
    }
}
