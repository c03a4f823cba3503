//! What `secref inject --watch` and `secref run --watch` share: following
//! a set of references through [`Resolver::watch`], turning bursts of
//! changes into one debounced, rate-limited reload, atomic 0600 file
//! writes, and the reload actions (a command, a signal to a pid file).
//!
//! Only a real value change counts: a watch item whose bytes equal the
//! value in use changes nothing (a new version with the same value, a
//! reconnect), and errors never act: within the cache TTL plus `[cache]
//! stale_grace_seconds` the resolver answers a failing backend with the
//! value it has, and past that the error reaches us, is reported once per
//! outage, and the values in use stay in use.
//!
//! `local://` values are watched through the store file too: its identity
//! (inode, size, modification time) is checked every [`STORE_POLL`] — one
//! `stat`, no read, no decryption — and any change re-reads the watched
//! local references in one batch, so a `secref set` shows up promptly while
//! the watch streams themselves poll only every `--watch-interval`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use futures::StreamExt as _;
use secref::{Error, ErrorCode, Resolved, Resolver, Secret, SecretRef};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the local store file's identity is checked while watching.
pub const STORE_POLL: Duration = Duration::from_millis(100);

/// The timing options of `--watch`, shared by `inject` and `run`.
#[derive(Debug, Clone, Args)]
pub struct WatchTiming {
    /// How often each watched reference is polled (remote backends bypass
    /// the cache for it). `local://` changes are also seen through the
    /// store file within about 100ms.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub watch_interval: Duration,
    /// A reload waits until the values have not changed for this long, so a
    /// burst of changes gives one reload (at most 10× this after the first
    /// change of a burst that never settles).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// The least time between two reloads; changes in between are coalesced
    /// into the next one.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub min_interval: Duration,
}

/// What the follower reports to its owner.
enum Update {
    /// A watch stream yielded a value (its first one is the value now).
    Value(usize, Resolved),
    /// A watch stream yielded an error.
    Failed(usize, Error),
    /// The local store file changed.
    StoreTouched,
}

/// Follows a fixed set of references and hands out their values each time
/// a debounced, rate-limited change is due.
pub struct Follower {
    resolver: Resolver,
    refs: Vec<SecretRef>,
    current: Vec<Secret>,
    failing: Vec<bool>,
    timing: WatchTiming,
    rx: mpsc::Receiver<Update>,
    /// Keeps the channel open with nothing to watch (no references), so
    /// waiting for a change then waits for ever instead of failing.
    _tx: mpsc::Sender<Update>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    last_reload: Option<Instant>,
    pending: Option<Burst>,
}

