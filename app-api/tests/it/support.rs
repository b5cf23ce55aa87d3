//! A `velro-api` under test and a small HTTP client for it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use velro_api::app::{self, Running};
use velro_api::config::ApiConfig;

/// The signing secret tests use, so attack tests can forge tokens with the real key.
pub const JWT_SECRET: &str = "test-secret-0123456789-0123456789-0123456789-0123456789-0123456789";
pub const PASSWORD: &str = "correct horse 9 battery";

pub fn policies_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// An HTTP client (installs ring as rustls's provider, as the API itself does).
pub fn http() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A configuration for tests: ephemeral port, temp data, fast provider, generous limits.
pub fn test_config(data: &std::path::Path) -> ApiConfig {
    ApiConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        policies: policies_root(),
        data_dir: data.to_path_buf(),
        jwt_secret: Some(SecretString::from(JWT_SECRET)),
        local_step_ms: 5,
        rate_user: 100_000,
        rate_ip: 100_000,
        rate_generations: 1000,
        ..ApiConfig::defaults()
    }
}

/// A running API.
pub struct TestApi {
    pub base: String,
    pub client: reqwest::Client,
    pub running: Option<Running>,
    pub _data: tempfile::TempDir,
}

/// A response: status, JSON body (Null when empty or not JSON), headers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn consistency(&self) -> Option<String> {
        self.headers
            .get("x-velro-consistency")
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A signed-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh: String,
}

impl TestApi {
    pub async fn start(tweak: impl FnOnce(&mut ApiConfig)) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut config = test_config(data.path());
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
        let running = app::start(config, listener).await.unwrap();
        Self {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            running: Some(running),
            _data: data,
        }
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut request = self.client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None, &[]).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(Method::POST, path, token, Some(body), &[]).await
    }

    pub async fn register(&self, name: &str) -> Session {
        let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
        let reply = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({ "email": email, "password": PASSWORD, "full_name": name }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        Session {
            id: reply.body["user"]["id"].as_str().unwrap().to_owned(),
            email,
            token: reply.body["access_token"].as_str().unwrap().to_owned(),
            refresh: reply.body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Create a team owned by `owner`; returns its id.
    pub async fn team(&self, owner: &Session, name: &str) -> String {
        let reply = self
            .post("/api/v1/teams", Some(&owner.token), json!({ "name": name }))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn add_member(
        &self,
        owner: &Session,
        team: &str,
        member: &Session,
        role: &str,
    ) -> Reply {
        self.post(
            &format!("/api/v1/teams/{team}/members"),
            Some(&owner.token),
            json!({ "email": member.email, "role": role }),
        )
        .await
    }

    /// Create a project; returns its id.
    pub async fn project(&self, owner: &Session, body: Value) -> String {
        let reply = self
            .post("/api/v1/projects", Some(&owner.token), body)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Create a generation and wait (bounded) until it is finished; returns its final state.
    pub async fn generate(&self, user: &Session, project: &str, prompt: &str) -> Value {
        let reply = self
            .post(
                "/api/v1/generations",
                Some(&user.token),
                json!({ "model_id": "flux-pro/v1.1-ultra", "prompt": prompt, "project_id": project }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        let id = reply.body["id"].as_str().unwrap().to_owned();
        self.wait_finished(user, &id).await
    }

    pub async fn wait_finished(&self, user: &Session, id: &str) -> Value {
        for _ in 0..400 {
            let reply = self
                .get(&format!("/api/v1/generations/{id}"), Some(&user.token))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            if !matches!(
                reply.body["status"].as_str(),
                Some("pending" | "processing")
            ) {
                return reply.body;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("generation {id} did not finish");
    }
}
