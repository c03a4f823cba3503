//! `secref serve` over TLS and mTLS, driven as a user runs it: the real
//! binary, a real `secref.toml`, certificates generated here (never
//! committed) and written to the sandbox, an HTTPS client (reqwest/rustls)
//! on 127.0.0.1.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use secref_testkit::cli::{feed_stdin, run, run_ok, stderr, Sandbox};

const TOKEN: &str = "tls-test-token-0123456789abcdef";
const VALUE: &str = "s3cret-over-tls";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(
        sb.cmd().args(["set", "local://app/db#password"]),
        VALUE.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    sb
}

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// An issued certificate: PEM chain and key, and the leaf's DER.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for 127.0.0.1 / localhost.
    fn server(&self, serial: u64) -> Issued {
        self.issue(
            "secref-test-server",
            &["127.0.0.1", "localhost"],
            serial,
            false,
        )
    }

    /// A client certificate with subject CN `cn`.
    fn client(&self, cn: &str) -> Issued {
        self.issue(cn, &[], 7, true)
    }

    fn issue(&self, cn: &str, sans: &[&str], serial: u64, client: bool) -> Issued {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes `text` to `path` through a rename, as deploy tools replace files.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    // The key must be owner-only (as every credential file); so is the rest.
    std::fs::set_permissions(
        &tmp,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Installs a server certificate as `tls.crt` / `tls.key` in the sandbox.
fn install(sb: &Sandbox, server: &Issued) {
    replace(&sb.path("tls.key"), &server.key_pem);
    replace(&sb.path("tls.crt"), &server.cert_pem);
}

/// The `[server]` TLS settings (plus `extra`) as `secref.toml`.
fn config(sb: &Sandbox, client_ca: bool, extra: &str) {
    let mut text = format!(
        "[server]\ntls_cert = '{}'\ntls_key = '{}'\nheader_read_timeout_seconds = 2\n",
        sb.path("tls.crt").display(),
        sb.path("tls.key").display()
    );
    if client_ca {
        text.push_str(&format!(
            "client_ca = '{}'\n",
            sb.path("client-ca.pem").display()
        ));
    }
    text.push_str(extra);
    sb.write("secref.toml", &text);
}

/// A running `secref serve`, killed on drop.
struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Serve {
    /// Starts `secref serve --bind <bind>`; `Err(log)` if it exits first.
    fn start(sb: &Sandbox, bind: &str) -> Result<Serve, String> {
        let log = sb.path("serve.log");
        let child = sb
            .cmd()
            .env("SECREF_SERVE_TOKEN", TOKEN)
            .args(["serve", "--bind", bind])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Serve {
            child,
            port: 0,
            log,
        };
        for _ in 0..1200 {
            let text = s.log();
            if let Some(rest) = text.split("listening on https://").nth(1) {
                let addr = rest.lines().next().unwrap().trim();
                s.port = addr.rsplit(':').next().unwrap().parse().unwrap();
                return Ok(s);
            }
            if let Some(status) = s.child.try_wait().unwrap() {
                return Err(format!("exit {status:?}\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("secref serve did not start:\n{}", s.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `https://127.0.0.1:<port><path>` (also when bound to 0.0.0.0).
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child process by its id.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one HTTPS request saw.
struct Seen {
    status: u16,
    body: String,
    /// The server's leaf certificate (DER).
    peer: Vec<u8>,
}

/// One GET on a fresh client (so a fresh connection and handshake),
/// trusting only `ca_pem`, presenting `identity` (cert + key PEM) if given.
fn get(
    url: &str,
    ca_pem: &str,
    identity: Option<&Issued>,
    headers: &[(&str, &str)],
) -> Result<Seen, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .tls_info(true)
            .timeout(Duration::from_secs(30));
        if let Some(id) = identity {
            let pem = format!("{}{}", id.cert_pem, id.key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        let client = b.build().unwrap();
        let mut req = client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
        let peer = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .unwrap_or_default()
            .to_vec();
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
        Ok(Seen { status, body, peer })
    })
}

const READ: &str = "/v1/secret/data/app/db";

fn with_token() -> [(&'static str, &'static str); 1] {
    [("X-Vault-Token", TOKEN)]
}

#[test]
fn https_read_with_a_client_trusting_the_ca_and_plain_http_fails() {
    let sb = sandbox();
    let ca = Ca::new("server-ca");
    install(&sb, &ca.server(1));
    config(&sb, false, "");
    let s = Serve::start(&sb, "127.0.0.1:0").unwrap();

    let seen = get(&s.url(READ), &ca.pem(), None, &with_token()).unwrap();
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert!(seen.body.contains(VALUE), "{}", seen.body);
    // Without the token: TLS alone does not authenticate.
    let anon = get(&s.url(READ), &ca.pem(), None, &[]).unwrap();
    assert_eq!(anon.status, 403, "{}", anon.body);
    assert!(!anon.body.contains(VALUE));

    // A client trusting another CA refuses the server.
    let other = Ca::new("other-ca");
    assert!(get(&s.url(READ), &other.pem(), None, &with_token()).is_err());

    // Plain HTTP to the TLS port gets no HTTP answer (and no secret).
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may close (after a TLS alert) before the write is done.
    let _ = write!(
        c,
        "GET {READ} HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(!String::from_utf8_lossy(&raw).contains(VALUE));

    // /healthz works over TLS too (what a readiness probe with scheme HTTPS does).
    let h = get(&s.url("/healthz"), &ca.pem(), None, &[]).unwrap();
    assert_eq!(h.status, 200);
}

#[test]
fn mtls_refuses_a_certificate_from_another_ca_and_a_missing_one() {
    let sb = sandbox();
    let ca = Ca::new("server-ca");
    let clients = Ca::new("client-ca");
    install(&sb, &ca.server(1));
    sb.write("client-ca.pem", &clients.pem());
    config(&sb, true, "");
    let s = Serve::start(&sb, "127.0.0.1:0").unwrap();

    let good = clients.client("app");
    let seen = get(&s.url(READ), &ca.pem(), Some(&good), &with_token()).unwrap();
    assert_eq!(seen.status, 200, "{}", seen.body);

    let rogue = Ca::new("client-ca").client("app");
    let e = get(&s.url(READ), &ca.pem(), Some(&rogue), &with_token());
    assert!(e.is_err(), "a certificate from another CA was accepted");
    // Without a client certificate the handshake fails too, token or not.
    assert!(get(&s.url(READ), &ca.pem(), None, &with_token()).is_err());
    // The server is still fine.
    assert_eq!(
        get(&s.url(READ), &ca.pem(), Some(&good), &with_token())
            .unwrap()
            .status,
        200
    );
}

#[test]
fn mtls_principal_is_matched_by_a_rule_and_binds_the_policy_grant() {
    let sb = sandbox();
    let ca = Ca::new("server-ca");
    let clients = Ca::new("client-ca");
    install(&sb, &ca.server(1));
    sb.write("client-ca.pem", &clients.pem());
    config(
        &sb,
        true,
        "[[server.rules]]\nprincipals = ['cert:app']\nrefs = ['openbao+kv2://secret/app/*']\nactions = ['read']\n\
         [policy]\ngrant_max_uses = 100\nnegative_ttl_seconds = 30\n",
    );
    let s = Serve::start(&sb, "127.0.0.1:0").unwrap();

    // The certificate alone names the caller: no token.
    let app = clients.client("app");
    let seen = get(&s.url(READ), &ca.pem(), Some(&app), &[]).unwrap();
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert!(seen.body.contains(VALUE));

    // Another certificate of the same CA, not named by a rule: the token
    // decides, and `default` is not allowed either.
    let other = clients.client("other");
    for h in [&[][..], &with_token()[..]] {
        let r = get(&s.url(READ), &ca.pem(), Some(&other), h).unwrap();
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(!r.body.contains(VALUE));
    }

    // Same subject, another key: the grant is bound to the first
    // certificate's thumbprint, so this is sender-binding drift — also when
    // the client claims the first thumbprint in a header.
    let twin = clients.client("app");
    let claimed = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&app.der))
    };
    for h in [
        vec![],
        vec![("x-mtls-thumbprint", claimed.as_str())],
        vec![("x-cnf-jkt", claimed.as_str())],
    ] {
        let r = get(&s.url(READ), &ca.pem(), Some(&twin), &h).unwrap();
        assert_eq!(r.status, 403, "{h:?}: {}", r.body);
        assert!(!r.body.contains(VALUE));
    }
    // The right certificate still reads at once: the drift was the twin's
    // request's own fact, not negative-cached against the subject.
    let again = get(&s.url(READ), &ca.pem(), Some(&app), &[]).unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    // The access log names the certificate principal.
    assert!(s.log().contains("cert:app"), "{}", s.log());
}

/// Waits (bounded) until a fresh connection is served `want`.
fn wait_for_cert(s: &Serve, ca_pem: &str, want: &[u8]) -> bool {
    for _ in 0..300 {
        if let Ok(seen) = get(&s.url("/healthz"), ca_pem, None, &[]) {
            if seen.peer == want {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_certificate_replaced_on_disk_is_served_to_the_next_connection() {
    let sb = sandbox();
    let ca = Ca::new("server-ca");
    let first = ca.server(1);
    install(&sb, &first);
    config(&sb, false, "");
    let s = Serve::start(&sb, "127.0.0.1:0").unwrap();
    assert!(wait_for_cert(&s, &ca.pem(), &first.der));

    // Renewed (new key, new serial): picked up without a restart.
    let second = ca.server(2);
    install(&sb, &second);
    assert!(wait_for_cert(&s, &ca.pem(), &second.der), "{}", s.log());

    // A bad set (key of another certificate; then garbage) is refused and
    // the current certificate keeps serving.
    let third = ca.server(3);
    replace(&sb.path("tls.crt"), &third.cert_pem);
    replace(&sb.path("tls.key"), &ca.server(4).key_pem);
    s.signal(libc::SIGHUP);
    replace(
        &sb.path("tls.key"),
        "-----BEGIN PRIVATE KEY-----\nnot a key\n",
    );
    for _ in 0..30 {
        if s.log().matches("do not load").count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.log().contains("do not load"), "{}", s.log());
    let still = get(&s.url(READ), &ca.pem(), None, &with_token()).unwrap();
    assert_eq!(still.status, 200);
    assert_eq!(still.peer, second.der);

    // A good pair whose key others can read is refused; making the key
    // owner-only (a `chmod`, which changes no content) gets it picked up.
    let fifth = ca.server(6);
    replace(&sb.path("tls.crt"), &fifth.cert_pem);
    let open_key = sb.path("tls.key.open");
    std::fs::write(&open_key, &fifth.key_pem).unwrap();
    std::fs::set_permissions(
        &open_key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    std::fs::rename(&open_key, sb.path("tls.key")).unwrap();
    let refused = s.log().matches("do not load").count();
    for _ in 0..30 {
        if s.log().matches("do not load").count() > refused {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let still = get(&s.url(READ), &ca.pem(), None, &with_token()).unwrap();
    assert_eq!(
        still.peer, second.der,
        "a key readable by others was loaded"
    );
    std::fs::set_permissions(
        sb.path("tls.key"),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    assert!(wait_for_cert(&s, &ca.pem(), &fifth.der), "{}", s.log());

    // A new CA after SIGHUP: the process survives SIGHUP and serves it.
    let ca2 = Ca::new("server-ca-2");
    let fourth = ca2.server(5);
    install(&sb, &fourth);
    s.signal(libc::SIGHUP);
    assert!(wait_for_cert(&s, &ca2.pem(), &fourth.der), "{}", s.log());
    let r = get(&s.url(READ), &ca2.pem(), None, &with_token()).unwrap();
    assert_eq!(r.status, 200);
    // No key material in the log.
    assert!(!s.log().contains("PRIVATE KEY"));
}

#[test]
fn a_silent_client_does_not_block_others_and_is_closed() {
    let sb = sandbox();
    let ca = Ca::new("server-ca");
    install(&sb, &ca.server(1));
    config(&sb, false, "");
    let s = Serve::start(&sb, "127.0.0.1:0").unwrap();

    // Connects and never starts the handshake.
    let mut silent = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let seen = get(&s.url(READ), &ca.pem(), None, &with_token()).unwrap();
    assert_eq!(seen.status, 200);
    // The server closes it after the handshake timeout (2 s here); the
    // read timeout only bounds the test.
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the silent connection was not closed");
}

#[test]
fn handshakes_count_against_max_connections() {
    let sb = sandbox();
    let ca = Ca::new("server-ca");
    install(&sb, &ca.server(1));
    config(&sb, false, "max_connections = 1\n");
    sb.write(
        "secref.toml",
        &std::fs::read_to_string(sb.path("secref.toml"))
            .unwrap()
            .replace(
                "header_read_timeout_seconds = 2",
                "header_read_timeout_seconds = 30",
            ),
    );
    let s = Serve::start(&sb, "127.0.0.1:0").unwrap();
    let silent = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    // The silent handshake holds the only place (bounded wait for the
    // server to have accepted it): another client is refused.
    let mut refused = false;
    for _ in 0..100 {
        if get(&s.url("/healthz"), &ca.pem(), None, &[]).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused);
    drop(silent);
    let mut served = false;
    for _ in 0..100 {
        if get(&s.url("/healthz"), &ca.pem(), None, &[]).is_ok() {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served, "{}", s.log());
}

#[test]
fn non_loopback_bind_needs_tls() {
    let sb = sandbox();
    // Without TLS: refused with the typed config error, exit code 2.
    let o = run(sb
        .cmd()
        .env("SECREF_SERVE_TOKEN", TOKEN)
        .args(["serve", "--bind", "0.0.0.0:0"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("non-loopback") && err.contains("tls_cert"),
        "{err}"
    );
    assert!(err.contains("config"), "{err}");

    // Half a TLS configuration is a config error too.
    sb.write("secref.toml", "[server]\ntls_cert = '/nonexistent.pem'\n");
    let o = run(sb.cmd().env("SECREF_SERVE_TOKEN", TOKEN).arg("serve"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A key that does not belong to the certificate stops the start.
    let ca = Ca::new("server-ca");
    let server = ca.server(1);
    install(&sb, &server);
    replace(&sb.path("tls.key"), &ca.server(2).key_pem);
    config(&sb, false, "");
    let o = run(sb.cmd().env("SECREF_SERVE_TOKEN", TOKEN).arg("serve"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("PRIVATE KEY"));

    // A group- or world-readable key is refused like any credential file.
    install(&sb, &server);
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(sb.path("tls.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let o = run(sb.cmd().env("SECREF_SERVE_TOKEN", TOKEN).arg("serve"));
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));

    // With TLS: accepted on 0.0.0.0 (the test connects via 127.0.0.1 only).
    install(&sb, &server);
    let s = Serve::start(&sb, "0.0.0.0:0").unwrap();
    let seen = get(&s.url(READ), &ca.pem(), None, &with_token()).unwrap();
    assert_eq!(seen.status, 200, "{}", seen.body);
}
