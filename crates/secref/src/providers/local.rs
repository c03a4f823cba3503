//! `local://path[#field]`: the embedded encrypted store.
//!
//! See [`crate::store`] for the file format, keys and entry kinds.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, ErrorCode, Result};
use crate::provider::{
    BatchResult, Capabilities, Listed, Metadata, Provider, Resolved, Validation, VersionInfo,
};
use crate::reference::{LocalRef, RefKind, SecretRef};
use crate::store::format::StoreFile;
use crate::store::Store;

/// Serves `local://` references from a [`Store`]. Each batch checks once
/// that the store file still holds the verified content (on the async
/// worker, for small batches); otherwise it reads and verifies the file on
/// a blocking thread.
///
/// When the store cannot be opened (no store file yet, no key),
/// [`LocalProvider::unavailable`] registers a provider that answers every
/// `local://` reference with that error, so that other references keep
/// working.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Open(Arc<Store>),
    Unavailable(Error),
}

impl LocalProvider {
    /// A provider over an opened store.
    pub fn new(store: Store) -> Self {
        LocalProvider {
            state: State::Open(Arc::new(store)),
        }
    }

    /// A provider that answers every reference with `error` (for example
    /// `not_found` with the hint `secref init` when there is no store).
    pub fn unavailable(error: Error) -> Self {
        LocalProvider {
            state: State::Unavailable(error),
        }
    }

    /// The store, if it is open.
    pub fn store(&self) -> Option<&Store> {
        match &self.state {
            State::Open(s) => Some(s),
            State::Unavailable(_) => None,
        }
    }

    /// Runs `per_ref` for every reference against one snapshot of the store,
    /// on a blocking thread. Store-level failures (missing file, wrong key,
    /// integrity) fail the whole batch; the rest are per reference.
    async fn with_snapshot<T, F>(&self, refs: &[SecretRef], per_ref: F) -> BatchResult<T>
    where
        T: Send + 'static,
        F: Fn(&Store, &StoreFile, &SecretRef, &LocalRef) -> Result<T> + Send + 'static,
    {
        let store = match &self.state {
            State::Open(s) => s.clone(),
            State::Unavailable(e) => return Err(e.clone().with_provider(self.name())),
        };
        let run = move |store: &Store, file: &StoreFile, refs: &[SecretRef]| -> Vec<Result<T>> {
            refs.iter()
                .map(|r| match r.kind() {
                    RefKind::Local(l) => per_ref(store, file, r, l),
                    _ => Err(Error::internal("local provider got a non-local reference")),
                })
                .collect()
        };
        // The fast path (the file still holds the verified content: an
        // fstat and a ~60-byte read of a cached page, then one small
        // decryption per reference) costs a few microseconds, less than the
        // hop to a blocking thread and back, so small batches run here.
        // Reading and verifying a changed file, a migration (which takes
        // the store's lock) and big batches stay off the async workers.
        if refs.len() <= INLINE_MAX_REFS {
            if let Some(file) = store.unchanged() {
                return Ok(run(&store, &file, refs));
            }
        }
        let refs = refs.to_vec();
        tokio::task::spawn_blocking(move || {
            let file = store.snapshot()?;
            Ok(run(&store, &file, &refs))
        })
        .await
        .map_err(|_| Error::internal("local store task failed"))?
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn families(&self) -> &[&'static str] {
        &["local"]
    }

    /// The store is on this machine and may be changed by any process
    /// (`secref set`/`rm`/`destroy`); an unchanged store costs a read an
    /// `fstat`, a ~60-byte read and one decryption, so answers are not
    /// cached: the next read after a change sees it.
    fn cacheable(&self) -> bool {
        false
    }

    fn capabilities(&self) -> Capabilities {
        SPEC.capabilities
    }

    /// Ready when the whole store file verifies with the key now (a wrong
    /// key or a damaged file is `wrong_key` / `integrity`, even one damaged
    /// in place that reads still see as the content verified last), checked
    /// on a blocking thread like any full read. A store that was never created
    /// is ready: `local://` reads then fail with the `secref init` hint,
    /// and a server may well use only its other providers.
    async fn health(&self) -> Result<()> {
        let State::Open(store) = &self.state else {
            return Ok(());
        };
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.verify())
            .await
            .map_err(|_| Error::internal("local store task failed"))?
            .map_err(|e| e.with_provider("local"))
    }

