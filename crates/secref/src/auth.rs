//! The one way providers hold a backend credential: a [`TokenCell`] keeps the
//! current token, lets every caller read it without waiting while it is
//! fresh, and lets exactly one caller refresh it when it is not — the others
//! wait and reuse the new token (single flight, [`crate::flight`]). A token
//! the backend refused is dropped with [`TokenCell::invalidate`], compared in
//! constant time.

use std::future::Future;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::Result;
use crate::flight::SingleFlight;
use crate::secret::Secret;

/// A token state kept in a [`TokenCell`]: the credential plus whatever the
/// provider needs to judge its freshness.
pub trait TokenState: Send + Sync {
    /// The credential sent to the backend.
    fn token(&self) -> &Secret;
}

/// The current token of one provider instance, refreshed single-flight.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use secref::auth::{TokenCell, TokenState};
/// use secref::Secret;
///
/// struct Tok(Secret);
/// impl TokenState for Tok {
///     fn token(&self) -> &Secret { &self.0 }
/// }
///
/// let cell = TokenCell::new();
/// let t = cell
///     .get(|_| true, |_stale| async { Ok(Tok(Secret::from("t1"))) })
///     .await?;
/// assert_eq!(t.token().as_text()?, "t1");
/// // Fresh: the refresh closure is not called again.
/// let again = cell.get(|_| true, |_| async { unreachable!() }).await?;
/// assert_eq!(again.token().as_text()?, "t1");
/// # Ok::<(), secref::Error>(()) }).unwrap();
/// ```
pub struct TokenCell<S> {
    current: RwLock<Option<Arc<S>>>,
    /// One refresh at a time: concurrent callers share its result.
    refresh: SingleFlight<(), Result<Arc<S>>>,
}

impl<S: TokenState> Default for TokenCell<S> {
    fn default() -> Self {
        TokenCell::new()
    }
}

impl<S: TokenState> TokenCell<S> {
    /// An empty cell: the first `get` refreshes.
    pub fn new() -> Self {
        TokenCell {
            current: RwLock::new(None),
            refresh: SingleFlight::new(),
        }
    }

    /// The current state, fresh or not.
    pub fn current(&self) -> Option<Arc<S>> {
        self.current.read().clone()
    }

    /// The current state if `is_fresh` accepts it; otherwise `refresh` runs
    /// (given the stale state, e.g. to renew rather than log in again) once
    /// for all concurrent callers, who share its result (or error), and a
    /// success becomes current. `refresh` may hand back the stale state
    /// itself (e.g. when the backend is briefly unavailable and the old
    /// token is still valid).
    pub async fn get<F, R, Fut>(&self, is_fresh: F, refresh: R) -> Result<Arc<S>>
    where
        F: Fn(&S) -> bool,
        R: FnOnce(Option<Arc<S>>) -> Fut,
        Fut: Future<Output = Result<S>>,
    {
        if let Some(s) = self.current().filter(|s| is_fresh(s)) {
            return Ok(s);
        }
        self.refresh
            .run((), || async {
                // Another refresh may have finished since this caller looked.
                if let Some(s) = self.current().filter(|s| is_fresh(s)) {
                    return Ok(s);
                }
                let next = Arc::new(refresh(self.current()).await?);
                *self.current.write() = Some(next.clone());
                Ok(next)
            })
            .await
    }

    /// Forgets `token` if it is still current (the backend refused it), so
    /// the next `get` refreshes; true when it was. A newer token is left
    /// alone.
    pub fn invalidate(&self, token: &Secret) -> bool {
        let mut cur = self.current.write();
        let refused = cur
            .as_ref()
            .is_some_and(|s| s.token().ct_eq(token.expose_bytes()));
        if refused {
            *cur = None;
        }
        refused
    }

    /// Forgets the current state, whatever it is.
    pub fn clear(&self) {
        *self.current.write() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Tok(Secret);
    impl TokenState for Tok {
        fn token(&self) -> &Secret {
            &self.0
        }
    }

    #[tokio::test]
    async fn concurrent_stale_callers_refresh_once() {
        let cell = Arc::new(TokenCell::<Tok>::new());
        let refreshes = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cell, refreshes) = (cell.clone(), refreshes.clone());
                tokio::spawn(async move {
                    cell.get(
                        |_| true,
                        |_| async move {
                            refreshes.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            Ok(Tok(Secret::from("t")))
                        },
                    )
                    .await
                    .map(|_| ())
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidate_drops_only_the_refused_token() {
        let cell = TokenCell::<Tok>::new();
        cell.get(|_| true, |_| async { Ok(Tok(Secret::from("old"))) })
            .await
            .unwrap();
        cell.invalidate(&Secret::from("other"));
        assert!(cell.current().is_some());
        cell.invalidate(&Secret::from("old"));
        assert!(cell.current().is_none());
        // A refresh failure leaves the cell as it was.
        let e = cell
            .get(
                |_| true,
                |_| async { Err(crate::Error::new(crate::ErrorCode::Timeout, "down")) },
            )
            .await;
        assert!(e.is_err() && cell.current().is_none());
    }
}
