//! `secref export` formats. Each one quotes so that its reader gets back
//! exactly the original bytes; what cannot be represented is an error, never
//! silently mangled.

use secref::{Error, ErrorCode, Secret};
use zeroize::Zeroizing;

use crate::cli::ExportFormat;

/// Renders `(name, value)` pairs in `format`. The result holds the values, so
/// it is returned in a zeroizing buffer.
pub fn render(
    format: ExportFormat,
    values: &[(String, Secret)],
) -> secref::Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    match format {
        ExportFormat::Dotenv => {
            for (name, value) in values {
                let text = text_of(name, value, "dotenv")?;
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"=\"");
                out.extend_from_slice(dotenv_escape(text).as_bytes());
                out.extend_from_slice(b"\"\n");
            }
        }
        ExportFormat::Shell => {
            for (name, value) in values {
                if value.expose_bytes().contains(&0) {
                    return Err(Error::usage(format!(
                        "{name}: a value with a NUL byte cannot be a shell variable"
                    )));
                }
                out.extend_from_slice(b"export ");
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                shell_quote_into(value.expose_bytes(), &mut out);
                out.push(b'\n');
            }
        }
        ExportFormat::Json => {
            let mut object = serde_json::Map::new();
            for (name, value) in values {
                let text = text_of(name, value, "json")?;
                object.insert(name.clone(), serde_json::Value::String(text.to_string()));
            }
            let value = serde_json::Value::Object(object);
            let text = Zeroizing::new(
                serde_json::to_string_pretty(&value)
                    .map_err(|_| Error::internal("JSON serialisation failed"))?,
            );
            // Zeroize the strings the map held before dropping it.
            if let serde_json::Value::Object(map) = value {
                for (_, v) in map {
                    if let serde_json::Value::String(s) = v {
                        drop(Zeroizing::new(s));
                    }
                }
            }
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
        }
    }
    Ok(out)
}

fn text_of<'a>(name: &str, value: &'a Secret, format: &str) -> secref::Result<&'a str> {
    value.as_text().map_err(|_| {
        Error::new(
            ErrorCode::InvalidUtf8,
            format!("{name}: the value is not UTF-8 and cannot be exported as {format}"),
        )
        .with_hint("use --format shell, or `secref get` for raw bytes")
    })
}

/// Double-quoted dotenv escaping, as dotenv parsers (dotenvy) read it back:
/// `\` `"` `$` are backslash-escaped and a newline becomes `\n`.
pub fn dotenv_escape(value: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(value.len() + 2));
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// POSIX single quoting: `'…'`, each `'` written as `'\''`.
pub fn shell_quote_into(value: &[u8], out: &mut Vec<u8>) {
    out.push(b'\'');
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(&*dotenv_escape("a\"b\\c$d\ne"), "a\\\"b\\\\c\\$d\\ne");
        let mut out = Vec::new();
        shell_quote_into(b"it's", &mut out);
        assert_eq!(out, b"'it'\\''s'");
    }

    #[test]
    fn refuses_what_cannot_be_represented() {
        let bin = vec![("B".to_string(), Secret::new(vec![0xff, 0x01]))];
        let e = render(ExportFormat::Json, &bin).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidUtf8);
        assert!(render(ExportFormat::Dotenv, &bin).is_err());
        assert!(render(ExportFormat::Shell, &bin).is_ok());
        let nul = vec![("N".to_string(), Secret::new(vec![b'a', 0]))];
        assert!(render(ExportFormat::Shell, &nul).is_err());
    }
}
