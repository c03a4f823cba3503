//! Accept/reject tables for every reference scheme, the protocols.md §2.2
//! vectors of the `secrets_sdk` Canonical Secret URI, the tenant guard, and
//! `parse(canonical) == parse(original)` for every accepted input.

use secref::reference::{InfisicalRef, LocalRef, SecFlowRef, VaultUri};
use secref::{ErrorCode, RefKind, SecretRef};

/// Parses `input`, checks its canonical form, and checks that the canonical
/// form parses back to the same reference and is a fixed point.
fn accepts(input: &str, canonical: &str) -> SecretRef {
    let r = SecretRef::parse(input).unwrap_or_else(|e| panic!("{input:?} rejected: {e}"));
    assert_eq!(r.to_canonical(), canonical, "canonical form of {input:?}");
    let again = SecretRef::parse(r.to_canonical())
        .unwrap_or_else(|e| panic!("canonical {canonical:?} rejected: {e}"));
    assert_eq!(again, r, "round trip of {input:?}");
    assert_eq!(again.kind(), r.kind(), "round trip kind of {input:?}");
    assert_eq!(again.to_canonical(), canonical, "fixed point {canonical:?}");
    r
}

fn rejects(input: &str, code: ErrorCode) {
    match SecretRef::parse(input) {
        Ok(r) => panic!("{input:?} accepted as {r}"),
        Err(e) => {
            assert_eq!(e.code(), code, "{input:?}: {e}");
            assert!(e.code().is_reference_error(), "{input:?}");
            assert!(!e.to_string().chars().any(char::is_control), "{e:?}");
        }
    }
}

fn accept_table(cases: &[(&str, &str)]) {
    for (input, canonical) in cases {
        accepts(input, canonical);
    }
}

fn reject_table(cases: &[(&str, ErrorCode)]) {
    for (input, code) in cases {
        rejects(input, *code);
    }
}

use ErrorCode::{
    AmbiguousQuery, DoubleMountSource, IllegalSegment, InvalidReference, InvalidWildcard,
    UnsupportedEngine,
};

// --- Canonical Secret URI ----------------------------------------------------

#[test]
fn section_2_2_vectors_accept() {
    accept_table(&[
        (
            "OpenBao+KV2://secret/myapp/api#token?version=3",
            "openbao+kv2://secret/myapp/api#token?version=3",
        ),
        (
            "openbao+kv2://secret/myapp/api/#token",
            "openbao+kv2://secret/myapp/api#token",
        ),
        (
            "hashicorp+kv2://secret/a/b?z=1&a=2&&b",
            "hashicorp+kv2://secret/a/b?a=2&b=&z=1",
        ),
        (
            "openbao+kv2://secret/a#tok?en",
            "openbao+kv2://secret/a#tok?en=",
        ),
        ("openbao://secret/a", "openbao://secret/a"),
        ("db+cred://secret/a", "db+cred://secret/a"),
        ("openbao+kv2://secret", "openbao+kv2://secret"),
        ("openbao+kv2://secret/a#", "openbao+kv2://secret/a"),
    ]);
}

#[test]
fn section_2_2_vectors_reject() {
    reject_table(&[
        ("hashicorp+kv1://secret/a", UnsupportedEngine),
        ("aws://secret/a", UnsupportedEngine),
        ("yaml+x://secret/a", UnsupportedEngine),
        ("openbao+kv2+x://secret/a", UnsupportedEngine),
        ("openbao+kv2://secret//a", IllegalSegment),
        ("openbao+kv2://secret/a//", IllegalSegment),
        ("openbao+kv2:///a", IllegalSegment),
        ("openbao+kv2://", IllegalSegment),
        ("://secret/a", IllegalSegment),
        ("secret/a", IllegalSegment),
        ("openbao+kv2://secret/a%2Fb", IllegalSegment),
        ("openbao+kv2://secret/a%2fb", IllegalSegment),
        ("openbao+kv2://secret/a/../b", IllegalSegment),
        ("openbao+kv2://secret/a..b", IllegalSegment),
        ("openbao+kv2://secret/a b", IllegalSegment),
        ("openbao+kv2://secret/ünicode", IllegalSegment),
        ("openbao+kv2://secret/a*", InvalidWildcard),
        ("openbao+kv2://secret/a?version=1&version=2", AmbiguousQuery),
        ("openbao+kv2://secret/a?mount=secret", DoubleMountSource),
        ("openbao+kv2://secret/a#k#l", IllegalSegment),
    ]);
}

