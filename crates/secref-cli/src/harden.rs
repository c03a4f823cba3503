//! Process hardening, done first thing in `main` before any secret is read:
//! no core dumps, no same-user ptrace.
//!
//! A core of a secref process would hold resolved values, bearer tokens and
//! the store's keys (buffers the OS never sees as secret: HTTP bodies, the
//! masker's tables, the child's environment block). So the process is made
//! non-dumpable (`PR_SET_DUMPABLE 0`: the kernel writes no core and refuses
//! ptrace/`/proc/<pid>/mem` to other non-root processes of the same user)
//! and its soft `RLIMIT_CORE` is set to 0 (belt and braces for kernels or
//! `suid_dumpable` settings that would dump anyway). The soft limit only is
//! lowered, so a `secref run` child gets the original limit back (see
//! [`restore_for_child`]): its own crashes are none of secref's business.
//!
//! `SECREF_ALLOW_CORE_DUMPS=1` skips all of this for debugging, with a
//! warning on stderr: its cores then contain secrets.

/// The environment variable that turns the hardening off (value `1`).
pub const ALLOW_CORE_DUMPS_ENV: &str = "SECREF_ALLOW_CORE_DUMPS";

/// The soft `RLIMIT_CORE` before [`harden`] lowered it, restored in
/// `secref run`'s child between fork and exec.
static ORIGINAL_SOFT_CORE_LIMIT: std::sync::OnceLock<libc::rlim_t> = std::sync::OnceLock::new();

/// Makes the process non-dumpable with no core limit, unless
/// `SECREF_ALLOW_CORE_DUMPS=1` (then prints a warning). Failures are
/// reported as warnings, not fatal: a kernel without `prctl` still runs
/// secref, as it did before.
pub fn harden() {
    if std::env::var_os(ALLOW_CORE_DUMPS_ENV).is_some_and(|v| v == "1") {
        eprintln!(
            "warning: {ALLOW_CORE_DUMPS_ENV}=1: core dumps and ptrace are allowed; \
             a core of this process contains secret values — use for debugging only"
        );
        return;
    }
    // SAFETY: prctl(PR_SET_DUMPABLE) and get/setrlimit take plain integers
    // and a struct we own; no memory is shared with the kernel afterwards.
    unsafe {
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            eprintln!(
                "warning: cannot make the process non-dumpable: {}",
                std::io::Error::last_os_error()
            );
        }
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
            let _ = ORIGINAL_SOFT_CORE_LIMIT.set(lim.rlim_cur);
            lim.rlim_cur = 0;
            if libc::setrlimit(libc::RLIMIT_CORE, &lim) != 0 {
                eprintln!(
                    "warning: cannot disable core dumps: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Gives a child (between fork and exec) the core limit secref started
/// with. Async-signal-safe: a load of an initialised cell and
/// `setrlimit(2)`, no allocation, no lock.
pub fn restore_for_child() -> std::io::Result<()> {
    let Some(&soft) = ORIGINAL_SOFT_CORE_LIMIT.get() else {
        return Ok(());
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
            lim.rlim_cur = soft;
            // Failing here (hard limit lowered meanwhile) only keeps the
            // child's cores off, which is safe; do not fail the exec.
            let _ = libc::setrlimit(libc::RLIMIT_CORE, &lim);
        }
    }
    Ok(())
}
