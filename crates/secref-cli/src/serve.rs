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

/// Runs the server until ctrl-c / SIGTERM.
pub async fn run(args: ServeArgs) -> Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::from_file(p)?,
        None => Config::load()?,
    };
    let mut server_cfg = ServerConfig::from_table(cfg.server.as_ref())?;
    if let Some(bind) = args.bind {
        server_cfg.bind = bind;
    }
    if let Some(socket) = args.socket {
        server_cfg.socket = Some(socket);
    }
    let token = obtain_token(&cfg, args.token_file.as_deref())?;
    let resolver = Resolver::from_config(&cfg)?;
    let socket_path = server_cfg.socket.clone();
    // The Vault API's local mounts write the same store the CLI does.
    let store = secref::store::Store::open_from_config(&cfg);
    let server = Server::with_env(resolver, server_cfg, token, &cfg.env)?.with_local_store(store);
    raise_fd_limit();
    // The config's environment snapshot holds every credential secref was
    // started with; the server has what it needs, so free (and, through the
    // zeroizing allocator, wipe) it rather than keep it for the server's life.
    drop(cfg);
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
    let token = secref_server::auth::generate_token();
    // Printed once, on purpose: the operator needs it to configure clients.
    eprintln!(
        "secref serve: token (shown once): {}",
        token.as_text().expect("generated tokens are ASCII")
    );
    Ok(token)
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
