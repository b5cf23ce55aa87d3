//! Hostile input: forged and expired tokens, refresh-token replay, malformed ids, oversize and
//! malformed bodies, injection strings, and a PDP that stops answering. Every case gets a 4xx (or
//! 503 for the PDP) with a stable code, never a 5xx, and the server keeps serving.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::{JWT_SECRET, PASSWORD, TestApi, policies_root};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn forge(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let api = TestApi::start(|_| {}).await;
    let user = api.register("user").await;
    let good = json!({
        "sub": user.id, "exp": now() + 600, "iat": now(), "jti": uuid::Uuid::now_v7().to_string(),
        "aud": "velro-api", "iss": "velro",
    });
    // Control: a token built like ours, with our key, works.
    let ok = forge(&good, JWT_SECRET.as_bytes());
    assert_eq!(
        api.get("/api/v1/auth/me", Some(&ok)).await.status,
        StatusCode::OK
    );

    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    let mut audience = good.clone();
    audience["aud"] = json!("another-service");
    let mut issuer = good.clone();
    issuer["iss"] = json!("evil");
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &good,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let cases = [
        ("alg none", none),
        ("wrong key", forge(&good, &[9u8; 64])),
        ("expired", forge(&expired, JWT_SECRET.as_bytes())),
        ("wrong audience", forge(&audience, JWT_SECRET.as_bytes())),
        ("wrong issuer", forge(&issuer, JWT_SECRET.as_bytes())),
        ("other algorithm", hs512),
        ("garbage", "not.a.jwt".to_owned()),
        ("huge", "a".repeat(10_000)),
    ];
    for (name, token) in cases {
        let reply = api.get("/api/v1/auth/me", Some(&token)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "UNAUTHENTICATED", "{name}");
    }
    // A malformed Authorization header is a 401, not a silent anonymous.
    let reply = api
        .send(
            Method::GET,
            "/api/v1/projects",
            None,
            None,
            &[("authorization", "Basic abc")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Logout revokes the access token.
    let reply = api
        .send(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&user.token),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let reply = api.get("/api/v1/auth/me", Some(&user.token)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    api.stop().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let api = TestApi::start(|_| {}).await;
    let user = api.register("user").await;
    let first = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": user.refresh }),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second_token = first.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, user.refresh);
    assert!(first.body["access_token"].as_str().is_some());

    // Replaying the spent token: refused, and the family (including the new token) dies.
    let replay = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": user.refresh }),
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replay.code(), "TOKEN_REUSED");
    let after = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": second_token }),
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    // Unknown tokens and wrong passwords say nothing more than "invalid".
    let unknown = api
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({ "refresh_token": "x".repeat(43) }),
        )
        .await;
    assert_eq!(unknown.code(), "UNAUTHENTICATED");
    let login = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "email": user.email, "password": "wrong password 1" }),
        )
        .await;
    assert_eq!(login.code(), "INVALID_CREDENTIALS");
    let login = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "email": "nobody@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(login.code(), "INVALID_CREDENTIALS");
    let login = api
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "email": user.email, "password": PASSWORD }),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    api.stop().await;
}

