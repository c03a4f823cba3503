//! The local-store commands: `init`, `set`, `rm`, `ls`.

use std::io::{IsTerminal, Read};

use secref::reference::LocalRef;
use secref::store::{Store, StoreKey, KEY_ENV};
use secref::{Config, Error, ErrorCode, RefKind, Secret};
use zeroize::Zeroizing;

use crate::commands::write_stdout;
use crate::report::EXIT_OK;

/// `secref init`: creates the key (unless one exists) and an empty store.
/// Prints paths only, never the key.
pub fn init() -> secref::Result<i32> {
    let cfg = Config::load()?;
    let store_path = Store::default_path(&cfg)?;
    let key_from_env = cfg.env.get(KEY_ENV).is_some();
    let key_path = StoreKey::default_key_path(&cfg)?;
    let store_exists = store_path.exists();
    let key_exists = key_from_env || key_path.exists();
    let key_origin = if key_from_env {
        format!("${KEY_ENV}")
    } else {
        key_path.display().to_string()
    };

    if store_exists {
        let what = if key_exists {
            format!(
                "already initialised: the key {key_origin} and the store {} exist; refusing to overwrite them",
                store_path.display()
            )
        } else {
            format!(
                "the store {} exists but its key {} does not",
                store_path.display(),
                key_path.display()
            )
        };
        return Err(Error::usage(format!("{what}; nothing was changed")).with_hint(
            "to start over, move the store (and its key) away first: every secret in it is lost",
        ));
    }

    let mut report = String::new();
    let (key, wrote_key) = if key_exists {
        report.push_str(&format!("using existing key: {key_origin}\n"));
        (StoreKey::load(&cfg)?, false)
    } else {
        let key = StoreKey::generate();
        key.write_new_key_file(&key_path)?;
        report.push_str(&format!("created key file: {}\n", key_path.display()));
        (key, true)
    };
    if let Err(e) = Store::create(&store_path, &key) {
        // Leave nothing behind: a fresh key without its store would make the
        // next `init` refuse for no reason.
        if wrote_key {
            let _ = std::fs::remove_file(&key_path);
        }
        return Err(e);
    }
    report.push_str(&format!("created store: {}\n", store_path.display()));
    write_stdout(report.as_bytes())?;
    Ok(EXIT_OK)
}

/// Parses a reference that must be `local://`.
fn local_ref(input: &str, command: &str) -> secref::Result<LocalRef> {
    let r = crate::vars::parse_reference(input)?;
    match r.kind() {
        RefKind::Local(l) => Ok(l.clone()),
        _ => Err(Error::usage(format!(
            "`secref {command}` works on the local store only, not {}:// references",
            r.scheme()
        ))
        .with_reference(r.to_canonical())
        .with_hint("use a local:// reference, e.g. local://app/db#password")),
    }
}

/// `secref set`: stores stdin under a `local://` reference.
pub fn set(input: &str, raw: bool) -> secref::Result<i32> {
    let r = local_ref(input, "set")?;
    let store = Store::open_from_config(&Config::load()?)?;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading the value from stdin; end it with Ctrl-D");
    }
    let mut value = Zeroizing::new(Vec::new());
    stdin
        .lock()
        .read_to_end(&mut value)
        .map_err(|e| Error::new(ErrorCode::Io, format!("cannot read stdin: {}", e.kind())))?;
    if !raw {
        strip_one_newline(&mut value);
    }
    if value.is_empty() {
        return Err(
            Error::usage("the value read from stdin is empty; nothing was stored").with_hint(
                "pipe the value in: printf '%s' \"$VALUE\" | secref set local://app/key",
            ),
        );
    }
    store.set(&r, Secret::copy_from(&value))?;
    eprintln!("stored local://{}", display_name(&r));
    Ok(EXIT_OK)
}

/// Removes exactly one trailing `\n` (or `\r\n`).
fn strip_one_newline(value: &mut Zeroizing<Vec<u8>>) {
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
}

fn display_name(r: &LocalRef) -> String {
    match &r.field {
        Some(f) => format!("{}#{f}", r.entry()),
        None => r.entry(),
    }
}

/// `secref rm`: removes an entry or one field.
pub fn rm(input: &str) -> secref::Result<i32> {
    let r = local_ref(input, "rm")?;
    let store = Store::open_from_config(&Config::load()?)?;
    if !store.remove(&r)? {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("local://{} is not in the store", display_name(&r)),
        )
        .with_hint("`secref ls` lists what is stored"));
    }
    eprintln!("removed local://{}", display_name(&r));
    Ok(EXIT_OK)
}

/// `secref ls`: entry names (and `name#field`), one a line.
pub fn ls() -> secref::Result<i32> {
    let store = Store::open_from_config(&Config::load()?)?;
    let mut out = String::new();
    for name in store.list()? {
        out.push_str(&format!("local://{name}\n"));
    }
    write_stdout(out.as_bytes())?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_exactly_one_newline() {
        for (input, want) in [
            (&b"v\n"[..], &b"v"[..]),
            (b"v\n\n", b"v\n"),
            (b"v\r\n", b"v"),
            (b"v", b"v"),
            (b"\n", b""),
            (b"v\r", b"v\r"),
        ] {
            let mut v = Zeroizing::new(input.to_vec());
            strip_one_newline(&mut v);
            assert_eq!(&v[..], want);
        }
    }
}
