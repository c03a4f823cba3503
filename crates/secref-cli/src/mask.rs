//! Streaming output masking for `secref run`.
//!
//! Every secret value handed to the child is turned into byte patterns
//! ([`Forms`]): the value itself, its base64 forms (standard and URL-safe,
//! padded and unpadded, and the value-only core of each of the three
//! alignments inside a longer encoding), its URL-encoded forms (`%20` and `+`
//! for a space, upper- and lower-case hex, with the literal-character sets of
//! RFC 3986, JavaScript, Python and encode-everything), its JSON-escaped form
//! and, for a multi-line value, each line of at least [`MIN_LINE_LEN`] bytes.
//! Values over [`MAX_ENCODED_LEN`] bytes are masked as themselves and line by
//! line only. Values shorter than [`MIN_SECRET_LEN`] bytes are not masked:
//! masking a one- or two-character value would destroy the output while
//! protecting nothing.
//!
//! The output is searched in three *views*, each with its own Aho-Corasick
//! automaton, and every match is mapped back to the bytes it came from:
//!
//! * **raw**: the bytes as written, for all of the forms above;
//! * **JSON-normalised**: every `\uXXXX` escape (either hex case, surrogate
//!   pairs joined) and `\/` is decoded and written back the way
//!   `serde_json` writes that character, so any mix of escaped and literal
//!   characters a JSON encoder may produce (Python's `ensure_ascii`, .NET's
//!   upper-case hex, Go's HTML-safe `\u003c`, PHP's `\/`) becomes the one
//!   form `serde_json` gives the pattern. Searched only when a backslash is
//!   present (otherwise it equals the raw view);
//! * **base64-unwrapped**: single line breaks (`\n`, `\r\n`) between base64
//!   characters are dropped, so base64 wrapped at any column (`base64` at 76,
//!   PEM at 64) matches the base64 forms; a match covers the line breaks
//!   inside it. Searched only when a line break is present.
//!
//! The union of all matched ranges (overlapping matches included) is replaced
//! by [`MASK`]: two overlapping values are concealed as one region, so no
//! fragment of either survives; ranges that merely touch stay apart.
//!
//! The child's output is fed through a [`StreamMasker`] one read at a time.
//! Between reads it keeps only the bytes that could still become part of a
//! match (the tail that is a proper prefix of some pattern in some view, and
//! an unfinished JSON escape) and remembers how far an already written
//! [`MASK`] reaches, so a long run of overlapping matches is neither held nor
//! searched again: each byte is searched a bounded number of times, whatever
//! the output. The result does not depend on how the output was split into
//! reads.
//!
//! Limitations (documented, not bugs): other transformations (hex, reversed,
//! split by the child with other bytes in between, JSON-escaped base64 with
//! `\n` escapes as line breaks) are not recognised, and the one or two base64
//! characters at either edge of a value inside a longer encoding, which mix
//! in bits of the neighbouring bytes, are left as they are.

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
/// (certificates, key files) the automata would grow by ~20 copies of the
/// value, and such values are masked as themselves and line by line.
pub const MAX_ENCODED_LEN: usize = 8 * 1024;

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

/// The byte patterns of a set of values, one list per view.
#[derive(Default)]
pub struct Forms {
    /// Searched in the output as written.
    pub raw: Vec<Zeroizing<Vec<u8>>>,
    /// Searched in the JSON-normalised view: each UTF-8 raw form as
    /// `serde_json` escapes it (inside the quotes).
    pub json: Vec<Zeroizing<Vec<u8>>>,
    /// Searched in the base64-unwrapped view: the base64 forms and cores.
    pub base64: Vec<Zeroizing<Vec<u8>>>,
}