#[test]
fn vault_uri_accepts() {
    accept_table(&[
        // Every provider and engine the reference allows.
        ("openbao+kv2://secret/a", "openbao+kv2://secret/a"),
        ("hashicorp+kv2://secret/a", "hashicorp+kv2://secret/a"),
        ("hashicorp://kv/a/b", "hashicorp://kv/a/b"),
        ("db+db://pg/creds/ro", "db+db://pg/creds/ro"),
        ("db://pg/creds", "db://pg/creds"),
        ("bootstrap://boot/x", "bootstrap://boot/x"),
        ("yaml://conf/x", "yaml://conf/x"),
        // Scheme case folds; path case is kept; the Kelvin sign folds to k.
        (
            "HASHICORP+KV2://Secret/MyApp",
            "hashicorp+kv2://Secret/MyApp",
        ),
        ("openbao+\u{212a}v2://secret/a", "openbao+kv2://secret/a"),
        // Fragments are free text (slashes, dots, stars, spaces, unicode).
        (
            "openbao+kv2://secret/a#/json/pointer",
            "openbao+kv2://secret/a#/json/pointer",
        ),
        (
            "openbao+kv2://secret/a#a..b*c d",
            "openbao+kv2://secret/a#a..b*c d",
        ),
        ("openbao+kv2://secret/a#clé", "openbao+kv2://secret/a#clé"),
        // Empty fragment and empty query vanish; empty pairs are skipped.
        ("openbao+kv2://secret/a#?", "openbao+kv2://secret/a"),
        ("openbao+kv2://secret/a?&&", "openbao+kv2://secret/a"),
        // Params sort by key; key without '=' renders as `k=`; empty keys ok.
        (
            "openbao+kv2://secret/a?b=2&a&=x&version=7",
            "openbao+kv2://secret/a?=x&a=&b=2&version=7",
        ),
        (
            "openbao+kv2://secret/a?k=v=w",
            "openbao+kv2://secret/a?k=v=w",
        ),
        (
            "openbao+kv2://secret/a?x=%2f..*",
            "openbao+kv2://secret/a?x=%2f..*",
        ),
        // Segments: dots, dashes, underscores alone are plain.
        ("openbao+kv2://secret/./-/_", "openbao+kv2://secret/./-/_"),
        ("openbao+kv2://a.b/c-d/e_f", "openbao+kv2://a.b/c-d/e_f"),
        (
            "openbao+kv2://secret/a?version=18446744073709551615",
            "openbao+kv2://secret/a?version=18446744073709551615",
        ),
    ]);
}

#[test]
fn vault_uri_rejects() {
    for bad in [
        "openbao+kv2:///",
        "openbao+kv2:///secret/a",
        "openbao+kv2://secret/a%2F",
        "openbao+kv2://../a",
        "openbao+kv2://secret/a#f#g?x=1",
        "openbao+kv2://secret/a:b",
        "openbao+kv2://secret/a\tb",
        "openbao+kv2://secret/a\u{0}",
        "openbao+kv2://secret/\n",
    ] {
        rejects(bad, IllegalSegment);
    }
    reject_table(&[
        ("openbao+kv2://*/a", InvalidWildcard),
        ("openbao+kv2://secret/a*b/c d", InvalidWildcard),
        // Segment order decides: the first bad segment's code wins.
        ("openbao+kv2://secret/a b/c*", IllegalSegment),
        // Query errors come before path errors, as in the reference.
        ("openbao+kv2://secret//a?k=1&k=2", AmbiguousQuery),
        ("openbao+kv2://secret/../a?mount=x", DoubleMountSource),
        ("openbao+kv2://secret/a?k&k=", AmbiguousQuery),
        // Provider/engine errors come first of all.
        ("openbao+kv3://secret//a?k=1&k=2", UnsupportedEngine),
        ("kv2://secret/a", UnsupportedEngine),
        ("db+kv2://secret/a", UnsupportedEngine),
        ("bootstrap+kv2://secret/a", UnsupportedEngine),
        ("vault://secret/a", UnsupportedEngine),
        ("open bao://secret/a", UnsupportedEngine),
    ]);
}

