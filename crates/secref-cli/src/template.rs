//! The template language of `secref inject`.
//!
//! ```text
//! password = {{ local://app/db#password }}
//! basic    = {{ local://app/api#token | trim | base64 }}
//! json     = {"token": {{ local://app/api#token | json }}}
//! literal  = \{{ not a placeholder }}
//! ```
//!
//! A placeholder is `{{`, a reference, then any number of `| filter`, then
//! `}}`; blanks around each part are ignored. Filters apply left to right:
//! `base64` (standard alphabet, padded), `json` (a JSON string literal,
//! quotes included; the value must be UTF-8) and `trim` (strips ASCII
//! whitespace at both ends). `\{{` writes a literal `{{`; every other
//! character, `}}` and lone backslashes included, is copied as is.
//!
//! [`parse_template`] is a pure function over the template text: errors
//! carry `line:column` (1-based, columns in characters) and never echo a
//! placeholder's content unless it parses as a reference (it might be a
//! value pasted where a reference belongs).

use base64::Engine as _;
use secref::{Error, ErrorCode, Secret, SecretRef};
use zeroize::Zeroizing;

use crate::vars;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as is.
    Text(String),
    /// A placeholder: the reference and its filters, in order.
    Ref(SecretRef, Vec<Filter>),
}

/// A filter applied to a placeholder's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Standard base64, padded.
    Base64,
    /// A JSON string literal, quotes included.
    Json,
    /// ASCII whitespace removed at both ends.
    Trim,
}

impl Filter {
    fn named(name: &str) -> Option<Filter> {
        match name {
            "base64" => Some(Filter::Base64),
            "json" => Some(Filter::Json),
            "trim" => Some(Filter::Trim),
            _ => None,
        }
    }

    fn apply(self, value: &[u8]) -> secref::Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(match self {
            Filter::Base64 => base64::engine::general_purpose::STANDARD
                .encode(value)
                .into_bytes(),
            Filter::Json => {
                let text = std::str::from_utf8(value).map_err(|_| {
                    Error::new(
                        ErrorCode::InvalidUtf8,
                        "the json filter needs a UTF-8 value",
                    )
                })?;
                serde_json::to_vec(text)
                    .map_err(|_| Error::internal("JSON encoding of a string failed"))?
            }
            Filter::Trim => value.trim_ascii().to_vec(),
        }))
    }
}

/// Parses template text (see the module docs for the grammar).
pub fn parse_template(src: &str) -> secref::Result<Template> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = src;
    loop {
        // The next `{{` or `\{{`, whichever comes first.
        let Some(at) = rest.find("{{") else {
            text.push_str(rest);
            break;
        };
        if rest[..at].ends_with('\\') {
            text.push_str(&rest[..at - 1]);
            text.push_str("{{");
            rest = &rest[at + 2..];
            continue;
        }
        text.push_str(&rest[..at]);
        let open = src.len() - rest.len() + at;
        let body_start = open + 2;
        let Some(len) = src[body_start..].find("}}") else {
            return Err(syntax(src, open, "`{{` is never closed by `}}`"));
        };
        let body = &src[body_start..body_start + len];
        if let Some(nested) = body.find("{{") {
            return Err(syntax(
                src,
                body_start + nested,
                "`{{` inside a placeholder (write `\\{{` for a literal `{{`)",
            ));
        }
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(placeholder(src, body_start, body)?);
        rest = &src[body_start + len + 2..];
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(Template { parts })
}

/// Parses `ref | filter | …` found at byte `start` of `src`.
fn placeholder(src: &str, start: usize, body: &str) -> secref::Result<Part> {
    let mut pieces = body.split('|');
    let first = pieces.next().unwrap_or_default();
    let reference = first.trim();
    let ref_at = start + (first.len() - first.trim_start().len());
    if reference.is_empty() {
        return Err(syntax(
            src,
            ref_at,
            "empty placeholder: a reference is missing",
        ));
    }
    let r = vars::parse_reference(reference).map_err(|e| {
        let (line, col) = position(src, ref_at);
        let mut out = Error::new(e.code(), format!("template {line}:{col}: {}", e.message()));
        if let Some(h) = e.hint() {
            out = out.with_hint(h.to_string());
        }
        out
    })?;
    let mut filters = Vec::new();
    let mut offset = start + first.len() + 1;
    for piece in pieces {
        let name = piece.trim();
        let at = offset + (piece.len() - piece.trim_start().len());
        match Filter::named(name) {
            Some(f) => filters.push(f),
            None if name.is_empty() => {
                return Err(syntax(src, at, "a filter name is missing after `|`"))
            }
            // A short identifier is template syntax, safe to quote.
            None if name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                return Err(syntax(
                    src,
                    at,
                    &format!("unknown filter `{name}` (filters: base64, json, trim)"),
                ))
            }
            None => {
                return Err(syntax(
                    src,
                    at,
                    "unknown filter (filters: base64, json, trim)",
                ))
            }
        }
        offset += piece.len() + 1;
    }
    Ok(Part::Ref(r, filters))
}

