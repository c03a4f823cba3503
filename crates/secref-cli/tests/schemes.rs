//! `secref ref --schemes [--json]` is the one list of schemes: its JSON
//! carries each provider's capabilities and environment variables straight
//! from the registry, the help texts name exactly its schemes, and the
//! README's reference table lists exactly them.

use std::collections::BTreeSet;

use secref_testkit::cli::{run_ok, stdout, Sandbox};

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref"))
}

fn printed_schemes(sb: &Sandbox) -> BTreeSet<String> {
    let out = stdout(&run_ok(sb.cmd().args(["ref", "--schemes"])));
    out.lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

#[test]
fn json_lists_capabilities_and_env_vars_of_every_scheme() {
    let sb = sandbox();
    let out = stdout(&run_ok(sb.cmd().args(["ref", "--schemes", "--json"])));
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut n = 0;
    for spec in secref::registry::specs() {
        for scheme in spec.schemes {
            let row = list
                .iter()
                .find(|r| r["scheme"] == *scheme)
                .unwrap_or_else(|| panic!("{scheme} missing"));
            n += 1;
            assert_eq!(row["provider"], spec.name);
            assert_eq!(row["host_local"], spec.host_local);
            assert_eq!(
                row["env_vars"],
                serde_json::json!(spec.env_vars),
                "{scheme}"
            );
            let c = spec.capabilities;
            assert_eq!(
                row["capabilities"],
                serde_json::json!({"wrap": c.wrap, "versions": c.versions,
                    "leases": c.leases, "list": c.list, "write": c.write}),
                "{scheme}"
            );
        }
    }
    assert_eq!(list.len(), n);
    let vault = list.iter().find(|r| r["scheme"] == "openbao+kv2").unwrap();
    assert_eq!(vault["capabilities"]["wrap"], true);
    assert!(vault["env_vars"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "VAULT_ADDR"));
    // Names only: a set variable's value never shows.
    let sb = sandbox().with_env("VAULT_TOKEN", "canary-schemes-token-1");
    let out = stdout(&run_ok(sb.cmd().args(["ref", "--schemes", "--json"])));
    assert!(!out.contains("canary-schemes-token-1"));
}

#[test]
fn help_texts_name_exactly_the_registered_schemes() {
    let sb = sandbox();
    let schemes = printed_schemes(&sb);
    let help = stdout(&run_ok(sb.cmd().args(["run", "--help"])));
    let line = help
        .lines()
        .find(|l| l.contains("known scheme followed by"))
        .expect("--env-file help names the schemes");
    let listed: BTreeSet<String> = line
        .split_once("`://` (")
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .split(", ")
        .map(str::to_string)
        .collect();
    assert_eq!(listed, schemes);

    let help = stdout(&run_ok(sb.cmd().arg("--help")));
    let section = help
        .split("References (")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let listed: BTreeSet<String> = section
        .split_whitespace()
        .filter_map(|w| w.strip_suffix("://"))
        .map(str::to_string)
        .collect();
    assert_eq!(listed, schemes);
}

#[test]
fn readme_reference_table_lists_exactly_the_printed_schemes() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme
        .split("## References\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .find(|block| block.trim_start().starts_with('|'))
        .unwrap();
    let mut documented = BTreeSet::new();
    for row in table.trim().lines().skip(2) {
        let first = row.split('|').nth(1).unwrap();
        for cell in first.split(',') {
            documented.insert(cell.trim().trim_matches('`').to_string());
        }
    }
    assert_eq!(documented, printed_schemes(&sandbox()));
}
