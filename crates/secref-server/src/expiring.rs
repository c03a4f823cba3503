//! A table of entries that expire, with a quota per owner.
//!
//! The server keeps two kinds of short-lived state a caller can make it
//! create: revoked lease ids (until the lease would have ended) and Vault
//! wrapping tokens (until unwrapped or expired). Both live in an
//! [`Expiring`] table so that:
//!
//! * **one caller cannot lock out another**: each owner (a principal's name)
//!   may hold at most `quota` entries; past it, only that owner is refused
//!   (`rate_limited`, retryable);
//! * **bookkeeping is O(1) per entry**: an insert or take is a hash-map
//!   operation plus one push onto the bucket of the second the entry
//!   expires in; nothing ever scans the whole table;
//! * **expiry is lazy and in bulk**: each insert first drops the buckets
//!   whose second has passed, entry by entry, so the cost of expiring an
//!   entry is paid once, by whoever happens to insert next.
//!
//! The buckets are a `BTreeMap` keyed by expiry second: deadlines vary per
//! entry (clients choose lease and wrap TTLs), so a fixed-slot timing wheel
//! would need overflow handling, and `tokio_util`'s `DelayQueue` needs a task
//! polling it; an ordered map of seconds gives the same bulk expiry with no
//! background task.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Why an insert was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The key is already in the table (and not expired).
    Exists,
    /// The owner holds its quota of entries.
    Full,
}

struct Entry<V> {
    owner: Arc<str>,
    expires: Instant,
    value: V,
}

struct Inner<K, V> {
    entries: HashMap<K, Entry<V>>,
    per_owner: HashMap<Arc<str>, usize>,
    /// The `kind` label of the `secref_leases_held` gauge, if reported.
    kind: Option<&'static str>,
    /// Expiry second (since `epoch`, rounded up) → keys that expire in it.
    due: BTreeMap<u64, Vec<K>>,
}

/// Entries of type `V` under keys `K`, each owned by a principal and ending
/// at a deadline. See the module docs.
pub struct Expiring<K, V> {
    inner: Mutex<Inner<K, V>>,
    quota: usize,
    epoch: Instant,
}

impl<K, V> std::fmt::Debug for Expiring<K, V> {
    // Never the keys or values: they are lease ids and wrapped secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("Expiring")
            .field("entries", &inner.entries.len())
            .field("owners", &inner.per_owner.len())
            .field("quota", &self.quota)
            .finish()
    }
}

impl<K: Hash + Eq + Clone, V> Expiring<K, V> {
    /// An empty table allowing each owner `quota` live entries.
    pub fn new(quota: usize) -> Self {
        Expiring {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                per_owner: HashMap::new(),
                kind: None,
                due: BTreeMap::new(),
            }),
            quota,
            epoch: Instant::now(),
        }
    }

    /// Reports each owner's count as the `secref_leases_held` gauge with
    /// label `kind` (owners are principal names, never secrets).
    #[must_use]
    pub fn with_gauge(self, kind: &'static str) -> Self {
        self.inner.lock().kind = Some(kind);
        self
    }

    /// Adds `key → value` for `owner` until `expires`. An expired entry
    /// under the same key is replaced.
    pub fn insert(&self, owner: &str, key: K, value: V, expires: Instant) -> Result<(), Refused> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.purge(self.epoch, now);
        if let Some(e) = inner.entries.get(&key) {
            if e.expires > now {
                return Err(Refused::Exists);
            }
            inner.remove(&key);
        }
        let count = inner.per_owner.get(owner).copied().unwrap_or(0);
        if count >= self.quota {
            secref::metrics::count(secref::metrics::QUOTA_REFUSALS, 1);
            return Err(Refused::Full);
        }
        let owner: Arc<str> = match inner.per_owner.get_key_value(owner) {
            Some((k, _)) => k.clone(),
            None => Arc::from(owner),
        };
        *inner.per_owner.entry(owner.clone()).or_insert(0) += 1;
        inner.report(&owner);
        let bucket = self.bucket(expires);
        inner.due.entry(bucket).or_default().push(key.clone());
        inner.entries.insert(
            key,
            Entry {
                owner,
                expires,
                value,
            },
        );
        Ok(())
    }

    /// Removes and returns the live entry under `key` with its owner (an
    /// expired entry is dropped and `None`).
    pub fn take(&self, key: &K) -> Option<(Arc<str>, V)> {
        let mut inner = self.inner.lock();
        let e = inner.remove(key)?;
        (e.expires > Instant::now()).then_some((e.owner, e.value))
    }

    /// Applies `f` to the live entry under `key` without removing it.
    pub fn peek<R>(&self, key: &K, f: impl FnOnce(&V) -> R) -> Option<R> {
        let inner = self.inner.lock();
        let e = inner.entries.get(key)?;
        (e.expires > Instant::now()).then(|| f(&e.value))
    }

    /// How many entries `owner` holds (live or expired but not yet purged).
    pub fn held_by(&self, owner: &str) -> usize {
        self.inner.lock().per_owner.get(owner).copied().unwrap_or(0)
    }

    /// How many entries are held (live or expired but not yet purged).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bucket of `t`: its second since `epoch`, rounded up, so that a
    /// bucket is due only once every entry in it has expired.
    fn bucket(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.epoch);
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

