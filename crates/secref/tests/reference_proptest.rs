//! Property tests for the reference grammar:
//!
//! * references generated from each scheme's grammar parse, and
//!   `parse(r.to_canonical()) == r` with the canonical form a fixed point;
//! * arbitrary strings (noise, grammar fragments glued to noise, unicode,
//!   control characters) never panic, and every rejection carries a
//!   reference error code and prints no raw control character.

use std::collections::BTreeMap;

use proptest::prelude::*;
use secref::{RefKind, SecretRef};

/// Checks the round trip and returns the parsed reference.
fn round_trip(input: &str) -> Result<SecretRef, TestCaseError> {
    let r = SecretRef::parse(input)
        .map_err(|e| TestCaseError::fail(format!("{input:?} rejected: {e}")))?;
    let again = SecretRef::parse(r.to_canonical())
        .map_err(|e| TestCaseError::fail(format!("canonical of {input:?} rejected: {e}")))?;
    prop_assert_eq!(&again, &r);
    prop_assert_eq!(again.kind(), r.kind());
    prop_assert_eq!(again.to_canonical(), r.to_canonical());
    Ok(r)
}

/// A segment every scheme accepts: `[A-Za-z0-9._-]+`, never `.` or with `..`.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,8}".prop_filter("dots", |s| s != "." && !s.contains(".."))
}

fn segments(min: usize, max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(segment(), min..=max)
}

