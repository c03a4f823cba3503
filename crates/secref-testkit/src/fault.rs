//! A loopback HTTP/1.1 fault proxy, placed between a provider and its real
//! server (or double) to make the network misbehave on demand.
//!
//! Every request is answered on its own connection (`Connection: close`), so
//! one accepted connection is one attempt and [`FaultProxy::attempts`]
//! counts what the client really tried. Pass-through requests are forwarded
//! to the upstream as they came (only `Connection` rewritten) and the
//! answer is de-chunked and re-framed with a `Content-Length`, so faults
//! that cut or slow a body work on any upstream.
//!
//! ```no_run
//! # async fn demo() {
//! use secref_testkit::fault::{Fault, FaultProxy};
//! let proxy = FaultProxy::start("127.0.0.1:8200").await.unwrap();
//! proxy.set(Fault::Status(503));
//! // point the provider at proxy.url() …
//! assert_eq!(proxy.attempts(), 0);
//! # }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// What the proxy does with the next requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the upstream unchanged.
    Pass,
    /// Read the request, then send nothing (the client's timeout fires).
    SlowHeaders,
    /// Forward, send the head at once, then the body at one byte per second.
    SlowBody,
    /// Answer this status with a small JSON error body.
    Status(u16),
    /// Answer 429 with `Retry-After: <secs>`.
    RateLimited {
        /// The `Retry-After` seconds.
        retry_after_secs: u64,
    },
    /// Forward, send the head and half the body, then reset the connection.
    ResetMidBody,
    /// Forward, then answer a complete response whose JSON body is cut in half.
    TruncatedJson,
    /// Answer 200 with a JSON body of this many bytes.
    HugeBody(usize),
    /// Answer 200 with a JSON body holding bytes that are not UTF-8.
    InvalidUtf8,
    /// Answer 307 to `<base><same path>` (another host or port).
    Redirect(String),
    /// Answer the next `times` requests whose path contains `path` with 401
    /// (an expired token), forward everything else.
    Unauthorized {
        /// A substring of the paths to refuse.
        path: String,
        /// How many to refuse.
        times: usize,
    },
}

/// One request the proxy saw: method, path, and the header names only
/// (never header values, which hold credentials).
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target.
    pub path: String,
}

struct State {
    upstream: String,
    fault: Mutex<Fault>,
    attempts: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// A running fault proxy on an ephemeral 127.0.0.1 port; stops on drop.
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`host:port`, plain HTTP).
    pub async fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            fault: Mutex::new(Fault::Pass),
            attempts: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = handle(conn, &state).await;
                });
            }
        });
        Ok(FaultProxy { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Makes the next requests meet `fault` and resets the counters.
    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock() = fault;
        self.state.attempts.store(0, Ordering::SeqCst);
        self.state.seen.lock().clear();
    }

    /// Connections accepted since the last [`set`](Self::set): one per attempt.
    pub fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }

    /// The requests read since the last [`set`](Self::set).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().clone()
    }
}

/// A loopback address nothing listens on: connecting is refused.
pub fn refused_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A loopback listener whose accept queue is full and never drained, so a
/// new connection's SYN is dropped and the client's connect times out.
/// Keep it alive for as long as the address is used.
pub struct BlackHole {
    addr: std::net::SocketAddr,
    _listener: TcpListener,
    _held: Vec<TcpStream>,
}

impl BlackHole {
    /// Binds with a backlog of 0 and fills the queue (bounded: at most 16
    /// connections, each given 300 ms).
    pub async fn start() -> std::io::Result<BlackHole> {
        let socket = TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse().expect("addr"))?;
        let listener = socket.listen(0)?;
        let addr = listener.local_addr()?;
        let mut held = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => held.push(s),
                // The queue is full: the next SYN goes unanswered.
                _ => break,
            }
        }
        Ok(BlackHole {
            addr,
            _listener: listener,
            _held: held,
        })
    }

    /// The address whose connects time out.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

