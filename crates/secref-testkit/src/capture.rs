//! Canary checks: capture everything traced at TRACE level, and look for a
//! canary secret in any text in the forms a leak would take.
//!
//! ```
//! use secref_testkit::capture;
//! let logs = capture::install();
//! tracing::info!(target: "demo", "resolved env://A");
//! assert!(logs.text().contains("resolved env://A"));
//! capture::assert_no_canary(&logs.text(), "canary-7f3e9c1d");
//! ```

use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;

/// Everything the process-wide subscriber installed by [`install`] wrote.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// The captured output so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A test that panicked while logging must not hide later leaks.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a global TRACE subscriber that records
/// events and span open/close into a buffer, and returns that buffer.
///
/// Global rather than per test (`set_default`): tracing caches each
/// callsite's interest process-wide, so a thread-local subscriber can miss
/// events whose callsites other tests registered first. Every test's logs
/// land in the same buffer, which only widens a canary check.
///
/// # Panics
///
/// If something else already installed a global subscriber.
pub fn install() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("capture::install must set the first global subscriber");
        capture
    })
}

/// The forms a leaked `canary` would take: plain, lower/upper hex,
/// percent-encoded, and standard and URL-safe base64 at each of the three
/// byte alignments a canary embedded in a larger encoded blob can have.
///
/// Base64 forms keep only the characters fully determined by the canary's
/// own bytes, so they match wherever the canary sits inside the encoded
/// data.
///
/// ```
/// let forms = secref_testkit::capture::canary_forms("canary-42-abc");
/// assert!(forms.contains(&"canary-42-abc".to_string()));
/// assert!(forms.contains(&"63616e6172792d34322d616263".to_string()));
/// ```
pub fn canary_forms(canary: &str) -> Vec<String> {
    let bytes = canary.as_bytes();
    let mut forms = vec![
        canary.to_string(),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
        bytes.iter().map(|b| format!("{b:02X}")).collect(),
        percent_encoding::utf8_percent_encode(canary, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    ];
    for skip in 0..3 {
        let rest = &bytes[skip.min(bytes.len())..];
        let whole = &rest[..rest.len() / 3 * 3];
        // Shorter runs would match by chance.
        if whole.len() >= 6 {
            forms.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(whole));
            forms.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(whole));
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Panics if `haystack` holds `canary` in any of its [`canary_forms`].
/// The panic message names the form, never the haystack's text.
pub fn assert_no_canary(haystack: &str, canary: &str) {
    for form in canary_forms(canary) {
        assert!(
            !haystack.contains(&form),
            "canary leaked (as {form:?}) into {} bytes of output",
            haystack.len()
        );
    }
}

/// [`assert_no_canary`] over bytes (invalid UTF-8 replaced), naming `what`
/// (a file, a stream) in the panic message.
pub fn assert_no_canary_in(what: &str, haystack: &[u8], canary: &str) {
    let text = String::from_utf8_lossy(haystack);
    for form in canary_forms(canary) {
        assert!(
            !text.contains(&form),
            "canary leaked (as {form:?}) into {what}"
        );
    }
}

/// [`assert_no_canary_in`] over `haystack` as written, with its line
/// breaks removed (base64 wrapped at any column) and with its JSON escapes
/// decoded (`\uXXXX` in either case, surrogate pairs, `\/`): the forms
/// `secref run` conceals beyond the plain ones.
pub fn assert_no_canary_decoded(what: &str, haystack: &[u8], canary: &str) {
    let text = String::from_utf8_lossy(haystack);
    assert_no_canary_in(what, text.as_bytes(), canary);
    let unwrapped: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    assert_no_canary_in(
        &format!("{what} (line breaks removed)"),
        unwrapped.as_bytes(),
        canary,
    );
    assert_no_canary_in(
        &format!("{what} (JSON escapes decoded)"),
        json_unescape(&text).as_bytes(),
        canary,
    );
}

/// Decodes `\uXXXX` (joining surrogate pairs) and `\/`; leaves the rest.
fn json_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut units: Vec<u16> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let unit = rest
            .strip_prefix("\\u")
            .and_then(|r| r.get(..4))
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u16::from_str_radix(h, 16).ok());
        if let Some(u) = unit {
            units.push(u);
            rest = &rest[6..];
            continue;
        }
        out.push_str(&String::from_utf16_lossy(&units));
        units.clear();
        if let Some(r) = rest.strip_prefix("\\/") {
            out.push('/');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("\\\\") {
            out.push_str("\\\\");
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out.push_str(&String::from_utf16_lossy(&units));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_form_at_every_alignment() {
        let canary = "canary-7f3e9c1d";
        for prefix in ["", "x", "xy", "xyz"] {
            let blob = format!("{prefix}{canary}{prefix}");
            for text in [
                base64::engine::general_purpose::STANDARD.encode(&blob),
                base64::engine::general_purpose::URL_SAFE.encode(&blob),
            ] {
                let hit = std::panic::catch_unwind(|| assert_no_canary(&text, canary));
                assert!(hit.is_err(), "missed {prefix:?}");
            }
        }
        let hex: String = canary.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(std::panic::catch_unwind(|| assert_no_canary(&hex, canary)).is_err());
        for leaked in [
            r"\u0063anary-7f3e9c1d",
            "canary-7f\r\n3e9c1d",
            r"canary-7f3e9c1\u0064",
        ] {
            let hit = std::panic::catch_unwind(|| {
                assert_no_canary_decoded("t", leaked.as_bytes(), "canary-7f3e9c1d")
            });
            assert!(hit.is_err(), "missed {leaked}");
        }
        let url = "canary%2D7f3e9c1d";
        assert!(std::panic::catch_unwind(|| assert_no_canary(url, canary)).is_err());
        assert_no_canary("nothing to see", canary);
    }
}