#[tokio::test]
async fn hostile_input_gets_stable_4xx_codes() {
    let api = TestApi::start(|c| c.max_body_bytes = 64 * 1024).await;
    let user = api.register("user").await;
    let token = Some(user.token.as_str());

    for id in [
        "1 OR 1=1",
        "../../etc/passwd",
        "0190F1C2-7A7B-7CC0-8000-000000000001",
        "%00",
        "'--",
    ] {
        let path = format!("/api/v1/projects/{}", urlencode(id));
        let reply = api.get(&path, token).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{id}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "INVALID_ID");
    }
    // Unknown but well-formed ids: 404, like invisible ones.
    let reply = api
        .get(&format!("/api/v1/projects/{}", uuid::Uuid::now_v7()), token)
        .await;
    assert_eq!(reply.code(), "NOT_FOUND");

    let big = json!({ "name": "x".repeat(100_000) });
    let reply = api.post("/api/v1/projects", token, big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "PAYLOAD_TOO_LARGE");

    let cases = [
        json!({ "name": 5 }),
        json!({ "name": "p", "visibility": "everyone" }),
        json!({ "name": "p", "owner_id": user.id }),
        json!({ "name": "" }),
        json!({ "name": "p", "team_id": "not-a-uuid" }),
        json!({ "name": "p", "tags": ["a\u{0}b"] }),
        json!([1, 2, 3]),
    ];
    for body in cases {
        let reply = api.post("/api/v1/projects", token, body.clone()).await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.status);
        assert!(
            ["VALIDATION_ERROR", "INVALID_ID"].contains(&reply.code()),
            "{body}: {}",
            reply.body
        );
    }
    let reply = api
        .send(
            Method::POST,
            "/api/v1/projects",
            token,
            None,
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let reply = api
        .send(
            Method::GET,
            "/api/v1/projects",
            token,
            None,
            &[("x-velro-consistency", "bogus")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // Injection strings are data: stored and returned verbatim.
    let name = "'; DROP TABLE projects; -- <script>alert(1)</script> {{7*7}}";
    let reply = api
        .post("/api/v1/projects", token, json!({ "name": name }))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["id"].as_str().unwrap();
    let reply = api.get(&format!("/api/v1/projects/{id}"), token).await;
    assert_eq!(reply.body["name"], name);
    let reply = api
        .post(
            "/api/v1/generations",
            token,
            json!({ "model_id": "flux-pro/v1.1-ultra", "prompt": "p", "project_id": id, "parameters": { "num_images": 99 } }),
        )
        .await;
    assert_eq!(reply.code(), "VALIDATION_ERROR");
    let reply = api
        .post(
            "/api/v1/generations",
            token,
            json!({ "model_id": "../../bin/sh", "prompt": "p", "project_id": id }),
        )
        .await;
    assert_eq!(reply.code(), "VALIDATION_ERROR");

    // Every error body has the one shape, with a request id.
    let reply = api.get("/api/v1/nope", token).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.body["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(reply.body["error"]["message"].is_string());

    // Still healthy.
    assert_eq!(api.get("/health", None).await.status, StatusCode::OK);
    api.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let api = TestApi::start(|c| c.rate_generations = 2).await;
    let user = api.register("user").await;
    let project = api.project(&user, json!({ "name": "p" })).await;
    let mut statuses = Vec::new();
    // Fixed one-minute windows: the third request is refused, or (if a window boundary passed
    // in between) the fourth or fifth; never later.
    for _ in 0..5 {
        let reply = api
            .post(
                "/api/v1/generations",
                Some(&user.token),
                json!({ "model_id": "imagen4/preview/ultra", "prompt": "p", "project_id": project }),
            )
            .await;
        let limited = reply.status == StatusCode::TOO_MANY_REQUESTS;
        statuses.push((reply.status, reply.headers.get("retry-after").cloned()));
        if limited {
            break;
        }
    }
    assert_eq!(statuses[0].0, StatusCode::ACCEPTED);
    assert_eq!(statuses[1].0, StatusCode::ACCEPTED);
    let last = statuses.last().unwrap();
    assert_eq!(last.0, StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert!(last.1.is_some());
    api.stop().await;
}

/// A PDP in its own server; the API reaches it over gRPC. When it stops, protected requests
/// get 503 and never an allow.
#[tokio::test]
async fn a_stopped_pdp_means_503_never_allow() {
    let data = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", data.path().join("velro.db").display());
    let key = "pdp-test-key-0123456789";
    let pdp_config = velro_pdp::config::PdpConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        policies: policies_root(),
        database_url: SecretString::from(db_url.clone()),
        audit: format!("file:{}", data.path().join("audit").display()),
        data_dir: data.path().to_path_buf(),
        api_keys: Some(SecretString::from(key)),
        log_format: velro_pdp::config::LogFormat::Text,
        ..velro_pdp::config::PdpConfig::default()
    };
    // The database must exist (migrated) before the PDP starts: connect once.
    velro_engine::db::Database::connect(&velro_engine::db::DbConfig::new(db_url.clone()))
        .await
        .unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pdp = tokio::spawn(velro_pdp::server::run(pdp_config, grpc, http, async move {
        let _ = stopped.await;
    }));

    let db_for_api = db_url.clone();
    let api = TestApi::start(move |c| {
        c.pdp_url = Some(format!("http://{grpc_addr}"));
        c.pdp_api_key = Some(SecretString::from(key));
        c.database_url = Some(SecretString::from(db_for_api));
        c.pdp_timeout_ms = 500;
    })
    .await;
    let user = api.register("user").await;
    let project = api
        .project(&user, json!({ "name": "p", "visibility": "public" }))
        .await;
    let path = format!("/api/v1/projects/{project}");
    assert_eq!(
        api.get(&path, Some(&user.token)).await.status,
        StatusCode::OK
    );

    stop.send(()).unwrap();
    pdp.await.unwrap().unwrap();
    for _ in 0..8 {
        for token in [Some(user.token.as_str()), None] {
            let reply = api.get(&path, token).await;
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                reply.body
            );
            assert_eq!(reply.code(), "PDP_UNAVAILABLE");
        }
    }
    let reply = api
        .send(
            Method::PATCH,
            &path,
            Some(&user.token),
            Some(json!({ "name": "x" })),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let health = api.get("/health/detailed", None).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.body["checks"]["pdp"]["status"], "down");
    api.stop().await;
}