/// Random ASCII case, as a scheme may be written in any case.
fn any_case(s: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), s.len()).prop_map(move |upper| {
        s.chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

fn vault_scheme() -> impl Strategy<Value = String> {
    prop_oneof![
        any_case("openbao+kv2"),
        any_case("hashicorp+kv2"),
        any_case("openbao"),
        any_case("hashicorp"),
        any_case("db+cred"),
        any_case("db+db"),
        any_case("db"),
        any_case("bootstrap"),
        any_case("yaml"),
    ]
}

prop_compose! {
    /// A Canonical Secret URI in any spelling the grammar allows: scheme case,
    /// a trailing slash, an empty fragment, params in any order, empty pairs.
    fn vault_input()(
        scheme in vault_scheme(),
        segs in segments(1, 5),
        trailing_slash in any::<bool>(),
        field in prop::option::of("[^#?\\p{Cc}]{0,10}"),
        params in prop::collection::btree_map("[^&=#\\p{Cc}]{0,5}", "[^&#\\p{Cc}]{0,6}", 0..4),
        version in prop::option::of(1u64..),
        empty_pairs in 0usize..3,
    )(
        order in Just(params_with_version(&params, version)).prop_shuffle(),
        scheme in Just(scheme), segs in Just(segs), trailing_slash in Just(trailing_slash),
        field in Just(field), empty_pairs in Just(empty_pairs),
    ) -> String {
        let mut s = format!("{scheme}://{}", segs.join("/"));
        if trailing_slash {
            s.push('/');
        }
        if let Some(f) = &field {
            s.push('#');
            s.push_str(f);
        }
        let mut pairs: Vec<String> = order.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.extend(std::iter::repeat_n(String::new(), empty_pairs));
        if !pairs.is_empty() {
            s.push('?');
            s.push_str(&pairs.join("&"));
        }
        s
    }
}

fn params_with_version(
    params: &BTreeMap<String, String>,
    version: Option<u64>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "mount" && k.as_str() != "version")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(v) = version {
        out.push(("version".into(), v.to_string()));
    }
    out
}

fn own_scheme_input() -> impl Strategy<Value = String> {
    prop_oneof![
        segments(4, 4).prop_map(|s| format!("secret://{}", s.join("/"))),
        (segments(3, 6), prop::option::of(1u64..)).prop_map(|(s, v)| {
            let mut out = format!("infisical://{}", s.join("/"));
            if let Some(v) = v {
                out.push_str(&format!("?version={v}"));
            }
            out
        }),
        segment().prop_map(|s| format!("coze+credential://{s}")),
        segments(2, 2).prop_map(|s| format!("coze+env://{}", s.join("/"))),
        "[A-Za-z_][A-Za-z0-9_]{0,10}".prop_map(|v| format!("env://{v}")),
        // Absolute, normalised paths: no empty, `.` or `..` segment, no `%`.
        (
            prop::collection::vec(
                "[^#%/\\p{Cc}]{1,8}".prop_filter("not . or ..", |s| s != "." && s != ".."),
                1..4
            ),
            prop::option::of("[^#\\p{Cc}]{1,10}")
        )
            .prop_map(|(p, f)| match f {
                Some(f) => format!("file:///{}#{f}", p.join("/")),
                None => format!("file:///{}", p.join("/")),
            }),
        (segments(1, 4), prop::option::of(segment())).prop_map(|(s, f)| match f {
            Some(f) => format!("local://{}#{f}", s.join("/")),
            None => format!("local://{}", s.join("/")),
        }),
    ]
}

/// Pieces of the grammar and its edge cases, to glue to random noise.
const FRAGMENTS: &[&str] = &[
    "openbao+kv2://",
    "hashicorp://",
    "db+cred://",
    "openbao+://",
    "secret://",
    "local://",
    "env://",
    "file://",
    "infisical://",
    "coze+env://",
    "coze+credential://",
    "://",
    "secret",
    "a",
    "/",
    "//",
    "..",
    ".",
    "*",
    "#",
    "?",
    "&",
    "=",
    "%2f",
    "%2F",
    "file:///",
    "/../",
    "//",
    "%2e%2e",
    "version=",
    "mount=",
    "\n",
    "\r",
    "\t",
    "\0",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\u{212a}",
    "ü",
    "中",
    "😀",
];

fn noisy_input() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(FRAGMENTS).prop_map(str::to_string),
        any::<char>().prop_map(String::from),
        "[a-zA-Z0-9]{1,4}",
    ];
    prop_oneof![
        any::<String>(),
        prop::collection::vec(piece, 0..16).prop_map(|v| v.concat()),
        (vault_input(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(s, at, c)| {
            let i = at.index(s.chars().count() + 1);
            let mut out: String = s.chars().take(i).collect();
            out.push(c);
            out.extend(s.chars().skip(i));
            out
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn vault_uris_round_trip(input in vault_input()) {
        let r = round_trip(&input)?;
        let RefKind::Vault(u) = r.kind() else {
            return Err(TestCaseError::fail(format!("{input:?} is {r:?}")));
        };
        // The canonical form is lower-case scheme, path without trailing
        // slash, non-empty field only, params sorted.
        let path = format!("{}/{}", u.mount, u.path_string());
        let prefix = format!("{}://{}", r.scheme(), path.trim_end_matches('/'));
        prop_assert!(r.to_canonical().starts_with(&prefix), "{:?}", r);
        prop_assert!(u.field.as_deref() != Some(""));
        prop_assert!(u.params.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert_eq!(r.scheme(), r.scheme().to_ascii_lowercase());
        if let Some(v) = u.param("version") {
            prop_assert_eq!(u.version().map(|n| n.to_string()), Some(v.to_string()));
        }
    }

    #[test]
    fn own_schemes_round_trip(input in own_scheme_input()) {
        round_trip(&input)?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_input_never_panics_and_errors_are_clean(input in noisy_input()) {
        for result in [
            SecretRef::parse(&input),
            SecretRef::parse_for_tenant(&input, "dev", &["secret"]),
        ] {
            match result {
                Ok(r) => {
                    let again = SecretRef::parse(r.to_canonical());
                    prop_assert_eq!(again.as_ref().ok(), Some(&r), "{:?}", input);
                    // A file:// path is absolute and already normalised, so
                    // a rule's prefix on it is a prefix on the file read.
                    if let RefKind::File { path, .. } = r.kind() {
                        let p = std::path::Path::new(path);
                        prop_assert!(p.is_absolute(), "{:?}", input);
                        let normal: std::path::PathBuf = p.components().collect();
                        prop_assert_eq!(normal.to_str(), Some(path.as_str()), "{:?}", input);
                        prop_assert!(!path.contains("/./") && !path.contains("/../"));
                        prop_assert!(!path.contains('%'), "{:?}", input);
                    }
                }
                Err(e) => {
                    prop_assert!(e.code().is_reference_error(), "{:?}: {:?}", input, e);
                    let text = e.to_string();
                    prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
                    let debug = format!("{e:?}");
                    prop_assert!(!debug.chars().any(char::is_control), "{:?}", debug);
                }
            }
        }
    }
}