/// Reads one request (head and `Content-Length` body); `None` at EOF.
async fn read_message(conn: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, body)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A complete response with `Content-Length` and `Connection: close`.
fn response(status: u16, extra: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} Fault\r\ncontent-type: application/json\r\n");
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn handle(mut conn: TcpStream, state: &State) -> std::io::Result<()> {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let Some((head, body)) = read_message(&mut conn).await? else {
        return Ok(());
    };
    let mut line = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (
        line.next().unwrap_or_default().to_string(),
        line.next().unwrap_or_default().to_string(),
    );
    state.seen.lock().push(Seen {
        method,
        path: path.clone(),
    });
    let fault = {
        let mut f = state.fault.lock();
        match &mut *f {
            Fault::Unauthorized { path: p, times } if path.contains(p.as_str()) && *times > 0 => {
                *times -= 1;
                Fault::Status(401)
            }
            Fault::Unauthorized { .. } => Fault::Pass,
            other => other.clone(),
        }
    };
    // Vault's and SecFlow's error shapes at once; `retryable` as a
    // well-behaved SecFlow server sends it (its SDK treats a missing flag
    // as final).
    let error_body = |status: u16| {
        let retryable = status == 429 || status >= 500;
        format!(
            r#"{{"errors":["fault {status}"],"error":{{"code":"FAULT_{status}","message":"injected","retryable":{retryable}}}}}"#
        )
        .into_bytes()
    };
    match fault {
        Fault::SlowHeaders => {
            // Hold the connection until the client gives up (bounded).
            let mut sink = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(60), conn.read(&mut sink)).await;
            Ok(())
        }
        Fault::Status(status) => {
            conn.write_all(&response(status, &[], &error_body(status)))
                .await
        }
        Fault::RateLimited { retry_after_secs } => {
            let extra = [("retry-after", retry_after_secs.to_string())];
            conn.write_all(&response(429, &extra, &error_body(429)))
                .await
        }
        Fault::HugeBody(n) => {
            let mut big = b"{\"pad\":\"".to_vec();
            big.resize(n.saturating_sub(2), b'x');
            big.extend_from_slice(b"\"}");
            conn.write_all(&response(200, &[], &big)).await
        }
        Fault::InvalidUtf8 => {
            let body = b"{\"data\":{\"data\":{\"v\":\"\xff\xfe\xc3\x28\"}},\"items\":[\"\xff\"]}";
            conn.write_all(&response(200, &[], body)).await
        }
        Fault::Redirect(base) => {
            let extra = [("location", format!("{base}{path}"))];
            conn.write_all(&response(307, &extra, b"{}")).await
        }
        Fault::Pass
        | Fault::SlowBody
        | Fault::ResetMidBody
        | Fault::TruncatedJson
        | Fault::Unauthorized { .. } => {
            let (status_line, headers, answer) = forward(&state.upstream, &head, &body).await?;
            match fault {
                Fault::SlowBody => {
                    conn.write_all(&reframe(&status_line, &headers, answer.len()))
                        .await?;
                    for b in answer {
                        conn.write_all(&[b]).await?;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok(())
                }
                Fault::ResetMidBody => {
                    conn.write_all(&reframe(&status_line, &headers, answer.len()))
                        .await?;
                    conn.write_all(&answer[..answer.len() / 2]).await?;
                    conn.flush().await?;
                    // Linger 0: close sends RST, not FIN.
                    conn.set_zero_linger()?;
                    drop(conn);
                    Ok(())
                }
                Fault::TruncatedJson => {
                    let cut = &answer[..answer.len() / 2];
                    conn.write_all(&reframe(&status_line, &headers, cut.len()))
                        .await?;
                    conn.write_all(cut).await
                }
                _ => {
                    conn.write_all(&reframe(&status_line, &headers, answer.len()))
                        .await?;
                    conn.write_all(&answer).await
                }
            }
        }
    }
}

/// Sends the request upstream on a fresh connection and reads the whole
/// answer: (status line, headers without framing ones, de-chunked body).
async fn forward(
    upstream: &str,
    head: &str,
    body: &[u8],
) -> std::io::Result<(String, Vec<String>, Vec<u8>)> {
    let mut up = TcpStream::connect(upstream).await?;
    let mut out = String::new();
    for (i, l) in head.split("\r\n").enumerate() {
        let name = l.split(':').next().unwrap_or_default().trim();
        if i > 0 && (name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("host")) {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
        if i == 0 {
            out.push_str(&format!("host: {upstream}\r\n"));
        }
    }
    out.push_str("connection: close\r\n\r\n");
    up.write_all(out.as_bytes()).await?;
    up.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), up.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("upstream did not answer"))??;
    let split = find(&raw, b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no HTTP head"))?;
    let text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let mut chunked = false;
    let headers = lines
        .filter(|l| {
            let name = l.split(':').next().unwrap_or_default().trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = l.to_ascii_lowercase().contains("chunked");
            }
            !["content-length", "transfer-encoding", "connection"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
        })
        .map(str::to_string)
        .collect();
    let rest = raw[split + 4..].to_vec();
    let answer = if chunked {
        crate::cli::dechunk(&rest)
    } else {
        rest
    };
    Ok((status_line, headers, answer))
}

fn reframe(status_line: &str, headers: &[String], len: usize) -> Vec<u8> {
    let mut out = format!("{status_line}\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-length: {len}\r\nconnection: close\r\n\r\n"
    ));
    out.into_bytes()
}

/// A server that records every request it receives, in full (head and
/// body), and answers 200 `{}`: the "other host" a redirect points to,
/// where a test asserts that no credential ever arrives.
pub struct Recorder {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Starts on `ip:0` (any loopback address, e.g. `127.0.0.2` for
    /// "another host").
    pub async fn start(ip: &str) -> std::io::Result<Recorder> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    if let Ok(Some((head, body))) = read_message(&mut conn).await {
                        let mut all = head.into_bytes();
                        all.extend_from_slice(&body);
                        log.lock().push(all);
                    }
                    let _ = conn.write_all(&response(200, &[], b"{}")).await;
                });
            }
        });
        Ok(Recorder { addr, seen, task })
    }

    /// `http://<ip>:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received, raw.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.seen.lock().clone()
    }
}