impl Forms {
    /// The forms of every value (values shorter than [`MIN_SECRET_LEN`] are
    /// skipped).
    pub fn of<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Forms {
        let mut forms = Forms::default();
        for value in values {
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            let mut raw = |v: Vec<u8>, base64: bool| {
                let v = Zeroizing::new(v);
                if v.len() >= MIN_SECRET_LEN {
                    if base64 {
                        add_unique(&mut forms.base64, &v);
                    }
                    add_unique(&mut forms.raw, &v);
                }
            };
            raw(value.to_vec(), false);
            if value.contains(&b'\n') {
                for line in value.split(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.len() >= MIN_LINE_LEN {
                        raw(line.to_vec(), false);
                    }
                }
            }
            if value.len() > MAX_ENCODED_LEN {
                continue;
            }
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                raw(engine.encode(value).into_bytes(), true);
            }
            for core in base64_cores(value) {
                raw(core, true);
            }
            for set in URL_ENCODE_SETS {
                let percent = Zeroizing::new(percent_encode(value, set).to_string());
                let plus = Zeroizing::new(percent.replace("%20", "+"));
                for form in [&percent, &plus] {
                    raw(form.as_bytes().to_vec(), false);
                    raw(lowercase_hex_escapes(form.as_bytes()), false);
                }
            }
        }
        for form in &forms.raw {
            if let Ok(text) = std::str::from_utf8(form) {
                if let Ok(quoted) = serde_json::to_string(text) {
                    let quoted = Zeroizing::new(quoted);
                    add_unique(&mut forms.json, &quoted.as_bytes()[1..quoted.len() - 1]);
                }
            }
        }
        forms
    }
}

fn add_unique(list: &mut Vec<Zeroizing<Vec<u8>>>, v: &[u8]) {
    if !list.iter().any(|o| o[..] == *v) {
        list.push(Zeroizing::new(v.to_vec()));
    }
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

/// One view's automaton and patterns.
struct Matcher {
    automaton: AhoCorasick,
    /// The patterns again, for the "could this tail still become a match"
    /// check, which the automaton's API does not expose.
    patterns: Vec<Zeroizing<Vec<u8>>>,
    /// Whether any pattern starts with this byte (cheap pre-filter).
    first_bytes: [bool; 256],
    max_len: usize,
}

impl Matcher {
    /// `Ok(None)` when there are no patterns, `Err` when they cannot be
    /// compiled (past the automaton's internal size limits).
    fn new(patterns: Vec<Zeroizing<Vec<u8>>>) -> Result<Option<Matcher>, ()> {
        if patterns.is_empty() {
            return Ok(None);
        }
        // Standard match kind: the only one that reports overlapping
        // matches, which the union-of-ranges masking needs. A contiguous NFA
        // builds in milliseconds even for multi-KiB values, where the DFA the
        // builder would pick for few patterns takes seconds.
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(patterns.iter().map(|p| p.as_slice()))
            .map_err(|_| ())?;
        let mut first_bytes = [false; 256];
        for p in &patterns {
            first_bytes[usize::from(p[0])] = true;
        }
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        Ok(Some(Matcher {
            automaton,
            patterns,
            first_bytes,
            max_len,
        }))
    }

    /// The smallest `i` such that `buf[i..]` is a proper prefix of some
    /// pattern (so more input could complete a match starting there), or
    /// `buf.len()` when there is none. Looks at most `max_len - 1` bytes back.
    fn partial_start(&self, buf: &[u8]) -> usize {
        let len = buf.len();
        let start = len.saturating_sub(self.max_len.saturating_sub(1));
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

    /// Adds the ranges (in `view`'s raw coordinates) of all overlapping
    /// matches in `view` to `ranges`, merging a match into the ranges it
    /// overlaps as it goes (keeps the list short on runs of matches).
    fn find(&self, view: &View<'_>, ranges: &mut Vec<(usize, usize)>) {
        for m in self.automaton.find_overlapping_iter(view.bytes()) {
            let (mut s, mut e) = (view.raw_start(m.start()), view.raw_end(m.end()));
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
    }
}

/// Where a run of view bytes that differs from the raw bytes came from.
#[derive(Clone, Copy)]
struct Edit {
    view: usize,
    view_len: usize,
    raw: usize,
    raw_len: usize,
}

/// A transformed copy of the held output and the map back to it.
#[derive(Default)]
struct ViewBuf {
    bytes: Zeroizing<Vec<u8>>,
    /// In order; bytes between edits are copied one for one.
    edits: Vec<Edit>,
}

impl ViewBuf {
    fn clear(&mut self) {
        zeroize::Zeroize::zeroize(&mut *self.bytes);
        self.edits.clear();
    }

    /// Appends `view_bytes` standing for `raw_len` raw bytes at `raw`.
    fn edit(&mut self, raw: usize, raw_len: usize, view_bytes: &[u8]) {
        self.edits.push(Edit {
            view: self.bytes.len(),
            view_len: view_bytes.len(),
            raw,
            raw_len,
        });
        self.bytes.extend_from_slice(view_bytes);
    }
}

/// A view of the held output: the raw bytes themselves or a [`ViewBuf`].
enum View<'a> {
    Raw(&'a [u8]),
    Mapped(&'a ViewBuf),
}

impl View<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            View::Raw(b) => b,
            View::Mapped(v) => &v.bytes,
        }
    }

    /// The last edit at or before view offset `v`, if any.
    fn edit_before(&self, v: usize) -> Option<Edit> {
        match self {
            View::Raw(_) => None,
            View::Mapped(m) => {
                let i = m.edits.partition_point(|e| e.view <= v);
                i.checked_sub(1).map(|i| m.edits[i])
            }
        }
    }

    /// The raw offset of view byte `v` (or of the end, for `v == len`).
    fn raw_start(&self, v: usize) -> usize {
        match self.edit_before(v) {
            None => v,
            Some(e) if v < e.view + e.view_len => e.raw,
            Some(e) => e.raw + e.raw_len + (v - e.view - e.view_len),
        }
    }

    /// The raw offset just past view byte `end - 1` (`end > 0`).
    fn raw_end(&self, end: usize) -> usize {
        let v = end - 1;
        match self.edit_before(v) {
            None => end,
            Some(e) if v < e.view + e.view_len => e.raw + e.raw_len,
            Some(e) => e.raw + e.raw_len + (v - e.view - e.view_len) + 1,
        }
    }
}

/// Characters of the base64 alphabets (both) and padding.
fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')
}

