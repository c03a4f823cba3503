//! `watch`: a stream that yields a value now and again on each change.

use std::time::Duration;

use futures::Stream;

use super::{IntoSecretRef, Resolver};
use crate::error::Result;
use crate::policy::Context;
use crate::provider::Resolved;
use crate::reference::SecretRef;

impl Resolver {
    /// Watches a reference: the stream yields the value now, then again each
    /// time its version (or, without versions, its bytes) changes. It polls
    /// every `interval` ± 10 % jitter, bypassing the cache; errors are yielded
    /// and polling goes on.
    pub fn watch(
        &self,
        reference: impl IntoSecretRef,
        interval: Duration,
    ) -> Result<impl Stream<Item = Result<Resolved>> + Send + 'static> {
        let r = reference.into_secret_ref()?;
        let this = self.clone();
        struct State {
            resolver: Resolver,
            reference: SecretRef,
            last: Option<Fingerprint>,
            first: bool,
        }
        let state = State {
            resolver: this,
            reference: r,
            last: None,
            first: true,
        };
        Ok(futures::stream::unfold(state, move |mut st| async move {
            loop {
                if !st.first {
                    let jitter = interval.mul_f64(0.9 + fastrand::f64() * 0.2);
                    tokio::time::sleep(jitter).await;
                }
                st.first = false;
                let mut res = st
                    .resolver
                    .governed_refs(
                        &Context::anonymous(),
                        std::slice::from_ref(&st.reference),
                        true,
                    )
                    .await;
                match res.pop().expect("one result") {
                    Ok(v) => {
                        let fp = Fingerprint::of(&v);
                        if st.last.as_ref() != Some(&fp) {
                            st.last = Some(fp);
                            return Some((Ok(v), st));
                        }
                    }
                    Err(e) => return Some((Err(e.error), st)),
                }
            }
        }))
    }
}

/// What `watch` compares: the version when there is one, else a keyed hash of
/// the bytes (never the bytes themselves).
#[derive(PartialEq, Eq)]
pub(super) enum Fingerprint {
    Version(String),
    Digest(u64),
}

impl Fingerprint {
    pub(super) fn of(v: &Resolved) -> Fingerprint {
        match &v.version {
            Some(ver) => Fingerprint::Version(ver.clone()),
            None => {
                use std::hash::{BuildHasher, Hasher};
                static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
                    std::sync::OnceLock::new();
                let mut h = KEY.get_or_init(Default::default).build_hasher();
                h.write(v.secret.expose_bytes());
                Fingerprint::Digest(h.finish())
            }
        }
    }
}
