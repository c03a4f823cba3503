//! `secref serve`: runs the local server (see the `secref-server` crate).
//!
//! The bearer token is, in order: `$SECREF_SERVE_TOKEN`; the content of
//! `--token-file` if that file exists; else a fresh random token, written to
//! `--token-file` (created with mode 0600) when given, or printed once to
//! stderr. The listening address is printed to stderr as
//! `secref serve: listening on http://<addr>` (`https://` with TLS; useful with `--bind
//! 127.0.0.1:0`), after `secref serve: listening on unix:<path>` when a
//! socket is configured (`--socket` or `[server] socket`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secref::{Config, Error, ErrorCode, Resolver, Result, Secret};
use secref_server::{Server, ServerConfig};

/// Arguments of `secref serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback only unless `[server] tls_cert` and
    /// `tls_key` are set; default from `[server] bind`, else 127.0.0.1:8787).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// File holding the bearer token; created (0600) with a fresh token if
    /// it does not exist.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Also listen on this Unix socket (mode 0600); its callers are
    /// identified by their uid and executable instead of a token.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The config file (default: ./secref.toml, else $SECREF_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs the server until ctrl-c / SIGTERM; SIGHUP and `POST
/// /v1/sys/secref/reload` reload the configuration through [`load`], the
/// same function that builds it at start.
pub async fn run(args: ServeArgs) -> Result<()> {
    // A token generated at start (no variable, no token file) is kept by
    // reloads; a variable or token file is read again by each.
    let generated = match (&args.token_file, std::env::var_os("SECREF_SERVE_TOKEN")) {
        (None, None) => Some(secref_server::auth::generate_token()),
        _ => None,
    };
    let printed = generated.clone();
    let sources = std::sync::Arc::new(Sources {
        config: args.config,
        bind: args.bind,
        socket: args.socket,
        token_file: args.token_file,
        generated,
    });
    let server = tokio::task::block_in_place(|| {
        Server::from_loader(std::sync::Arc::new(move |previous| {
            load(&sources, previous)
        }))
    })?;
    if let Some(token) = printed {
        // Printed once, on purpose: the operator needs it to configure clients.
        eprintln!(
            "secref serve: token (shown once): {}",
            token.as_text().expect("generated tokens are ASCII")
        );
    }
    raise_fd_limit();
    let socket_path = server.state().config().socket.clone();
    let listener = server.bind().await?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::new(ErrorCode::Io, format!("no local address: {}", e.kind())))?;
    let unix = match &socket_path {
        Some(path) => Some(server.bind_unix(path)?),
        None => None,
    };
    if let Some(path) = &socket_path {
        eprintln!("secref serve: listening on unix:{}", path.display());
    }
    let scheme = if server.tls() { "https" } else { "http" };
    eprintln!("secref serve: listening on {scheme}://{addr}");
    server
        .serve_all(listener, unix, secref_server::shutdown_signal())
        .await
}

/// Where `secref serve`'s configuration comes from: the command line, and
/// the config file and environment named there (read again on reload).
struct Sources {
    config: Option<PathBuf>,
    bind: Option<SocketAddr>,
    socket: Option<PathBuf>,
    token_file: Option<PathBuf>,
    generated: Option<Secret>,
}

/// Builds the whole serving state from `sources`: at start (`previous`
/// `None`) and on every reload (keeping what must outlive it, see
/// `secref_server::reload`).
fn load(
    sources: &Sources,
    previous: Option<&secref_server::reload::Snapshot>,
) -> Result<secref_server::reload::Loaded> {
    let cfg = match &sources.config {
        Some(p) => Config::from_file(p)?,
        None => Config::load()?,
    };
    let mut server_cfg = ServerConfig::from_table(cfg.server.as_ref())?;
    if let Some(bind) = sources.bind {
        server_cfg.bind = bind;
    }
    if let Some(socket) = &sources.socket {
        server_cfg.socket = Some(socket.clone());
    }
    let token = match &sources.generated {
        Some(t) => t.clone(),
        None => obtain_token(&cfg, sources.token_file.as_deref())?,
    };
    let resolver = match previous {
        None => Resolver::from_config(&cfg)?,
        Some(prev) => Resolver::rebuild_from_config(
            &cfg,
            prev.resolver(),
            prev.policy_table() == cfg.policy.as_ref(),
        )?,
    };
    // The Vault API's local mounts write the same store the CLI does.
    let local_store = secref::store::Store::open_from_config(&cfg).map(std::sync::Arc::new);
    let tokens = Server::tokens(&server_cfg, token, &cfg.env)?;
    // The config's environment snapshot (every credential secref was
    // started with) is dropped, and wiped by the zeroizing allocator, here.
    Ok(secref_server::reload::Loaded {
        resolver,
        config: server_cfg,
        tokens,
        local_store,
        policy_table: cfg.policy.clone(),
        audit_table: cfg.audit.clone(),
        state_table: cfg.state.clone(),
    })
}

/// Raises the open-file soft limit to the hard limit: every connection is a
/// file descriptor, and the common soft limit of 1024 is below what
/// `max_connections` allows. Best effort (a failure leaves the old limit).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn obtain_token(cfg: &Config, token_file: Option<&Path>) -> Result<Secret> {
    if let Some(t) = cfg.env.get("SECREF_SERVE_TOKEN") {
        return checked(t.trim());
    }
    if let Some(path) = token_file {
        if path.exists() {
            let text = secref_server::config::read_token_file(path)?;
            return checked(text.trim());
        }
        let token = secref_server::auth::generate_token();
        write_new_0600(path, token.expose_bytes())?;
        eprintln!("secref serve: wrote a new token to {}", path.display());
        return Ok(token);
    }
    Err(Error::config(
        "no serve token: set SECREF_SERVE_TOKEN or --token-file",
    ))
}

fn checked(token: &str) -> Result<Secret> {
    if token.len() < 16 {
        return Err(Error::config(
            "the serve token must be at least 16 characters",
        ));
    }
    Ok(Secret::from(token))
}

fn write_new_0600(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| {
        Error::new(
            ErrorCode::Io,
            format!("cannot create token file {}: {}", path.display(), e.kind()),
        )
    })?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| {
        Error::new(
            ErrorCode::Io,
            format!("cannot write token file: {}", e.kind()),
        )
    })
}