#[test]
fn vault_uri_strictness_choices() {
    // Each of these is accepted by secrets_sdk 0.1.0 (module docs).
    reject_table(&[
        // A segment ending in a newline; control chars in fragment or query.
        ("openbao+kv2://secret/a\n", IllegalSegment),
        ("openbao+kv2://secret/a\n/", IllegalSegment),
        ("openbao+kv2://secret\n", IllegalSegment),
        ("openbao+kv2://secret/a#f\u{1b}[0m", IllegalSegment),
        ("openbao+kv2://secret/a#f\u{85}", IllegalSegment),
        ("openbao+kv2://secret/a?k=\u{7f}", IllegalSegment),
        ("openbao+kv2://secret/a?k\r=1", IllegalSegment),
        // '#' after '?'.
        ("openbao+kv2://secret/a?version=3#token", AmbiguousQuery),
        ("openbao+kv2://secret/a#f?k=1#g", AmbiguousQuery),
        // version must be a positive integer that fits in u64.
        ("openbao+kv2://secret/a?version=0", InvalidReference),
        ("openbao+kv2://secret/a?version=01", InvalidReference),
        ("openbao+kv2://secret/a?version=-1", InvalidReference),
        ("openbao+kv2://secret/a?version=+1", InvalidReference),
        ("openbao+kv2://secret/a?version=1.0", InvalidReference),
        ("openbao+kv2://secret/a?version", InvalidReference),
        ("openbao+kv2://secret/a?version=\u{663}", InvalidReference),
        (
            "openbao+kv2://secret/a?version=18446744073709551616",
            InvalidReference,
        ),
        // Empty engine.
        ("openbao+://secret/a", UnsupportedEngine),
        ("db+://secret/a", UnsupportedEngine),
    ]);
    let e = SecretRef::parse("openbao+kv2://secret/a?version=3#token").unwrap_err();
    assert!(e.hint().unwrap().contains("#field?version=3"));
}

#[test]
fn vault_uri_fields() {
    let r = accepts(
        "OpenBao+KV2://secret/myapp/api/#token?version=3&b=",
        "openbao+kv2://secret/myapp/api#token?b=&version=3",
    );
    let RefKind::Vault(u) = r.kind() else {
        panic!("{r:?}")
    };
    assert_eq!(
        *u,
        VaultUri {
            provider: "openbao".into(),
            engine: Some("kv2".into()),
            mount: "secret".into(),
            path: vec!["myapp".into(), "api".into()],
            field: Some("token".into()),
            params: vec![("b".into(), "".into()), ("version".into(), "3".into())],
        }
    );
    assert_eq!(u.version(), Some(3));
    assert_eq!(u.param("b"), Some(""));
    assert_eq!(u.param("c"), None);
    assert_eq!(u.path_string(), "myapp/api");
    assert_eq!(r.scheme(), "openbao+kv2");
    assert_eq!(r.provider_family(), "vault");

    let r = accepts("hashicorp://kv", "hashicorp://kv");
    let RefKind::Vault(u) = r.kind() else {
        panic!("{r:?}")
    };
    assert_eq!(u.engine, None);
    assert!(u.path.is_empty());
    assert_eq!(u.version(), None);
    for (s, family) in [
        ("db+cred://x/y", "db"),
        ("bootstrap://x", "bootstrap"),
        ("yaml://x", "yaml"),
    ] {
        assert_eq!(SecretRef::parse(s).unwrap().provider_family(), family);
    }
}

// --- tenant guard --------------------------------------------------------------

