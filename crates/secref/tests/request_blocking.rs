//! The request builder (`read`/`metadata`/`validate`/`permission_check` ×
//! one/many × `.as_` × `.detailed`/`.partial`/`.each`) and the blocking API
//! on its own runtime thread.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secref::policy::{Context, Policy};
use secref::provider::{
    Action, BatchResult, Lease, Metadata, Permission, Provider, Resolved, Validation,
};
use secref::{CacheConfig, ErrorCode, Resolver, Secret, SecretRef};

/// Serves `env://` refs: `env://MISSING*` is not found, everything else is
/// `value-<version>`, with a lease `lease-<name>` (renewable, 1 h).
#[derive(Debug, Default)]
struct Lab {
    version: AtomicU64,
    reads: AtomicUsize,
}

fn name(r: &SecretRef) -> String {
    r.to_canonical().trim_start_matches("env://").to_string()
}

fn missing(r: &SecretRef) -> secref::Result<()> {
    if name(r).starts_with("MISSING") {
        return Err(secref::Error::new(ErrorCode::NotFound, "no such variable"));
    }
    Ok(())
}

#[async_trait]
impl Provider for Lab {
    fn name(&self) -> &str {
        "lab"
    }
    fn families(&self) -> &[&'static str] {
        &["env"]
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        self.reads.fetch_add(refs.len(), Ordering::SeqCst);
        let v = self.version.load(Ordering::SeqCst);
        Ok(refs
            .iter()
            .map(|r| {
                missing(r)?;
                let mut out = Resolved::new(Secret::from(format!("value-{v}")));
                out.version = Some(v.to_string());
                out.lease = Some(Lease {
                    id: format!("lease-{}", name(r)),
                    ttl: Some(Duration::from_secs(3600)),
                    renewable: true,
                });
                Ok(out)
            })
            .collect())
    }
    async fn metadata(&self, refs: &[SecretRef]) -> BatchResult<Metadata> {
        Ok(refs
            .iter()
            .map(|r| {
                missing(r)?;
                Ok(Metadata {
                    reference: r.to_canonical().to_string(),
                    current_version: Some(self.version.load(Ordering::SeqCst).to_string()),
                    ..Default::default()
                })
            })
            .collect())
    }
    async fn validate(&self, refs: &[SecretRef]) -> BatchResult<Validation> {
        Ok(refs
            .iter()
            .map(|r| Ok(Validation::existence(missing(r).is_ok())))
            .collect())
    }
    async fn permission_check(
        &self,
        refs: &[SecretRef],
        action: Action,
    ) -> BatchResult<Permission> {
        Ok(refs
            .iter()
            .map(|_| {
                Ok(Permission {
                    allowed: action == Action::Read,
                    decision_id: None,
                    evaluated_revision_id: None,
                })
            })
            .collect())
    }
    async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Option<Duration>,
    ) -> secref::Result<Lease> {
        Ok(Lease {
            id: lease_id.to_string(),
            ttl: increment,
            renewable: true,
        })
    }
}

fn builder(lab: &Arc<Lab>) -> secref::ResolverBuilder {
    Resolver::builder()
        .provider_arc(lab.clone(), None)
        .cache(CacheConfig::disabled())
}

/// A reference that does not parse: one of the parse errors, never a
/// retryable one.
fn assert_unparseable(e: &secref::Error) {
    assert!(
        matches!(
            e.code(),
            ErrorCode::InvalidReference | ErrorCode::IllegalSegment
        ),
        "{e}"
    );
}

fn svc_a_policy() -> Policy {
    let table = toml::from_str(
        "grant_max_uses = 1000\n[[rules]]\nsubject = \"svc-a\"\nref_prefix = \"env://\"",
    )
    .unwrap();
    Policy::from_table(&table, &secref::config::Env::default()).unwrap()
}

