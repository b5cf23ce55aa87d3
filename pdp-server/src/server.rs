//! The running PDP: the engine behind a gRPC server (with health and reflection) and an HTTP
//! server, on listeners the caller has bound. `run` owns start-up and graceful shutdown: on the
//! shutdown signal, health turns NOT_SERVING and `/readyz` 503 first, in-flight calls drain, the
//! change feed stops and the audit log is flushed.

pub mod auth;
pub mod convert;
pub mod grpc;
pub mod http;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use velro_engine::audit::RecordKind;
use velro_engine::clock::SystemClock;
use velro_engine::media_url::KeyRing;
use velro_engine::stores::PolicyStores;
use velro_engine::{Engine, EngineTasks};

use crate::config::{ConfigError, PdpConfig};
use crate::proto;
use auth::{Keys, Limits};

/// Longest a shutdown waits for in-flight calls and the audit writer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the PDP could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine could not start (policies, database, audit, keys).
    #[error(transparent)]
    Engine(#[from] velro_engine::Error),
    /// TLS files are unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// A listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// State shared by every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shared {
    pub(crate) engine: Engine,
    pub(crate) keys: Keys,
    pub(crate) limits: Limits,
    keys_file: PathBuf,
    draining: Arc<AtomicBool>,
}

impl Shared {
    /// Re-read the media URL key ring (after `velro-pdp keys rotate`).
    pub(crate) fn reload_keys(&self) {
        match KeyRing::load(&self.keys_file) {
            Ok(ring) => {
                self.engine.signer().replace_ring(ring);
                tracing::info!(path = %self.keys_file.display(), "media URL keys reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload media URL keys; keeping the current ring")
            }
        }
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Gauges read at scrape time.
    pub(crate) fn publish_gauges(&self) {
        let (applied, rejected) = self.engine.stores().reload_counts();
        metrics::gauge!("velro_policy_reloads", "outcome" => "applied").set(applied as f64);
        metrics::gauge!("velro_policy_reloads", "outcome" => "rejected").set(rejected as f64);
        metrics::gauge!("velro_audit_queue_depth").set(self.engine.audit().depth() as f64);
        metrics::gauge!("velro_change_feed_lag_ms").set(self.engine.change_feed().lag_ms() as f64);
        metrics::gauge!("velro_data_revision").set(self.engine.revision() as f64);
    }
}

/// Where a started PDP listens.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// gRPC address.
    pub grpc: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
}