#[test]
fn tenant_guard() {
    let allowed = ["secret", "kv"];
    for ok in [
        "openbao+kv2://secret/a",
        "hashicorp://kv/x#f?version=2",
        "local://secret/db#password",
        // Schemes without a mount are not guarded.
        "env://HOME",
        "secret://dev/svc/token/name",
        "file:///etc/x",
    ] {
        let r = SecretRef::parse_for_tenant(ok, "t1", &allowed)
            .unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        assert_eq!(r, SecretRef::parse(ok).unwrap());
    }
    for bad in [
        "openbao+kv2://other/a",
        // Exact, case-sensitive match.
        "openbao+kv2://Secret/a",
        "openbao+kv2://secre/a",
        "local://app/db",
        // The guard runs at the reference's step 9, before secref's own checks.
        "openbao+kv2://other/a?version=x",
        "openbao+kv2://other/a?v=1#f",
        "openbao+kv2://other/a#\u{7}",
        "openbao+kv2://secret\n/a",
    ] {
        let e = SecretRef::parse_for_tenant(bad, "t\u{1b}1", &allowed).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TenantMountMismatch, "{bad:?}: {e}");
        assert!(!e.to_string().chars().any(char::is_control), "{e:?}");
    }
    // Errors before step 9 keep their own codes.
    for (bad, code) in [
        ("openbao+kv2://other/a?k=1&k=2", AmbiguousQuery),
        ("openbao+kv2://other//a", IllegalSegment),
        ("openbao+kv2://other/a*", InvalidWildcard),
        ("aws://other/a", UnsupportedEngine),
    ] {
        let e = SecretRef::parse_for_tenant(bad, "t1", &allowed).unwrap_err();
        assert_eq!(e.code(), code, "{bad:?}");
    }
    // An empty list turns the guard off.
    let none: &[&str] = &[];
    assert!(SecretRef::parse_for_tenant("openbao+kv2://other/a", "t1", none).is_ok());
    assert!(SecretRef::parse_for_tenant("local://app/db", "t1", none).is_ok());
    let owned = vec![String::from("other")];
    assert!(SecretRef::parse_for_tenant("openbao+kv2://other/a", "t1", &owned).is_ok());
}

// --- secref's own schemes -------------------------------------------------------

#[test]
fn secflow() {
    let r = accepts(
        "SECRET://dev/example-service/token/app-config",
        "secret://dev/example-service/token/app-config",
    );
    assert_eq!(
        *r.kind(),
        RefKind::SecFlow(SecFlowRef {
            environment: "dev".into(),
            service: "example-service".into(),
            kind: "token".into(),
            name: "app-config".into(),
        })
    );
    assert_eq!(r.provider_family(), "secflow");
    accepts(
        "secret://prod/a.b/password/db_1",
        "secret://prod/a.b/password/db_1",
    );
    reject_table(&[
        ("secret://dev/svc/token", InvalidReference),
        ("secret://dev/svc/token/name/extra", InvalidReference),
        ("secret://dev/svc/token/name#f", InvalidReference),
        ("secret://dev/svc/token/name?version=1", InvalidReference),
        ("secret://dev//token/name", IllegalSegment),
        ("secret://dev/svc/token/", IllegalSegment),
        ("secret://dev/../token/name", IllegalSegment),
        ("secret://dev/./token/name", IllegalSegment),
        ("secret://dev/s*/token/name", InvalidWildcard),
        ("secret://dev/s c/token/name", IllegalSegment),
        ("secret://dev/svc/token/name\n", IllegalSegment),
        ("secret://dév/svc/token/name", IllegalSegment),
    ]);
}

