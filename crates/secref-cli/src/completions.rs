//! `secref completions SHELL`: clap's completion generator over the same
//! command definition the parser uses, plus the registry's schemes as
//! candidates for reference arguments.

use clap::builder::PossibleValuesParser;
use clap::CommandFactory as _;

use crate::cli::Cli;
use crate::commands::write_stdout;
use crate::report::EXIT_OK;

/// The arguments that take a reference or a reference prefix.
const REFERENCE_ARGS: &[&str] = &["reference", "references", "env_from", "ref_prefix"];

/// Prints the completion script for `shell`.
pub fn print(shell: clap_complete::Shell) -> secref::Result<i32> {
    let mut cmd = with_schemes(Cli::command());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "secref", &mut out);
    write_stdout(&out)?;
    Ok(EXIT_OK)
}

/// `cmd` with every reference argument offering `scheme://` for each
/// registered scheme. Only the generator sees this copy; the parser keeps
/// accepting any text there.
fn with_schemes(mut cmd: clap::Command) -> clap::Command {
    let schemes: Vec<String> = secref::registry::schemes()
        .map(|s| format!("{s}://"))
        .collect();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |mut sub| {
            let ids: Vec<String> = sub
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .filter(|id| REFERENCE_ARGS.contains(&id.as_str()))
                .collect();
            for id in ids {
                let schemes = schemes.clone();
                sub = sub.mut_arg(id, |a| {
                    a.value_parser(PossibleValuesParser::new(schemes))
                        .hide_possible_values(true)
                });
            }
            sub
        });
    }
    cmd
}
