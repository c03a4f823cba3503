//! The one single-flight helper: concurrent callers that want the same key
//! share one computation. The resolver (references in flight to a
//! provider), the policy (one PDP question per grant key) and
//! [`crate::auth::TokenCell`] (one token refresh) all use it.
//!
//! The first caller of a key is its [`Leader`] and computes; later callers
//! are [`Follower`]s and receive the leader's result. A leader that is
//! dropped without finishing (its task was cancelled) releases the key, and
//! its followers are told to try again rather than wait forever.
//!
//! (Crates such as `async_singleflight` offer `work(key, fut)` only; the
//! resolver needs to claim a whole batch of keys and compute them with one
//! provider call, hence this small helper.)

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};

use parking_lot::Mutex;
use tokio::sync::watch;

/// Keys in flight and where their results will be published (`S`: the
/// map's hasher).
pub struct SingleFlight<K, V, S = RandomState> {
    flights: Mutex<HashMap<K, watch::Receiver<Option<V>>, S>>,
}

impl<K, V, S: Default> Default for SingleFlight<K, V, S> {
    fn default() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::default()),
        }
    }
}

impl<K, V, S> std::fmt::Debug for SingleFlight<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight")
            .field("in_flight", &self.flights.lock().len())
            .finish()
    }
}

/// What [`SingleFlight::claim`] hands out.
pub enum Claim<'a, K: Hash + Eq + Clone, V: Clone, S: BuildHasher = RandomState> {
    /// Nobody is computing this key: the caller must, and then
    /// [`Leader::finish`].
    Leader(Leader<'a, K, V, S>),
    /// Someone is: [`Follower::wait`] for their result.
    Follower(Follower<V>),
}

/// The caller computing a key. Dropping it releases the key.
pub struct Leader<'a, K: Hash + Eq + Clone, V: Clone, S: BuildHasher = RandomState> {
    group: &'a SingleFlight<K, V, S>,
    key: K,
    tx: watch::Sender<Option<V>>,
}

/// A caller waiting for a leader's result.
pub struct Follower<V> {
    rx: watch::Receiver<Option<V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// An empty group.
    pub fn new() -> Self {
        SingleFlight::default()
    }
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher> SingleFlight<K, V, S> {
    /// Leads `key` if nobody does, else follows its leader. Claiming a key
    /// this caller already leads makes it its own follower: finish first.
    pub fn claim(&self, key: K) -> Claim<'_, K, V, S> {
        let mut flights = self.flights.lock();
        if let Some(rx) = flights.get(&key) {
            return Claim::Follower(Follower { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.clone(), rx);
        Claim::Leader(Leader {
            group: self,
            key,
            tx,
        })
    }

    /// `compute` for `key` unless a computation is already in flight, whose
    /// result is then shared (errors included). A cancelled leader's
    /// followers compute themselves.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use secref::flight::SingleFlight;
    /// let group = SingleFlight::<&str, u32>::new();
    /// let (a, b) = tokio::join!(
    ///     group.run("k", || async { tokio::task::yield_now().await; 1 }),
    ///     group.run("k", || async { 2 }),
    /// );
    /// assert_eq!((a, b), (1, 1));
    /// # });
    /// ```
    pub async fn run<F, Fut>(&self, key: K, compute: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let mut compute = Some(compute);
        loop {
            match self.claim(key.clone()) {
                Claim::Leader(leader) => {
                    let compute = compute.take().expect("a caller leads at most once");
                    let v = compute().await;
                    leader.finish(v.clone());
                    return v;
                }
                Claim::Follower(f) => {
                    if let Some(v) = f.wait().await {
                        return v;
                    }
                }
            }
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher> Leader<'_, K, V, S> {
    /// The key this leader computes.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Publishes the result to every follower and releases the key.
    pub fn finish(self, v: V) {
        self.tx.send_replace(Some(v));
    }
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher> Drop for Leader<'_, K, V, S> {
    fn drop(&mut self) {
        self.group.flights.lock().remove(&self.key);
    }
}

impl<V: Clone> Follower<V> {
    /// The leader's result, or `None` when the leader was dropped without
    /// one (the caller should claim again).
    pub async fn wait(mut self) -> Option<V> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_callers_share_one_computation() {
        let group = Arc::new(SingleFlight::<u8, usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (group, runs, gate) = (group.clone(), runs.clone(), gate.clone());
                tokio::spawn(async move {
                    group
                        .run(1, || async move {
                            gate.notified().await;
                            runs.fetch_add(1, Ordering::SeqCst) + 100
                        })
                        .await
                })
            })
            .collect();
        // Bounded: let every task reach the group, then release the leader.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 100);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(group.flights.lock().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let group = SingleFlight::<u8, u8>::new();
        let Claim::Leader(leader) = group.claim(7) else {
            panic!("first claim leads")
        };
        let Claim::Follower(follower) = group.claim(7) else {
            panic!("second claim follows")
        };
        drop(leader);
        assert_eq!(follower.wait().await, None);
        // The key is free again.
        assert_eq!(group.run(7, || async { 3 }).await, 3);
    }
}
