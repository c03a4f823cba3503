//! The listeners of `secref serve`, driven as a user drives them: a real
//! `secref serve` process, real TCP and Unix sockets, a real config file.
//!
//! * `--socket` creates a 0600 socket whose callers are identified by uid
//!   and executable, removed on SIGTERM; a stale socket is replaced, a live
//!   one or a regular file is refused;
//! * idle sockets beyond the connection cap are refused at once and closed
//!   after the header-read timeout, so real clients get in;
//! * a half-sent header does not keep SIGTERM from stopping the server;
//! * a declared oversize body is answered 413 before it is sent, on the
//!   SecFlow and the Vault routes.
//!
//! No test asserts a duration: reads have generous bounds far above the
//! configured timeouts, and only outcomes are checked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use secref_testkit::cli::{parse_reply, run, stderr, Reply, Sandbox, Served};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_secref");
const TOKEN: &str = "boundary-listeners-token-0123456789";
/// Far above every timeout the tests configure: a read that needs it means
/// the server did not act.
const PATIENCE: Duration = Duration::from_secs(60);

fn sandbox(server_toml: &str) -> Sandbox {
    let sb = Sandbox::new(BIN)
        .with_env("BL_A", "value-a")
        .with_env("BL_B", "value-b");
    // `env://` is host-local, denied unless a rule names it: tests without
    // rules of their own get one naming exactly the two test variables.
    let rules = if server_toml.contains("[[server.rules]]") {
        ""
    } else {
        "\n[[server.rules]]\nprincipals = ['*']\nrefs = ['env://BL_A', 'env://BL_B']\n"
    };
    sb.write("secref.toml", &format!("[server]\n{server_toml}{rules}"));
    sb
}

fn resolve_body(refs: &[&str]) -> String {
    let items: Vec<_> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"item_id": format!("item-{i}"), "secret_ref": r}))
        .collect();
    json!({"request_id": "r-bl", "trace_id": "t-bl", "target_environment": "dev",
           "purpose": "secret.runtime_resolve", "items": items})
    .to_string()
}

