//! The bare axum "hello" route that `bench/api.sh` measures beside tds, so the API's figures
//! can be read against what axum itself does on the same machine in the same run.
//!
//! Usage: `cargo run --release --example bench-hello -- 127.0.0.1:PORT`

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7979".to_owned());
    let app = Router::new().route("/", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("hello on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