impl Follower {
    /// Starts following `refs`, whose values in use are `current` (same
    /// order). `store` is the local store file, watched when any reference
    /// is `local://`.
    pub fn start(
        resolver: Resolver,
        refs: Vec<SecretRef>,
        current: Vec<Secret>,
        store: Option<PathBuf>,
        timing: WatchTiming,
    ) -> secref::Result<Follower> {
        let (tx, rx) = mpsc::channel(64);
        let mut tasks = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let mut stream = Box::pin(resolver.watch(r, timing.watch_interval)?);
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    let update = match item {
                        Ok(v) => Update::Value(i, v),
                        Err(e) => Update::Failed(i, e),
                    };
                    if tx.send(update).await.is_err() {
                        break;
                    }
                }
            }));
        }
        let any_local = refs.iter().any(|r| r.provider_family() == "local");
        if let (true, Some(store)) = (any_local, store) {
            tasks.push(tokio::spawn(watch_store_file(store, tx.clone())));
        }
        let n = refs.len();
        Ok(Follower {
            resolver,
            refs,
            current,
            failing: vec![false; n],
            timing,
            rx,
            _tx: tx,
            tasks,
            last_reload: None,
            pending: None,
        })
    }

    /// The references followed, in order.
    pub fn references(&self) -> &[SecretRef] {
        &self.refs
    }

    /// The values in use, in the order of [`references`](Self::references).
    pub fn values(&self) -> &[Secret] {
        &self.current
    }

    /// Waits for the next reload to do: at least one value changed, the
    /// values have then been quiet for the debounce time (or a burst has
    /// gone on for 10× it), and the minimum interval since the previous
    /// reload has passed. The new values are in [`values`](Self::values).
    /// Cancel-safe: a change seen before a cancel is kept for the next call.
    pub async fn next_change(&mut self) -> secref::Result<()> {
        loop {
            let due = self.pending.as_ref().map(|b| {
                let quiet =
                    (b.last + self.timing.debounce).min(b.first + self.timing.debounce * 10);
                match self.last_reload {
                    Some(prev) => quiet.max(prev + self.timing.min_interval),
                    None => quiet,
                }
            });
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                update = self.rx.recv() => {
                    let Some(update) = update else {
                        return Err(Error::internal("every watch stream ended"));
                    };
                    if self.apply(update).await {
                        let now = Instant::now();
                        match &mut self.pending {
                            Some(b) => b.last = now,
                            None => self.pending = Some(Burst { first: now, last: now }),
                        }
                    }
                }
                () = sleep => {
                    self.pending = None;
                    self.last_reload = Some(Instant::now());
                    return Ok(());
                }
            }
        }
    }

    /// Applies one update; true when a value in use changed.
    async fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Value(i, v) => self.offer(i, v.secret),
            Update::Failed(i, e) => {
                self.failed(i, &e);
                false
            }
            Update::StoreTouched => {
                let local: Vec<usize> = (0..self.refs.len())
                    .filter(|&i| self.refs[i].provider_family() == "local")
                    .collect();
                let partial = self
                    .resolver
                    .read_many(local.iter().map(|&i| self.refs[i].clone()))
                    .partial()
                    .await;
                let partial = match partial {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(code = %e.code(), "re-reading the local store failed: {e}");
                        return false;
                    }
                };
                let mut changed = false;
                for i in local {
                    if let Some(s) = partial.resolved.get(&self.refs[i]) {
                        changed |= self.offer(i, s.clone());
                    } else if let Some(e) = partial.failures.get(&self.refs[i]) {
                        self.failed(i, e);
                    }
                }
                changed
            }
        }
    }

    fn offer(&mut self, i: usize, value: Secret) -> bool {
        if std::mem::take(&mut self.failing[i]) {
            eprintln!("secref: watching {} works again", self.refs[i]);
        }
        if secref::constant_time_eq(value.expose_bytes(), self.current[i].expose_bytes()) {
            return false;
        }
        tracing::info!(reference = %self.refs[i], "a watched value changed");
        self.current[i] = value;
        true
    }

    /// One warning when an outage starts, not one per poll.
    fn failed(&mut self, i: usize, e: &Error) {
        if std::mem::replace(&mut self.failing[i], true) {
            tracing::debug!(reference = %self.refs[i], code = %e.code(), "watching still fails");
        } else {
            eprintln!(
                "warning: watching {} failed ({}); the value in use is kept",
                self.refs[i],
                e.code()
            );
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A burst of changes not yet reloaded: when it began and its latest change.
#[derive(Debug, Clone, Copy)]
struct Burst {
    first: Instant,
    last: Instant,
}

/// The store file's identity: replaced (new inode), resized or touched.
fn store_stamp(path: &Path) -> Option<(u64, u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

async fn watch_store_file(path: PathBuf, tx: mpsc::Sender<Update>) {
    let mut last = store_stamp(&path);
    loop {
        tokio::time::sleep(STORE_POLL).await;
        let now = store_stamp(&path);
        if now != last {
            last = now;
            if tx.send(Update::StoreTouched).await.is_err() {
                return;
            }
        }
    }
}

/// The store file to watch for `local://` references, if one is configured.
pub fn store_path(cfg: &secref::Config) -> Option<PathBuf> {
    secref::store::Store::default_path(cfg).ok()
}

/// The suffix of the temporary files [`secref::store::write_atomically`]
/// creates: `.<name>.<pid>.<6 random chars>.secref-tmp`, next to the target.
const TMP_SUFFIX: &str = ".secref-tmp";

/// Replaces `target` atomically with `bytes` ([`secref::store::write_atomically`]:
/// 0600 temporary file, fsync, rename, directory fsync). Temporary files of
/// render writers that died are removed first: unlike the store, rendered
/// files have no lock, so a leftover is known by its writer's pid.
pub fn write_atomically(target: &Path, bytes: &[u8]) -> secref::Result<()> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} is not a file name", target.display())))?
        .to_string_lossy()
        .into_owned();
    remove_orphans(dir, &name);
    secref::store::write_atomically(target, bytes, true)
}

/// Removes `.<name>.<pid>.<rand>.secref-tmp` regular files whose writer
/// (`pid`) is gone: a SIGKILLed render leaves one, holding values.
fn remove_orphans(dir: &Path, name: &str) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in listing.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix('.'))
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('.'))
            .and_then(|f| f.strip_suffix(TMP_SUFFIX))
            .and_then(|f| f.split_once('.'))
            .filter(|(_, rand)| rand.len() == 6)
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid <= 0 || pid_alive(pid) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            tracing::debug!(file = %entry.path().display(), "removing an orphaned temporary file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn pid_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A signal by name (`HUP`, `SIGHUP`, `usr1`, …) or number.
pub fn parse_signal(s: &str) -> Result<libc::c_int, String> {
    if let Ok(n) = s.parse::<libc::c_int>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("no signal {n}"))
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let table: BTreeMap<&str, libc::c_int> = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("TERM", libc::SIGTERM),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("WINCH", libc::SIGWINCH),
        ("KILL", libc::SIGKILL),
    ]
    .into_iter()
    .collect();
    table.get(name).copied().ok_or_else(|| {
        format!("unknown signal `{s}` (HUP, INT, QUIT, TERM, USR1, USR2, WINCH, KILL or a number)")
    })
}

/// Sends `signo` to the pid written in `pid_file` (decimal, blanks ignored).
pub fn signal_pid_file(pid_file: &Path, signo: libc::c_int) -> secref::Result<()> {
    let text = std::fs::read_to_string(pid_file).map_err(|e| {
        Error::new(
            ErrorCode::Io,
            format!("cannot read pid file {}: {}", pid_file.display(), e.kind()),
        )
    })?;
    let pid: libc::pid_t = text.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        Error::usage(format!(
            "pid file {} does not hold a process id",
            pid_file.display()
        ))
    })?;
    // SAFETY: kill(2) with a positive pid read from the user's pid file.
    if unsafe { libc::kill(pid, signo) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::new(
            ErrorCode::Io,
            format!("cannot signal pid {pid}: {}", e.kind()),
        ));
    }
    Ok(())
}

/// Runs `sh -c command` and waits for it, with `withhold` (secref's own and
/// the provider credentials, [`crate::child::withheld`], as `secref run`
/// does) removed from its environment. Returns its exit code.
pub async fn run_hook(command: &str, withhold: &[String]) -> secref::Result<i32> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null());
    for name in withhold {
        cmd.env_remove(name);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(crate::harden::restore_for_child);
    }
    let status = cmd.status().await.map_err(|e| {
        Error::new(
            ErrorCode::Io,
            format!("cannot run the --on-change command: {}", e.kind()),
        )
    })?;
    Ok(crate::child::exit_code_of(status))
}