#[tokio::test]
async fn one_request_each_way() {
    let lab = Arc::new(Lab::default());
    let r = builder(&lab).build().unwrap();
    assert_eq!(
        r.read("env://A").await.unwrap().as_text().unwrap(),
        "value-0"
    );
    let d = r.read("env://A").detailed().await.unwrap();
    assert_eq!(d.version.as_deref(), Some("0"));
    assert_eq!(d.lease.unwrap().id, "lease-A");
    assert_eq!(
        r.read("env://MISSING").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_unparseable(&r.read("not a ref").await.unwrap_err());
    let m = r.metadata("env://A").await.unwrap();
    assert_eq!(m.current_version.as_deref(), Some("0"));
    assert!(r.validate("env://A").await.unwrap().exists == Some(true));
    assert_eq!(
        r.validate("env://MISSING").await.unwrap().exists,
        Some(false)
    );
    assert!(
        r.permission_check("env://A", Action::Read)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !r.permission_check("env://A", Action::Write)
            .await
            .unwrap()
            .allowed
    );
}

#[tokio::test]
async fn batches_all_or_nothing_partial_and_in_input_order() {
    let lab = Arc::new(Lab::default());
    let r = builder(&lab).build().unwrap();
    let refs = ["env://B", "env://MISSING1", "env://A"];
    let err = r.read_many(refs).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    let p = r.read_many(refs).partial().await.unwrap();
    assert_eq!((p.resolved.len(), p.failures.len()), (2, 1));
    let each = r.read_many(refs).detailed().each().await.unwrap();
    assert_eq!(each.len(), 3);
    assert_eq!(
        each[0].as_ref().unwrap().lease.as_ref().unwrap().id,
        "lease-B"
    );
    assert_eq!(each[1].as_ref().unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(
        each[2].as_ref().unwrap().lease.as_ref().unwrap().id,
        "lease-A"
    );
    let ok = r.read_many(["env://A", "env://B"]).await.unwrap();
    assert_eq!(ok.len(), 2);

    let metas = r.metadata_many(refs).partial().await.unwrap();
    assert_eq!((metas.resolved.len(), metas.failures.len()), (2, 1));
    let v = r.validate_many(refs).each().await.unwrap();
    let exists: Vec<bool> = v
        .into_iter()
        .map(|v| v.unwrap().exists == Some(true))
        .collect();
    assert_eq!(exists, [true, false, true]);
    let perms = r
        .permission_check_many(["env://A", "env://B"], Action::Read)
        .await
        .unwrap();
    assert!(perms.values().all(|p| p.allowed));
    // Unparseable input fails the whole batch, before any provider call.
    let before = lab.reads.load(Ordering::SeqCst);
    assert_unparseable(
        &r.read_many(["env://A", "not a ref"])
            .partial()
            .await
            .unwrap_err(),
    );
    assert_eq!(lab.reads.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn as_runs_the_request_under_the_policy() {
    let lab = Arc::new(Lab::default());
    let r = builder(&lab).policy(svc_a_policy()).build().unwrap();
    let svc_a = Context::for_subject("svc-a");
    let eve = Context::for_subject("eve");
    assert!(r.read("env://A").as_(&svc_a).await.is_ok());
    assert_eq!(
        r.read("env://A").await.unwrap_err().code(),
        ErrorCode::PermissionDenied,
        "without .as_ the anonymous context asks"
    );
    assert_eq!(
        r.read("env://A")
            .as_(&eve)
            .detailed()
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PermissionDenied
    );
    let p = r
        .read_many(["env://A", "env://B"])
        .as_(&eve)
        .partial()
        .await
        .unwrap();
    assert_eq!(p.failures.len(), 2);
    assert!(r.metadata("env://A").as_(&svc_a).await.is_ok());
    assert_eq!(
        r.validate_many(["env://A"]).as_(&eve).each().await.unwrap()[0]
            .as_ref()
            .unwrap_err()
            .code(),
        ErrorCode::PermissionDenied
    );
    // Refused requests never reached the provider.
    assert_eq!(lab.reads.load(Ordering::SeqCst), 1);
}

/// `block_on` inside a runtime panics; the blocking resolver runs its own
/// runtime thread, so calling it from async code (here: a current-thread
/// runtime, the hardest case) works.
#[tokio::test]
async fn blocking_inside_a_tokio_runtime() {
    let lab = Arc::new(Lab::default());
    let r = secref::blocking::Resolver::new(builder(&lab)).unwrap();
    assert_eq!(r.resolve("env://A").unwrap().as_text().unwrap(), "value-0");
    assert_eq!(r.resolve_many(["env://A", "env://B"]).unwrap().len(), 2);
    // Dropping it inside the runtime is fine too.
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_inside_a_multi_thread_runtime_and_from_async_resolver() {
    let lab = Arc::new(Lab::default());
    let asynchronous = builder(&lab).build().unwrap();
    let r = secref::blocking::Resolver::from_async(asynchronous.clone()).unwrap();
    assert!(r.read("env://A").detailed().send().unwrap().lease.is_some());
    // The same resolver underneath: a lease issued through one is known to
    // the other.
    assert!(asynchronous.renew_lease("lease-A", None).await.is_ok());
}

#[test]
fn blocking_offers_the_whole_api() {
    let lab = Arc::new(Lab::default());
    let r = secref::blocking::Resolver::new(builder(&lab).policy(svc_a_policy())).unwrap();
    let svc_a = Context::for_subject("svc-a");
    let refs = ["env://A", "env://MISSING"];
    let d = r.read("env://A").as_(&svc_a).detailed().send().unwrap();
    assert_eq!(d.lease.as_ref().unwrap().id, "lease-A");
    let p = r.read_many(refs).as_(&svc_a).partial().send().unwrap();
    assert_eq!((p.resolved.len(), p.failures.len()), (1, 1));
    let m = r.metadata_many(refs).as_(&svc_a).partial().send().unwrap();
    assert_eq!((m.resolved.len(), m.failures.len()), (1, 1));
    assert!(r.metadata("env://A").as_(&svc_a).send().is_ok());
    let v = r.validate_many(refs).as_(&svc_a).each().send().unwrap();
    assert_eq!(v[0].as_ref().unwrap().exists, Some(true));
    assert_eq!(v[1].as_ref().unwrap().exists, Some(false));
    assert!(r.validate("env://A").as_(&svc_a).send().unwrap().exists == Some(true));
    assert!(
        r.permission_check("env://A", Action::Read)
            .as_(&svc_a)
            .send()
            .unwrap()
            .allowed
    );
    assert_eq!(
        r.permission_check_many(refs, Action::Read)
            .as_(&svc_a)
            .partial()
            .send()
            .unwrap()
            .resolved
            .len(),
        2
    );
    assert_eq!(
        r.read("env://A").send().unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    // Leases: renewed through the provider that issued them.
    let renewed = r
        .renew_lease("lease-A", Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(renewed.ttl, Some(Duration::from_secs(60)));
    assert_eq!(
        r.renew_lease("lease-unknown", None).unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert!(r.authorize_as(&svc_a, "env://A", Action::Read).is_ok());
    r.invalidate("env://A").unwrap();
    r.invalidate_all();
}

#[test]
fn blocking_watch_is_an_iterator() {
    let lab = Arc::new(Lab::default());
    let r = secref::blocking::Resolver::new(builder(&lab)).unwrap();
    let mut w = r.watch("env://A", Duration::from_millis(10)).unwrap();
    let first = w.next().unwrap().unwrap();
    assert_eq!(first.version.as_deref(), Some("0"));
    lab.version.store(1, Ordering::SeqCst);
    let second = w.next().unwrap().unwrap();
    assert_eq!(second.version.as_deref(), Some("1"));
    assert_eq!(second.secret.as_text().unwrap(), "value-1");
    drop(w);
    assert_unparseable(&r.watch("not a ref", Duration::from_secs(1)).unwrap_err());
    // The resolver still answers after the watch is gone.
    assert!(r.resolve("env://A").is_ok());
}