#[test]
fn infisical() {
    let r = accepts(
        "Infisical://proj-1/dev/app/sub/DB_PASS?version=2",
        "infisical://proj-1/dev/app/sub/DB_PASS?version=2",
    );
    assert_eq!(
        *r.kind(),
        RefKind::Infisical(InfisicalRef {
            project_id: "proj-1".into(),
            environment: "dev".into(),
            secret_path: "/app/sub".into(),
            key: "DB_PASS".into(),
            version: Some(2),
        })
    );
    let r = accepts("infisical://p/dev/KEY", "infisical://p/dev/KEY");
    assert!(
        matches!(r.kind(), RefKind::Infisical(i) if i.secret_path == "/" && i.version.is_none())
    );
    assert_eq!(r.provider_family(), "infisical");
    accept_table(&[
        ("infisical://p/dev/KEY?", "infisical://p/dev/KEY"),
        (
            "infisical://p/dev/KEY?&version=9&",
            "infisical://p/dev/KEY?version=9",
        ),
    ]);
    reject_table(&[
        ("infisical://p/KEY", InvalidReference),
        ("infisical://p/dev/KEY#f", InvalidReference),
        ("infisical://p/dev/KEY?v=1", InvalidReference),
        ("infisical://p/dev/KEY?version", InvalidReference),
        ("infisical://p/dev/KEY?version=0", InvalidReference),
        ("infisical://p/dev/KEY?version=1&version=2", AmbiguousQuery),
        ("infisical://p/dev/KEY/", IllegalSegment),
        ("infisical://p/dev//KEY", IllegalSegment),
        ("infisical://p/dev/../KEY", IllegalSegment),
        ("infisical://p/dev/K*", InvalidWildcard),
    ]);
}

#[test]
fn coze() {
    let r = accepts("COZE+Credential://github", "coze+credential://github");
    assert_eq!(
        *r.kind(),
        RefKind::CozeCredential {
            integration: "github".into()
        }
    );
    assert_eq!(r.provider_family(), "coze");
    let r = accepts("coze+env://7412/MY_KEY", "coze+env://7412/MY_KEY");
    assert_eq!(
        *r.kind(),
        RefKind::CozeEnv {
            project_id: "7412".into(),
            key: "MY_KEY".into()
        }
    );
    reject_table(&[
        ("coze+credential://", IllegalSegment),
        ("coze+credential://a/b", InvalidReference),
        ("coze+credential://a#f", InvalidReference),
        ("coze+credential://a?x=1", InvalidReference),
        ("coze+credential://a b", IllegalSegment),
        ("coze+credential://..", IllegalSegment),
        ("coze+credential://a*", InvalidWildcard),
        ("coze+env://7412", InvalidReference),
        ("coze+env://7412/A/B", InvalidReference),
        ("coze+env://7412/", IllegalSegment),
        ("coze+env://7412/K#f", InvalidReference),
        ("coze+env://7412/K\n", IllegalSegment),
        ("coze+other://x", UnsupportedEngine),
        ("coze://x", UnsupportedEngine),
    ]);
}

#[test]
fn env() {
    for var in ["HOME", "_X", "a1_B2", "_"] {
        let r = accepts(&format!("ENV://{var}"), &format!("env://{var}"));
        assert_eq!(*r.kind(), RefKind::Env { var: var.into() });
        assert_eq!(r.provider_family(), "env");
    }
    for bad in [
        "env://",
        "env://1X",
        "env://A-B",
        "env://A.B",
        "env://A B",
        "env://A/B",
        "env://A#f",
        "env://A?x",
        "env://Ä",
        "env://A\n",
        "env://A=B",
    ] {
        rejects(bad, InvalidReference);
    }
}

#[test]
fn file() {
    for (input, canonical, path, pointer) in [
        (
            "file:///etc/app.json#/db/password",
            "file:///etc/app.json#/db/password",
            "/etc/app.json",
            Some("/db/password"),
        ),
        (
            "FILE://relative/x.txt",
            "file://relative/x.txt",
            "relative/x.txt",
            None,
        ),
        (
            "file://a b/ü.json#a.b",
            "file://a b/ü.json#a.b",
            "a b/ü.json",
            Some("a.b"),
        ),
        ("file:///x?y=1", "file:///x?y=1", "/x?y=1", None),
        ("file://a://b", "file://a://b", "a://b", None),
    ] {
        let r = accepts(input, canonical);
        assert_eq!(
            *r.kind(),
            RefKind::File {
                path: path.into(),
                pointer: pointer.map(str::to_string)
            },
            "{input:?}"
        );
        assert_eq!(r.provider_family(), "file");
    }
    reject_table(&[
        ("file://", InvalidReference),
        ("file://#/a", InvalidReference),
        ("file:///x#", InvalidReference),
        ("file:///x#a#b", IllegalSegment),
        ("file:///x\n", IllegalSegment),
        ("file:///x#\u{0}", IllegalSegment),
        // `file+engine` is the reference's URI provider, which secref does not serve.
        ("file+x:///x", UnsupportedEngine),
        ("file+:///x", UnsupportedEngine),
    ]);
}

