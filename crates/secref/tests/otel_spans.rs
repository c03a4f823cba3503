//! The spans secref exports with OpenTelemetry (see the README, "Traces"),
//! at the library: the policy decision and the read carry effect, decision
//! id, scheme, provider and outcome, and never a reference path or value.
//! (The binary's export over OTLP: `crates/secref-cli/tests/otel.rs`.)

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secref::policy::{AccessRequest, Context, Decision, GrantTerms, Pdp, Policy, PolicySettings};
use secref::provider::{BatchResult, Provider, Resolved};
use secref::{CacheConfig, Error, ErrorCode, Resolver, RetryPolicy, Secret, SecretRef};

const CANARY: &str = "canary-otel-span-value-5e1";

#[derive(Debug)]
struct Fake;

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn families(&self) -> &[&'static str] {
        &["env"]
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        Ok(refs
            .iter()
            .map(|r| match r.to_canonical() {
                "env://SPAN_PATH_ALLOWED" => Ok(Resolved::new(Secret::from(CANARY))),
                _ => Err(Error::new(ErrorCode::NotFound, "no such secret")),
            })
            .collect())
    }
}

/// Allows everything but `env://SPAN_PATH_DENIED`.
#[derive(Debug)]
struct Pep;

#[async_trait]
impl Pdp for Pep {
    async fn evaluate(&self, req: &AccessRequest<'_>) -> secref::Result<Decision> {
        Ok(if req.resource == "env://SPAN_PATH_DENIED" {
            Decision::Deny {
                decision_id: Some("d-deny".into()),
            }
        } else {
            Decision::Allow(GrantTerms::new(Duration::from_secs(60), 10).with_decision_id("d-ok"))
        })
    }
}

/// `text` without terminal colour codes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every `name{…}` span context in `logs`.
fn contexts<'a>(logs: &'a str, name: &str) -> Vec<&'a str> {
    logs.match_indices(&format!("{name}{{"))
        .map(|(i, _)| {
            let rest = &logs[i..];
            &rest[..rest.find('}').map_or(rest.len(), |j| j + 1)]
        })
        .collect()
}

#[tokio::test]
async fn policy_and_read_spans_carry_outcomes_and_no_reference() {
    let capture = secref_testkit::capture::install();
    let settings = PolicySettings::from_table(&toml::from_str("").unwrap()).unwrap();
    let r = Resolver::builder()
        .provider_arc(Arc::new(Fake), None)
        .cache(CacheConfig::disabled())
        .retry(RetryPolicy::none())
        .policy(Policy::new(settings, Arc::new(Pep)))
        .build()
        .unwrap();
    let ctx = Context::for_subject("svc-a");
    let v = r.read("env://SPAN_PATH_ALLOWED").as_(&ctx).await.unwrap();
    assert_eq!(v.as_text().unwrap(), CANARY);
    let e = r
        .read("env://SPAN_PATH_DENIED")
        .as_(&ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    let e = r
        .read("env://SPAN_PATH_MISSING")
        .as_(&ctx)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);

    let logs = strip_ansi(&capture.text());
    let policy = contexts(&logs, "secref.policy");
    let has =
        |spans: &[&str], parts: &[&str]| spans.iter().any(|s| parts.iter().all(|p| s.contains(p)));
    assert!(
        has(
            &policy,
            &["effect=\"allow\"", "decision_id=\"d-ok\"", "action="]
        ),
        "{logs}"
    );
    assert!(
        has(&policy, &["effect=\"deny\"", "decision_id=\"d-deny\""]),
        "{logs}"
    );
    let resolve = contexts(&logs, "secref.resolve");
    assert!(
        has(
            &resolve,
            &["scheme=\"env\"", "provider=\"fake\"", "outcome=\"ok\""]
        ),
        "{logs}"
    );
    assert!(has(&resolve, &["outcome=\"not_found\""]), "{logs}");
    assert!(has(&resolve, &["outcome=\"permission_denied\""]), "{logs}");
    let calls = contexts(&logs, "secref.provider_call");
    assert!(
        has(&calls, &["provider=\"fake\"", "outcome=\"ok\""]),
        "{logs}"
    );
    for span in policy.iter().chain(&resolve).chain(&calls) {
        assert!(!span.contains("SPAN_PATH"), "a reference in a span: {span}");
        assert!(!span.contains(CANARY), "a value in a span: {span}");
    }
}
