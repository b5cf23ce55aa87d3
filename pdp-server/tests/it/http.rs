//! Every HTTP route over the network, with its errors in the one error shape.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, API_KEY, TestPdp, project, user};

fn body(principal: impl ToString, action: &str, resource: impl ToString) -> Value {
    json!({
        "principal": {"type": "User", "id": principal.to_string()},
        "action": action,
        "resource": {"type": "Project", "id": resource.to_string()},
    })
}

async fn post(pdp: &TestPdp, path: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut request = crate::support::http().post(pdp.url(path)).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(pdp: &TestPdp, path: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut request = crate::support::http().get(pdp.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers() {
    let pdp = TestPdp::start(|_| {}).await;
    let owner = user(&pdp.db).await;
    let stranger = user(&pdp.db).await;
    let project = project(&pdp.db, owner, "team_open").await;

    let (status, text) = get(&pdp, "/healthz", None).await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, r#"{"status":"ok"}"#)
    );
    let (status, text) = get(&pdp, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    let ready: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["health"]["database"], true);

    // /v1/check
    let (status, decision) = post(
        &pdp,
        "/v1/check",
        Some(API_KEY),
        &body(owner, "project:share", project),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["policies"][0]["id"], "project.owner");
    assert_eq!(decision["cache_tier"], "l3");
    let token = decision["consistency_token"].as_str().unwrap().to_owned();
    let (_, decision) = post(
        &pdp,
        "/v1/check",
        Some(API_KEY),
        &body(stranger, "project:view", project),
    )
    .await;
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["deny_kind"], "no_permit");
    let mut with_token = body(owner, "project:view", project);
    with_token["consistency"] = json!({"at_least_as_fresh": token});
    let (status, decision) = post(&pdp, "/v1/check", Some(API_KEY), &with_token).await;
    assert_eq!(
        (status, decision["allowed"].clone()),
        (StatusCode::OK, json!(true))
    );

    // /v1/batch-check keeps order; a malformed item is an invalid decision.
    let batch = json!({"items": [
        body(owner, "project:view", project),
        {"principal": {"type": "User"}, "action": "project:view"},
        body(stranger, "project:delete", project),
    ]});
    let (status, decisions) = post(&pdp, "/v1/batch-check", Some(API_KEY), &batch).await;
    assert_eq!(status, StatusCode::OK);
    let decisions = decisions["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    assert_eq!(decisions[0]["allowed"], true);
    assert_eq!(decisions[1]["deny_kind"], "invalid");
    assert_eq!(decisions[2]["allowed"], false);

    // /v1/evaluate: Cedar's shapes.
    let call = json!({
        "principal": {"type": "User", "id": "alice"},
        "action": {"type": "Action", "id": "view"},
        "resource": {"type": "Photo", "id": "p"},
        "context": {},
        "policies": {"staticPolicies": "forbid(principal, action, resource) when { context.blocked };\npermit(principal, action, resource);"},
        "entities": []
    });
    let (status, answer) = post(&pdp, "/v1/evaluate", Some(API_KEY), &call).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["diagnostics"]["reason"], json!(["policy1"]));
    assert_eq!(
        answer["diagnostics"]["errors"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    let (status, error) = post(
        &pdp,
        "/v1/evaluate",
        Some(API_KEY),
        &json!({"principal": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT");

    // /v1/keys: a JWKS any edge can use.
    let (status, text) = get(&pdp, "/v1/keys", None).await;
    assert_eq!(status, StatusCode::OK);
    let jwks: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");

    // /v1/stores: admin only.
    let (status, _) = get(&pdp, "/v1/stores", Some(API_KEY)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, text) = get(&pdp, "/v1/stores", Some(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK);
    let stores: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stores["stores"][0]["name"], "velro");

    // /metrics: Prometheus text with per-route latency, decisions and cache tiers.
    let (status, text) = get(&pdp, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    for metric in [
        "velro_http_latency_us_bucket",
        "velro_decisions_total",
        "velro_cache_hits_total",
        "velro_audit_queue_depth",
        "velro_change_feed_lag_ms",
        "velro_policy_reloads",
    ] {
        assert!(text.contains(metric), "{metric} missing from /metrics");
    }
    pdp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_stable_error_codes() {
    let pdp = TestPdp::start(|c| c.max_request_bytes = 32 * 1024).await;
    let owner = user(&pdp.db).await;
    let project = project(&pdp.db, owner, "private").await;
    let good = body(owner, "project:view", project);

    let (status, error) = post(&pdp, "/v1/check", None, &good).await;
    assert_eq!(
        (status, error["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("UNAUTHENTICATED"))
    );
    let (status, error) = post(&pdp, "/v1/check", Some("wrong-key-0123456789"), &good).await;
    assert_eq!(
        (status, error["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("PERMISSION_DENIED"))
    );

    let mut bad_uuid = good.clone();
    bad_uuid["resource"]["id"] = json!("<script>");
    let mut unknown_store = good.clone();
    unknown_store["store"] = json!("elsewhere");
    let mut unknown_field = good.clone();
    unknown_field["admin"] = json!(true);
    let mut bad_token = good.clone();
    bad_token["consistency"] = json!({"at_least_as_fresh": "%%%"});
    for (name, request, expected) in [
        (
            "bad uuid",
            bad_uuid,
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ),
        (
            "unknown store",
            unknown_store,
            (StatusCode::NOT_FOUND, "NOT_FOUND"),
        ),
        (
            "unknown field",
            unknown_field,
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ),
        (
            "bad token",
            bad_token,
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ),
        (
            "not an object",
            json!([1, 2]),
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ),
    ] {
        let (status, error) = post(&pdp, "/v1/check", Some(API_KEY), &request).await;
        assert_eq!(
            (status, error["error"]["code"].as_str().unwrap()),
            expected,
            "{name}: {error}"
        );
    }
    let too_many = json!({"items": vec![good.clone(); 1001]});
    let (status, _) = post(&pdp, "/v1/batch-check", Some(API_KEY), &too_many).await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
        "{status}"
    );
    let huge = json!({"principal": {"type": "User", "id": "x".repeat(64 * 1024)}});
    let (status, _) = post(&pdp, "/v1/check", Some(API_KEY), &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, text) = get(&pdp, "/v2/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("NOT_FOUND"));

    // Still answering.
    let (status, decision) = post(&pdp, "/v1/check", Some(API_KEY), &good).await;
    assert_eq!(
        (status, decision["allowed"].clone()),
        (StatusCode::OK, json!(true))
    );
    pdp.stop().await;
}
