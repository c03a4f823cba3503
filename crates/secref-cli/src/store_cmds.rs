//! The local-store commands: `init`, `set`, `rm`, `destroy`, `undelete`,
//! `history`, `ls`.

use std::io::{IsTerminal, Read};

use secref::reference::LocalRef;
use secref::store::{Store, StoreKey, KEY_ENV};
use secref::{Config, Error, ErrorCode, RefKind, Secret, SecretRef};
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
    let r = SecretRef::parse(input)?;
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

/// `secref set`: stores stdin under a `local://` reference as a new version.
pub fn set(input: &str, raw: bool, cas: Option<u64>) -> secref::Result<i32> {
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
    let version = store.set_cas(&r, Secret::copy_from(&value), cas)?;
    eprintln!("stored local://{} (version {version})", display_name(&r));
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
    let mut s = r.entry();
    if let Some(f) = &r.field {
        s.push('#');
        s.push_str(f);
    }
    if let Some(v) = r.version {
        s.push_str(&format!("?version={v}"));
    }
    s
}

/// `secref rm`: soft-deletes (or with `--destroy`, destroys) the current
/// or pinned version of an entry, or removes one field.
pub fn rm(input: &str, destroy: bool) -> secref::Result<i32> {
    let r = local_ref(input, "rm")?;
    let store = Store::open_from_config(&Config::load()?)?;
    if destroy {
        if r.field.is_some() {
            return Err(Error::usage(
                "--destroy erases whole versions; name the entry without #field",
            )
            .with_hint(format!("secref rm --destroy local://{}", r.entry())));
        }
        let name = r.entry();
        let version = match r.version {
            Some(v) => v,
            None => store.metadata(&name)?.current_version,
        };
        if store.destroy(&name, &[version])? == 0 {
            return Err(nothing_to(&r, "destroy"));
        }
        eprintln!("destroyed version {version} of local://{name}");
        return Ok(EXIT_OK);
    }
    if !store.remove(&r)? {
        return Err(nothing_to(&r, "remove"));
    }
    eprintln!(
        "removed local://{} (recoverable with `secref undelete`)",
        display_name(&r)
    );
    Ok(EXIT_OK)
}

/// `secref destroy --versions 1,2`.
pub fn destroy(input: &str, versions: &[u64]) -> secref::Result<i32> {
    let (store, name) = entry_command(input, "destroy")?;
    let n = store.destroy(&name, versions)?;
    eprintln!("destroyed {n} version(s) of local://{name}");
    Ok(EXIT_OK)
}

/// `secref undelete [--versions 1,2]` (default: the current version).
pub fn undelete(input: &str, versions: &[u64]) -> secref::Result<i32> {
    let (store, name) = entry_command(input, "undelete")?;
    let versions = if versions.is_empty() {
        vec![store.metadata(&name)?.current_version]
    } else {
        versions.to_vec()
    };
    let n = store.undelete(&name, &versions)?;
    if n == 0 {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("local://{name} has no deleted version among {versions:?}"),
        )
        .with_hint(format!(
            "`secref history local://{name}` lists its versions"
        )));
    }
    eprintln!("restored {n} version(s) of local://{name}");
    Ok(EXIT_OK)
}

/// `secref history`: versions and metadata, never values.
pub fn history(input: &str, json: bool) -> secref::Result<i32> {
    let (store, name) = entry_command(input, "history")?;
    let meta = store.metadata(&name)?;
    let time = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let out = if json {
        let versions: Vec<_> = meta
            .versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "version": v.version,
                    "created_time": time(v.created_time),
                    "deletion_time": v.deletion_time.map(time),
                    "destroyed": v.destroyed,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "reference": format!("local://{name}"),
            "created_time": time(meta.created_time),
            "updated_time": time(meta.updated_time),
            "current_version": meta.current_version,
            "oldest_version": meta.oldest_version,
            "max_versions": meta.max_versions,
            "cas_required": meta.cas_required,
            "custom_metadata": meta.custom_metadata,
            "versions": versions,
        });
        format!("{doc:#}\n")
    } else {
        let mut out = format!(
            "local://{name}: current version {}, created {}, updated {}\n",
            meta.current_version,
            time(meta.created_time),
            time(meta.updated_time)
        );
        out.push_str(&format!(
            "{:<8} {:<21} {:<21} DESTROYED\n",
            "VERSION", "CREATED", "DELETED"
        ));
        for v in meta.versions.iter().rev() {
            out.push_str(&format!(
                "{:<8} {:<21} {:<21} {}\n",
                v.version,
                time(v.created_time),
                v.deletion_time.map_or_else(|| "-".to_string(), time),
                if v.destroyed { "yes" } else { "no" }
            ));
        }
        out
    };
    write_stdout(out.as_bytes())?;
    Ok(EXIT_OK)
}

/// Opens the store for a command on a whole entry (`local://app/db`, no
/// `#field`, no `?version=`).
fn entry_command(input: &str, command: &str) -> secref::Result<(Store, String)> {
    let r = local_ref(input, command)?;
    if r.field.is_some() || r.version.is_some() {
        return Err(Error::usage(format!(
            "`secref {command}` works on whole entries: name it without #field or ?version="
        ))
        .with_hint(format!("secref {command} local://{}", r.entry())));
    }
    let store = Store::open_from_config(&Config::load()?)?;
    Ok((store, r.entry()))
}

fn nothing_to(r: &LocalRef, what: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("local://{} has nothing to {what}", display_name(r)),
    )
    .with_hint("`secref ls` lists what is stored, `secref history` an entry's versions")
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