fn raw_post(path: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         {extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `raw` and reads the answer until the server closes.
fn exchange<S: Read + Write>(mut s: S, raw: &str) -> std::io::Result<Reply> {
    s.write_all(raw.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    if out.is_empty() {
        return Err(std::io::Error::other("closed without an answer"));
    }
    Ok(parse_reply(&out))
}

fn unix_exchange(sock: &Path, raw: &str) -> Reply {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    exchange(s, raw).unwrap()
}

fn tcp(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// The result of each item of a SecFlow answer: `"value"` or the error code.
fn outcomes(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| match i["value"]["data"].as_str() {
            Some(v) => v.to_string(),
            None => i["result"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// `curl` talking to the socket, optionally as another uid.
fn curl(sock: &Path, body: &str, as_uid: Option<u32>) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "--unix-socket"])
        .arg(sock)
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg("http://localhost/v1/secrets/resolve:batch")
        .stdin(Stdio::null());
    if let Some(uid) = as_uid {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.output().expect("curl runs")
}

fn curl_path() -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .ok()?;
    let p = String::from_utf8(out.stdout).ok()?;
    let p = p.trim();
    (!p.is_empty()).then(|| std::fs::canonicalize(p).ok())?
}

#[test]
fn the_unix_socket_is_0600_and_identifies_callers_by_uid_and_exe() {
    let Some(curl_exe) = curl_path() else {
        println!("SKIPPED: curl is not installed (needed as a second client executable)");
        return;
    };
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let sb = sandbox(&format!(
        "[[server.rules]]\nprincipals = ['uid:{uid}']\nrefs = ['env://BL_A']\nactions = ['read']\n\
         [[server.rules]]\nprincipals = ['exe:{}']\nrefs = ['env://BL_B']\nactions = ['read']\n",
        curl_exe.display()
    ));
    let sock = sb.path("secref.sock");
    let served = Served::start(&sb, TOKEN, &["--socket", sock.to_str().unwrap()]);

    let meta = std::fs::symlink_metadata(&sock).expect("the socket exists");
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let body = resolve_body(&["env://BL_A", "env://BL_B"]);
    // This process (uid rule only): no token needed, the kernel says who.
    let reply = unix_exchange(&sock, &raw_post("/v1/secrets/resolve:batch", "", &body));
    assert_eq!(outcomes(&reply), ["value-a", "denied"]);
    // curl: same uid, and its executable is named by the exe rule.
    let out = curl(&sock, &body, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items["items"][0]["value"]["data"], "value-a");
    assert_eq!(items["items"][1]["value"]["data"], "value-b");
    // A token on the socket changes nothing: identity is the kernel's.
    let reply = unix_exchange(
        &sock,
        &raw_post(
            "/v1/secrets/resolve:batch",
            &format!("Authorization: Bearer {TOKEN}\r\n"),
            &body,
        ),
    );
    assert_eq!(outcomes(&reply), ["value-a", "denied"]);
    // The Vault routes share the same authentication on the socket.
    let reply = unix_exchange(
        &sock,
        "GET /v1/auth/token/lookup-self HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["data"]["display_name"],
        format!("secref-uid:{uid}")
    );
    // Over TCP the default token matches no rule.
    let (status, text) = served.post(
        "/v1/secrets/resolve:batch",
        TOKEN,
        &serde_json::from_str(&body).unwrap(),
    );
    assert_eq!(status, 200);
    assert!(!text.contains("value-"), "{text}");

    if !is_root() {
        println!("SKIPPED (other-uid part): not root, cannot run a client as another uid");
        return;
    }
    // Another uid cannot even connect to the 0600 socket…
    let out = curl(&sock, &body, Some(65534));
    assert!(
        !out.status.success(),
        "a foreign uid connected to the 0600 socket"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("value-"));
    // …and with the socket made reachable, the rules refuse a uid they do
    // not name.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let only_a = resolve_body(&["env://BL_A"]);
    let out = curl(&sock, &only_a, Some(65534));
    assert!(out.status.success(), "{}", stderr(&out));
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items["items"][0]["result"], "denied", "{items}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("value-a"));
    assert!(
        served.log().contains("principal=\"uid:65534\""),
        "{}",
        served.log()
    );
    served.stop();
}

#[test]
fn the_socket_is_removed_on_sigterm_and_a_stale_one_replaced() {
    let sb = sandbox("");
    let sock = sb.path("s.sock");
    let arg = ["--socket", sock.to_str().unwrap()];
    let served = Served::start(&sb, TOKEN, &arg);
    assert!(sock.exists());
    let status = served.stop();
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "the socket outlived the server");

    // A socket file nobody listens on (a crashed server's) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let served = Served::start(&sb, TOKEN, &arg);
    let reply = unix_exchange(
        &sock,
        &raw_post(
            "/v1/secrets/resolve:batch",
            "",
            &resolve_body(&["env://BL_A"]),
        ),
    );
    assert_eq!(outcomes(&reply), ["value-a"]);
    // A live server's socket is never taken over.
    let second = run(sb.cmd().args(["serve", "--bind", "127.0.0.1:0"]).args(arg));
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(stderr(&second).contains("another server is listening"));
    let reply = unix_exchange(
        &sock,
        &raw_post(
            "/v1/secrets/resolve:batch",
            "",
            &resolve_body(&["env://BL_A"]),
        ),
    );
    assert_eq!(outcomes(&reply), ["value-a"]);
    served.stop();
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_replaced() {
    let sb = sandbox("");
    let path = sb.write("not-a-socket", "precious");
    let o = run(sb
        .cmd()
        .args(["serve", "--bind", "127.0.0.1:0", "--socket"])
        .arg(&path));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a socket"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    // Configured through `[server] socket` the same.
    sb.write(
        "secref.toml",
        &format!("[server]\nsocket = '{}'\n", path.display()),
    );
    let o = run(sb.cmd().args(["serve", "--bind", "127.0.0.1:0"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn idle_sockets_beyond_the_cap_do_not_lock_out_clients() {
    let sb = sandbox("max_connections = 4\nheader_read_timeout_seconds = 1\n");
    let served = Served::start(&sb, TOKEN, &[]);
    // Eight sockets that never send a byte.
    let idle: Vec<TcpStream> = (0..8).map(|_| tcp(served.addr())).collect();
    let mut refused = 0;
    let mut closed = 0;
    for mut s in idle {
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) if out.starts_with(b"HTTP/1.1 503") => refused += 1,
            // Closed by the server after the header-read timeout, unanswered.
            Ok(_) if out.is_empty() => closed += 1,
            Ok(_) => panic!("unexpected answer: {}", String::from_utf8_lossy(&out)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(e) => panic!("the server left an idle socket open: {e}"),
        }
    }
    assert_eq!((refused, closed), (4, 4));
    // A real client gets in (a refusal, if any, is immediate: retry a few).
    let body = resolve_body(&["env://BL_A"]);
    let raw = raw_post(
        "/v1/secrets/resolve:batch",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
        &body,
    );
    let mut last = None;
    for _ in 0..50 {
        match exchange(tcp(served.addr()), &raw) {
            Ok(r) if r.status == 200 => {
                last = Some(r);
                break;
            }
            Ok(r) => assert_eq!(r.status, 503, "{}", r.body),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let reply = last.expect("a client got through after the idle sockets were closed");
    assert_eq!(outcomes(&reply), ["value-a"]);
    assert!(served.log().contains("max_connections"), "{}", served.log());
    served.stop();
}

#[test]
fn a_half_sent_header_does_not_keep_sigterm_from_stopping_the_server() {
    // The header timeout is long, so only the bounded grace can end it.
    let sb = sandbox("header_read_timeout_seconds = 300\nshutdown_grace_seconds = 1\n");
    let served = Served::start(&sb, TOKEN, &[]);
    let mut half = tcp(served.addr());
    half.write_all(b"POST /v1/secrets/resolve:batch HTTP/1.1\r\nHost: loc")
        .unwrap();
    // The server has accepted it (connections are accepted in order).
    let reply = served.request("GET", "/healthz", &[], b"");
    assert_eq!(reply.status, 200);

    let pid = served.pid() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(served.stop());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(status) => assert!(status.success(), "{status}"),
        Err(_) => {
            // SAFETY: killing the server we started, by its pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("secref serve ignored SIGTERM while a header was half-sent");
        }
    }
    drop(half);
}

#[test]
fn a_declared_oversize_body_gets_413_before_it_is_sent_on_every_api() {
    let sb = sandbox("max_body_bytes = 4096\n");
    let served = Served::start(&sb, TOKEN, &[]);
    let auth = format!("Authorization: Bearer {TOKEN}\r\nX-Vault-Token: {TOKEN}\r\n");
    for (method, path) in [
        ("POST", "/v1/secrets/resolve:batch"),
        ("POST", "/v1/leases/revoke:batch"),
        ("POST", "/v1/sys/wrapping/unwrap"),
        ("GET", "/v1/secret/data/app"),
    ] {
        // 1 GB announced, not a byte of it sent.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: 1000000000\r\n\
             Connection: close\r\n\r\n"
        );
        let reply = exchange(tcp(served.addr()), &head).unwrap();
        assert_eq!(reply.status, 413, "{path}: {}", reply.body);
        let body = reply.json();
        if path.starts_with("/v1/secrets") || path.starts_with("/v1/leases") {
            assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE", "{body}");
            assert_eq!(body["error"]["retryable"], false);
        } else {
            assert!(body["errors"].is_array(), "{path}: {body}");
        }
    }
    // Unauthenticated too: nothing is read either way.
    let head = "POST /v1/secrets/resolve:batch HTTP/1.1\r\nHost: localhost\r\n\
                Content-Length: 1000000000\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(tcp(served.addr()), head).unwrap().status, 413);
    served.stop();
}

#[test]
fn a_stalled_body_hits_the_request_timeout_on_every_api() {
    let sb = sandbox("request_timeout_seconds = 1\n");
    let served = Served::start(&sb, TOKEN, &[]);
    for path in ["/v1/secrets/resolve:batch", "/v1/sys/wrapping/unwrap"] {
        // 100 bytes announced, 10 sent, then silence.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {TOKEN}\r\nX-Vault-Token: {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\
             Connection: close\r\n\r\n{{\"items\":"
        );
        let reply = exchange(tcp(served.addr()), &head).unwrap();
        assert_eq!(reply.status, 504, "{path}: {}", reply.body);
        let body = reply.json();
        if path.starts_with("/v1/secrets") {
            assert_eq!(body["error"]["code"], "TIMEOUT", "{body}");
            assert_eq!(body["error"]["retryable"], true);
        } else {
            assert!(body["errors"].is_array(), "{path}: {body}");
        }
    }
    served.stop();
}

#[test]
fn an_idle_keep_alive_connection_is_closed_by_the_idle_timeout() {
    // The header timeout is long: only the idle timeout can close it.
    let sb = sandbox("header_read_timeout_seconds = 300\nidle_timeout_seconds = 1\n");
    let served = Served::start(&sb, TOKEN, &[]);
    let mut s = tcp(served.addr());
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the idle connection was left open: {e}"),
    }
    // The answer came first, then the server closed the idle connection.
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    served.stop();
}

#[test]
fn sigterm_stops_accepting_but_lets_an_in_flight_request_finish() {
    let sb = sandbox("shutdown_grace_seconds = 60\nrequest_timeout_seconds = 60\n");
    let served = Served::start(&sb, TOKEN, &[]);
    let addr = served.addr().to_string();
    let body = resolve_body(&["env://BL_A"]);
    let raw = raw_post(
        "/v1/secrets/resolve:batch",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
        &body,
    );
    let (first, rest) = raw.split_at(raw.len() - 5);
    let mut s = tcp(&addr);
    s.write_all(first.as_bytes()).unwrap();
    // The request is in flight (its head was read: the handler waits for
    // the body) once the server answers a later request.
    assert_eq!(served.request("GET", "/healthz", &[], b"").status, 200);

    // SAFETY: signalling the server we started, by its pid.
    unsafe { libc::kill(served.pid() as libc::pid_t, libc::SIGTERM) };
    let mut refused = false;
    for _ in 0..200 {
        if served.log().contains("shutting down") && TcpStream::connect(&addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused, "still accepting after SIGTERM:\n{}", served.log());
    // The in-flight request still gets its answer.
    s.write_all(rest.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(outcomes(&parse_reply(&out)), ["value-a"]);
    let status = served.stop();
    assert!(status.success(), "{status}");
}