impl<K: Hash + Eq, V> Inner<K, V> {
    /// Drops every entry of every bucket whose second has passed.
    fn purge(&mut self, epoch: Instant, now: Instant) {
        let passed = now.saturating_duration_since(epoch).as_secs();
        while let Some(bucket) = self.due.first_entry() {
            if *bucket.key() > passed {
                break;
            }
            for key in bucket.remove() {
                // Taken entries are gone already; a key re-inserted with a
                // later deadline sits in a later bucket too.
                if self.entries.get(&key).is_some_and(|e| e.expires <= now) {
                    self.remove(&key);
                }
            }
        }
    }

    fn remove(&mut self, key: &K) -> Option<Entry<V>> {
        let e = self.entries.remove(key)?;
        if let Some(n) = self.per_owner.get_mut(&e.owner) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(&e.owner);
            }
        }
        self.report(&e.owner);
        Some(e)
    }

    /// Sets the gauge of `owner` to what it holds now.
    fn report(&self, owner: &Arc<str>) {
        if let Some(kind) = self.kind {
            let held = self.per_owner.get(owner).copied().unwrap_or(0);
            metrics::gauge!(secref::metrics::LEASES_HELD, "principal" => owner.to_string(), "kind" => kind)
                .set(held as f64);
        }
    }
}

/// The `secref_leases_held` gauge of entries kept in the shared `[state]`
/// backend (Redis) instead of an [`Expiring`] table: there the quota is
/// one count per principal across every replica, so the gauge reports that
/// count, read from the backend when `/metrics` is scraped (every replica
/// reports the same figure for a principal: aggregate with `max`, not
/// `sum`). A replica reports every configured token's principal and any
/// other principal (`uid:N`, `cert:…`) that held an entry through it since
/// it started; the names are principals, never secrets.
pub(crate) struct SharedHeld {
    state: secref::state::SharedState,
    /// The backend key kind of an owner's set (`revoked-by`, `wraps-by`).
    owner_kind: &'static str,
    /// The gauge's `kind` label.
    label: &'static str,
    owners: Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for SharedHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHeld")
            .field("kind", &self.label)
            .field("owners", &self.owners.lock().len())
            .finish()
    }
}

impl SharedHeld {
    /// The gauge of `label` for owners' sets of kind `owner_kind`.
    pub(crate) fn new(
        state: secref::state::SharedState,
        owner_kind: &'static str,
        label: &'static str,
    ) -> SharedHeld {
        SharedHeld {
            state,
            owner_kind,
            label,
            owners: Mutex::new(Default::default()),
        }
    }

    /// The backend key of `owner`'s set; `owner` is reported from now on.
    pub(crate) fn owner_key(&self, owner: &str) -> secref::state::StateKey {
        if !self.owners.lock().contains(owner) {
            self.owners.lock().insert(owner.to_owned());
        }
        self.state.key(self.owner_kind, &[owner.as_bytes()])
    }

    /// Sets the gauge of every reported owner to its live count in the
    /// backend (one bounded call per owner, concurrently). An owner whose
    /// count cannot be read keeps its last figure: the backend being down
    /// shows on `/readyz`, not as a drop to zero.
    pub(crate) async fn report(&self, configured: &[String]) {
        let mut owners = self.owners.lock().clone();
        owners.extend(configured.iter().cloned());
        let owners: Vec<String> = owners.into_iter().collect();
        let counts = futures::future::join_all(owners.iter().map(|o| async move {
            let key = self.state.key(self.owner_kind, &[o.as_bytes()]);
            self.state.backend().held_by(&key).await
        }))
        .await;
        for (owner, count) in owners.into_iter().zip(counts) {
            if let Ok(n) = count {
                metrics::gauge!(secref::metrics::LEASES_HELD, "principal" => owner, "kind" => self.label)
                    .set(n as f64);
            }
        }
    }
}

/// `now + ttl`, saturating far in the future instead of overflowing.
pub fn deadline(ttl: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_per_owner() {
        let t: Expiring<u32, ()> = Expiring::new(2);
        let later = deadline(Duration::from_secs(60));
        assert_eq!(t.insert("a", 1, (), later), Ok(()));
        assert_eq!(t.insert("a", 2, (), later), Ok(()));
        assert_eq!(t.insert("a", 3, (), later), Err(Refused::Full));
        assert_eq!(t.insert("b", 3, (), later), Ok(()));
        assert_eq!(t.insert("b", 1, (), later), Err(Refused::Exists));
        assert_eq!(t.take(&1).map(|(o, _)| o.to_string()), Some("a".into()));
        assert_eq!(t.insert("a", 4, (), later), Ok(()));
        assert_eq!(t.held_by("a"), 2);
    }

    #[test]
    fn expired_entries_leave_in_bulk_and_free_the_quota() {
        let t: Expiring<u32, ()> = Expiring::new(3);
        // Deadlines in bucket 0 are due at once.
        let past = t.epoch;
        for k in 0..3 {
            t.insert("a", k, (), past).unwrap();
        }
        assert_eq!(t.take(&0), None, "an expired entry is not handed out");
        // The next insert purges the due bucket: the quota is free again.
        let later = deadline(Duration::from_secs(60));
        for k in 10..13 {
            t.insert("a", k, (), later).unwrap();
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.held_by("a"), 3);
    }
}
