//! Running the child of `secref run`: environment, output masking, signal
//! forwarding and exit status.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use secref::{Config, Error, ErrorCode, Secret};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::mask::{Patterns, StreamMasker};
use crate::report::Failure;

/// Exit code when the command does not exist (as shells do).
pub const EXIT_COMMAND_NOT_FOUND: i32 = 127;
/// Exit code when the command cannot be executed (as shells do).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// secref's own credentials: never in the child's environment (there is no
/// opt-in; a child that needs the store should get values, not its key).
pub const WITHHELD_ALWAYS: &[&str] = &["SECREF_KEY", "SECREF_SERVE_TOKEN"];

/// Every variable holding a credential secref reads under `cfg`: the
/// library's ([`secref::credentials::credential_env_vars`]: providers,
/// audit, PDP, shared state) and the agent's named tokens
/// ([`secref_server::config::credential_env_vars`], a crate the library
/// cannot see). Sorted.
pub fn credential_env_vars(cfg: &Config) -> std::collections::BTreeSet<String> {
    let mut vars = secref::credentials::credential_env_vars(cfg);
    vars.extend(secref_server::config::credential_env_vars(cfg));
    vars
}

/// The credentials secref reads from its environment under `cfg`
/// ([`credential_env_vars`]) other than [`WITHHELD_ALWAYS`]: withheld from
/// the child unless named with `--pass-env` (the child gets the values it
/// asked for, not the power to read everything the backend holds). Sorted.
pub fn withheld_unless_passed(cfg: &Config) -> Vec<String> {
    credential_env_vars(cfg)
        .into_iter()
        .filter(|v| !WITHHELD_ALWAYS.contains(&v.as_str()))
        .collect()
}

/// The variables to remove from the child's inherited environment: every
/// [`WITHHELD_ALWAYS`], and every [`withheld_unless_passed`] not in `pass`.
/// Naming one of secref's own credentials in `pass`, or a variable that is
/// not withheld, is a usage error.
pub fn withheld(cfg: &Config, pass: &[String]) -> secref::Result<Vec<String>> {
    let unless_passed = withheld_unless_passed(cfg);
    for name in pass {
        if WITHHELD_ALWAYS.contains(&name.as_str()) {
            return Err(Error::usage(format!(
                "--pass-env {name}: secref's own credentials are never passed to the command"
            )));
        }
        if !unless_passed.contains(name) {
            return Err(Error::usage(format!(
                "--pass-env {name}: not a withheld variable (it is passed anyway)"
            ))
            .with_hint(format!(
                "withheld unless passed: {}",
                unless_passed.join(", ")
            )));
        }
    }
    Ok(WITHHELD_ALWAYS
        .iter()
        .map(|n| n.to_string())
        .chain(unless_passed.into_iter().filter(|n| !pass.contains(n)))
        .collect())
}

/// The signals forwarded to the child.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Runs `command` with `env` added to the inherited environment minus
/// `withhold` (see [`withheld`]; a variable the user set explicitly in `env`
/// is still passed). With `patterns`, its stdout and stderr are masked;
/// otherwise inherited. Returns the exit code to exit with.
pub async fn run(
    command: &[OsString],
    env: &[(String, Secret)],
    withhold: &[String],
    patterns: Option<Arc<Patterns>>,
) -> Result<i32, Failure> {
    // The forwarder is installed before the spawn so that a signal arriving
    // in between does not kill secref and orphan the command; until the pid
    // is known there is nobody to forward to (the command gets default
    // dispositions back at exec).
    let forwarder = Forwarder::install()?;
    let mut running = spawn(command, env, withhold, patterns, &forwarder)?;
    running.exited().await;
    running.finish(&forwarder).await
}

/// A started command (see [`spawn`]).
pub struct Running {
    child: tokio::process::Child,
    pumps: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    exit: Option<tokio::task::JoinHandle<()>>,
}

/// Starts `command` as [`run`] does and makes it the target of `forwarder`.
pub fn spawn(
    command: &[OsString],
    env: &[(String, Secret)],
    withhold: &[String],
    patterns: Option<Arc<Patterns>>,
    forwarder: &Forwarder,
) -> Result<Running, Failure> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::usage("no command given after --"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(Stdio::inherit());
    for name in withhold {
        cmd.env_remove(name);
    }
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (see harden::restore_for_child).
    unsafe {
        cmd.pre_exec(crate::harden::restore_for_child);
    }
    for (name, value) in env {
        // Values go into the child's environment only, never its argv.
        cmd.env(name, std::ffi::OsStr::from_bytes(value.expose_bytes()));
    }
    if patterns.is_some() {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, e))?;
    // The command's copy of the environment (values included) is not needed
    // any more; free it now rather than when the command exits.
    drop(cmd);
    tracing::debug!(pid = child.id(), "started command");
    forwarder.set_target(child.id());

    let mut pumps = Vec::new();
    if let Some(patterns) = &patterns {
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(
                out,
                tokio::io::stdout(),
                patterns.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(
                err,
                tokio::io::stderr(),
                patterns.clone(),
            )));
        }
    }
    // Wait for the exit without reaping (see `finish`): a pid is only
    // reused after reaping, so no signal can reach a stranger.
    let exit = child
        .id()
        .map(|pid| tokio::task::spawn_blocking(move || wait_for_exit_without_reaping(pid)));
    Ok(Running { child, pumps, exit })
}

