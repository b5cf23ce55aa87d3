//! The FAL provider against a local stub speaking FAL's queue API wire format (submit, status,
//! result, CDN download) on loopback.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use reqwest::StatusCode as Http;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::TestApi;

#[derive(Clone, Default)]
struct Stub {
    base: Arc<Mutex<String>>,
    /// What each submit carried.
    inputs: Arc<Mutex<Vec<Value>>>,
    /// Status polls per request.
    polls: Arc<Mutex<std::collections::HashMap<String, u32>>>,
    /// Whether any CDN download carried an Authorization header.
    cdn_saw_key: Arc<Mutex<bool>>,
}

fn tiny_png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 2, 2);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[255; 12]).unwrap();
    writer.finish().unwrap();
    out
}

async fn submit(
    State(stub): State<Stub>,
    Path((owner, app, rest)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Json(input): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Key fal-test-key") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "detail": "bad key" })),
        );
    }
    let id = format!("req-{}", uuid::Uuid::new_v4().simple());
    // The prompt decides the outcome of the stubbed run.
    let id = match input["prompt"].as_str() {
        Some("fail") => format!("fail-{id}"),
        Some("html") => format!("html-{id}"),
        _ => id,
    };
    stub.inputs
        .lock()
        .unwrap()
        .push(json!({ "path": format!("{owner}/{app}/{rest}"), "input": input }));
    let base = stub.base.lock().unwrap().clone();
    (
        StatusCode::OK,
        axum::Json(json!({
            "request_id": id,
            "status_url": format!("{base}/{owner}/{app}/requests/{id}/status"),
            "response_url": format!("{base}/{owner}/{app}/requests/{id}"),
            "cancel_url": format!("{base}/{owner}/{app}/requests/{id}/cancel"),
        })),
    )
}

async fn status(
    State(stub): State<Stub>,
    Path((_owner, _app, id)): Path<(String, String, String)>,
) -> axum::Json<Value> {
    let mut polls = stub.polls.lock().unwrap();
    let n = polls.entry(id).or_insert(0);
    *n += 1;
    let status = match *n {
        1 => json!({ "status": "IN_QUEUE", "queue_position": 1, "response_url": "" }),
        2 | 3 => json!({ "status": "IN_PROGRESS", "response_url": "" }),
        _ => json!({ "status": "COMPLETED", "response_url": "" }),
    };
    axum::Json(status)
}

async fn result(
    State(stub): State<Stub>,
    Path((_owner, _app, id)): Path<(String, String, String)>,
) -> (StatusCode, axum::Json<Value>) {
    let base = stub.base.lock().unwrap().clone();
    if id.starts_with("fail-") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({ "detail": "content policy" })),
        );
    }
    let file = if id.starts_with("html-") {
        "page.html"
    } else {
        "out.png"
    };
    (
        StatusCode::OK,
        axum::Json(
            json!({ "images": [{ "url": format!("{base}/cdn/{file}"), "content_type": "image/png" }], "seed": 1 }),
        ),
    )
}

async fn cdn(State(stub): State<Stub>, Path(file): Path<String>, headers: HeaderMap) -> Vec<u8> {
    if headers.contains_key("authorization") {
        *stub.cdn_saw_key.lock().unwrap() = true;
    }
    if file == "page.html" {
        b"<html><script>alert(1)</script></html>".to_vec()
    } else {
        tiny_png()
    }
}

async fn start_stub() -> (Stub, String) {
    let stub = Stub::default();
    let app = Router::new()
        .route("/cdn/{file}", get(cdn))
        .route("/{owner}/{app}/requests/{id}/status", get(status))
        .route("/{owner}/{app}/requests/{id}", get(result))
        .route("/{owner}/{app}/{*rest}", post(submit))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *stub.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (stub, base)
}

#[tokio::test]
async fn fal_generations_run_through_the_queue_api() {
    let (stub, base) = start_stub().await;
    let api = TestApi::start(move |c| {
        c.fal_key = Some(SecretString::from("fal-test-key"));
        c.fal_base_url = base;
        c.fal_poll_ms = 5;
        c.signup_credits = 200;
    })
    .await;
    let health = api.get("/health/detailed", None).await;
    assert_eq!(health.body["checks"]["providers"]["generation"], "fal");
    let user = api.register("user").await;
    let project = api.project(&user, json!({ "name": "p" })).await;

    let done = api.generate(&user, &project, "a red fox").await;
    assert_eq!(done["status"], "completed", "{done}");
    let inputs = stub.inputs.lock().unwrap().clone();
    assert_eq!(inputs[0]["path"], "fal-ai/flux-pro/v1.1-ultra");
    assert_eq!(inputs[0]["input"]["prompt"], "a red fox");
    assert_eq!(
        inputs[0]["input"]["aspect_ratio"], "1:1",
        "validated parameters are sent"
    );
    assert!(
        !*stub.cdn_saw_key.lock().unwrap(),
        "the key never leaves FAL's origin"
    );
    let urls = api
        .get(
            &format!(
                "/api/v1/generations/{}/media-urls",
                done["id"].as_str().unwrap()
            ),
            Some(&user.token),
        )
        .await;
    let image = api
        .client
        .get(urls.body["items"][0]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), Http::OK);
    assert_eq!(image.bytes().await.unwrap().as_ref(), tiny_png().as_slice());

    // A failed run and an output that is not media: both fail and are refunded.
    for prompt in ["fail", "html"] {
        let done = api.generate(&user, &project, prompt).await;
        assert_eq!(done["status"], "failed", "{prompt}: {done}");
    }
    let me = api.get("/api/v1/auth/me", Some(&user.token)).await;
    assert_eq!(
        me.body["credits"], 150,
        "only the completed generation is paid for"
    );
    api.stop().await;
}