/// 1-based line and column (in characters) of byte `at` of `src`.
fn position(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn syntax(src: &str, at: usize, what: &str) -> Error {
    let (line, col) = position(src, at);
    Error::usage(format!("template {line}:{col}: {what}"))
}

impl Template {
    /// Every reference of the template, sorted, without duplicates.
    pub fn references(&self) -> Vec<SecretRef> {
        let mut refs: Vec<SecretRef> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Ref(r, _) => Some(r.clone()),
                Part::Text(_) => None,
            })
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }

    /// Renders the template with `value` giving each reference's value.
    pub fn render<'a>(
        &self,
        value: impl Fn(&SecretRef) -> Option<&'a Secret>,
    ) -> secref::Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::new());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Ref(r, filters) => {
                    let v = value(r)
                        .ok_or_else(|| Error::internal("a template reference was not resolved"))?;
                    let mut bytes = Zeroizing::new(v.expose_bytes().to_vec());
                    for f in filters {
                        bytes = f
                            .apply(&bytes)
                            .map_err(|e| e.with_reference(r.to_canonical()))?;
                    }
                    out.extend_from_slice(&bytes);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, v: &str) -> String {
        let t = parse_template(src).unwrap();
        let s = Secret::from(v);
        String::from_utf8(t.render(|_| Some(&s)).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn placeholders_filters_and_escapes() {
        assert_eq!(render("a={{local://x#y}};", "v"), "a=v;");
        assert_eq!(render("{{  local://x#y |trim| base64 }}", " hi\n"), "aGk=");
        assert_eq!(render("{{ local://x | json }}", "a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(
            render("\\{{ local://x }} }} \\x", "v"),
            "{{ local://x }} }} \\x"
        );
        assert_eq!(render("no placeholders", "v"), "no placeholders");
        let t = parse_template("{{local://b}}{{local://a}}{{local://b}}").unwrap();
        assert_eq!(t.references().len(), 2);
    }

    #[test]
    fn errors_carry_line_and_column_and_no_content() {
        let e = parse_template("ok\n  x {{ local://a").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Usage);
        assert!(e.message().contains("2:5"), "{}", e.message());
        let e = parse_template("{{ local://a | rot13 }}").unwrap_err();
        assert!(e.message().contains("1:16") && e.message().contains("rot13"));
        let e = parse_template("{{ hunter2-not-a-ref }}").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.message().contains("1:4"), "{}", e.message());
        let e = parse_template("{{ local://a | s3cr3t value! }}").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = parse_template("é{{ }}").unwrap_err();
        assert!(e.message().contains("1:5"), "{}", e.message());
        assert!(parse_template("{{ local://a {{ }}").is_err());
        assert!(parse_template("{{ local://a | }}").is_err());
    }

    #[test]
    fn json_filter_needs_utf8() {
        let t = parse_template("{{ local://a | json }}").unwrap();
        let s = Secret::from(vec![0xff, 0xfe]);
        assert_eq!(
            t.render(|_| Some(&s)).unwrap_err().code(),
            ErrorCode::InvalidUtf8
        );
    }

    proptest::proptest! {
        /// Any input parses or fails with a positioned usage-class error;
        /// it never panics, and text without `{{` renders as itself.
        #[test]
        fn parser_is_total(src in "(\\PC|\\{\\{|\\}\\}|\\||\\\\|local://a#b){0,40}") {
            match parse_template(&src) {
                Ok(t) => {
                    if !src.contains("{{") {
                        let none = |_: &SecretRef| None;
                        proptest::prop_assert_eq!(t.render(none).unwrap().to_vec(), src.as_bytes().to_vec());
                    }
                }
                Err(e) => proptest::prop_assert!(e.message().starts_with("template ")),
            }
        }
    }
}
