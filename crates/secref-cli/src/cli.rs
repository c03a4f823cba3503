//! The command line, as clap derive types. The help text is the user's
//! manual, so it says what each command prints and how it fails.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The long help's references section, generated from the provider
/// registry so it lists exactly the schemes this build understands.
fn after_help() -> String {
    let mut out = String::from(
        "References (`scheme://…`; grammar in the README, details: `secref ref --schemes --json`):\n",
    );
    for spec in secref::registry::specs() {
        let schemes: Vec<String> = spec.schemes.iter().map(|s| format!("{s}://")).collect();
        out.push_str(&format!("  {:<11}{}\n", spec.name, schemes.join(" ")));
    }
    out.push('\n');
    out.push_str(AFTER_HELP);
    out
}

/// `secref run --help`'s list of withheld variables, from the provider
/// registry and the audit policy, so a new provider's credentials show up
/// without editing the CLI.
fn run_after_help() -> String {
    let defaults = crate::child::withheld_unless_passed(&secref::Config::default());
    format!(
        "Never passed to the command: {}.\n\
         Passed only when named with --pass-env: {} (and any variable \
         secref.toml names in their place).",
        crate::child::WITHHELD_ALWAYS.join(", "),
        defaults.join(", ")
    )
}

/// Every registered scheme, comma-separated (help texts).
fn scheme_list() -> String {
    secref::registry::schemes().collect::<Vec<_>>().join(", ")
}

