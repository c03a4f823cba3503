//! `secref`: the command-line tool, a thin layer over the `secref` library.
//!
//! Commands: `init`, `set`, `get`, `rm`, `ls` (the local store), `run` (a
//! command with secrets in its environment, output masked), `export`,
//! `ref` (parse only), `check` (resolve without printing values),
//! `inject` (render a template into a file, `--watch` to follow changes),
//! `import` (a dotenv file's values into the store) and `completions`.
//!
//! Exit codes (also in `secref --help`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (`run`: the command's own exit code) |
//! | 1 | any other error |
//! | 2 | usage, configuration or bad reference |
//! | 3 | not found (`not_found`, `field_not_found`, `version_*`) |
//! | 4 | denied (`permission_denied`, `unauthenticated`) |
//! | 5 | backend unavailable (any retryable error) |
//! | 126 / 127 | `run`: the command cannot be executed / is not found |
//! | 128+N | `run`: the command was killed by signal N |
//!
//! Errors go to stderr as `error[code]: message` plus a `hint:` line.

mod audit_cmd;
mod child;
mod cli;
mod commands;
mod completions;
mod deliver;
mod export;
mod harden;
mod import;
mod inject;
#[cfg(feature = "otel")]
mod otel;
mod report;
mod rotate;
mod serve;
mod store_cmds;
mod template;
mod vars;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
// The masker lives in the library target so that the fuzz targets reach it.
use secref_cli::mask;

/// Every heap block is wiped when freed. Values, tokens and keys pass
/// through buffers secref does not own (hyper's read buffers and HTTP
/// bodies in `serve`, serde_json values, the child's environment block in
/// `run`, the masker's tables); wiping at the allocator covers them all in
/// one place, so freed memory never keeps a secret for a later core,
/// swap-out or heap read to find. Live `Secret`s additionally sit in locked,
/// MADV_DONTDUMP memory (see `secref::Secret`).
#[global_allocator]
static ALLOC: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Returns (rather than `process::exit`s) so that destructors run: the
/// runtime shuts down, the resolver is dropped and its audit writer drains
/// its queue before the process ends.
fn main() -> ExitCode {
    // Before anything else, in particular before any secret is read.
    harden::harden();
    let cli = cli::Cli::parse();
    let (log_guard, otel) = init_logging(cli.verbose);
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let code = rt.block_on(commands::dispatch(cli.command));
            // Drops every task (and the resolver clones they hold); a
            // blocking read of stdin may never end, so the wait is bounded.
            rt.shutdown_timeout(Duration::from_secs(5));
            code
        }
        Err(e) => {
            report::print(&secref::Error::internal(format!(
                "cannot start the async runtime: {e}"
            )));
            report::EXIT_OTHER
        }
    };
    // After the runtime: every span has ended, and the exporter's blocking
    // client must not run inside it.
    #[cfg(feature = "otel")]
    if let Some(o) = otel {
        o.shutdown();
    }
    #[cfg(not(feature = "otel"))]
    let _ = otel;
    // Last: waits (bounded) until every queued log line is on stderr, so
    // `serve`'s final lines after SIGTERM are never lost.
    drop(log_guard);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(feature = "otel")]
type OtelGuard = otel::Otel;
#[cfg(not(feature = "otel"))]
type OtelGuard = std::convert::Infallible;

/// Logs go to stderr. `RUST_LOG` wins over `-v`; without either only
/// warnings are shown. With an `OTEL_EXPORTER_OTLP_*` endpoint set (feature
/// `otel`), secref's spans are also exported, whatever the log level; the
/// returned guard flushes them.
///
/// Lines are formatted on the caller's thread but written by a dedicated
/// thread (`tracing-appender`), so a request worker of `serve` never waits
/// on stderr for its access-log line. The queue is bounded and not lossy: a
/// full queue makes the logging thread wait (back-pressure) rather than drop
/// lines or grow without limit. The returned [`WorkerGuard`] must live until
/// exit: dropping it writes out what is still queued.
fn init_logging(verbose: u8) -> (WorkerGuard, Option<OtelGuard>) {
    let default = match verbose {
        0 => "warn,secref_server=info", // `serve`'s access log
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(spec),
        _ => EnvFilter::try_new(default),
    }
    .unwrap_or_else(|_| EnvFilter::new("warn"));
    // Buffered: the writer thread flushes whenever its queue is empty, so a
    // burst of lines costs one `write` rather than one per line.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("secref-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(fmt);
    #[cfg(feature = "otel")]
    {
        let (layer, otel) = otel::init().unzip();
        let _ = registry.with(layer).try_init();
        (guard, otel)
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        (guard, None)
    }
}

/// How many formatted log lines may wait for the writer thread before a
/// logging thread blocks: bounds the queue's memory (a few MiB at most).
const LOG_QUEUE_LINES: usize = 16_384;
