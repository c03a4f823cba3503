//! `secref audit verify`: checks the HMAC chain of audit files.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use secref::audit::chain::{self, ChainKey};
use secref::config::Env;

use crate::report::{EXIT_OK, EXIT_OTHER};

/// `secref audit …`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify chained audit files (`[audit] chain_key_env` / `chain_key_file`).
    ///
    /// Give rotated files oldest first, e.g. `audit.jsonl.* audit.jsonl`;
    /// they are checked as one chain. Prints `ok: N records (seq A..B)` and
    /// exits 0, or prints the first broken, missing, reordered or truncated
    /// record as `FILE:LINE: record SEQ: reason` and exits 1. Records cut
    /// from the end of the newest file cannot be seen by the chain alone:
    /// compare the last seq with what you expect.
    Verify {
        /// The audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The environment variable holding the chain key.
        #[arg(long, default_value = "SECREF_AUDIT_KEY", conflicts_with = "key_file")]
        key_env: String,
        /// An owner-only file holding the chain key.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

/// Runs `secref audit …`.
pub fn run(args: AuditArgs) -> secref::Result<i32> {
    match args.command {
        AuditCommand::Verify {
            files,
            key_env,
            key_file,
        } => {
            let key = match key_file {
                Some(path) => ChainKey::from_file(&path)?,
                None => ChainKey::from_env(&Env::from_process(), &key_env)?,
            };
            Ok(match chain::verify(&key, &files)? {
                Ok(v) => {
                    println!(
                        "ok: {} records (seq {}..{})",
                        v.records, v.first_seq, v.last_seq
                    );
                    EXIT_OK
                }
                Err(broken) => {
                    println!("broken: {broken}");
                    EXIT_OTHER
                }
            })
        }
    }
}
