//! `secref import`: moves the plaintext values of a dotenv file into the
//! local store and rewrites the file with references in their place.
//!
//! Order of work, so that an interruption at any point loses nothing: parse
//! and plan (nothing written); store every value in one atomic store write;
//! read every value back and compare; only then replace the file, through a
//! temporary file renamed over it. Killed before the rename, the original
//! file is untouched (the store may already hold the values: a new run
//! writes them again as new versions); after it, the new file is complete
//! and every reference in it is stored.

use std::io::Write as _;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use secref::store::{EntryValue, Store};
use secref::{Config, Error, ErrorCode, RefKind, Secret, SecretRef};
use zeroize::Zeroizing;

use crate::commands::write_stdout;
use crate::report::EXIT_OK;
use crate::vars::looks_like_reference;

/// One `NAME=value` assignment of the file: its name and where its value
/// (quotes included) is in the text.
#[derive(Debug)]
struct Assignment {
    name: String,
    value: Range<usize>,
}

/// What happens to one variable.
enum Step {
    /// Its value goes into the store under this reference.
    Store(SecretRef),
    /// Left as it is, and why.
    Keep(&'static str),
}

/// `secref import FILE [--prefix local://…/] [-o OUT] [--dry-run]`.
pub fn run(
    file: &Path,
    prefix: Option<&str>,
    out: Option<&Path>,
    dry_run: bool,
) -> secref::Result<i32> {
    let meta = std::fs::symlink_metadata(file).map_err(|e| io_error(file, "read", &e))?;
    if !meta.file_type().is_file() {
        return Err(Error::new(
            ErrorCode::Unsupported,
            format!(
                "{} is not a regular file (symlinks are not followed)",
                file.display()
            ),
        ));
    }
    let raw = Zeroizing::new(std::fs::read(file).map_err(|e| io_error(file, "read", &e))?);
    let text = std::str::from_utf8(&raw).map_err(|_| {
        Error::new(
            ErrorCode::InvalidUtf8,
            format!("{} is not UTF-8 text", file.display()),
        )
    })?;
    let values = secref::config::parse_dotenv(raw.as_slice(), file)?;
    let values: Vec<(String, Zeroizing<String>)> = values
        .into_iter()
        .map(|(k, v)| (k, Zeroizing::new(v)))
        .collect();
    let spans = assignments(text);
    if spans.len() != values.len() || spans.iter().zip(&values).any(|(a, (n, _))| a.name != *n) {
        return Err(Error::usage(format!(
            "{} uses dotenv syntax `secref import` cannot rewrite line by line; nothing was changed",
            file.display()
        ))
        .with_hint("write one NAME=value per line (values may be quoted)"));
    }
    let folder = folder(file, prefix)?;
    let mut steps = Vec::with_capacity(values.len());
    for (name, value) in &values {
        let step = if value.is_empty() {
            Step::Keep("empty")
        } else if looks_like_reference(value) {
            Step::Keep("already a reference")
        } else {
            let r = SecretRef::parse(format!("local://{folder}/{name}"))
                .map_err(|e| crate::report::prefixed(&e, name))?;
            Step::Store(r)
        };
        steps.push(step);
    }
    if dry_run {
        let mut plan = String::new();
        for ((name, _), step) in values.iter().zip(&steps) {
            match step {
                Step::Store(r) => plan.push_str(&format!("{name} -> {r}\n")),
                Step::Keep(why) => plan.push_str(&format!("{name}: {why}, kept\n")),
            }
        }
        let n = steps.iter().filter(|s| matches!(s, Step::Store(_))).count();
        plan.push_str(&format!(
            "dry run: {n} values would be stored and {} rewritten; nothing was changed\n",
            out.unwrap_or(file).display()
        ));
        write_stdout(plan.as_bytes())?;
        return Ok(EXIT_OK);
    }

    // 1. Store every value in one atomic write (a later definition of a name
    //    wins, as it does when the file is read).
    let mut entries: Vec<(String, EntryValue)> = Vec::new();
    let mut checks: Vec<(SecretRef, &Zeroizing<String>)> = Vec::new();
    for ((_, value), step) in values.iter().zip(&steps) {
        let Step::Store(r) = step else { continue };
        let RefKind::Local(l) = r.kind() else {
            return Err(Error::internal("an import reference is not local"));
        };
        let entry = l.entry();
        entries.retain(|(n, _)| *n != entry);
        entries.push((entry, EntryValue::Single(Secret::from(value.as_str()))));
        checks.retain(|(c, _)| c != r);
        checks.push((r.clone(), value));
    }
    let store = Store::open_from_config(&Config::load()?)?;
    if !entries.is_empty() {
        store.write_many(&entries)?;
    }
    drop(entries);
    // 2. Read every value back before the plaintext goes away.
    for (r, want) in &checks {
        let RefKind::Local(l) = r.kind() else {
            continue;
        };
        let got = store.get(l)?;
        if !secref::constant_time_eq(got.expose_bytes(), want.as_bytes()) {
            return Err(Error::new(
                ErrorCode::Integrity,
                format!(
                    "{r} did not read back as written; {} was not changed",
                    file.display()
                ),
            ));
        }
    }
    // 3. The same text with references in place of the stored values.
    let mut rewritten = String::with_capacity(text.len());
    let mut at = 0;
    for (a, step) in spans.iter().zip(&steps) {
        let Step::Store(r) = step else { continue };
        rewritten.push_str(&text[at..a.value.start]);
        rewritten.push_str(&r.to_string());
        at = a.value.end;
    }
    rewritten.push_str(&text[at..]);
    let target = out.unwrap_or(file);
    replace_atomically(
        target,
        rewritten.as_bytes(),
        meta.permissions().mode() & 0o7777,
    )?;
    eprintln!(
        "imported {} values into local://{folder}/; {} now holds references",
        checks.len(),
        target.display()
    );
    Ok(EXIT_OK)
}

/// The store folder entries go to: `--prefix local://app/` → `app`, else
/// the file's stem (`app.env` → `app`, `.env` → `env`).
fn folder(file: &Path, prefix: Option<&str>) -> secref::Result<String> {
    let folder = match prefix {
        Some(p) => {
            let Some(rest) = p.strip_prefix("local://") else {
                return Err(Error::usage(
                    "--prefix must be a local:// folder, e.g. local://app/",
                ));
            };
            rest.trim_end_matches('/').to_string()
        }
        None => {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let name = name.trim_start_matches('.');
            let stem = match name.split_once('.') {
                Some((stem, _)) if !stem.is_empty() => stem,
                _ => name,
            };
            if stem.is_empty() { "env" } else { stem }.to_string()
        }
    };
    if folder.is_empty() || folder.contains(['#', '?']) {
        return Err(Error::usage(
            "the import folder must be a local:// path such as local://app/",
        ));
    }
    Ok(folder)
}

/// Writes `content` to a temporary file next to `target` with `mode`, syncs
/// it and renames it over `target`, then syncs the directory: `target` is
/// either the old file or the complete new one, never anything between.
fn replace_atomically(target: &Path, content: &[u8], mode: u32) -> secref::Result<()> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = target.file_name().and_then(|n| n.to_str()).unwrap_or("env");
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}."))
        .suffix(".secref-import-tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(&dir)
        .map_err(|e| io_error(&dir, "create a temporary file in", &e))?;
    tmp.write_all(content)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io_error(tmp.path(), "write", &e))?;
    tmp.persist(target)
        .map_err(|e| io_error(target, "replace", &e.error))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&dir, "sync", &e))
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> Error {
    Error::new(
        ErrorCode::Io,
        format!("cannot {what} {}: {}", path.display(), e.kind()),
    )
}