/// Builds the base64-unwrapped view of `buf`: a single `\n` or `\r\n`
/// preceded by a base64 character and followed by one (or by the end of what
/// has arrived; a trailing `\r` likewise) is dropped.
fn unwrap_base64(buf: &[u8], view: &mut ViewBuf) {
    view.clear();
    let mut copied = 0;
    for at in memchr::memchr_iter(b'\n', buf) {
        let start = if at > 0 && buf[at - 1] == b'\r' {
            at - 1
        } else {
            at
        };
        let before = start > 0 && is_base64_char(buf[start - 1]);
        let after = buf.get(at + 1).is_none_or(|&b| is_base64_char(b));
        if before && after && start >= copied {
            view.bytes.extend_from_slice(&buf[copied..start]);
            view.edit(start, at + 1 - start, &[]);
            copied = at + 1;
        }
    }
    // A `\r` at the end may be the first half of a `\r\n`: dropped for
    // now, so a form it interrupts is still held as a possible match.
    let end = match buf {
        [.., b, b'\r'] if is_base64_char(*b) && buf.len() > copied => buf.len() - 1,
        _ => buf.len(),
    };
    view.bytes.extend_from_slice(&buf[copied..end]);
    if end < buf.len() {
        view.edit(end, 1, &[]);
    }
}

/// One JSON escape at the start of a byte string.
enum Escape {
    /// Not enough bytes yet to tell.
    Unfinished,
    /// Left as it is: this many bytes form one token (`\n`, `\\`, a lone
    /// surrogate, or a backslash that starts no escape).
    Kept(usize),
    /// This many bytes decode to this character.
    Decoded(usize, char),
}

