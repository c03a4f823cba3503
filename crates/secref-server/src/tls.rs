//! TLS (and mTLS) for the TCP listener of `secref serve`.
//!
//! ```toml
//! [server]
//! bind = "0.0.0.0:8787"               # non-loopback only with TLS
//! tls_cert = "/etc/secref/tls/tls.crt" # PEM chain, leaf first
//! tls_key = "/etc/secref/tls/tls.key"  # PEM private key (PKCS#8, PKCS#1 or SEC1), owner-only (chmod 600)
//! client_ca = "/etc/secref/tls/ca.crt" # optional: clients must present a certificate it signed
//! ```
//!
//! * The three files are read at start (a bad file stops the start with a
//!   `config` error) and again whenever one of them changes on disk (checked
//!   every second: inode, size, mode, mtime and ctime, one `stat` each) or the process
//!   gets SIGHUP. A new set that does not load — unparseable PEM, a key that
//!   does not match the certificate, an unreadable file — is refused with a
//!   log line saying why, and the previous set keeps serving. A connection
//!   uses the set that was current when it was accepted.
//! * With `client_ca`, a client must present a certificate chaining to it
//!   (else the handshake fails). The verified leaf's subject common name and
//!   its DNS / URI / e-mail SANs become the names `cert:<name>` that
//!   `[[server.rules]]` may list; its SHA-256 thumbprint (base64url, as JWT
//!   `cnf.x5t#S256`) is the request's mTLS sender binding for the policy.
//! * The handshake runs in the connection's own task, after the connection
//!   took its place under `max_connections`, bounded by
//!   `header_read_timeout_seconds`: a client that never finishes it blocks
//!   nobody else and is closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secref::{Error, Result};
use sha2::Digest as _;
use tokio_rustls::TlsAcceptor;

use crate::auth::Principal;

/// How often the certificate files are looked at for changes.
const POLL: Duration = Duration::from_secs(1);

/// Where the listener's TLS material lives (`[server] tls_cert`, `tls_key`,
/// `client_ca`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The private key of the leaf (PEM).
    pub key: PathBuf,
    /// The CA (PEM, one or more certificates) client certificates must
    /// chain to; `None`: no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

/// The verified client certificate of a TLS connection, as a request
/// extension: the names rules may use and the thumbprint.
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// `cert:<CN>` first (if the subject has one), then `cert:<SAN>` for
    /// each DNS, URI and e-mail SAN.
    pub names: Vec<String>,
    /// SHA-256 of the leaf certificate's DER, base64url without padding
    /// (RFC 8705 `x5t#S256`).
    pub thumbprint: String,
}

impl ClientCert {
    /// Reads the names and thumbprint of a verified leaf certificate.
    fn of(leaf: &CertificateDer<'_>) -> ClientCert {
        let thumbprint =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(leaf));
        let mut names = Vec::new();
        // The chain was verified by rustls/webpki already; parsing here only
        // reads names out of it.
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) {
            for cn in cert.subject().iter_common_name() {
                if let Ok(cn) = cn.as_str() {
                    names.push(format!("cert:{cn}"));
                }
            }
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                use x509_parser::extensions::GeneralName;
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(n)
                        | GeneralName::URI(n)
                        | GeneralName::RFC822Name(n) => names.push(format!("cert:{n}")),
                        _ => {}
                    }
                }
            }
        }
        // Control characters never reach logs or rule matching.
        names.retain(|n| !n.chars().any(char::is_control));
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        ClientCert { names, thumbprint }
    }

    /// The caller this certificate names (`None` if it names nothing):
    /// `cert:<CN>`, also known by its SAN names, bound to the thumbprint.
    pub fn principal(&self) -> Option<Principal> {
        let (name, aliases) = self.names.split_first()?;
        Some(Principal {
            name: name.clone(),
            aliases: aliases.to_vec(),
            mtls_thumbprint: Some(self.thumbprint.clone()),
        })
    }
}

/// The listener's TLS state: the current rustls config, swapped when the
/// files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The files' identities when `current` was loaded (or last refused).
    seen: Mutex<Vec<Option<FileStamp>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// What tells a changed file apart without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    /// The inode change time: a `chmod` that makes a refused key acceptable
    /// (owner-only) changes only this.
    ctime: (i64, i64),
    mode: u32,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    // `metadata` follows symlinks, so a Kubernetes secret volume's
    // `..data` swap is seen as a change of the target.
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        mode: m.mode(),
    })
}

impl Tls {
    /// Loads the files; any problem is a `config` error naming the file.
    pub fn load(files: &TlsFiles) -> Result<Arc<Tls>> {
        let seen = Tls::stamps(files);
        let config = build(files)?;
        Ok(Arc::new(Tls {
            files: files.clone(),
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new(seen),
        }))
    }