/// The assignments of a dotenv text in order, with the byte range of each
/// value as written (quotes included; an unquoted value without its
/// trailing comment and blanks). Comments, blank lines and everything
/// around the values are what the rewrite keeps.
fn assignments(text: &str) -> Vec<Assignment> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let blank = |c: u8| c == b' ' || c == b'\t';
    let eol = |mut i: usize| {
        while i < b.len() && b[i] != b'\n' {
            i += 1;
        }
        i
    };
    while i < b.len() {
        while i < b.len() && (blank(b[i]) || b[i] == b'\r') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if b[i] == b'\n' || b[i] == b'#' {
            i = eol(i) + 1;
            continue;
        }
        if text[i..].starts_with("export") && b.get(i + 6).is_some_and(|c| blank(*c)) {
            i += 6;
            while i < b.len() && blank(b[i]) {
                i += 1;
            }
        }
        let name_start = i;
        while i < b.len() && b[i] != b'=' && !blank(b[i]) && b[i] != b'\n' {
            i += 1;
        }
        let name = text[name_start..i].to_string();
        while i < b.len() && blank(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            // Not an assignment dotenv accepts: the count check refuses it.
            i = eol(i) + 1;
            continue;
        }
        i += 1;
        while i < b.len() && blank(b[i]) {
            i += 1;
        }
        let start = i;
        let end = match b.get(i) {
            Some(&q @ (b'\'' | b'"')) => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if q == b'"' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                (i + 1).min(b.len())
            }
            _ => {
                let line_end = eol(i);
                let mut end = line_end;
                // ` #` starts a comment after an unquoted value.
                let mut j = i;
                while j < line_end {
                    if b[j] == b'#' && j > i && blank(b[j - 1]) {
                        end = j;
                        break;
                    }
                    j += 1;
                }
                while end > start && (blank(b[end - 1]) || b[end - 1] == b'\r') {
                    end -= 1;
                }
                end
            }
        };
        out.push(Assignment {
            name,
            value: start..end,
        });
        i = eol(end) + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_values_only() {
        let text = "# c\nexport A=1 # note\nB = 'x y'\n\nC=\"m\\\"\nn\"\nD=\n";
        let got: Vec<(String, &str)> = assignments(text)
            .into_iter()
            .map(|a| (a.name, &text[a.value]))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A".to_string(), "1"),
                ("B".to_string(), "'x y'"),
                ("C".to_string(), "\"m\\\"\nn\""),
                ("D".to_string(), ""),
            ]
        );
    }

    #[test]
    fn default_folder_is_the_stem() {
        assert_eq!(folder(Path::new("/x/app.env"), None).unwrap(), "app");
        assert_eq!(folder(Path::new(".env"), None).unwrap(), "env");
        assert_eq!(folder(Path::new("a"), Some("local://p/q/")).unwrap(), "p/q");
        assert!(folder(Path::new("a"), Some("env://X")).is_err());
    }
}
