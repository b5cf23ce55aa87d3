//! Assembly and lifetime of the API: connect the database, start (or reach) the PDP, build the
//! router, serve until shutdown, then stop the embedded PDP so its audit log is flushed. In
//! embedded mode the PDP runs in this process on a loopback gRPC port with a random key, and the
//! API still calls it over gRPC: one code path in both modes (DESIGN §3).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use velro_engine::db::{Database, DbConfig};
use velro_pdp::client::{ClientConfig, PdpClient};
use velro_pdp::config::{LogFormat, PdpConfig};

use crate::auth::{LoginThrottle, TokenKeys, random_bytes};
use crate::authz::Pdp;
use crate::chat::{ChatProvider, RemoteChat};
use crate::config::ApiConfig;
use crate::providers::fal::FalProvider;
use crate::providers::{LocalProvider, Provider, Runner};
use crate::ratelimit::{Class, Limiter};
use crate::repo::Repo;
use crate::s3::{S3Config, S3Store};
use crate::storage::MediaStore;
use crate::{request_id, routes};

/// Settings handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Credits granted on registration.
    pub signup_credits: i64,
    /// Invitation lifetime.
    pub invitation_ttl: Duration,
    /// Whether the PDP runs in this process.
    pub embedded_pdp: bool,
    /// Where the API is reachable.
    pub public_url: String,
    /// Payment webhook secret.
    pub webhook_secret: Option<SecretString>,
    /// Largest upload, bytes.
    pub max_file_bytes: u64,
}

/// Everything handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub repo: Repo,
    /// The PDP.
    pub pdp: Pdp,
    /// Access-token keys.
    pub tokens: Arc<TokenKeys>,
    /// Failed-login counters.
    pub throttle: Arc<LoginThrottle>,
    /// Rate limits.
    pub limiter: Arc<Limiter>,
    /// Generation jobs.
    pub runner: Runner,
    /// Generated media.
    pub media: MediaStore,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Redis, when configured (for health).
    pub redis: Option<redis::aio::ConnectionManager>,
    /// The chat provider.
    pub chat: ChatProvider,
}

/// A running API.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The embedded PDP's gRPC address, if embedded.
    pub pdp_grpc: Option<SocketAddr>,
    /// The embedded PDP's HTTP address (metrics, JWKS), if embedded.
    pub pdp_http: Option<SocketAddr>,
    /// The state (tests use it to reach the database).
    pub state: AppState,
    stop: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    pdp: Option<EmbeddedPdp>,
}

#[derive(Debug)]
struct EmbeddedPdp {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), velro_pdp::server::ServeError>>,
}

impl Running {
    /// Stop accepting, drain, then stop the embedded PDP (flushing its audit log).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.server.await??;
        if let Some(pdp) = self.pdp {
            let _ = pdp.stop.send(());
            pdp.task.await??;
        }
        Ok(())
    }

    /// Wait until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await??;
        Ok(())
    }
}

fn jwt_secret(config: &ApiConfig) -> anyhow::Result<Vec<u8>> {
    match &config.jwt_secret {
        Some(secret) => Ok(secret.expose_secret().as_bytes().to_vec()),
        None => {
            crate::auth::load_or_create_secret(&config.data_dir.join("keys").join("jwt-secret"))
        }
    }
}

async fn start_embedded_pdp(
    config: &ApiConfig,
    public_url: &str,
) -> anyhow::Result<(EmbeddedPdp, SocketAddr, SocketAddr, SecretString)> {
    let key = SecretString::from(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(32)?),
    );
    // The PDP's own settings (EMERGENCY_AUTH_MODE, PDP_TAIL_INTERVAL_MS, … and PDP_CONFIG) apply;
    // where it listens, what it reads and who may call it are the API's.
    let mut pdp_config = PdpConfig::load(None)?;
    pdp_config.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    pdp_config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    pdp_config.policies = config.policies.clone();
    pdp_config.database_url = SecretString::from(config.database_url());
    pdp_config.redis_url = config.redis_url.clone();
    if std::env::var_os("PDP_AUDIT").is_none() {
        pdp_config.audit = format!("file:{}", config.data_dir.join("audit").display());
    }
    pdp_config.data_dir = config.data_dir.clone();
    pdp_config.api_keys = Some(key.clone());
    pdp_config.admin_key = None;
    pdp_config.tls_cert = None;
    pdp_config.tls_key = None;
    pdp_config.tls_client_ca = None;
    pdp_config.media_base_url = public_url.to_owned();
    pdp_config.log_format = if config.log_format == "json" {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    let grpc = TcpListener::bind(pdp_config.grpc_addr).await?;
    let http = TcpListener::bind(pdp_config.http_addr).await?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(velro_pdp::server::run(pdp_config, grpc, http, async move {
        let _ = stopped.await;
    }));
    Ok((EmbeddedPdp { stop, task }, grpc_addr, http_addr, key))
}