    /// `local://app/` (or `local://app`): every readable entry below `app/`
    /// and every field of those that hold fields (`db#password`), plus the
    /// fields of an entry named exactly `app`; keys are relative to the
    /// prefix. Deleted and destroyed entries are left out.
    async fn list(&self, _scheme: &str, prefix: &str) -> Result<Vec<Listed>> {
        let store = match &self.state {
            State::Open(s) => s.clone(),
            State::Unavailable(e) => return Err(e.clone().with_provider(self.name())),
        };
        let folder = prefix.trim_end_matches('/').to_string();
        if folder.contains(['#', '?']) {
            return Err(Error::usage(
                "a local:// prefix names a folder or an entry, without #field or ?version",
            ));
        }
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for item in store.list()? {
                let key = if folder.is_empty() {
                    item.as_str()
                } else if let Some(rest) = item.strip_prefix(&folder) {
                    match rest.strip_prefix(['/', '#']) {
                        Some(k) => k,
                        None => continue,
                    }
                } else {
                    continue;
                };
                out.push(Listed {
                    key: key.to_string(),
                    reference: SecretRef::parse(format!("local://{item}"))?,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|_| Error::internal("local store task failed"))?
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        self.with_snapshot(refs, |store, file, _, l| {
            let secret = store.get_in(file, l)?;
            let version = match l.version {
                Some(v) => v,
                None => store
                    .metadata_in(file, &l.entry())?
                    .map_or(0, |m| m.current_version),
            };
            Ok(Resolved::new(secret).with_version(version.to_string()))
        })
        .await
    }

    async fn validate(&self, refs: &[SecretRef]) -> BatchResult<Validation> {
        self.with_snapshot(refs, |store, file, _, l| match store.get_in(file, l) {
            Ok(_) => Ok(Validation::existence(true)),
            Err(e) if is_absent(e.code()) => Ok(Validation::existence(false)),
            Err(e) => Err(e),
        })
        .await
    }

    /// Times, the current version and every kept version (created, deleted,
    /// destroyed), custom metadata in `custom`, plus `custom.entry_kind`
    /// (`single` or `fields`) and `custom.fields` (the field names,
    /// comma-separated). Never values. Fails as a read of the same reference
    /// would.
    async fn metadata(&self, refs: &[SecretRef]) -> BatchResult<Metadata> {
        self.with_snapshot(refs, |store, file, r, l| {
            // Same error as a read would give, without keeping the value.
            drop(store.get_in(file, l)?);
            let fields = store.field_names_in(file, l)?;
            let m = store
                .metadata_in(file, &l.entry())?
                .ok_or_else(|| Error::internal("entry vanished from a snapshot"))?;
            let mut meta = Metadata {
                reference: r.to_canonical().to_string(),
                current_version: Some(m.current_version.to_string()),
                created_at: Some(rfc3339(m.created_time)),
                updated_at: Some(rfc3339(m.updated_time)),
                versions: m
                    .versions
                    .iter()
                    .map(|v| VersionInfo {
                        version: v.version.to_string(),
                        created_at: Some(rfc3339(v.created_time)),
                        deleted_at: v.deletion_time.map(rfc3339),
                        destroyed: v.destroyed,
                    })
                    .collect(),
                custom: m.custom_metadata,
                ..Metadata::default()
            };
            let kind = if fields.is_empty() {
                "single"
            } else {
                "fields"
            };
            meta.custom.insert("entry_kind".into(), kind.into());
            if !fields.is_empty() {
                meta.custom.insert("fields".into(), fields.join(","));
            }
            Ok(meta)
        })
        .await
    }
}

/// The largest batch answered on the async worker when the store is
/// unchanged (see [`LocalProvider::with_snapshot`]): 16 small decryptions
/// stay far below the ~100 µs a task should run between awaits.
const INLINE_MAX_REFS: usize = 16;

/// The errors that mean "there is nothing to read there".
fn is_absent(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotFound
            | ErrorCode::FieldNotFound
            | ErrorCode::VersionDeleted
            | ErrorCode::VersionDestroyed
    )
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// `local://<path…>[#field]`: the embedded encrypted store, always built in.
/// If the store cannot be opened (no store yet, no key, wrong key, corrupt
/// file), `local://` reads fail with that error and every other scheme still
/// works.
pub(crate) const SPEC: crate::registry::ProviderSpec = crate::registry::ProviderSpec {
    name: "local",
    schemes: &["local"],
    feature: None,
    host_local: false,
    config_section: Some("local"),
    env_vars: &["SECREF_STORE", "SECREF_KEY_FILE", "SECREF_KEY"],
    credential_env_vars: &["SECREF_KEY"],
    capabilities: crate::provider::Capabilities {
        versions: true,
        list: true,
        ..crate::provider::Capabilities::NONE
    },
    parse: |input| {
        let parsed = crate::reference::parse_local(input.rest)?;
        // An entry's first segment is its mount for the tenant guard.
        if let RefKind::Local(l) = &parsed.kind {
            if let Some(mount) = l.path.first() {
                input.check_mount(mount)?;
            }
        }
        Ok(parsed)
    },
    parts: |r| {
        let RefKind::Local(l) = r.kind() else {
            return Vec::new();
        };
        let mut v = vec![("entry", l.entry().into())];
        if let Some(f) = &l.field {
            v.push(("field", f.as_str().into()));
        }
        if let Some(n) = l.version {
            v.push(("version", n.into()));
        }
        v
    },
    credentials: crate::credentials::none,
    build: |cfg| {
        // Deferred: building a resolver reads no store file; the first
        // `local://` read verifies it (a wrong key or corrupt file fails
        // that read as it would have failed here).
        let local = match Store::from_config_deferred(cfg) {
            Ok(store) => LocalProvider::new(store),
            Err(e) => {
                tracing::debug!(error_code = %e.code(), "local store unavailable");
                LocalProvider::unavailable(e)
            }
        };
        crate::registry::always(local)
    },
};
