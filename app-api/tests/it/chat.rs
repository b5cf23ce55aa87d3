//! Chat: sessions are their owner's alone; the offline assistant answers from the user's context;
//! the OpenAI-compatible provider is tested against a loopback stub speaking its streaming format.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::TestApi;

#[tokio::test]
async fn chat_sessions_are_private_and_the_local_assistant_helps() {
    let api = TestApi::start(|_| {}).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    api.project(&alice, json!({ "name": "Harbour nights" }))
        .await;

    let models = api.get("/api/v1/chat/models", None).await;
    assert_eq!(models.body["provider"], "local");
    let session = api
        .post(
            "/api/v1/chat/sessions",
            Some(&alice.token),
            json!({ "title": "ideas" }),
        )
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
    let id = session.body["id"].as_str().unwrap().to_owned();

    let reply = api
        .post(
            &format!("/api/v1/chat/sessions/{id}/messages"),
            Some(&alice.token),
            json!({ "content": "a detective in a noir alley" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let answer = reply.body["message"]["content"].as_str().unwrap();
    assert!(
        answer.contains("Film noir"),
        "suggests a matching style: {answer}"
    );
    assert!(
        answer.contains("Harbour nights"),
        "knows the user's projects: {answer}"
    );
    assert!(answer.contains("Draft:"), "{answer}");

    // Streaming: delta events, then `done` with the stored message.
    let streamed = api
        .client
        .post(format!(
            "{}/api/v1/chat/sessions/{id}/messages?stream=true",
            api.base
        ))
        .bearer_auth(&alice.token)
        .json(&json!({ "content": "make it moody at dusk" }))
        .send()
        .await
        .unwrap();
    assert!(
        streamed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = streamed.text().await.unwrap();
    assert!(
        text.contains("event: delta") && text.contains("event: done"),
        "{text}"
    );

    let history = api
        .get(&format!("/api/v1/chat/sessions/{id}"), Some(&alice.token))
        .await;
    let roles: Vec<&str> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);

    // Bob sees nothing of it.
    let path = format!("/api/v1/chat/sessions/{id}");
    assert_eq!(
        api.get(&path, Some(&bob.token)).await.status,
        StatusCode::NOT_FOUND
    );
    let send = api
        .post(
            &format!("{path}/messages"),
            Some(&bob.token),
            json!({ "content": "hi" }),
        )
        .await;
    assert_eq!(send.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/api/v1/chat/sessions", Some(&bob.token))
            .await
            .body["items"],
        json!([])
    );
    let ideas = api
        .get("/api/v1/chat/suggestions", Some(&alice.token))
        .await;
    assert!(ideas.body["items"].as_array().unwrap().len() >= 2);

    let deleted = api
        .send(Method::DELETE, &path, Some(&alice.token), None, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&path, Some(&alice.token)).await.status,
        StatusCode::NOT_FOUND
    );
    api.stop().await;
}

/// What the stub received: the Authorization header and the body.
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

#[derive(Clone, Default)]
struct Stub {
    requests: Seen,
}

/// `POST /chat/completions` with `stream: true`, answered as OpenAI-style SSE chunks.
async fn completions(
    State(stub): State<Stub>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    stub.requests.lock().unwrap().push((auth, body.clone()));
    let mut sse = String::new();
    for word in ["Try ", "rim ", "light."] {
        let chunk = json!({ "id": "c1", "object": "chat.completion.chunk", "model": body["model"],
            "choices": [{ "index": 0, "delta": { "content": word }, "finish_reason": null }] });
        sse.push_str(&format!("data: {chunk}\n\n"));
    }
    sse.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    axum::response::IntoResponse::into_response(([("content-type", "text/event-stream")], sse))
}

#[tokio::test]
async fn the_openai_compatible_provider_streams_from_its_endpoint() {
    let stub = Stub::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let api = TestApi::start(move |c| {
        c.chat_key = Some(SecretString::from("sk-test"));
        c.chat_base_url = base;
        c.chat_models = "test/model-a,test/model-b".into();
    })
    .await;
    let user = api.register("user").await;
    let models = api.get("/api/v1/chat/models", None).await;
    assert_eq!(
        models.body["items"],
        json!(["test/model-a", "test/model-b"])
    );
    let bad = api
        .post(
            "/api/v1/chat/sessions",
            Some(&user.token),
            json!({ "model": "gpt-evil" }),
        )
        .await;
    assert_eq!(bad.code(), "VALIDATION_ERROR");
    let session = api
        .post(
            "/api/v1/chat/sessions",
            Some(&user.token),
            json!({ "model": "test/model-b" }),
        )
        .await;
    let id = session.body["id"].as_str().unwrap();
    let reply = api
        .post(
            &format!("/api/v1/chat/sessions/{id}/messages"),
            Some(&user.token),
            json!({ "content": "how do I light a portrait?" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["message"]["content"], "Try rim light.");
    let requests = stub.requests.lock().unwrap().clone();
    assert_eq!(requests[0].0.as_deref(), Some("Bearer sk-test"));
    assert_eq!(requests[0].1["model"], "test/model-b");
    assert_eq!(requests[0].1["stream"], true);
    assert_eq!(requests[0].1["messages"][0]["role"], "system");
    assert_eq!(
        requests[0].1["messages"][1]["content"],
        "how do I light a portrait?"
    );
    api.stop().await;
}
