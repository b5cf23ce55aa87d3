//! Style stacks: the built-in library for everyone (anonymous included), private stacks for their
//! owner alone, apply with per-model adaptation, and generations created with a style.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::TestApi;

#[tokio::test]
async fn style_stacks_follow_the_sharing_rules_and_adapt_prompts() {
    let api = TestApi::start(|_| {}).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;

    // The library: every tier, visible anonymously.
    let library = api.get("/api/v1/style-stacks", None).await;
    assert_eq!(library.status, StatusCode::OK, "{}", library.body);
    let builtins = library.body["items"].as_array().unwrap();
    assert!(builtins.len() >= 8);
    for tier in ["basic", "enhanced", "signature"] {
        assert!(builtins.iter().any(|s| s["tier"] == tier), "{tier}");
    }
    let signature = api.get("/api/v1/style-stacks?tier=signature", None).await;
    assert!(
        signature.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["tier"] == "signature")
    );
    let noir = builtins.iter().find(|s| s["name"] == "Film noir").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Apply works offline, anonymously, and adapts per model.
    let applied = api
        .post(
            &format!("/api/v1/style-stacks/{noir}/apply"),
            None,
            json!({ "prompt": "a detective in the rain", "model_id": "veo3" }),
        )
        .await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.body);
    let prompt = applied.body["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("film noir still, a detective in the rain"),
        "{prompt}"
    );
    assert!(prompt.contains("push-in"), "video adaptation: {prompt}");

    // A private stack is its owner's alone; a public one everybody's to view and use, not edit.
    let created = api
        .post(
            "/api/v1/style-stacks",
            Some(&alice.token),
            json!({ "name": "Alice's look", "tier": "enhanced",
                    "definition": { "prefix": "in alice's style", "models": { "fal-ai/veo3": "with ambient sound" } } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let mine = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/style-stacks/{mine}");
    assert_eq!(
        api.get(&path, Some(&alice.token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&path, Some(&bob.token)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get(&path, None).await.status, StatusCode::NOT_FOUND);
    let listed = api.get("/api/v1/style-stacks", Some(&bob.token)).await;
    assert!(
        !listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == mine.as_str())
    );

    let shared = api
        .send(
            Method::PATCH,
            &path,
            Some(&alice.token),
            Some(json!({ "public": true })),
            &[],
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{}", shared.body);
    let token = shared.consistency().unwrap();
    let seen = api
        .send(
            Method::GET,
            &path,
            Some(&bob.token),
            None,
            &[("x-velro-consistency", &token)],
        )
        .await;
    assert_eq!(seen.status, StatusCode::OK);
    let edit = api
        .send(
            Method::PATCH,
            &path,
            Some(&bob.token),
            Some(json!({ "name": "mine now" })),
            &[],
        )
        .await;
    assert_eq!(edit.status, StatusCode::FORBIDDEN);
    let delete = api
        .send(Method::DELETE, &path, Some(&bob.token), None, &[])
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    // Built-ins belong to nobody: nobody edits them.
    let edit = api
        .send(
            Method::PATCH,
            &format!("/api/v1/style-stacks/{noir}"),
            Some(&alice.token),
            Some(json!({ "name": "x" })),
            &[],
        )
        .await;
    assert_eq!(edit.status, StatusCode::FORBIDDEN);

    // A generation created with a style stores the adapted prompt and counts the use.
    let project = api.project(&bob, json!({ "name": "p" })).await;
    let generation = api
        .post(
            "/api/v1/generations",
            Some(&bob.token),
            json!({ "model_id": "veo3", "prompt": "a harbour at night", "project_id": project, "style_stack_id": mine }),
        )
        .await;
    assert_eq!(
        generation.status,
        StatusCode::ACCEPTED,
        "{}",
        generation.body
    );
    assert_eq!(
        generation.body["prompt"],
        "in alice's style, a harbour at night, with ambient sound"
    );
    assert_eq!(generation.body["style_stack_id"], mine.as_str());
    let stack = api.get(&path, Some(&alice.token)).await;
    assert_eq!(stack.body["usage_count"], 1);

    // Hostile definitions are refused.
    let bad = api
        .post(
            "/api/v1/style-stacks",
            Some(&alice.token),
            json!({ "name": "x", "tier": "ultra", "definition": {} }),
        )
        .await;
    assert_eq!(bad.code(), "VALIDATION_ERROR");
    let bad = api
        .post(
            "/api/v1/style-stacks",
            Some(&alice.token),
            json!({ "name": "x", "tier": "basic", "definition": { "exec": "rm -rf /" } }),
        )
        .await;
    assert_eq!(bad.code(), "VALIDATION_ERROR");
    api.stop().await;
}
