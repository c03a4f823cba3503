//! The listeners of `secref serve`: how connections are accepted, bounded
//! and ended, the same for TCP and the Unix socket.
//!
//! * at most `max_connections` open connections (both listeners together);
//!   one more is answered `503` with `Retry-After` and closed at once, so a
//!   flood of idle sockets fails fast instead of filling the kernel backlog;
//! * hyper's header-read timeout, counted from when the server starts
//!   waiting for a request (a half-sent or never-sent header, and an idle
//!   keep-alive connection, are closed after it);
//! * an idle timeout: no request running and no byte moving either way
//!   (e.g. a client that stopped reading its answer) closes the connection;
//! * graceful shutdown with a bound: stop accepting, let in-flight requests
//!   finish for up to `shutdown_grace`, then close whatever is left.
//!
//! Every connection runs the same [`Router`] (and so the same middleware);
//! a Unix-socket request carries the peer's [`PeerCredentials`] as a
//! request extension, a TLS request the verified [`ClientCert`](crate::tls::ClientCert)
//! (mTLS), which the authentication layer turns into the caller. A TLS
//! handshake runs in the connection's task, holding its place under
//! `max_connections`, bounded by the header-read timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::auth::PeerCredentials;
use crate::tls::{self, Tls};
use crate::ServerConfig;

/// The answer to a connection beyond `max_connections`.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";

/// A stream a listener accepted.
pub(crate) trait Accepted: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Prepares the stream and says who is on the other end (`None` for
    /// TCP: those callers show a token).
    fn setup(&self) -> Option<PeerCredentials>;
    /// Best effort, never blocking: tells the client the server is full.
    fn refuse(&self);
}

impl Accepted for tokio::net::TcpStream {
    fn setup(&self) -> Option<PeerCredentials> {
        // Answers go out at once, not held back by Nagle's algorithm.
        let _ = self.set_nodelay(true);
        None
    }
    fn refuse(&self) {
        let _ = self.try_write(BUSY);
    }
}

#[cfg(unix)]
impl Accepted for tokio::net::UnixStream {
    fn setup(&self) -> Option<PeerCredentials> {
        Some(PeerCredentials::of(self))
    }
    fn refuse(&self) {
        let _ = self.try_write(BUSY);
    }
}

/// What every connection of one server shares.
pub(crate) struct Connections {
    router: Router,
    header_read: Duration,
    idle: Duration,
    grace: Duration,
    max: usize,
    permits: Arc<Semaphore>,
    graceful: GracefulShutdown,
    /// Set when the grace period is over: every connection is closed.
    hard_stop: watch::Sender<bool>,
}

impl Connections {
    pub(crate) fn new(router: Router, config: &ServerConfig) -> Connections {
        Connections {
            router,
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
            grace: config.shutdown_grace,
            max: config.max_connections,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            graceful: GracefulShutdown::new(),
            hard_stop: watch::channel(false).0,
        }
    }

    /// Accepts connections on `listener` until `stop` is set (or dropped),
    /// then drops the listener. With `tls`, every connection is a TLS
    /// server connection (handshake in the connection's own task).
    pub(crate) async fn accept<L>(
        &self,
        mut listener: L,
        mut stop: watch::Receiver<bool>,
        tls: Option<Arc<Tls>>,
    ) where
        L: Listener,
        L::Io: Accepted,
        L::Addr: std::fmt::Debug,
    {
        loop {
            // axum's `Listener::accept` retries accept errors (EMFILE …)
            // with a pause instead of spinning.
            let (io, remote) = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                accepted = listener.accept() => accepted,
            };
            tracing::trace!(?remote, "connection accepted");
            self.spawn(io, tls.as_ref().map(|t| t.acceptor()));
        }
        tracing::trace!("listener closed: not accepting new connections");
    }

    fn spawn<Io: Accepted>(&self, io: Io, tls: Option<TlsAcceptor>) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // A TLS client could not read a plain-text answer: just close.
            if tls.is_none() {
                io.refuse();
            }
            tracing::warn!(
                max_connections = self.max,
                "connection refused: the server is at max_connections"
            );
            return;
        };
        let mut conn_ext = axum::http::Extensions::new();
        if let Some(peer) = io.setup() {
            conn_ext.insert(peer);
        }
        let router = self.router.clone();
        let header_read = self.header_read;
        let idle = self.idle;
        let watcher = self.graceful.watcher();
        let mut hard_stop = self.hard_stop.subscribe();
        tokio::spawn(async move {
            // The permit is held from accept on, so handshaking connections
            // count against `max_connections` too.
            let _permit = permit;
            let _open = OpenGauge::new();
            let activity = Arc::new(Activity::new());
            let io = Tracked {
                inner: io,
                activity: activity.clone(),
            };
            let conn: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>> = match tls {
                None => Box::pin(serve(io, conn_ext, router, header_read, &activity, watcher)),
                Some(acceptor) => {
                    // Bounded like a request's headers: a client that never
                    // finishes the handshake holds only its own task.
                    let handshake = tokio::time::timeout(header_read, acceptor.accept(io));
                    let stream = tokio::select! {
                        r = handshake => r,
                        _ = hard_stop.wait_for(|s| *s) => return,
                    };
                    let stream = match stream {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            // rustls names the failure (bad certificate,
                            // not TLS, …), never content.
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    if let Some(cert) = tls::client_cert(stream.get_ref().1) {
                        conn_ext.insert(cert);
                    }
                    activity.touch();
                    Box::pin(serve(
                        stream,
                        conn_ext,
                        router,
                        header_read,
                        &activity,
                        watcher,
                    ))
                }
            };
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        // hyper's errors name the failure, never content.
                        tracing::debug!(error = %e, "connection closed");
                    }
                }
                _ = activity.idle_for(idle) => tracing::debug!("idle connection closed"),
                _ = hard_stop.wait_for(|s| *s) => {}
            }
        });
    }

    /// After the listeners stopped: lets open connections finish their
    /// requests for up to the grace period, then closes the rest.
    pub(crate) async fn drain(self) {
        let open = self.graceful.count();
        if open > 0 {
            tracing::info!(open, grace = ?self.grace, "waiting for in-flight requests");
        }
        if tokio::time::timeout(self.grace, self.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over: closing the remaining connections");
        }
        let _ = self.hard_stop.send(true);
    }
}

