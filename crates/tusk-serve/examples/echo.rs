//! The floor for `bench/serve_bench.py`: the smallest axum server on the same stack as `tusk
//! serve` (tokio multi-thread runtime, axum, HTTP/1.1 keep-alive), answering every POST with a
//! fixed one-prediction body after reading the request body, and doing nothing else.
//!
//! ```text
//! cargo run --release -p tusk-serve --example echo -- 127.0.0.1:8600
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::response::IntoResponse;
use axum::routing::post;

async fn answer(body: Bytes) -> impl IntoResponse {
    // Touch the body so it is read in full, as a real handler would.
    let n = body.len();
    (
        [
            ("content-type", "application/json"),
            ("x-model-version", "1"),
        ],
        format!("{{\"predictions\":[0.5],\"model_version\":\"1\",\"bytes\":{n}}}"),
    )
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: echo ADDR");
        std::process::exit(2)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(1)
        });
    let r = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let app = Router::new().route("/{*path}", post(answer));
        axum::serve(listener, app).await
    });
    if let Err(e) = r {
        eprintln!("error: {addr}: {e}");
        std::process::exit(1);
    }
}
