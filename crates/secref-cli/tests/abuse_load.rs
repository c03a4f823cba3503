//! Abuse under load, on the built `secref serve`: 50 legitimate keep-alive
//! clients (one connection each, 200 requests each, alternating the SecFlow
//! resolve API and the Vault read API, then one wrapped read + unwrap)
//! while a hostile client, with its own token, holds idle sockets open
//! (re-opening those the server's timeouts close), sends oversize bodies,
//! and exhausts its own quota of Vault wrapping tokens. Every legitimate
//! request must succeed with the byte-exact value: zero errors, zero
//! refusals. The run is bounded (a fixed number of requests; the hostile
//! client stops when they are done) and asserts no time; it prints
//! requests/s and p99 for information (BENCHMARKS.md has figures).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secref_testkit::cli::{feed_stdin, run_ok, stderr, Sandbox, Served};

const CLIENTS: usize = 50;
const REQUESTS: usize = 200;
const TOKEN: &str = "abuse-legit-token-3f1a9c";
const HOSTILE: &str = "abuse-hostile-token-7b2e4d";
const REF: &str = "local://app/db#password";
/// JSON- and URL-special characters: a byte-exact check means something.
const VALUE: &str = "load-value \"quoted\" /slash\\ é ✓";
const WRAP_QUOTA: usize = 60;
const IDLE_SOCKETS: usize = 100;

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            reader: BufReader::new(s),
        })
    }

    /// Sends one request and reads one `Content-Length`-framed answer.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let s = self.reader.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if self.reader.read_line(&mut h)? == 0 {
                return Err(std::io::Error::other("closed mid-head"));
            }
            if h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") {
                return Err(std::io::Error::other("chunked answers are not expected"));
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}

fn resolve_body() -> String {
    serde_json::json!({
        "target_environment": "dev", "purpose": "secret.runtime_resolve",
        "items": [{"item_id": "item-1", "secret_ref": REF}],
    })
    .to_string()
}