fn hex4(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    if s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// Reads the escape at the start of `s` (`s[0] == b'\\'`).
fn json_escape(s: &[u8], eof: bool) -> Escape {
    let unfinished = |n: usize| {
        if s.len() < n && !eof {
            Some(Escape::Unfinished)
        } else {
            None
        }
    };
    if let Some(u) = unfinished(2) {
        return u;
    }
    match s.get(1) {
        Some(b'/') => Escape::Decoded(2, '/'),
        Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => Escape::Kept(2),
        Some(b'u') => {
            if let Some(u) = unfinished(6) {
                return u;
            }
            let Some(unit) = hex4(&s[2..]) else {
                return Escape::Kept(1);
            };
            match unit {
                0xD800..=0xDBFF => {
                    if let Some(u) = unfinished(12) {
                        return u;
                    }
                    let low = s
                        .get(6..8)
                        .filter(|p| *p == b"\\u")
                        .and_then(|_| hex4(&s[8..]))
                        .filter(|l| (0xDC00..=0xDFFF).contains(l));
                    match low {
                        Some(low) => {
                            let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            char::from_u32(c).map_or(Escape::Kept(12), |c| Escape::Decoded(12, c))
                        }
                        None => Escape::Kept(6),
                    }
                }
                0xDC00..=0xDFFF => Escape::Kept(6),
                _ => char::from_u32(unit).map_or(Escape::Kept(6), |c| Escape::Decoded(6, c)),
            }
        }
        _ => Escape::Kept(1),
    }
}

/// Appends `c` the way `serde_json` writes it inside a string.
fn push_json_char(c: char, out: &mut Vec<u8>) {
    let short = match c {
        '"' => Some(b'"'),
        '\\' => Some(b'\\'),
        '\u{8}' => Some(b'b'),
        '\u{c}' => Some(b'f'),
        '\n' => Some(b'n'),
        '\r' => Some(b'r'),
        '\t' => Some(b't'),
        _ => None,
    };
    if let Some(s) = short {
        out.extend_from_slice(&[b'\\', s]);
    } else if u32::from(c) < 0x20 {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let c = u32::from(c) as usize;
        out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[c >> 4], HEX[c & 15]]);
    } else {
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

/// Builds the JSON-normalised view of `buf` (see the module docs) and
/// records the raw span of every multi-byte escape in `tokens`. Returns how
/// many raw bytes the view covers: all of them, or up to an escape that is
/// not finished yet (held until the rest arrives).
fn normalise_json(
    buf: &[u8],
    eof: bool,
    view: &mut ViewBuf,
    tokens: &mut Vec<(usize, usize)>,
) -> usize {
    view.clear();
    tokens.clear();
    let mut copied = 0;
    let mut at = 0;
    while let Some(off) = memchr::memchr(b'\\', &buf[at..]) {
        at += off;
        match json_escape(&buf[at..], eof) {
            Escape::Unfinished => {
                view.bytes.extend_from_slice(&buf[copied..at]);
                return at;
            }
            Escape::Kept(n) => {
                if n > 1 {
                    tokens.push((at, at + n));
                }
                at += n;
            }
            Escape::Decoded(n, c) => {
                view.bytes.extend_from_slice(&buf[copied..at]);
                let mut canonical = Zeroizing::new(Vec::with_capacity(4));
                push_json_char(c, &mut canonical);
                view.edit(at, n, &canonical);
                tokens.push((at, at + n));
                at += n;
                copied = at;
            }
        }
    }
    view.bytes.extend_from_slice(&buf[copied..]);
    buf.len()
}

/// The compiled patterns of every value to conceal. Shared by the masker of
/// each output stream.
pub struct Patterns {
    raw: Option<Matcher>,
    json: Option<Matcher>,
    base64: Option<Matcher>,
    usable: bool,
}

impl Patterns {
    /// Compiles the patterns of `values` (values shorter than
    /// [`MIN_SECRET_LEN`] are skipped).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Patterns {
        let forms = Forms::of(values);
        let (raw, json, base64) = (
            Matcher::new(forms.raw),
            Matcher::new(forms.json),
            Matcher::new(forms.base64),
        );
        let usable = raw.is_ok() && json.is_ok() && base64.is_ok();
        Patterns {
            raw: raw.ok().flatten(),
            json: json.ok().flatten(),
            base64: base64.ok().flatten(),
            usable,
        }
    }

    /// Whether there is at least one pattern to conceal.
    pub fn is_empty(&self) -> bool {
        self.usable && self.raw.is_none()
    }

    /// False when patterns exist but could not be compiled (refusing to run
    /// unmasked is then the safe answer, which the caller gives).
    pub fn is_usable(&self) -> bool {
        self.usable
    }
}