/// Wait until the PDP reports SERVING (bounded); fail if an embedded PDP stopped instead.
async fn wait_for_pdp(pdp: &Pdp, embedded: Option<&mut EmbeddedPdp>) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut embedded = embedded;
    loop {
        if pdp.healthy().await {
            return Ok(());
        }
        if let Some(e) = embedded.as_deref_mut()
            && e.task.is_finished()
        {
            match (&mut e.task).await {
                Ok(Err(err)) => anyhow::bail!("the embedded PDP failed to start: {err}"),
                Ok(Ok(())) => anyhow::bail!("the embedded PDP stopped during start-up"),
                Err(err) => anyhow::bail!("the embedded PDP panicked: {err}"),
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the PDP did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Start the API on `listener` with `config`.
pub async fn start(config: ApiConfig, listener: TcpListener) -> anyhow::Result<Running> {
    config.validate()?;
    // One Prometheus registry for the process (shared with an embedded PDP).
    velro_pdp::telemetry::metrics();
    // Outgoing HTTPS (providers) uses ring, like the rest of the workspace.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));

    // The API migrates first; an embedded PDP then finds the schema in place.
    let db = Database::connect(&DbConfig::new(config.database_url())).await?;
    let repo = Repo::new(db);

    let (mut embedded, pdp_grpc, pdp_http, client_config) = match &config.pdp_url {
        Some(url) => {
            let mut client = ClientConfig::new(url.clone());
            client.api_key = config.pdp_api_key.clone();
            (None, None, None, client)
        }
        None => {
            let (pdp, grpc, http, key) = start_embedded_pdp(&config, &public_url).await?;
            let mut client = ClientConfig::new(format!("http://{grpc}"));
            client.api_key = Some(key);
            (Some(pdp), Some(grpc), Some(http), client)
        }
    };
    let mut client_config = client_config;
    client_config.timeout = Duration::from_millis(config.pdp_timeout_ms);
    let pdp = Pdp::new(PdpClient::lazy(&client_config)?);
    wait_for_pdp(&pdp, embedded.as_mut()).await?;

    let redis = match &config.redis_url {
        None => None,
        Some(url) => {
            let client = redis::Client::open(url.expose_secret())?;
            Some(redis::aio::ConnectionManager::new(client).await?)
        }
    };

    let tokens = TokenKeys::new(
        &jwt_secret(&config)?,
        Duration::from_secs(config.access_ttl_seconds),
        Duration::from_secs(config.refresh_ttl_seconds),
    )?;
    let mut media = MediaStore::new(&config.data_dir.join("media"))?;
    if let (Some(endpoint), Some(secret)) = (&config.s3_endpoint, &config.s3_secret_key) {
        media = media.with_s3(S3Store::new(S3Config {
            endpoint: endpoint.clone(),
            bucket: config.s3_bucket.clone(),
            region: config.s3_region.clone(),
            access_key: config.s3_access_key.clone(),
            secret_key: secret.clone(),
        })?);
    }
    tracing::info!(backend = media.backend(), "media storage");
    let provider = match (config.generation_provider.as_str(), &config.fal_key) {
        ("fal" | "auto", Some(key)) => Provider::Fal(FalProvider {
            base_url: config.fal_base_url.clone(),
            key: key.clone(),
            poll: Duration::from_millis(config.fal_poll_ms),
            timeout: Duration::from_secs(15 * 60),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(120))
                .build()?,
        }),
        _ => Provider::Local(LocalProvider {
            step: Duration::from_millis(config.local_step_ms),
        }),
    };
    tracing::info!(provider = provider.name(), "generation provider");
    let chat = match (config.chat_provider.as_str(), &config.chat_key) {
        ("openai" | "auto", Some(key)) => ChatProvider::Remote(RemoteChat {
            base_url: config.chat_base_url.clone(),
            key: key.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            models: config
                .chat_models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
        }),
        _ => ChatProvider::Local,
    };
    let runner = Runner {
        provider,
        media: media.clone(),
        repo: repo.clone(),
    };
    let state = AppState {
        repo: repo.clone(),
        pdp,
        tokens: Arc::new(tokens),
        throttle: Arc::new(LoginThrottle::default()),
        limiter: Arc::new(Limiter::new(
            config.rate_user,
            config.rate_ip,
            config.rate_generations,
            redis.clone(),
        )),
        runner,
        media,
        settings: Arc::new(Settings {
            signup_credits: config.signup_credits,
            invitation_ttl: Duration::from_secs(config.invitation_ttl_seconds),
            embedded_pdp: embedded.is_some(),
            public_url: public_url.clone(),
            webhook_secret: config.stripe_webhook_secret.clone(),
            max_file_bytes: config.max_file_bytes,
        }),
        redis,
        chat,
    };

    // Generations a previous process left unfinished can never complete: fail and refund them.
    for id in repo.unfinished_generations().await? {
        if repo.fail_generation(id, "interrupted by a restart").await? {
            tracing::warn!(generation = %id, "unfinished generation failed and refunded");
        }
    }
    repo.seed_builtin_styles().await?;
    if let Err(e) = repo.prune_revocations().await {
        tracing::warn!(error = %e, "could not prune expired revocations");
    }

    // Orphaned media files (a crash between writing a file and its row) are swept hourly.
    let sweeper = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match sweeper
                .media
                .sweep_orphans(&sweeper.repo, Duration::from_secs(3600))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "orphaned media files swept"),
                Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
            }
        }
    });
    let router = router(state.clone(), config.max_body_bytes);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(
            axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
    });
    tracing::info!(
        api = %addr,
        pdp = pdp_grpc.map_or_else(|| client_config.url.clone(), |a| a.to_string()),
        database = %repo.database().display_url(),
        "velro-api serving"
    );
    Ok(Running {
        addr,
        pdp_grpc,
        pdp_http,
        state,
        stop,
        server,
        pdp: embedded,
    })
}

/// Per-IP limit on every request.
async fn limit_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = request_id::client_ip();
    if !ip.is_empty()
        && let Err(e) = state.limiter.hit(Class::Ip, &ip).await
    {
        return axum::response::IntoResponse::into_response(e);
    }
    next.run(request).await
}

/// Request count and latency by method, route template and status class.
async fn record(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = format!("{}xx", response.status().as_u16() / 100);
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("velro_api_requests_total", &labels).increment(1);
    metrics::histogram!("velro_api_request_duration_us", &labels)
        .record(started.elapsed().as_micros() as f64);
    response
}

/// The whole HTTP surface.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    routes::router(state.settings.max_file_bytes)
        .route_layer(axum::middleware::from_fn(record))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_ip,
        ))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
