//! Running the child of `secref run`: environment, output masking, signal
//! forwarding and exit status.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use secref::{Error, ErrorCode, Secret};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, Signal, SignalKind};
use zeroize::Zeroizing;

use crate::mask::{Patterns, StreamMasker};

/// Exit code when the command does not exist (as shells do).
pub const EXIT_COMMAND_NOT_FOUND: i32 = 127;
/// Exit code when the command cannot be executed (as shells do).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// The signals forwarded to the child.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Runs `command` with `env` added to the inherited environment. With
/// `patterns`, its stdout and stderr are masked; otherwise inherited.
/// Returns the exit code to exit with.
pub async fn run(
    command: &[OsString],
    env: &[(String, Secret)],
    patterns: Option<Arc<Patterns>>,
) -> secref::Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::usage("no command given after --"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(Stdio::inherit());
    for (name, value) in env {
        // Values go into the child's environment only, never its argv.
        cmd.env(name, std::ffi::OsStr::from_bytes(value.expose_bytes()));
    }
    if patterns.is_some() {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    }
    // Handlers are installed before the spawn so that a signal arriving in
    // between is forwarded rather than killing secref (the child gets default
    // dispositions back at exec).
    let mut handlers = Vec::new();
    for signo in FORWARDED {
        let s = signal(SignalKind::from_raw(signo))
            .map_err(|e| Error::internal(format!("cannot install signal handler: {e}")))?;
        handlers.push((signo, s));
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, e))?;
    tracing::debug!(pid = child.id(), "started command");

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
    let pid = child.id();
    let forwarder = tokio::spawn(forward_signals(handlers, pid));
    let status = child.wait().await;
    forwarder.abort();
    let status = status.map_err(|e| {
        Error::new(
            ErrorCode::Io,
            format!("waiting for the command failed: {e}"),
        )
    })?;
    // The command has exited; drain what it wrote before it did.
    for p in pumps {
        match p.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "output stream ended early"),
            Err(_) => tracing::debug!("output pump task failed"),
        }
    }
    Ok(exit_code_of(status))
}

fn spawn_error(program: &OsString, e: std::io::Error) -> Error {
    let name = program.to_string_lossy();
    let (what, hint) = match e.kind() {
        std::io::ErrorKind::NotFound => ("not found", "check the command name and PATH"),
        std::io::ErrorKind::PermissionDenied => ("not executable", "check the file's permissions"),
        _ => ("cannot be started", "check the command"),
    };
    Error::new(ErrorCode::Io, format!("command '{name}' {what}: {e}")).with_hint(hint)
}

/// The exit code for a spawn failure (127 / 126 as shells use).
pub fn spawn_exit_code(e: &Error) -> Option<i32> {
    if e.code() != ErrorCode::Io || !e.message().starts_with("command '") {
        return None;
    }
    if e.message().contains("' not found") {
        Some(EXIT_COMMAND_NOT_FOUND)
    } else {
        Some(EXIT_NOT_EXECUTABLE)
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

/// Forwards each received signal to the child until aborted.
async fn forward_signals(mut handlers: Vec<(libc::c_int, Signal)>, pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    loop {
        let signo = next_signal(&mut handlers).await;
        tracing::debug!(signo, "forwarding signal to the command");
        // SAFETY: kill has no memory-safety preconditions; pid is our child,
        // which has not been reaped (this task is aborted before that).
        unsafe {
            libc::kill(pid, signo);
        }
    }
}

/// Waits for the first of the handlers to fire; returns its signal number.
async fn next_signal(handlers: &mut [(libc::c_int, Signal)]) -> libc::c_int {
    std::future::poll_fn(|cx| {
        for (signo, s) in handlers.iter_mut() {
            if let std::task::Poll::Ready(Some(())) = s.poll_recv(cx) {
                return std::task::Poll::Ready(*signo);
            }
        }
        std::task::Poll::Pending
    })
    .await
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