/// Masks one output stream, read by read.
pub struct StreamMasker {
    patterns: Arc<Patterns>,
    /// Bytes received but not yet released (may hold a secret's prefix).
    pending: Zeroizing<Vec<u8>>,
    /// How many bytes at the front of `pending` belong to a region whose
    /// [`MASK`] was already written.
    concealed: usize,
    /// Scratch space reused between reads.
    json_view: ViewBuf,
    base64_view: ViewBuf,
    tokens: Vec<(usize, usize)>,
    ranges: Vec<(usize, usize)>,
}

impl StreamMasker {
    /// A masker for one stream.
    pub fn new(patterns: Arc<Patterns>) -> StreamMasker {
        StreamMasker {
            patterns,
            pending: Zeroizing::new(Vec::new()),
            concealed: 0,
            json_view: ViewBuf::default(),
            base64_view: ViewBuf::default(),
            tokens: Vec::new(),
            ranges: Vec::new(),
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
        let patterns = &*self.patterns;
        let buf = &self.pending[..];
        let len = buf.len();
        let ranges = &mut self.ranges;
        ranges.clear();
        // Everything before `commit` is final: no later byte can complete a
        // match that starts before it, in any view.
        let mut commit = len;
        if let Some(raw) = &patterns.raw {
            raw.find(&View::Raw(buf), ranges);
            if !eof {
                commit = commit.min(raw.partial_start(buf));
            }
        }
        // Without a backslash the JSON view is the raw view, and every JSON
        // form without one is also a raw form: nothing more to find.
        let mut tokens: &[(usize, usize)] = &[];
        if let Some(json) = patterns
            .json
            .as_ref()
            .filter(|_| memchr::memchr(b'\\', buf).is_some())
        {
            let covered = normalise_json(buf, eof, &mut self.json_view, &mut self.tokens);
            let view = View::Mapped(&self.json_view);
            json.find(&view, ranges);
            if !eof {
                let partial = view.raw_start(json.partial_start(view.bytes()));
                commit = commit.min(partial).min(covered);
            }
            tokens = &self.tokens;
        }
        if let Some(base64) = patterns
            .base64
            .as_ref()
            .filter(|_| memchr::memchr2(b'\n', b'\r', buf).is_some())
        {
            unwrap_base64(buf, &mut self.base64_view);
            let view = View::Mapped(&self.base64_view);
            base64.find(&view, ranges);
            if !eof {
                commit = commit.min(view.raw_start(base64.partial_start(view.bytes())));
            }
        }
        // Never stop inside a JSON escape: the next search starts at
        // `commit` and must read the escapes as a search of the whole stream
        // would (`\\u0041` is a backslash and `u0041`, not `\` + `A`).
        let i = tokens.partition_point(|&(s, _)| s < commit);
        if let Some(&(s, e)) = i.checked_sub(1).map(|i| &tokens[i]) {
            if commit < e {
                commit = s;
            }
        }

        ranges.sort_unstable();
        let mut out = Vec::with_capacity(commit + MASK.len());
        let mut open_end = self.concealed;
        let mut cursor = 0;
        for &(s, e) in ranges.iter() {
            if s >= commit {
                break;
            }
            if s < open_end {
                // Overlaps the region being concealed: it grows.
                open_end = open_end.max(e);
                continue;
            }
            out.extend_from_slice(&buf[cursor.max(open_end)..s]);
            out.extend_from_slice(MASK);
            cursor = s;
            open_end = e;
        }
        let from = cursor.max(open_end);
        if from < commit {
            out.extend_from_slice(&buf[from..commit]);
        }
        self.concealed = open_end.saturating_sub(commit);
        // Shift the held bytes to the front; zero the freed tail.
        let held = len - commit;
        self.pending.copy_within(commit.., 0);
        zeroize::Zeroize::zeroize(&mut self.pending[held..]);
        self.pending.truncate(held);
        out
    }
}

/// Masks a whole byte string at once (tests, fuzzing and small outputs).
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
        let ascii_json = r#"p@ss w\u00f6rd\/+?&=\"\\\n"#;
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
        let forms = Forms::of([big.as_bytes()]);
        assert_eq!(forms.raw.len(), 1);
        assert!(forms.base64.is_empty());
        let input = format!("<{big}>");
        assert_eq!(masked_in_steps(&[&big], &input, 4096), format!("<{M}>"));
    }

    #[test]
    fn repeated_overlaps_do_not_leak_fragments() {
        // "aaa" overlaps itself; every byte of a long run is concealed.
        let out = masked_in_steps(&["aaa"], "xaaaaaaay", 1);
        assert_eq!(out, format!("x{M}y"));
    }

    /// The forms real JSON encoders write for `value`, besides serde's.
    fn json_encoder_forms(value: &str) -> Vec<String> {
        let serde = serde_json::to_string(value).unwrap();
        let serde = &serde[1..serde.len() - 1];
        let mut python = String::new(); // ensure_ascii: \u00e9, surrogate pairs
        let mut dotnet = String::new(); // upper-case hex, + < > & ' escaped
        let mut go = String::new(); // HTML-safe
        let mut php = String::new(); // \/ and \u00e9
        let mut every = String::new(); // every character as \uXXXX
        for c in serde.chars() {
            let mut units = [0u16; 2];
            let u = c.encode_utf16(&mut units);
            let lower: String = u.iter().map(|u| format!("\\u{u:04x}")).collect();
            let upper: String = u.iter().map(|u| format!("\\u{u:04X}")).collect();
            python.push_str(&if c.is_ascii() {
                c.to_string()
            } else {
                lower.clone()
            });
            dotnet.push_str(&if c.is_ascii() && !"+<>&'".contains(c) {
                c.to_string()
            } else {
                upper.clone()
            });
            go.push_str(&if "<>&".contains(c) {
                lower.clone()
            } else {
                c.to_string()
            });
            php.push_str(&match c {
                '/' => "\\/".to_string(),
                c if !c.is_ascii() => lower.clone(),
                c => c.to_string(),
            });
        }
        // Every character escaped (skipping the existing escapes' bodies).
        let mut chars = value.chars();
        for c in chars.by_ref() {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                every.push_str(&format!("\\u{u:04X}"));
            }
        }
        vec![serde.to_string(), python, dotnet, go, php, every]
    }

    #[test]
    fn json_encoder_forms_are_masked_in_any_split() {
        for value in ["p@ss wörd/+<>&'\"\\\n😀x", "plain-Value/123", "añ€𝄞"] {
            for form in json_encoder_forms(value) {
                let input = format!("{{\"k\":\"{form}\"}}");
                let want = format!("{{\"k\":\"{M}\"}}");
                assert_eq!(masked(&[value], &input), want, "{form}");
                for step in [1, 3, 7] {
                    assert_eq!(masked_in_steps(&[value], &input, step), want, "{form}");
                }
            }
        }
        // An escaped backslash followed by `u0041` is not an escape.
        assert_eq!(
            masked(&["AAA"], r"\\u0041\\u0041\\u0041"),
            r"\\u0041\\u0041\\u0041"
        );
        assert_eq!(masked(&["AAA"], r"x\u0041\u0041A"), format!("x{M}"));
    }

    #[test]
    fn json_view_writes_characters_as_serde_json_does() {
        for c in (0u32..0x300)
            .chain([0x2028, 0x1F600])
            .filter_map(char::from_u32)
        {
            let mut ours = Vec::new();
            push_json_char(c, &mut ours);
            let serde = serde_json::to_string(&c.to_string()).unwrap();
            assert_eq!(ours, serde.as_bytes()[1..serde.len() - 1], "{c:?}");
        }
    }

    fn wrapped(encoded: &str, width: usize, eol: &str) -> String {
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(width)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        lines.join(eol) + eol
    }

    #[test]
    fn wrapped_base64_is_masked_including_its_line_breaks() {
        let secret = "correct horse battery staple, a long secret value of 70 bytes or so..";
        for prefix in ["", "u", "us", "usr:"] {
            let blob = STANDARD.encode(format!("{prefix}{secret}"));
            for (width, eol) in [
                (76, "\n"),
                (64, "\n"),
                (76, "\r\n"),
                (64, "\r\n"),
                (5, "\n"),
            ] {
                let text = wrapped(&blob, width, eol);
                let out = masked(&[secret], &text);
                assert!(out.contains(M), "{width} {eol:?}: {out}");
                let rest = out.replace(M, "").replace(['\r', '\n'], "");
                // Only the prefix's characters, the mixed edges and padding stay.
                assert!(
                    rest.len() <= prefix.len() * 4 / 3 + 5,
                    "{width} {eol:?}: {out}"
                );
                for step in [1, 13, 76] {
                    assert_eq!(masked_in_steps(&[secret], &text, step), out);
                }
            }
        }
        // Exactly the encoded span is replaced, line breaks inside included.
        let text = format!(
            "begin\n{}end\n",
            wrapped(&STANDARD.encode(secret), 76, "\n")
        );
        assert_eq!(masked(&[secret], &text), format!("begin\n{M}\nend\n"));
        // A blank line is not a wrap.
        let b64 = STANDARD.encode(secret);
        let (a, b) = b64.split_at(40);
        assert_eq!(
            masked(&[secret], &format!("{a}\n\n{b}")),
            format!("{a}\n\n{b}")
        );
    }

    #[test]
    fn zeros_with_a_low_entropy_value_are_one_region() {
        let input = vec![b'0'; 3 << 20];
        let p = patterns(&["000"]);
        let mut m = StreamMasker::new(p);
        let mut out = Vec::new();
        for chunk in input.chunks(16 * 1024) {
            out.extend(m.feed(chunk));
            // Nothing but a possible prefix is ever held.
            assert!(m.pending.len() < 16);
        }
        out.extend(m.finish());
        assert_eq!(out, MASK);
        assert_eq!(masked(&["000"], "1000010"), format!("1{M}10"));
        assert_eq!(masked(&["000"], "x00000 000 00"), format!("x{M} {M} 00"));
    }

    mod splits {
        use super::*;
        use proptest::prelude::*;

        /// Pieces of output: filler that cannot join a form, and the
        /// secret in one of its forms.
        fn piece() -> impl Strategy<Value = (String, bool)> {
            let value = "s3cr3t/+ü\"x";
            let forms: Vec<String> = {
                let mut f = json_encoder_forms(value);
                f.push(value.to_string());
                f.push(STANDARD.encode(value));
                f.push(
                    wrapped(&STANDARD.encode(value), 7, "\r\n")
                        .trim_end()
                        .to_string(),
                );
                f.push(URL_SAFE_NO_PAD.encode(value));
                f
            };
            prop_oneof![
                "[ .,;:!?\\n]{1,6}".prop_map(|s| (s, false)),
                proptest::sample::select(forms).prop_map(|s| (s, true)),
            ]
        }

        proptest! {
            #[test]
            fn output_is_the_input_with_each_form_replaced(
                pieces in proptest::collection::vec(piece(), 0..12),
                cuts in proptest::collection::vec(0usize..400, 0..8),
            ) {
                let value = "s3cr3t/+ü\"x";
                // Filler between forms, so each form is its own region.
                let mut input = String::new();
                let mut want = String::new();
                for (text, secret) in &pieces {
                    input.push('|');
                    want.push('|');
                    input.push_str(text);
                    want.push_str(if *secret { M } else { text });
                }
                let p = patterns(&[value]);
                let bytes = input.as_bytes();
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
                cuts.sort_unstable();
                let mut m = StreamMasker::new(p);
                let mut out = Vec::new();
                let mut at = 0;
                for c in cuts.into_iter().chain([bytes.len()]) {
                    out.extend(m.feed(&bytes[at..c]));
                    at = c;
                }
                out.extend(m.finish());
                prop_assert_eq!(String::from_utf8(out).unwrap(), want);
            }

            #[test]
            fn random_bytes_do_not_depend_on_splits(
                input in proptest::collection::vec(
                    proptest::sample::select(b"00\\u0030/\n\rMDAw".to_vec()), 0..300),
                cuts in proptest::collection::vec(0usize..300, 0..10),
            ) {
                let p = patterns(&["000", "0/0"]);
                let whole = mask_all(&p, &input);
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
                cuts.sort_unstable();
                let mut m = StreamMasker::new(p);
                let mut out = Vec::new();
                let mut at = 0;
                for c in cuts.into_iter().chain([input.len()]) {
                    out.extend(m.feed(&input[at..c]));
                    at = c;
                }
                out.extend(m.finish());
                prop_assert_eq!(out, whole);
            }
        }
    }
}
