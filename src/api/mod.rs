//! The REST API: `router(handle)` builds every route over an `OrchestratorHandle`.

pub mod auth;

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use tds_core::{Config, OrchestratorHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The application router.
pub fn router(handle: OrchestratorHandle) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).with_state(handle)
}

/// Binds the configured address; without tokens only a loopback address is allowed.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = config.server.listen;
    if config.tokens.is_empty() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve the API on {addr} without [[tokens]] in the configuration: anyone who can reach it \
             could deploy. Add tokens (see `tds token hash`) or listen on 127.0.0.1"
        );
    }
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    if config.tokens.is_empty() {
        tracing::warn!(%addr, "no [[tokens]] configured: the API is open, so it listens on loopback only");
    }
    Ok(listener)
}

/// Serves until `stop` is cancelled, then finishes in-flight requests.
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
}