    fn stamps(files: &TlsFiles) -> Vec<Option<FileStamp>> {
        [
            Some(&files.cert),
            Some(&files.key),
            files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| stamp(p))
        .collect()
    }

    /// An acceptor with the current certificate.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files if they changed since the last look (`force`:
    /// whatever their state, as on SIGHUP). A set that does not load is
    /// logged and the current one kept. Returns whether a new set is in use.
    pub fn reload(&self, force: bool) -> bool {
        let now = Tls::stamps(&self.files);
        {
            let mut seen = self.seen.lock();
            if !force && *seen == now {
                return false;
            }
            *seen = now;
        }
        match build(&self.files) {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "TLS files changed but do not load; still serving the previous certificate"
                );
                false
            }
        }
    }

    /// Reloads on file changes (polled) and on SIGHUP until `stop` is set.
    /// The SIGHUP handler is installed before this returns (so a SIGHUP
    /// right after start reloads instead of ending the process).
    pub(crate) fn watch(
        self: Arc<Tls>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        if let Err(e) = &hup {
            tracing::warn!(error = %e, "no SIGHUP handler: TLS files reload on change only");
        }
        self.watching(stop, hup.ok())
    }

    async fn watching(
        self: Arc<Tls>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut hup: Option<tokio::signal::unix::Signal>,
    ) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
            };
            let tls = self.clone();
            // File reads and parsing stay off the async workers.
            let _ = tokio::task::spawn_blocking(move || tls.reload(forced)).await;
        }
    }
}

/// The client certificate a finished handshake verified, if any.
pub(crate) fn client_cert(conn: &rustls::ServerConnection) -> Option<ClientCert> {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .map(ClientCert::of)
}

/// The rustls provider reqwest uses too (ring): one crypto stack.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(files: &TlsFiles) -> Result<rustls::ServerConfig> {
    let bad =
        |path: &Path, what: String| Error::config(format!("TLS file {}: {what}", path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, pem_error(e)))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(&files.cert, pem_error(e)))?;
    if chain.is_empty() {
        return Err(bad(&files.cert, "no certificate in it".into()));
    }
    // The key is a credential like any other: owner-only, read into
    // wiped memory, never quoted in an error.
    let key_pem = secref::credfile::read_private_file(&files.key, "TLS key file")?
        .ok_or_else(|| bad(&files.key, "not found".into()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(&files.key, pem_error(e)))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(ca, pem_error(e)))? {
                let cert = cert.map_err(|e| bad(ca, pem_error(e)))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(ca, format!("not a usable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(ca, "no certificate in it".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| bad(ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // `with_single_cert` checks that the key belongs to the certificate.
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        bad(
            &files.key,
            format!("not usable with {}: {e}", files.cert.display()),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A PEM error without any of the file's content.
fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(e) => format!("cannot read it: {}", e.kind()),
        E::NoItemsFound => "no PEM item of the expected kind in it".into(),
        _ => "not valid PEM".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn issue(cn: &str, sans: Vec<SanType>) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn client_cert_names_and_thumbprint() {
        let (cert, _) = issue(
            "app",
            vec![
                SanType::DnsName("app.example".try_into().unwrap()),
                SanType::URI("spiffe://corp/app".try_into().unwrap()),
                SanType::DnsName("app".try_into().unwrap()),
            ],
        );
        let c = ClientCert::of(cert.der());
        assert_eq!(
            c.names,
            ["cert:app", "cert:app.example", "cert:spiffe://corp/app"]
        );
        let want = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(cert.der()));
        assert_eq!(c.thumbprint, want);
        let p = c.principal().unwrap();
        assert_eq!(p.name, "cert:app");
        assert!(p.is_named_exactly("cert:spiffe://corp/app"));
        assert_eq!(p.mtls_thumbprint.as_deref(), Some(want.as_str()));
    }

    #[test]
    fn a_bad_new_pair_keeps_the_old_config() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        let (cert, key) = issue("server", vec![]);
        let files = TlsFiles {
            cert: write("c.pem", &cert.pem()),
            key: write("k.pem", &key.serialize_pem()),
            client_ca: None,
        };
        let tls = Tls::load(&files).unwrap();
        let before = tls.current.read().clone();
        let (_, other_key) = issue("server", vec![]);
        write("k.pem", &other_key.serialize_pem());
        assert!(!tls.reload(true));
        assert!(Arc::ptr_eq(&before, &tls.current.read()));
        write("k.pem", &key.serialize_pem());
        assert!(tls.reload(true));
        assert!(!Arc::ptr_eq(&before, &tls.current.read()));
        // Nothing changed since: a poll does not reload.
        assert!(!tls.reload(false));
    }
}
