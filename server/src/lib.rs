//! eddy's HTTP server: axum handlers over the engine, one module per resource.
//!
//! `main` parses the configuration and calls [`serve`]; the tests call the same
//! [`serve`] on `127.0.0.1:0`.

mod admin;
mod auth;
mod body;
mod code;
pub mod config;
mod connections;
mod consumers;
mod cors;
mod dispatch;
pub mod error;
mod events;
mod metrics_text;
mod ops;
mod params;
mod pipes;
mod reducers;
mod settings;
mod splices;
mod streams;
mod types;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use eddy_engine::Engine;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;

/// What every handler shares. Axum clones it for every request, so it is one `Arc`
/// (one reference count to move) rather than a struct of them.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The server's shared parts, behind [`AppState`].
pub struct Shared {
    pub engine: Arc<Engine>,
    pub config: Arc<Config>,
    pub metrics: Arc<ops::HttpMetrics>,
    /// The byte uploads open on this server.
    pub uploads: Arc<events::uploads::Uploads>,
    registry: Arc<Registry>,
    /// Turns true when the server starts shutting down: live responses (follow,
    /// long-poll, NDJSON ingest) end themselves.
    shutdown: watch::Receiver<bool>,
    shutdown_tx: Arc<watch::Sender<bool>>,
}

impl AppState {
    /// Opens the engine on the configured storage.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        let engine_metrics = Arc::new(eddy_engine::metrics::Metrics::default());
        let metrics = Arc::new(ops::HttpMetrics::default());
        let mut registry = Registry::default();
        engine_metrics.register(&mut registry);
        metrics.register(&mut registry);
        let engine = Engine::open(
            &config.storage(),
            engine_metrics,
            eddy_engine::Options {
                reducers: config.reducer_pool(),
                webhooks: config.webhook_settings(),
                admin_token: config.admin_token.clone(),
                fanout_merge_rate: config.fanout_merge_rate,
                json: config.json_limits()?,
                cluster: config.cluster_settings(),
                splice_write_budget: config.splice_write_budget,
            },
        )
        .await?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        Ok(Self(Arc::new(Shared {
            engine,
            config: Arc::new(config),
            metrics,
            uploads: Arc::default(),
            registry: Arc::new(registry),
            shutdown,
            shutdown_tx: Arc::new(shutdown_tx),
        })))
    }

    /// Whether the server is shutting down.
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when the server starts shutting down.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The whole HTTP API, without CORS (see [`cors::OriginGate`]). The admin API's
/// routes exist only with an admin token: an open server answers every `/api` path
/// with the same 404 (see [`admin::unknown_endpoint`]).
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", ops::endpoint(get(ops::healthz)))
        .route("/metrics", ops::endpoint(get(ops::metrics)))
        .route(
            "/api/cluster",
            admin::endpoint(get(admin::cluster), "GET, HEAD"),
        )
        .route(
            "/eddy/spy",
            admin::endpoint(get(consumers::spy::get), "GET, HEAD"),
        );
    router = crate::ui::routes(router);
    if !state.engine.access_enabled() {
        // the account listing alone: the rest of the admin API does not exist
        router = router.route("/api/accounts", axum::routing::any(admin::open_accounts));
    } else {
        router = router
            .route(
                "/api/accounts",
                admin::endpoint(
                    get(admin::list_accounts).post(admin::create_account),
                    "GET, HEAD, POST",
                ),
            )
            .route(
                "/api/accounts/{acct}/keys",
                admin::endpoint(
                    get(admin::list_keys).post(admin::create_key),
                    "GET, HEAD, POST",
                ),
            )
            .route(
                "/api/accounts/{acct}/keys/{id}",
                admin::endpoint(axum::routing::delete(admin::delete_key), "DELETE"),
            );
    }
    router.fallback(dispatch::dispatch).with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting, lets open requests finish
/// (live ones are told to end; all are cut after the grace period), and makes every
/// accepted write durable before returning. Connections are bounded as
/// [`connections`] describes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let limits = connections::Limits::of(&state.config);
    let tx = state.shutdown_tx.clone();
    let stopping = state.shutdown.clone();
    let engine = state.engine.clone();
    let app = cors::OriginGate::new(router(state));
    let serving = connections::serve(listener, app, limits, stopping, grace);
    let mut serving = std::pin::pin!(serving);
    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down: finishing open requests");
            // reducers stop folding in time to save their work within the grace
            engine.stop_reducers_by(std::time::Instant::now() + grace.mul_f64(0.8));
            let _ = tx.send(true);
            serving.await;
        }
        _ = serving.as_mut() => {}
    }
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
