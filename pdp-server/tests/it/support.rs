//! A PDP under test: the real server on ephemeral loopback ports with a temporary SQLite database
//! (or a given one), plus a world writer and clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use uuid::Uuid;
use velro_engine::db::{Database, DbConfig};
use velro_pdp::client::{ClientConfig, PdpClient};
use velro_pdp::config::{LogFormat, PdpConfig};

use crate::policies_root;

pub const API_KEY: &str = "test-api-key-0123456789";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// A running PDP.
pub struct TestPdp {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Connected once the server is ready (after it migrated the database).
    pub db: Database,
    pub data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), velro_pdp::server::ServeError>>>,
}

/// A configuration for tests: loopback, ephemeral ports, keys set, data in a temp folder.
pub fn test_config(data: &std::path::Path) -> PdpConfig {
    PdpConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        policies: policies_root(),
        database_url: SecretString::from(format!("sqlite://{}", data.join("velro.db").display())),
        audit: format!("file:{}", data.join("audit").display()),
        data_dir: data.to_path_buf(),
        api_keys: Some(SecretString::from(API_KEY)),
        admin_key: Some(SecretString::from(ADMIN_KEY)),
        log_format: LogFormat::Text,
        ..PdpConfig::default()
    }
}

impl TestPdp {
    /// Start with the test configuration, adjusted by `tweak`, and wait until `/readyz` is 200.
    pub async fn start(tweak: impl FnOnce(&mut PdpConfig)) -> Self {
        Self::start_with(tweak, |http| Box::pin(wait_ready(http))).await
    }

    /// Start and wait with `ready` (e.g. over HTTPS) before connecting to the database.
    pub async fn start_with(
        tweak: impl FnOnce(&mut PdpConfig),
        ready: impl FnOnce(SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut config = test_config(data.path());
        tweak(&mut config);
        let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
            .await
            .unwrap();
        let http_listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let http = http_listener.local_addr().unwrap();
        let db_url = secrecy::ExposeSecret::expose_secret(&config.database_url).to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(velro_pdp::server::run(
            config,
            grpc_listener,
            http_listener,
            async move {
                let _ = stopped.await;
            },
        ));
        ready(http).await;
        // Connect once the server has migrated the database.
        let db = Database::connect(&DbConfig::new(db_url)).await.unwrap();
        Self {
            grpc,
            http,
            db,
            data,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn client(&self, key: Option<&str>) -> PdpClient {
        let mut config = ClientConfig::new(format!("http://{}", self.grpc));
        config.api_key = key.map(SecretString::from);
        PdpClient::lazy(&config).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Stop gracefully and return the data folder (audit log, keys).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
        self.data
    }

    pub fn audit_file(data: &std::path::Path) -> PathBuf {
        data.join("audit").join("audit-pdp.jsonl")
    }
}

/// An HTTP client. reqwest's rustls backend may be compiled in (the app API enables it, and
/// features unify across the workspace); it then needs a process-wide crypto provider: ring, as
/// everywhere in this workspace.
pub fn http() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Wait (bounded) until `/readyz` answers 200.
pub async fn wait_ready(http: SocketAddr) {
    let url = format!("http://{http}/readyz");
    for _ in 0..1000 {
        if let Ok(r) = crate::support::http().get(&url).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the PDP at {http} never became ready");
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Rows written as the app API would.
pub async fn user(db: &Database) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, full_name, created_at, updated_at) \
         VALUES ($1, $2, 'x', 'T', $3, $3)",
    )
    .bind(id.to_string())
    .bind(format!("{id}@example.test"))
    .bind(now())
    .execute(db.pool())
    .await
    .unwrap();
    id
}

pub async fn project(db: &Database, owner: Uuid, visibility: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO projects (id, owner_id, name, visibility, created_at, updated_at) \
         VALUES ($1, $2, 'p', $3, $4, $4)",
    )
    .bind(id.to_string())
    .bind(owner.to_string())
    .bind(visibility)
    .bind(now())
    .execute(db.pool())
    .await
    .unwrap();
    id
}

pub async fn generation(db: &Database, owner: Uuid, project: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO generations (id, owner_id, project_id, model_id, prompt, status, created_at, updated_at) \
         VALUES ($1, $2, $3, 'flux-pro/v1.1-ultra', 'p', 'completed', $4, $4)",
    )
    .bind(id.to_string())
    .bind(owner.to_string())
    .bind(project.to_string())
    .bind(now())
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO media_files (id, owner_id, generation_id, storage_key, content_type, size_bytes, sha256, created_at) \
         VALUES ($1, $2, $3, $4, 'image/png', 1, 'ab', $5)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(owner.to_string())
    .bind(id.to_string())
    .bind(format!("generations/{id}/0.png"))
    .bind(now())
    .execute(db.pool())
    .await
    .unwrap();
    id
}

pub async fn set_visibility(db: &Database, project: Uuid, visibility: &str) {
    sqlx::query("UPDATE projects SET visibility = $1 WHERE id = $2")
        .bind(visibility)
        .bind(project.to_string())
        .execute(db.pool())
        .await
        .unwrap();
}

/// The highest change revision: what a writer's consistency token carries.
pub async fn write_token(db: &Database) -> String {
    let rev = velro_engine::changes::current_revision(db).await.unwrap();
    velro_engine::consistency::ConsistencyToken::new("velro", None, rev).encode()
}
