mod serve;

use clap::Parser;

/// secref: secrets at runtime.
#[derive(Parser)]
#[command(name = "secref", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve secrets over the SecFlow (and Vault) wire APIs on loopback.
    Serve(serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
    }
}
