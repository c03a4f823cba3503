//! `secref inject`: render a template's `{{ ref }}` placeholders into a
//! file, once or (`--watch`) each time a referenced value changes.

use std::path::{Path, PathBuf};

use clap::Args;
use secref::{Config, Error, ErrorCode, Resolver, Secret, SecretRef};
use zeroize::Zeroizing;

use crate::deliver::{self, Follower, WatchTiming};
use crate::report::EXIT_OK;
use crate::template::{parse_template, Template};

/// The arguments of `secref inject`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The template file.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: PathBuf,
    /// The file to write (atomically, mode 0600); stdout when absent.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        required_if_eq("watch", "true")
    )]
    pub output: Option<PathBuf>,
    /// Keep running: re-render whenever a referenced value changes (Ctrl-C
    /// or SIGTERM stops it).
    #[arg(long)]
    pub watch: bool,
    /// With --watch: run this shell command (`sh -c`) after each re-render.
    #[arg(long, value_name = "CMD", requires = "watch")]
    pub on_change: Option<String>,
    /// With --watch: send this signal (e.g. HUP) to the pid in --pid-file
    /// after each re-render.
    #[arg(long, value_name = "SIGNAL", requires_all = ["watch", "pid_file"], value_parser = deliver::parse_signal)]
    pub signal: Option<libc::c_int>,
    /// The file holding the pid --signal is sent to (read at each reload).
    #[arg(long, value_name = "FILE", requires = "signal")]
    pub pid_file: Option<PathBuf>,
    #[command(flatten)]
    pub timing: WatchTiming,
}

/// Runs `secref inject`.
pub async fn run(args: InjectArgs) -> secref::Result<i32> {
    let text = std::fs::read(&args.input).map_err(|e| {
        Error::new(
            ErrorCode::Io,
            format!(
                "cannot read template {}: {}",
                args.input.display(),
                e.kind()
            ),
        )
    })?;
    let text = String::from_utf8(text).map_err(|_| {
        Error::new(
            ErrorCode::InvalidUtf8,
            format!("template {} is not UTF-8", args.input.display()),
        )
    })?;
    let template = parse_template(&text)?;
    let cfg = Config::load()?;
    let refs = template.references();
    // As for `secref run`/`export`: a template may not copy a credential
    // secref withholds (`{{ env://SECREF_KEY }}`) into a file.
    let withhold = crate::child::withheld(&cfg, &[])?;
    let label = format!("template {}", args.input.display());
    for r in &refs {
        crate::vars::refuse_withheld_ref(&label, r, &withhold)?;
    }
    let resolver = Resolver::from_config(&cfg)?;
    let values = resolve_batch(&resolver, &refs).await?;
    let rendered = render(&template, &refs, &values)?;
    let Some(output) = &args.output else {
        crate::commands::write_stdout(&rendered)?;
        return Ok(EXIT_OK);
    };
    deliver::write_atomically(output, &rendered)?;
    drop(rendered);
    if !args.watch {
        return Ok(EXIT_OK);
    }
    let follower = Follower::start(
        resolver,
        refs,
        values,
        deliver::store_path(&cfg),
        args.timing.clone(),
    )?;
    // `withhold` was worked out above: `cfg` (its environment snapshot
    // holds credentials) is not kept while watching.
    drop(cfg);
    watch(&args, output, &template, follower, &withhold).await
}

/// Every reference in one batch; any failure fails the whole render.
async fn resolve_batch(resolver: &Resolver, refs: &[SecretRef]) -> secref::Result<Vec<Secret>> {
    let partial = resolver.read_many(refs.iter().cloned()).partial().await?;
    if let Some((first, _)) = partial.failures.iter().next() {
        let lines: Vec<String> = partial
            .failures
            .iter()
            .map(|(r, e)| format!("  {r} → {}: {}", e.code(), e.message()))
            .collect();
        let first = &partial.failures[first];
        return Err(Error::new(
            first.code(),
            format!(
                "{} of {} references could not be resolved; nothing was written\n{}",
                partial.failures.len(),
                refs.len(),
                lines.join("\n")
            ),
        )
        .with_retryable(partial.failures.values().all(Error::retryable)));
    }
    refs.iter()
        .map(|r| {
            partial
                .resolved
                .get(r)
                .cloned()
                .ok_or_else(|| Error::internal("a resolved reference is missing"))
        })
        .collect()
}

fn render(
    template: &Template,
    refs: &[SecretRef],
    values: &[Secret],
) -> secref::Result<Zeroizing<Vec<u8>>> {
    template.render(|r| refs.iter().position(|x| x == r).map(|i| &values[i]))
}

/// Re-renders on each (debounced, rate-limited) change until SIGINT or
/// SIGTERM. A failed re-render or hook is reported and the previous file
/// stays; watching goes on. The `--on-change` hook runs without `withhold`.
async fn watch(
    args: &InjectArgs,
    output: &Path,
    template: &Template,
    mut follower: Follower,
    withhold: &[String],
) -> secref::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |e: std::io::Error| Error::internal(format!("cannot install a signal handler: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    loop {
        tokio::select! {
            changed = follower.next_change() => changed?,
            _ = term.recv() => return Ok(EXIT_OK),
            _ = int.recv() => return Ok(EXIT_OK),
        }
        let written = render(template, follower.references(), follower.values())
            .and_then(|bytes| deliver::write_atomically(output, &bytes));
        if let Err(e) = written {
            crate::report::print(&e);
            continue;
        }
        eprintln!("secref inject: re-rendered {}", output.display());
        if let Some(cmd) = &args.on_change {
            match deliver::run_hook(cmd, withhold).await {
                Ok(0) => {}
                Ok(code) => eprintln!("warning: the --on-change command exited with {code}"),
                Err(e) => crate::report::print(&e),
            }
        }
        if let (Some(signo), Some(pid_file)) = (args.signal, &args.pid_file) {
            if let Err(e) = deliver::signal_pid_file(pid_file, signo) {
                crate::report::print(&e);
            }
        }
    }
}