/// One legitimate client's run; returns (latencies, errors).
fn legit(addr: &str) -> (Vec<Duration>, Vec<String>) {
    let mut lat = Vec::with_capacity(REQUESTS);
    let mut errors = Vec::new();
    let mut conn = match Conn::open(addr) {
        Ok(c) => c,
        Err(e) => return (lat, vec![format!("connect: {e}")]),
    };
    let bearer = format!("Bearer {TOKEN}");
    let body = resolve_body();
    for i in 0..REQUESTS {
        let started = Instant::now();
        let got = if i % 2 == 0 {
            conn.call(
                "POST",
                "/v1/secrets/resolve:batch",
                &[
                    ("Authorization", &bearer),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )
            .map(|(s, b)| {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                (
                    s,
                    v["items"][0]["value"]["data"].as_str().map(str::to_string),
                )
            })
        } else {
            conn.call(
                "GET",
                "/v1/secret/data/app/db",
                &[("X-Vault-Token", TOKEN)],
                b"",
            )
            .map(|(s, b)| {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                (
                    s,
                    v["data"]["data"]["password"].as_str().map(str::to_string),
                )
            })
        };
        lat.push(started.elapsed());
        match got {
            Ok((200, Some(v))) if v == VALUE => {}
            Ok((status, v)) => errors.push(format!(
                "request {i}: status {status}, value {}",
                if v.is_some() { "differs" } else { "missing" }
            )),
            Err(e) => {
                errors.push(format!("request {i}: {e}"));
                match Conn::open(addr) {
                    Ok(c) => conn = c,
                    Err(_) => break,
                }
            }
        }
    }
    // This caller's own wrapping quota is untouched by the hostile one's.
    let wrapped = conn
        .call(
            "GET",
            "/v1/secret/data/app/db",
            &[("X-Vault-Token", TOKEN), ("X-Vault-Wrap-TTL", "60s")],
            b"",
        )
        .ok()
        .and_then(|(s, b)| {
            let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
            (s == 200).then(|| v["wrap_info"]["token"].as_str().map(str::to_string))?
        });
    match wrapped {
        Some(wrap) => {
            let unwrap = serde_json::json!({ "token": wrap }).to_string();
            match conn.call(
                "POST",
                "/v1/sys/wrapping/unwrap",
                &[
                    ("X-Vault-Token", TOKEN),
                    ("Content-Type", "application/json"),
                ],
                unwrap.as_bytes(),
            ) {
                Ok((200, b)) => {
                    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                    if v["data"]["data"]["password"] != VALUE {
                        errors.push("unwrapped value differs".into());
                    }
                }
                other => errors.push(format!("unwrap failed: {:?}", other.map(|r| r.0))),
            }
        }
        None => errors.push("wrapped read refused".into()),
    }
    (lat, errors)
}

/// What the hostile client achieved.
#[derive(Default, Debug)]
struct Hostile {
    idle_opened: AtomicUsize,
    oversize_refused: AtomicUsize,
    wraps_refused: AtomicUsize,
}

fn hostile_idle(addr: String, stop: Arc<AtomicBool>, h: Arc<Hostile>) {
    let mut held: Vec<TcpStream> = Vec::new();
    // Bounded: at most 1000 rounds of topping up to IDLE_SOCKETS.
    for _ in 0..1000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Drop the sockets the server closed (a read returns 0 at once).
        held.retain(|s| {
            let _ = s.set_nonblocking(true);
            let mut b = [0u8; 1];
            let alive =
                matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            let _ = s.set_nonblocking(false);
            alive
        });
        while held.len() < IDLE_SOCKETS {
            match TcpStream::connect(&addr) {
                Ok(s) => {
                    h.idle_opened.fetch_add(1, Ordering::Relaxed);
                    held.push(s);
                }
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn hostile_requests(addr: String, stop: Arc<AtomicBool>, h: Arc<Hostile>) {
    let big = vec![b'x'; 2 << 20];
    let bearer = format!("Bearer {HOSTILE}");
    // Bounded: at most 2000 hostile requests.
    for i in 0..2000 {
        // Runs at least until it has met both limits.
        let done = h.oversize_refused.load(Ordering::Relaxed) > 0
            && h.wraps_refused.load(Ordering::Relaxed) > 0;
        if stop.load(Ordering::Relaxed) && done {
            break;
        }
        let Ok(mut conn) = Conn::open(&addr) else {
            continue;
        };
        if i % 2 == 0 {
            // Oversize: declared 2 MiB; refused before the body is read, so
            // only the head is sent (the server closes the connection).
            let head = format!(
                "POST /v1/secrets/resolve:batch HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\nContent-Length: {}\r\n\r\n",
                big.len()
            );
            let s = conn.reader.get_mut();
            if s.write_all(head.as_bytes()).is_ok() {
                let mut line = String::new();
                if conn.reader.read_line(&mut line).is_ok() && line.contains(" 413 ") {
                    h.oversize_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else if let Ok((status, _)) = conn.call(
            "GET",
            "/v1/secret/data/app/db",
            &[("X-Vault-Token", HOSTILE), ("X-Vault-Wrap-TTL", "600s")],
            b"",
        ) {
            // Never unwrapped: the quota fills up, then 503.
            if status == 503 {
                h.wraps_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn legitimate_clients_are_unaffected_by_a_hostile_one() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("HOSTILE_TOKEN", HOSTILE);
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(sb.cmd().args(["set", "--raw", REF]), VALUE.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    sb.write(
        "secref.toml",
        &format!(
            "[server]\nmax_wraps_per_principal = {WRAP_QUOTA}\n\
             [server.tokens.hostile]\ntoken_env = \"HOSTILE_TOKEN\"\n"
        ),
    );
    let served = Served::start(&sb, TOKEN, &[]);
    let addr = served.addr().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let h = Arc::new(Hostile::default());
    let hostile: Vec<_> = [hostile_idle, hostile_requests]
        .into_iter()
        .map(|f| {
            let (addr, stop, h) = (addr.clone(), stop.clone(), h.clone());
            std::thread::spawn(move || f(addr, stop, h))
        })
        .collect();

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || legit(&addr))
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for c in clients {
        let (l, e) = c.join().unwrap();
        lat.extend(l);
        errors.extend(e);
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in hostile {
        t.join().unwrap();
    }

    lat.sort();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    println!(
        "abuse_load: {} legitimate requests, {:.0} requests/s, p99 {:.1} ms, errors {}; hostile: {h:?}",
        lat.len(),
        lat.len() as f64 / secs,
        p99.as_secs_f64() * 1e3,
        errors.len()
    );
    assert!(errors.is_empty(), "legitimate requests failed: {errors:?}");
    assert_eq!(lat.len(), CLIENTS * REQUESTS);
    // The hostile client really did what it was meant to.
    assert!(h.idle_opened.load(Ordering::Relaxed) >= IDLE_SOCKETS);
    assert!(h.oversize_refused.load(Ordering::Relaxed) > 0, "{h:?}");
    assert!(h.wraps_refused.load(Ordering::Relaxed) > 0, "{h:?}");
    let status = served.stop();
    assert!(status.success(), "{status}");
}