/// One HTTP/1.1 connection over `io`, every request carrying the
/// connection's extensions (Unix peer, verified client certificate), watched
/// for graceful shutdown.
fn serve<S>(
    io: S,
    ext: axum::http::Extensions,
    router: Router,
    header_read: Duration,
    activity: &Arc<Activity>,
    watcher: Watcher,
) -> impl Future<Output = hyper::Result<()>> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().extend(ext.clone());
        let running = Busy::start(busy.clone());
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await;
            drop(running);
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .serve_connection(TokioIo::new(io), service);
    watcher.watch(conn)
}

/// When a connection last moved a byte, and how many requests run on it.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    running: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once no request has run and no byte has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let now = Instant::now();
            let wake = if self.running.load(Ordering::Relaxed) > 0 {
                // A running request is bounded by the request timeout; look
                // again once it may have finished.
                now + limit
            } else if now >= last + limit {
                return;
            } else {
                last + limit
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// Marks one request as running on a connection while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.running.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records when bytes move.
struct Tracked<Io> {
    inner: Io,
    activity: Arc<Activity>,
}

impl<Io: AsyncRead + Unpin> AsyncRead for Tracked<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Tracked<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A bound Unix socket. Dropping it removes the socket file — only if the
/// path still is this socket (never a file someone put there since).
#[cfg(unix)]
#[derive(Debug)]
pub struct UnixSocket {
    /// Taken by the accept loop; closed when it stops.
    pub(crate) listener: Option<tokio::net::UnixListener>,
    path: std::path::PathBuf,
    /// (device, inode) of the socket file.
    id: (u64, u64),
}

#[cfg(unix)]
impl UnixSocket {
    /// Creates the socket at `path`, mode 0600 from the moment it is
    /// reachable: it is bound inside a fresh 0700 directory next to `path`,
    /// made 0600 there, then hard-linked into place (a link never replaces
    /// anything). A socket file already at `path` is replaced only if it is
    /// stale (nobody answers on it); a live server's socket, or any other
    /// kind of file, is refused with a `config` error.
    pub fn bind(path: &std::path::Path) -> secref::Result<UnixSocket> {
        use secref::{Error, ErrorCode};
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let io = |what: &str, e: std::io::Error| {
            Error::new(
                ErrorCode::Io,
                format!("{what} {}: {}", path.display(), e.kind()),
            )
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(Error::config(format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                )))
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(Error::config(format!(
                        "another server is listening on {}; refusing to replace its socket",
                        path.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // Left by a server that crashed: nobody listens on it.
                    match std::fs::remove_file(path) {
                        Ok(()) => tracing::info!(path = %path.display(), "replaced a stale socket"),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io("cannot remove the stale socket", e)),
                    }
                }
                Err(e) => return Err(io("cannot check the existing socket", e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot inspect", e)),
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let private = tempfile::Builder::new()
            .prefix(".secref-sock-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|e| io("cannot create a private directory next to", e))?;
        let staged = private.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&staged)
            .map_err(|e| io("cannot listen on", e))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("cannot set the mode of", e))?;
        std::fs::hard_link(&staged, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::config(format!(
                    "{} appeared while binding; refusing to replace it",
                    path.display()
                ))
            } else {
                io("cannot create", e)
            }
        })?;
        drop(private);
        let meta = std::fs::symlink_metadata(path).map_err(|e| io("cannot inspect", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io("cannot listen on", e))?;
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|e| io("cannot listen on", e))?;
        Ok(UnixSocket {
            listener: Some(listener),
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[cfg(unix)]
impl Drop for UnixSocket {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Keeps `secref_connections_open` up to date for one connection's life.
struct OpenGauge;

impl OpenGauge {
    fn new() -> OpenGauge {
        metrics::gauge!(secref::metrics::CONNECTIONS_OPEN).increment(1.0);
        OpenGauge
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!(secref::metrics::CONNECTIONS_OPEN).decrement(1.0);
    }
}