impl Running {
    /// The command's pid, until it is reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signo` to the command (it is not reaped before
    /// [`finish`](Self::finish), so the pid is still its own).
    pub fn signal(&self, signo: libc::c_int) {
        if let Some(pid) = self.pid().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, signo) };
        }
    }

    /// Resolves once the command has exited (it stays unreaped).
    /// Cancel-safe.
    pub async fn exited(&mut self) {
        if let Some(h) = &mut self.exit {
            let _ = h.await;
            self.exit = None;
        }
    }

    /// After [`exited`](Self::exited): stops forwarding signals to it, reaps
    /// it, drains what it wrote; returns its exit code.
    pub async fn finish(mut self, forwarder: &Forwarder) -> Result<i32, Failure> {
        self.exited().await;
        forwarder.set_target(None);
        let status = self.child.wait().await.map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("waiting for the command failed: {e}"),
            )
        })?;
        // The command has exited; drain what it wrote before it did.
        for p in self.pumps {
            match p.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "output stream ended early"),
                Err(_) => tracing::debug!("output pump task failed"),
            }
        }
        Ok(exit_code_of(status))
    }
}

/// A command that cannot be started exits 127 (not found) or 126 (anything
/// else), as shells do.
fn spawn_error(program: &OsString, e: std::io::Error) -> Failure {
    let name = program.to_string_lossy();
    let (what, hint, exit_code) = match e.kind() {
        std::io::ErrorKind::NotFound => (
            "not found",
            "check the command name and PATH",
            EXIT_COMMAND_NOT_FOUND,
        ),
        std::io::ErrorKind::PermissionDenied => (
            "not executable",
            "check the file's permissions",
            EXIT_NOT_EXECUTABLE,
        ),
        _ => (
            "cannot be started",
            "check the command",
            EXIT_NOT_EXECUTABLE,
        ),
    };
    Failure {
        error: Error::new(ErrorCode::Io, format!("command '{name}' {what}: {e}")).with_hint(hint),
        exit_code,
    }
}

/// The command's exit code, or 128+N when it was killed by signal N.
pub fn exit_code_of(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signo)) => 128 + signo,
        (None, None) => 1,
    }
}

/// The pid signals are forwarded to; 0 while there is none.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
/// Set once secref receives SIGINT, SIGTERM or SIGQUIT while forwarding.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether secref was asked to stop (SIGINT, SIGTERM or SIGQUIT, from the
/// terminal or `kill`) since a [`Forwarder`] was installed: `run --watch`
/// then lets the command end instead of restarting it.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Forwards [`FORWARDED`] signals to the command while it lives.
///
/// Only signals sent by a process (`kill(2)`: `si_code <= 0`) are forwarded.
/// Those the kernel generates for the terminal's foreground process group
/// (Ctrl-C, Ctrl-\, hangup) already reach the command directly, since it
/// shares secref's process group; forwarding them too would deliver every
/// Ctrl-C twice, which many programs treat as "force quit".
pub struct Forwarder {
    ids: Vec<signal_hook_registry::SigId>,
}

impl Forwarder {
    /// Starts forwarding (to nobody until a command is spawned).
    pub fn install() -> secref::Result<Forwarder> {
        FORWARD_TO.store(0, Ordering::SeqCst);
        let mut ids = Vec::new();
        for signo in FORWARDED {
            // SAFETY: the action only touches atomics and calls kill(2), all
            // async-signal-safe; it allocates and locks nothing.
            let id = unsafe {
                signal_hook_registry::register_sigaction(signo, move |info: &libc::siginfo_t| {
                    if signo != libc::SIGHUP {
                        STOP_REQUESTED.store(true, Ordering::SeqCst);
                    }
                    let pid = FORWARD_TO.load(Ordering::SeqCst);
                    if pid > 0 && info.si_code <= 0 {
                        libc::kill(pid, signo);
                    }
                })
            }
            .map_err(|e| Error::internal(format!("cannot install a signal handler: {e}")))?;
            ids.push(id);
        }
        Ok(Forwarder { ids })
    }

    fn set_target(&self, pid: Option<u32>) {
        let pid = pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        FORWARD_TO.store(pid, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Called once the command has exited, before it is reaped.
        FORWARD_TO.store(0, Ordering::SeqCst);
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}

/// Blocks until process `pid` (our child) has exited, leaving it waitable.
fn wait_for_exit_without_reaping(pid: libc::id_t) {
    loop {
        // SAFETY: waitid writes only into `info`, which we own; WNOWAIT keeps
        // the child waitable so tokio still reaps it and reads its status.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Copies one output stream through a masker, flushing after every read so
/// output is never held longer than a possible partial match requires.
async fn pump(
    mut src: impl AsyncRead + Unpin,
    mut dst: impl AsyncWrite + Unpin,
    patterns: Arc<Patterns>,
) -> std::io::Result<()> {
    let mut masker = StreamMasker::new(patterns);
    let mut buf = Zeroizing::new(vec![0u8; 16 * 1024]);
    loop {
        let n = src.read(&mut buf[..]).await?;
        if n == 0 {
            break;
        }
        let out = masker.feed(&buf[..n]);
        dst.write_all(&out).await?;
        dst.flush().await?;
    }
    let out = masker.finish();
    dst.write_all(&out).await?;
    dst.flush().await
}
