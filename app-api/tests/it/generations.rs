//! Generations end to end: the local provider's real output behind signed URLs, progress events,
//! credits (charged once, refused when short, idempotent), provenance and media access rules.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::TestApi;

#[tokio::test]
async fn from_registration_to_a_signed_image() {
    let api = TestApi::start(|_| {}).await;
    let alice = api.register("alice").await;
    let me = api.get("/api/v1/auth/me", Some(&alice.token)).await;
    assert_eq!(me.body["credits"], 1000);
    let models = api.get("/api/v1/models", None).await;
    assert_eq!(models.status, StatusCode::OK);
    assert!(models.body["items"].as_array().unwrap().len() >= 7);

    let project = api
        .project(&alice, json!({ "name": "Gallery", "visibility": "public" }))
        .await;
    let created = api
        .post(
            "/api/v1/generations",
            Some(&alice.token),
            json!({ "model_id": "flux-pro/v1.1-ultra", "prompt": "a lighthouse", "project_id": project,
                    "parameters": { "aspect_ratio": "16:9" } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    assert!(created.consistency().is_some());
    let id = created.body["id"].as_str().unwrap().to_owned();

    // Progress as server-sent events, ending with `completed`.
    let events = api
        .client
        .get(format!("{}/api/v1/generations/{id}/events", api.base))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = events.text().await.unwrap();
    assert!(text.contains("event: completed"), "{text}");
    let done = api.wait_finished(&alice, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["progress"], 100);
    let me = api.get("/api/v1/auth/me", Some(&alice.token)).await;
    assert_eq!(me.body["credits"], 950, "charged exactly once");

    // Signed URLs, minted by the PDP; anonymous callers may view media of a public project.
    for token in [Some(alice.token.as_str()), None] {
        let urls = api
            .get(&format!("/api/v1/generations/{id}/media-urls"), token)
            .await;
        assert_eq!(urls.status, StatusCode::OK, "{}", urls.body);
        let url = urls.body["items"][0]["url"].as_str().unwrap().to_owned();
        let image = api.client.get(&url).send().await.unwrap();
        assert_eq!(image.status(), StatusCode::OK);
        assert_eq!(image.headers()["content-type"], "image/png");
        let bytes = image.bytes().await.unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

        // Any change to the URL is refused.
        let tampered = url.replace("disp=inline", "disp=attachment");
        assert_eq!(
            api.client.get(&tampered).send().await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        let (head, sig) = url.rsplit_once("sig=").unwrap();
        let flipped = format!(
            "{head}sig={}{}",
            if sig.starts_with('A') { 'B' } else { 'A' },
            &sig[1..]
        );
        assert_eq!(
            api.client.get(&flipped).send().await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        let other_key = url.replacen("/media/generations/", "/media/generations/x", 1);
        assert_eq!(
            api.client.get(&other_key).send().await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        let unsigned = url.split('?').next().unwrap().to_owned();
        assert_eq!(
            api.client.get(&unsigned).send().await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }
    // Downloads are not for the public.
    let download = api
        .get(
            &format!("/api/v1/generations/{id}/media-urls?disposition=attachment"),
            None,
        )
        .await;
    assert_eq!(download.status, StatusCode::FORBIDDEN);
    let download = api
        .get(
            &format!("/api/v1/generations/{id}/media-urls?disposition=attachment"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(download.status, StatusCode::OK);
    let file = api
        .client
        .get(download.body["items"][0]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        file.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    api.stop().await;
}

#[tokio::test]
async fn credits_are_charged_once_and_never_overdrawn() {
    let api = TestApi::start(|c| c.signup_credits = 120).await;
    let user = api.register("user").await;
    let project = api.project(&user, json!({ "name": "p" })).await;
    let body = json!({ "model_id": "flux-pro/v1.1-ultra", "prompt": "p", "project_id": project });

    // Idempotency: the same key twice is one generation, one charge.
    let first = api
        .send(
            Method::POST,
            "/api/v1/generations",
            Some(&user.token),
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = api
        .send(
            Method::POST,
            "/api/v1/generations",
            Some(&user.token),
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], first.body["id"]);

    let second = api
        .post("/api/v1/generations", Some(&user.token), body.clone())
        .await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    // 120 - 50 - 50 = 20 left: the next one is refused and nothing is charged.
    let third = api
        .post("/api/v1/generations", Some(&user.token), body.clone())
        .await;
    assert_eq!(third.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(third.code(), "INSUFFICIENT_CREDITS");
    assert_eq!(third.body["error"]["details"]["balance"], 20);
    let me = api.get("/api/v1/auth/me", Some(&user.token)).await;
    assert_eq!(me.body["credits"], 20);
    api.stop().await;
}

#[tokio::test]
async fn generations_follow_project_access_and_lineage() {
    let api = TestApi::start(|_| {}).await;
    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let carol = api.register("carol").await;
    let team = api.team(&alice, "Studio").await;
    api.add_member(&alice, &team, &bob, "contributor").await;

    let shared = api
        .project(
            &alice,
            json!({ "name": "shared", "visibility": "team_open", "team_id": team }),
        )
        .await;
    let private = api.project(&alice, json!({ "name": "private" })).await;

    // A contributor may create in the shared project, not in the private one (404: invisible).
    let base = api.generate(&alice, &shared, "base image").await;
    let derived = api
        .post(
            "/api/v1/generations",
            Some(&bob.token),
            json!({ "model_id": "flux-pro/v1.1-ultra", "prompt": "variation", "project_id": shared,
                    "parent_generation_id": base["id"] }),
        )
        .await;
    assert_eq!(derived.status, StatusCode::ACCEPTED, "{}", derived.body);
    let derived_id = derived.body["id"].as_str().unwrap().to_owned();
    api.wait_finished(&bob, &derived_id).await;
    let refused = api
        .post(
            "/api/v1/generations",
            Some(&bob.token),
            json!({ "model_id": "flux-pro/v1.1-ultra", "prompt": "x", "project_id": private }),
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);

    // A contributor may delete their own generation but not alice's.
    let path = format!("/api/v1/generations/{}", base["id"].as_str().unwrap());
    let reply = api
        .send(Method::DELETE, &path, Some(&bob.token), None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Strangers see nothing.
    assert_eq!(
        api.get(&path, Some(&carol.token)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get(&path, None).await.status, StatusCode::NOT_FOUND);

    // Provenance shows the lineage the caller may see.
    let prov = api
        .get(
            &format!("/api/v1/generations/{derived_id}/provenance"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(prov.status, StatusCode::OK, "{}", prov.body);
    assert_eq!(prov.body["ancestors"][0]["id"], base["id"]);

    // Lists: bob sees both generations in the shared project; carol none.
    let list = api.get("/api/v1/generations", Some(&bob.token)).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        2,
        "{}",
        list.body
    );
    let list = api.get("/api/v1/generations", Some(&carol.token)).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 0);
    let gallery = api
        .get(
            &format!("/api/v1/projects/{shared}/gallery"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(gallery.body["items"].as_array().unwrap().len(), 2);

    // Bob deletes his own.
    let reply = api
        .send(
            Method::DELETE,
            &format!("/api/v1/generations/{derived_id}"),
            Some(&bob.token),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    api.stop().await;
}

/// 50 simultaneous creates against a balance for exactly 7: 7 succeed, the balance ends at 0,
/// never below, and the ledger adds up.
pub async fn no_double_spend(api: &TestApi) {
    let user = api.register("spender").await;
    let project = api.project(&user, json!({ "name": "p" })).await;
    let body = json!({ "model_id": "imagen4/preview/ultra", "prompt": "p", "project_id": project });
    let requests =
        (0..50).map(|_| api.post("/api/v1/generations", Some(&user.token), body.clone()));
    let replies = futures::future::join_all(requests).await;
    let accepted = replies
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .count();
    let refused = replies
        .iter()
        .filter(|r| r.status == StatusCode::PAYMENT_REQUIRED)
        .count();
    assert_eq!(
        (accepted, refused),
        (7, 43),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let me = api.get("/api/v1/auth/me", Some(&user.token)).await;
    assert_eq!(me.body["credits"], 0);

    let pool = api
        .running
        .as_ref()
        .unwrap()
        .state
        .repo
        .database()
        .pool()
        .clone();
    let rows = sqlx::query(
        "SELECT kind, amount, balance_after FROM credit_transactions WHERE user_id = $1",
    )
    .bind(&user.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let sum: i64 = rows
        .iter()
        .map(|r| sqlx::Row::get::<i64, _>(r, "amount"))
        .sum();
    assert_eq!(sum, 0, "grant minus seven charges");
    assert_eq!(rows.len(), 8);
    assert!(
        rows.iter()
            .all(|r| sqlx::Row::get::<i64, _>(r, "balance_after") >= 0)
    );
}

#[tokio::test]
async fn concurrent_creates_never_overdraw_on_sqlite() {
    let api = TestApi::start(|c| c.signup_credits = 7 * 45).await;
    no_double_spend(&api).await;
    api.stop().await;
}

#[tokio::test]
async fn a_failed_generation_is_refunded_exactly_once() {
    // A slow provider keeps the generation unfinished while the test fails it.
    let api = TestApi::start(|c| {
        c.signup_credits = 100;
        c.local_step_ms = 2_000;
    })
    .await;
    let user = api.register("user").await;
    let project = api.project(&user, json!({ "name": "p" })).await;
    let created = api
        .post(
            "/api/v1/generations",
            Some(&user.token),
            json!({ "model_id": "flux-pro/v1.1-ultra", "prompt": "p", "project_id": project }),
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED);
    let id: uuid::Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    let repo = api.running.as_ref().unwrap().state.repo.clone();
    assert_eq!(repo.balance(user.id.parse().unwrap()).await.unwrap(), 50);
    assert!(repo.fail_generation(id, "provider down").await.unwrap());
    assert!(
        !repo.fail_generation(id, "provider down").await.unwrap(),
        "refunded once"
    );
    assert_eq!(repo.balance(user.id.parse().unwrap()).await.unwrap(), 100);
    let done = api.wait_finished(&user, &id.to_string()).await;
    assert_eq!(done["status"], "failed");
    // A finished generation cannot be completed later by a late provider.
    assert!(
        !repo
            .complete_generation(
                id,
                user.id.parse().unwrap(),
                "generations/x/y.png",
                "image/png",
                b"x"
            )
            .await
            .unwrap()
    );
    api.stop().await;
}

#[tokio::test]
async fn batches_answer_each_item_on_its_own() {
    let api = TestApi::start(|c| c.signup_credits = 100).await;
    let user = api.register("user").await;
    let other = api.register("other").await;
    let mine = api.project(&user, json!({ "name": "mine" })).await;
    let theirs = api.project(&other, json!({ "name": "theirs" })).await;
    let item = |project: &str| json!({ "model_id": "flux-pro/v1.1-ultra", "prompt": "p", "project_id": project });
    let reply = api
        .post(
            "/api/v1/generations/batch",
            Some(&user.token),
            json!({ "items": [item(&mine), item(&theirs), { "model_id": "nope", "prompt": "p", "project_id": mine }, item(&mine), item(&mine)] }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let statuses: Vec<i64> = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_i64().unwrap())
        .collect();
    // Two charged at 50 each; the invisible project is 404, the bad model 400, the last 402.
    assert_eq!(statuses, [202, 404, 400, 202, 402]);
    assert!(reply.consistency().is_some());
    let too_many = json!({ "items": (0..11).map(|_| item(&mine)).collect::<Vec<_>>() });
    let reply = api
        .post("/api/v1/generations/batch", Some(&user.token), too_many)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    api.stop().await;
}
