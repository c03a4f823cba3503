#![cfg(feature = "vault")]
//! TLS settings of the Vault provider against a real TLS endpoint:
//! `openssl s_server` with a throwaway CA and a leaf for 127.0.0.1.
//!
//! s_server's `-www` mode answers every GET with an HTML status page, so a
//! completed request ends in `invalid_response` (the handshake and the
//! request worked, the body is not Vault's JSON), while a refused handshake
//! is `backend_unavailable`. Skipped (with a message) when `openssl` is not
//! installed.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use secref::config::Env;
use secref::providers::vault::VaultProvider;
use secref::{ErrorCode, Provider, SecretRef};

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A CA and a leaf certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) -> bool {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=secref test ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    let sign = [
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ];
    openssl(dir, &ca) && openssl(dir, &csr) && openssl(dir, &sign)
}

struct TlsServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `openssl s_server` on a free port and waits until it accepts
/// connections. The port is reserved by binding and released for s_server,
/// so another process can take it in between: s_server then exits and the
/// next attempt uses a fresh port. Waits generously (30 s per attempt): a
/// loaded 2-core machine can be slow to start a process.
fn start_server(dir: &Path) -> TlsServer {
    for _attempt in 0..3 {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &addr.to_string(),
                "-cert",
                "leaf.pem",
                "-key",
                "leaf.key",
                "-www",
                "-quiet",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is installed (it just made the certificates)");
        let mut server = TlsServer { child, addr };
        for _ in 0..600 {
            if TcpStream::connect(addr).is_ok() {
                return server;
            }
            if server.child.try_wait().unwrap().is_some() {
                break; // lost the port race (or failed): try another port
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("openssl s_server did not start listening (3 attempts)");
}

fn provider(addr: SocketAddr, extra: &[(&str, String)]) -> secref::Result<VaultProvider> {
    let mut env = Env::from_pairs([
        ("VAULT_ADDR", format!("https://{addr}")),
        ("VAULT_TOKEN", "canary-tls-token".to_string()),
        ("VAULT_TIMEOUT", "10".to_string()),
    ]);
    for (k, v) in extra {
        env.set(*k, v.clone());
    }
    VaultProvider::from_env(&env)
}

async fn read_code(p: &VaultProvider) -> ErrorCode {
    let r = SecretRef::parse("openbao+kv2://secret/myapp/api#token").unwrap();
    match p.resolve_many(&[r]).await {
        Err(e) => e.code(),
        Ok(mut v) => v
            .pop()
            .unwrap()
            .map(|_| ErrorCode::Internal)
            .unwrap_or_else(|e| e.code()),
    }
}

#[tokio::test]
async fn ca_file_and_verification_switch() {
    let dir = tempfile::tempdir().unwrap();
    if !make_certs(dir.path()) {
        println!("SKIPPED ca_file_and_verification_switch: the openssl command is not available");
        return;
    }
    let server = start_server(dir.path());
    let ca = dir.path().join("ca.pem").display().to_string();

    // Trusted through VAULT_CACERT: the request goes through.
    let p = provider(server.addr, &[("VAULT_CACERT", ca.clone())]).unwrap();
    assert_eq!(read_code(&p).await, ErrorCode::InvalidResponse);

    // Not trusted: the handshake fails, retryable.
    let p = provider(server.addr, &[]).unwrap();
    assert_eq!(read_code(&p).await, ErrorCode::BackendUnavailable);

    // Verification explicitly off (a strict `false`): accepted.
    let p = provider(server.addr, &[("VAULT_VERIFY_SSL", "false".to_string())]).unwrap();
    assert_eq!(read_code(&p).await, ErrorCode::InvalidResponse);

    // A typo never turns verification off: it is a config error.
    let e = provider(server.addr, &[("VAULT_VERIFY_SSL", "flase".to_string())]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);

    // A CA file that is not PEM, or missing: config errors naming the file.
    let bogus = dir.path().join("ext.cnf").display().to_string();
    let e = provider(server.addr, &[("VAULT_CACERT", bogus)]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
    let e = provider(
        server.addr,
        &[("VAULT_CACERT", "/nonexistent/ca.pem".to_string())],
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
    assert!(e.message().contains("/nonexistent/ca.pem"));

    // Client identity: both halves or neither; unreadable files are config errors.
    let e = provider(server.addr, &[("VAULT_CLIENT_CERT", ca.clone())]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
    let leaf = dir.path().join("leaf.pem").display().to_string();
    let key = dir.path().join("leaf.key").display().to_string();
    let p = provider(
        server.addr,
        &[
            ("VAULT_CACERT", ca),
            ("VAULT_CLIENT_CERT", leaf),
            ("VAULT_CLIENT_KEY", key),
        ],
    )
    .unwrap();
    assert_eq!(read_code(&p).await, ErrorCode::InvalidResponse);
}
