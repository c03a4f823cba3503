//! `secref run --watch`: follow the values given to the command and, on a
//! real change, restart it with the new environment (or send it a signal),
//! without restart storms: bursts are coalesced, restarts are at least
//! `--min-interval` apart, and errors (a backend outage) never restart it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use secref::{Resolver, Secret};

use crate::child::{self, Forwarder};
use crate::deliver::{self, Follower, WatchTiming};
use crate::mask::Patterns;
use crate::report::Failure;
use crate::vars::{Var, VarValue};

/// The `--watch` options of `secref run`.
#[derive(Debug, Clone, Args)]
pub struct RunWatchArgs {
    /// Follow the resolved values; when one changes, restart the command
    /// with the new environment (SIGTERM, then SIGKILL after
    /// --restart-grace), or send it --watch-signal instead.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: on a change, send the command this signal (e.g. HUP)
    /// instead of restarting it; its environment stays as it was.
    #[arg(long, value_name = "SIGNAL", requires = "watch", value_parser = deliver::parse_signal)]
    pub watch_signal: Option<libc::c_int>,
    /// With --watch: how long a restart waits for the command to exit after
    /// SIGTERM before it is killed (SIGKILL).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub restart_grace: Duration,
    #[command(flatten)]
    pub timing: WatchTiming,
}

/// What `secref run --watch` starts from: the first batch, already
/// resolved, and how to mask and hand values to the command.
pub struct Start<'a> {
    /// The variables, in order.
    pub vars: &'a [Var],
    /// Their resolved values, in the same order.
    pub values: Vec<(String, Secret)>,
    /// The values that came from references (masked when masking is on).
    pub secrets: Vec<(String, Secret)>,
    /// Whether the command's output is masked.
    pub masking: bool,
    /// Variables withheld from the command.
    pub withhold: &'a [String],
    /// The command.
    pub command: &'a [OsString],
    /// The local store file (watched for `local://` references).
    pub store: Option<PathBuf>,
}

/// Runs the command and restarts (or signals) it on each change; returns
/// the exit code of the command's last run that ended on its own (or after
/// secref was asked to stop), as `secref run` does.
pub async fn run(
    args: &RunWatchArgs,
    resolver: Resolver,
    start: Start<'_>,
) -> Result<i32, Failure> {
    let refs = crate::vars::references(start.vars);
    let current: Vec<Secret> = refs
        .iter()
        .map(|r| {
            start
                .vars
                .iter()
                .zip(&start.values)
                .find(|(v, _)| matches!(&v.value, VarValue::Ref(x) if x == r))
                .map(|(_, (_, s))| s.clone())
                .ok_or_else(|| secref::Error::internal("a resolved reference is missing"))
        })
        .collect::<secref::Result<_>>()?;
    let mut follower = Follower::start(resolver, refs, current, start.store, args.timing.clone())?;
    // Every value the command was ever given stays masked: output of the
    // old run may still be in flight while the new one starts.
    let mut masked = start.secrets;
    let mut patterns = masking_for(start.masking, &masked)?;
    let forwarder = Forwarder::install()?;
    let mut running = child::spawn(
        start.command,
        &start.values,
        start.withhold,
        patterns.clone(),
        &forwarder,
    )?;
    drop(start.values);
    loop {
        tokio::select! {
            () = running.exited() => return running.finish(&forwarder).await,
            changed = follower.next_change() => changed?,
        }
        if child::stop_requested() {
            continue; // the command is stopping; wait for its exit code
        }
        if let Some(signo) = args.watch_signal {
            eprintln!("secref run: a watched value changed; signalling the command ({signo})");
            running.signal(signo);
            continue;
        }
        eprintln!("secref run: a watched value changed; restarting the command");
        running.signal(libc::SIGTERM);
        if tokio::time::timeout(args.restart_grace, running.exited())
            .await
            .is_err()
        {
            running.signal(libc::SIGKILL);
            running.exited().await;
        }
        let code = running.finish(&forwarder).await?;
        if child::stop_requested() {
            return Ok(code);
        }
        let env = environment(start.vars, &follower);
        for (name, value) in &env {
            let from_ref = start
                .vars
                .iter()
                .any(|v| &v.name == name && matches!(v.value, VarValue::Ref(_)));
            if from_ref
                && !masked
                    .iter()
                    .any(|(_, s)| secref::constant_time_eq(s.expose_bytes(), value.expose_bytes()))
            {
                masked.push((name.clone(), value.clone()));
            }
        }
        patterns = masking_for(start.masking, &masked)?;
        running = child::spawn(
            start.command,
            &env,
            start.withhold,
            patterns.clone(),
            &forwarder,
        )?;
    }
}

fn masking_for(
    masking: bool,
    secrets: &[(String, Secret)],
) -> Result<Option<Arc<Patterns>>, Failure> {
    if masking {
        crate::commands::masking_patterns(secrets)
    } else {
        Ok(None)
    }
}

/// The command's variables with the values the follower holds now.
fn environment(vars: &[Var], follower: &Follower) -> Vec<(String, Secret)> {
    vars.iter()
        .filter_map(|v| {
            let value = match &v.value {
                VarValue::Ref(r) => {
                    let i = follower.references().iter().position(|x| x == r)?;
                    follower.values()[i].clone()
                }
                VarValue::Plain(p) => Secret::from(p.as_str()),
            };
            Some((v.name.clone(), value))
        })
        .collect()
}
