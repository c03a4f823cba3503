//! One config precedence rule for every provider, through the binary: a
//! provider's `secref.toml` table wins setting by setting, and its
//! environment variables fill only what the table leaves out.
//!
//! Each case points the table at a closed loopback port and the environment
//! at a plain-http non-loopback URL (which every provider refuses as a
//! config error): if the table wins, the read reaches the network and fails
//! `backend_unavailable` (exit 5); if the environment won, it would fail
//! `config` (exit 2). Without the table the same environment is used — and
//! refused.

use secref_testkit::cli::{run, stderr, Sandbox};

struct Case {
    section: &'static str,
    table: &'static str,
    env: &'static [(&'static str, &'static str)],
    reference: &'static str,
}

const CASES: &[Case] = &[
    Case {
        section: "vault",
        table: "url = 'http://127.0.0.1:1'\nverify_ssl = true",
        env: &[
            ("VAULT_ADDR", "http://vault.example.com"),
            ("VAULT_VERIFY_SSL", "not-a-bool"),
            ("VAULT_TOKEN", "t"),
        ],
        reference: "openbao+kv2://secret/app#k",
    },
    Case {
        section: "secflow",
        table: "base_url = 'http://127.0.0.1:1'",
        env: &[
            ("SECFLOW_BASE_URL", "http://secflow.example.com"),
            ("SECFLOW_SDK_TOKEN", "t"),
        ],
        reference: "secret://dev/app/token/a",
    },
    Case {
        section: "infisical",
        table: "url = 'http://127.0.0.1:1'",
        env: &[
            ("INFISICAL_URL", "http://infisical.example.com"),
            ("INFISICAL_TOKEN", "t"),
        ],
        reference: "infisical://proj/dev/KEY",
    },
];

fn get(sb: &Sandbox, case: &Case, config: Option<&std::path::Path>) -> std::process::Output {
    let mut cmd = sb.cmd();
    cmd.envs(case.env.iter().copied());
    if let Some(path) = config {
        cmd.env("SECREF_CONFIG", path);
    }
    run(cmd.args(["get", case.reference]))
}

#[test]
fn the_table_wins_and_the_environment_fills_in() {
    for case in CASES {
        let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
        let config = sb.write(
            "providers.toml",
            &format!(
                "[retry]\nmax_attempts = 1\n[{}]\n{}\n",
                case.section, case.table
            ),
        );
        let out = get(&sb, case, Some(&config));
        assert_eq!(
            out.status.code(),
            Some(5),
            "{}: the table must win: {}",
            case.section,
            stderr(&out)
        );
        assert!(stderr(&out).contains("error[backend_unavailable]"));
        // Without the table, the environment is what configures it.
        let out = get(&sb, case, None);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            case.section,
            stderr(&out)
        );
        assert!(stderr(&out).contains("error[config]"), "{}", stderr(&out));
    }
}