/// Serve until `shutdown` resolves, then drain and flush.
pub async fn run(
    config: PdpConfig,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    crate::telemetry::metrics();
    let tls = tls::load(&config)?;
    let stores = PolicyStores::open(&config.policies)?;
    let watcher = stores.watch()?;
    let (engine, tasks) =
        Engine::start(config.engine(), stores.clone(), Arc::new(SystemClock)).await?;
    let bound = Bound {
        grpc: grpc_listener.local_addr()?,
        http: http_listener.local_addr()?,
    };
    tracing::info!(
        grpc.addr = %bound.grpc,
        http.addr = %bound.http,
        tls = tls.is_some(),
        mtls = config.tls_client_ca.is_some(),
        policies = %config.policies.display(),
        "velro-pdp serving"
    );

    let shared = Shared {
        engine: engine.clone(),
        keys: Keys::from_config(&config),
        limits: Limits::new(config.max_concurrency_per_caller),
        keys_file: config.keys_path(),
        draining: Arc::new(AtomicBool::new(false)),
    };

    // One shutdown signal fans out to both servers and the reload auditor.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let auditor = spawn_reload_auditor(engine.clone(), stop_rx.clone());

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<proto::authorizer_server::AuthorizerServer<grpc::AuthorizerService>>()
        .await;
    reporter
        .set_serving::<proto::policy_admin_server::PolicyAdminServer<grpc::PolicyAdminService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Tls(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Tls(format!("reflection: {e}")))?;

    let max = config.max_request_bytes;
    let authorizer = proto::authorizer_server::AuthorizerServer::new(grpc::AuthorizerService {
        shared: shared.clone(),
    })
    .max_decoding_message_size(max);
    let admin = proto::policy_admin_server::PolicyAdminServer::new(grpc::PolicyAdminService {
        shared: shared.clone(),
    })
    .max_decoding_message_size(max);

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.grpc.clone())?;
    }
    let grpc_stop = wait_for(stop_rx.clone());
    let grpc_server = builder
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(authorizer)
        .add_service(admin)
        .serve_with_incoming_shutdown(no_delay(grpc_listener), grpc_stop);

    let router = http::router(shared.clone())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ));
    let http_stop = wait_for(stop_rx.clone());
    let http_server = async move {
        match tls.map(|t| t.http) {
            None => axum::serve(
                axum::serve::ListenerExt::tap_io(http_listener, |tcp| {
                    // Small request/response exchanges: Nagle's delay would add ~40 ms.
                    let _ = tcp.set_nodelay(true);
                }),
                router,
            )
            .with_graceful_shutdown(http_stop)
            .await
            .map_err(ServeError::Io),
            Some(acceptor) => serve_https(http_listener, router, acceptor, http_stop).await,
        }
    };

    // On the signal: NOT_SERVING and 503 first, then stop accepting and drain.
    let draining = Arc::clone(&shared.draining);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight calls");
        draining.store(true, Ordering::Relaxed);
        reporter
            .set_not_serving::<proto::authorizer_server::AuthorizerServer<grpc::AuthorizerService>>(
            )
            .await;
        reporter
            .set_not_serving::<proto::policy_admin_server::PolicyAdminServer<grpc::PolicyAdminService>>()
            .await;
        let _ = stop_tx.send(true);
    };
    let (grpc_result, http_result, ()) = tokio::join!(grpc_server, http_server, signal);
    drop(shared);
    drop(watcher);
    let _ = auditor.await;
    finish(engine, tasks).await;
    grpc_result?;
    http_result?;
    tracing::info!("velro-pdp stopped");
    Ok(())
}

/// Accepted connections with Nagle's algorithm off: decisions are small request/response
/// exchanges, and delayed ACKs would otherwise stall them by ~40 ms.
fn no_delay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    })
}

async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Stop the engine's background work and wait (bounded) for the audit log to be written.
async fn finish(engine: Engine, tasks: EngineTasks) {
    engine.shutdown();
    drop(engine);
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.finished())
        .await
        .is_err()
    {
        tracing::error!("audit log not flushed within the drain timeout");
    }
}

/// Record every policy reload (applied or rejected) in the audit log.
fn spawn_reload_auditor(
    engine: Engine,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut reloads = engine.stores().subscribe();
    tokio::spawn(async move {
        let mut seen = engine.stores().reload_counts();
        loop {
            tokio::select! {
                changed = reloads.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
            let now = engine.stores().reload_counts();
            if now == seen {
                continue;
            }
            let detail = format!(
                "policy reload: {} applied, {} rejected; versions {}",
                now.0 - seen.0,
                now.1 - seen.1,
                engine
                    .stores()
                    .statuses()
                    .iter()
                    .map(|(name, s)| format!(
                        "{name}@{}",
                        s.current.as_ref().map_or("-", |c| c.version())
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            seen = now;
            if let Err(e) = engine
                .record_event(RecordKind::PolicyReload, detail, None)
                .await
            {
                tracing::error!(error = %e, "cannot audit a policy reload");
            }
        }
    })
}

/// The HTTP server over TLS: accept, handshake, serve each connection; drain on shutdown.
async fn serve_https(
    listener: TcpListener,
    router: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(router.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let builder = Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(connection).await {
                        tracing::debug!(error = %e, "HTTPS connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTPS connections still open after the drain timeout");
    }
    Ok(())
}