/// The long help of `--env-file`, naming the registered schemes.
fn env_file_help() -> String {
    format!(
        "A dotenv file of NAME=VALUE lines; references in it are resolved.\n\n\
         A value is a reference iff it starts with a known scheme followed by \
         `://` ({}; any case). Such a value must parse, or it is an error (a \
         mistyped reference is never passed on as text). Every other value \
         (`https://…`, `postgres://…`, plain text) passes through unchanged. \
         Files are read in order, then --env flags; a later definition of a name \
         replaces an earlier one.",
        scheme_list()
    )
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success (for `run`: the command's own exit code is passed through)
  1  other error
  2  usage, configuration or bad reference
  3  not found (not_found, field_not_found, version_deleted, version_destroyed)
  4  denied (permission_denied, unauthenticated)
  5  backend unavailable (any retryable error: backend_unavailable, timeout, rate_limited)
  `run` exits 128+N when the command is killed by signal N, 127 when it
  cannot be found and 126 when it cannot be executed.

Errors are printed to stderr as `error[code]: message`, with a `hint:` line
when there is one. Secret values are never printed except by `get` and
`export`, whose job it is, and never logged (`-v` / RUST_LOG).

Files: the store is $SECREF_STORE (or [local] store in secref.toml), the key
is $SECREF_KEY (base64) or the file $SECREF_KEY_FILE (or [local] key_file);
secref.toml is read from the working directory, else $SECREF_CONFIG.";

/// secref: one reference grammar for every secret backend.
///
/// Resolves secret references such as `local://app/db#password` or
/// `openbao+kv2://secret/app#token` from the embedded encrypted store, the
/// environment, files and remote backends, and hands them to programs without
/// putting them on command lines or in files.
#[derive(Debug, Parser)]
#[command(name = "secref", version, after_long_help = after_help())]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG
    /// overrides it. Logs never contain secret values.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store key (if absent) and an empty local store.
    ///
    /// Prints the key file and store paths, never the key. Never overwrites
    /// a key file: if the key exists but the store does not, the existing key
    /// (file or $SECREF_KEY) is reused for the new store; if the store exists
    /// (with or without its key), nothing is changed and it exits 2.
    Init,

    /// Store a value in the local store, read from stdin.
    ///
    /// The value is read from stdin only, never from the command line, so it
    /// does not end up in shell history or process listings. One trailing
    /// newline (`\n` or `\r\n`) is stripped unless --raw is given:
    /// `printf '%s' "$VALUE" | secref set local://app/db#password`
    ///
    /// Every write creates a new version of the entry (see `history`); with
    /// `#field`, the new version is the current one with that field set.
    Set {
        /// A `local://` reference, e.g. `local://app/db#password`.
        reference: String,
        /// Store stdin byte for byte (keep a trailing newline).
        #[arg(long)]
        raw: bool,
        /// Check-and-set: write only if the entry's current version is N
        /// (0: only if it has none yet); otherwise exit 2 and change nothing.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },

    /// Resolve one reference and print its value to stdout.
    ///
    /// The value is written byte for byte, followed by a newline unless
    /// --no-newline is given (as `op read` does).
    Get {
        /// Any reference, e.g. `local://app/db#password` or `env://HOME`.
        reference: String,
        /// Do not add a newline after the value.
        #[arg(short = 'n', long)]
        no_newline: bool,
    },

    /// Remove an entry (or one field of it) from the local store.
    ///
    /// Soft-deletes the entry's current version (or the `?version=N` given):
    /// reads then fail with not_found, and `undelete` brings it back. With
    /// `#field`, writes a new version without that field. --destroy erases
    /// the version's data for good instead. Exits 3 (not found) when there
    /// is nothing to remove.
    Rm {
        /// A `local://` reference.
        reference: String,
        /// Destroy the version (unrecoverable) instead of soft-deleting it.
        #[arg(long)]
        destroy: bool,
    },

    /// Destroy versions of a local-store entry: their encrypted data is
    /// removed from the store file for good (metadata stays, see `history`).
    Destroy {
        /// A `local://` entry reference, e.g. `local://app/db`.
        reference: String,
        /// The versions to destroy, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, value_name = "N,…")]
        versions: Vec<u64>,
    },

    /// Restore soft-deleted versions of a local-store entry.
    Undelete {
        /// A `local://` entry reference, e.g. `local://app/db`.
        reference: String,
        /// The versions to restore, comma-separated (default: the current one).
        #[arg(long, value_delimiter = ',', value_name = "N,…")]
        versions: Vec<u64>,
    },

    /// Show an entry's versions and metadata: created, deleted and destroyed
    /// times, the current version, max_versions, cas_required and custom
    /// metadata. Never values; nothing is decrypted.
    History {
        /// A `local://` entry reference, e.g. `local://app/db`.
        reference: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },

    /// List the local store's entries (names only, never values).
    Ls,

    /// Run a command with resolved secrets in its environment.
    ///
    /// Every reference is resolved in one batch before anything runs; if any
    /// fails, each failing variable is listed (name, reference, error code)
    /// and the command is not run. The command's exit code is passed
    /// through; if it dies from a signal, secref exits 128+signal. SIGINT,
    /// SIGTERM, SIGHUP and SIGQUIT sent to secref (kill) are forwarded to
    /// it; those the terminal sends (Ctrl-C, Ctrl-\) reach it directly, as
    /// it shares secref's process group, and are not sent a second time.
    ///
    /// Unless --no-masking is given, the command's stdout and stderr are
    /// piped through a masker that replaces every occurrence of each secret
    /// value (and its base64 forms, also inside a longer encoding such as an
    /// HTTP Basic credential, its URL-encoded and JSON-escaped forms, and
    /// each line of at least 8 bytes of a multi-line value) with
    /// `<concealed by secref>`. Only resolved references are masked, not
    /// plain env-file values; values shorter than 3 bytes are not masked (a
    /// warning names the variable), and values over 8 KiB are masked as
    /// themselves and line by line only. stdin is passed through untouched;
    /// with masking on, the command's stdout and stderr are pipes, not the
    /// terminal.
    ///
    /// The command inherits secref's environment except secref's own
    /// credentials, which it never receives (SECREF_KEY, SECREF_SERVE_TOKEN),
    /// and the credentials secref reads, which it receives only when named
    /// with --pass-env: each provider's (its `credential_env_vars` in
    /// `secref ref --schemes --json`, e.g. VAULT_TOKEN,
    /// AWS_SECRET_ACCESS_KEY), a variable secref.toml names in their place
    /// ([secflow] token_env, [coze] client_secret_env) and the audit salt
    /// and chain key (SECRET_TENANT_SALT, [audit] salt_env, chain_key_env),
    /// and the variables [policy.pdp] token_env, [state] key_env /
    /// password_env and [server.tokens.*] token_env name. An env:// reference
    /// to a withheld variable is refused (nothing runs). A variable set with
    /// --env or --env-file is always passed.
    #[command(after_long_help = run_after_help())]
    Run {
        #[command(flatten)]
        vars: VarArgs,
        /// Do not mask secret values in the command's output (its stdout and
        /// stderr are then inherited directly).
        #[arg(long)]
        no_masking: bool,
        /// Pass this provider credential (e.g. VAULT_TOKEN) to the command,
        /// which does not get it otherwise. Repeatable.
        #[arg(long = "pass-env", value_name = "NAME")]
        pass_env: Vec<String>,
        #[command(flatten)]
        watch: crate::rotate::RunWatchArgs,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },

    /// Resolve variables and print them in a format for other tools.
    ///
    /// All variables are written, plain env-file values included; if any
    /// reference fails, nothing is written.
    ///
    /// dotenv: `NAME="value"` lines, with backslash, double quote and `$`
    /// escaped by a backslash and a newline written as `\n`, as dotenv
    /// parsers read it back. json: one object of strings, keys sorted. shell:
    /// `export NAME='value'` lines (a `'` becomes `'\''`), safe to `eval`.
    /// Values that are not UTF-8 cannot be exported as dotenv or json, nor
    /// values with NUL bytes as shell.
    Export {
        #[command(flatten)]
        vars: VarArgs,
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
    },

    /// Parse references and print their canonical form and parts.
    ///
    /// Resolves nothing. Each reference that does not parse is reported as
    /// `error[code]: message`; the exit status is non-zero if any fails.
    Ref {
        /// Print one JSON object per reference in a JSON array.
        #[arg(long)]
        json: bool,
        /// Apply the tenant mount guard for this tenant.
        #[arg(long, requires = "allowed_mounts")]
        tenant: Option<String>,
        /// The mounts the tenant may use (comma-separated).
        #[arg(long, value_delimiter = ',', requires = "tenant")]
        allowed_mounts: Vec<String>,
        /// List the schemes of the registered providers instead (one line
        /// each: scheme, provider, `host-local` if so; with --json also the
        /// provider's capabilities and environment variables), and exit.
        #[arg(long, conflicts_with_all = ["tenant", "allowed_mounts"])]
        schemes: bool,
        /// The references to parse.
        #[arg(required_unless_present = "schemes")]
        references: Vec<String>,
    },

    /// Resolve variables and report which resolve, without printing values.
    ///
    /// Prints a table of NAME, REF, PROVIDER and STATUS (`ok` or the error
    /// code), then the error messages on stderr. Exits non-zero if any fails.
    Check {
        #[command(flatten)]
        vars: VarArgs,
    },

    /// Move a dotenv file's plaintext values into the local store and
    /// replace them in the file by references.
    ///
    /// Each variable with a plain, non-empty value becomes the entry
    /// `<prefix><NAME>` (default prefix `local://<file stem>/`); values that
    /// already are references, and empty ones, are left alone, as are
    /// comments, blank lines and the order. The file (or OUT) is replaced
    /// atomically, with the original's mode, only after every value is
    /// stored and read back: interrupted at any point, either the original
    /// file is intact or the new one is complete and every value it names is
    /// stored. --dry-run prints the plan (names and references, never
    /// values) and changes nothing.
    Import {
        /// The dotenv file, e.g. `app.env`.
        file: PathBuf,
        /// The local store folder, e.g. `local://app/`.
        #[arg(long = "prefix", value_name = "REF_PREFIX")]
        ref_prefix: Option<String>,
        /// Write the rewritten file here instead of replacing FILE.
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: Option<PathBuf>,
        /// Show what would be stored and rewritten; change nothing.
        #[arg(long)]
        dry_run: bool,
    },

    /// Print a shell completion script (bash, zsh or fish) to stdout.
    ///
    /// It completes subcommands, flags and the reference schemes of this
    /// build (`local://`, `openbao+kv2://`, …). E.g. `secref completions
    /// bash > ~/.local/share/bash-completion/completions/secref`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },

    /// Serve secrets over the SecFlow Runtime API (and Vault KV v2) on
    /// loopback.
    ///
    /// Clients authenticate with a bearer token: $SECREF_SERVE_TOKEN, else
    /// the content of --token-file, else a fresh token (written to
    /// --token-file with mode 0600, or printed once to stderr). Unix-socket
    /// callers (--socket) are identified by uid and executable instead.
    /// Access rules, leases and the `secret://` mapping are set in the
    /// `[server]` table of secref.toml. Stops on Ctrl-C or SIGTERM.
    Serve(crate::serve::ServeArgs),

    /// Render a template's `{{ ref }}` placeholders into a file.
    ///
    /// Placeholders: `{{ ref }}`, with filters `{{ ref | trim | base64 }}`
    /// (`base64`, `json` — a JSON string literal —, `trim`; left to right);
    /// `\{{` is a literal `{{`. Every reference is resolved in one batch; if
    /// any fails, nothing is written. The output is replaced atomically
    /// (temporary file, mode 0600, fsync, rename): readers see the old file
    /// or the new one, never a part, even if secref is killed mid-write.
    ///
    /// With --watch it keeps running and re-renders when a referenced value
    /// really changes (errors keep the current file), then runs --on-change
    /// and/or sends --signal to the pid in --pid-file. A burst of changes
    /// gives one re-render (--debounce), and re-renders are at least
    /// --min-interval apart.
    Inject(crate::inject::InjectArgs),
    /// Audit trail tools (`secref audit verify FILE...`).
    Audit(crate::audit_cmd::AuditArgs),
}

/// Where the variables of `run`, `export` and `check` come from.
///
/// References in secref's environment are scanned first (unless
/// `--no-env-scan`), then `--env-from` prefixes, then `--env-file` files, in
/// order, then `--env` flags; a later definition of a name replaces an
/// earlier one.
///
/// A value in an env file is a reference iff it starts with a registered
/// scheme (`secref ref --schemes`) followed by `://` (any case, with or
/// without `+engine`). Such a value must then parse, or it is an error: a mistyped reference is
/// never passed on as a literal. Every other value (`https://…`,
/// `postgres://…`, plain text) is passed through unchanged.
#[derive(Debug, Args)]
pub struct VarArgs {
    /// A variable and its reference, e.g. `--env DB_PASSWORD=local://app/db#password`.
    #[arg(long = "env", value_name = "NAME=REF")]
    pub env: Vec<String>,
    /// A dotenv file of NAME=VALUE lines; references in it are resolved.
    #[arg(long = "env-file", value_name = "FILE", long_help = env_file_help())]
    pub env_files: Vec<PathBuf>,
    /// Import every secret under a reference prefix as variables, e.g.
    /// `local://app/`, `infisical://<project>/<env>/<folder>`,
    /// `coze+env://<project>`, `openbao+kv2://secret/app` (its fields).
    ///
    /// A secret's name below the prefix becomes the variable's name: upper
    /// case, every character other than a letter, digit or `_` made `_`
    /// (`local://app/db#password` → `DB_PASSWORD`), after --prefix. Two
    /// secrets mapping to one name, or a name already in secref's
    /// environment, is an error (nothing is overwritten silently); --env and
    /// --env-file win over an imported name, with a warning. Repeatable.
    #[arg(long = "env-from", value_name = "REF_PREFIX")]
    pub env_from: Vec<String>,
    /// Put NAME_PREFIX before every name --env-from derives (e.g. `APP_`).
    #[arg(long = "prefix", value_name = "NAME_PREFIX", requires = "env_from")]
    pub name_prefix: Option<String>,
    /// Do not resolve references found in secref's own environment.
    ///
    /// By default every environment variable whose value is a reference
    /// (the rule above) is resolved and, for `run`, replaced by its value in
    /// the command's environment (`DB=local://app/db#password secref run --
    /// ./app`); a mistyped one fails. secref's own variables (`SECREF_*`)
    /// and the provider credentials are never scanned. --env and --env-file
    /// win over a scanned variable of the same name.
    #[arg(long)]
    pub no_env_scan: bool,
}

/// The output formats of `secref export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `NAME="value"` lines.
    Dotenv,
    /// A JSON object.
    Json,
    /// `export NAME='value'` lines.
    Shell,
}