#[test]
fn local() {
    let r = accepts("LOCAL://app/db#password", "local://app/db#password");
    assert_eq!(
        *r.kind(),
        RefKind::Local(LocalRef {
            path: vec!["app".into(), "db".into()],
            field: Some("password".into()),
            version: None,
        })
    );
    let RefKind::Local(l) = r.kind() else {
        unreachable!()
    };
    assert_eq!(l.entry(), "app/db");
    assert_eq!(r.provider_family(), "local");
    accepts("local://a", "local://a");
    accepts("local://a.b/c-d/e_f#g.h", "local://a.b/c-d/e_f#g.h");
    accepts("local://app/db#pw?version=3", "local://app/db#pw?version=3");
    accepts("local://app/db?version=12", "local://app/db?version=12");
    reject_table(&[
        ("local://", IllegalSegment),
        ("local://app/db?version=0", InvalidReference),
        ("local://app/db?version=x", InvalidReference),
        ("local://app/db?ttl=3", InvalidReference),
        ("local://app/db?version=3#pw", AmbiguousQuery),
        ("local://#f", IllegalSegment),
        ("local://a/", IllegalSegment),
        ("local:///a", IllegalSegment),
        ("local://a//b", IllegalSegment),
        ("local://app/../db", IllegalSegment),
        ("local://app/./db", IllegalSegment),
        ("local://app/db#", IllegalSegment),
        ("local://app/db#a#b", IllegalSegment),
        ("local://app/db#a/b", IllegalSegment),
        ("local://app/db#..", IllegalSegment),
        ("local://app/d b", IllegalSegment),
        ("local://app/db\n", IllegalSegment),
        ("local://app/db#f\n", IllegalSegment),
        ("local://app/*", InvalidWildcard),
        ("local://app/db#*", InvalidWildcard),
        ("local://app/db?x=1", InvalidReference),
        ("local://app/db#f?x=1", InvalidReference),
    ]);
}

// --- general -------------------------------------------------------------------

#[test]
fn no_scheme_or_unknown_scheme() {
    reject_table(&[
        ("", IllegalSegment),
        ("nope", IllegalSegment),
        ("secret:/a", IllegalSegment),
        ("://", IllegalSegment),
        ("aws://a", UnsupportedEngine),
        ("https://example.com/x", UnsupportedEngine),
        ("\u{1b}[31m://x", UnsupportedEngine),
    ]);
}

#[test]
fn errors_echo_the_input_escaped_and_bounded() {
    let e = SecretRef::parse("bad\u{1b}[31m\n://x").unwrap_err();
    let reference = e.reference().unwrap();
    assert!(!reference.chars().any(char::is_control), "{reference:?}");
    assert!(reference.contains("\\u{1b}"), "{reference:?}");
    let long = format!("openbao+kv2://secret/{}", "a b".repeat(1000));
    let e = SecretRef::parse(&long).unwrap_err();
    assert!(
        e.to_string().chars().count() < 1200,
        "{}",
        e.to_string().len()
    );
}

#[test]
fn traits_use_the_canonical_form() {
    let a: SecretRef = "OpenBao+KV2://secret/a/".parse().unwrap();
    let b = SecretRef::parse("openbao+kv2://secret/a").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_string(), "openbao+kv2://secret/a");
    assert_eq!(format!("{a:?}"), "SecretRef(openbao+kv2://secret/a)");
    let set: std::collections::HashSet<SecretRef> = [a.clone(), b].into_iter().collect();
    assert_eq!(set.len(), 1);
    assert_eq!(&*a.canonical_arc(), a.to_canonical());
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, "\"openbao+kv2://secret/a\"");
    assert_eq!(serde_json::from_str::<SecretRef>(&json).unwrap(), a);
    let e = serde_json::from_str::<SecretRef>("\"openbao+kv2://secret/a*\"").unwrap_err();
    assert!(e.to_string().contains("wildcard"), "{e}");
}
