//! The floor `secref serve` is measured against: an axum server on the same
//! runtime shape (2 worker threads) that reads each request's body and
//! answers every route with the same fixed bytes — no middleware, no
//! authentication, no work. Whatever `secref serve` costs above this is
//! secref's own.
//!
//! ```sh
//! curl -s -X POST -H "authorization: Bearer $T" -d @one.json \
//!     http://127.0.0.1:8787/v1/secrets/resolve:batch > answer.json
//! FLOOR_BODY=answer.json cargo run --release -p secref-server --example floor
//! wrk -t2 -c50 -d5s -s resolve1.lua http://127.0.0.1:8788/v1/secrets/resolve:batch
//! ```
//!
//! `FLOOR_BODY` names the file whose bytes every answer carries (default:
//! `{}`), `FLOOR_BIND` the address (default `127.0.0.1:8788`).

use axum::body::Bytes;
use axum::http::header;
use axum::Router;

fn main() {
    let body: Bytes = match std::env::var_os("FLOOR_BODY") {
        Some(path) => std::fs::read(path).expect("FLOOR_BODY is readable").into(),
        None => Bytes::from_static(b"{}"),
    };
    let bind = std::env::var("FLOOR_BIND").unwrap_or_else(|_| "127.0.0.1:8788".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // The request body is read, as the real server must.
        let app = Router::new().fallback(move |_req: Bytes| {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        });
        let listener = tokio::net::TcpListener::bind(&bind).await.expect("bind");
        eprintln!(
            "floor: listening on http://{}",
            listener.local_addr().expect("addr")
        );
        axum::serve(listener, app).await.expect("serve");
    });
}
