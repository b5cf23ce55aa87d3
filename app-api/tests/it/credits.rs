//! Credits: balance and ledger, purchases credited once by a signed webhook, transfers within a
//! team one administers.

use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use velro_api::payments;

use crate::support::{Reply, TestApi};

const SECRET: &str = "whsec_test_0123456789";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn deliver(api: &TestApi, event: &Value, secret: &str, at: i64) -> Reply {
    let body = serde_json::to_vec(event).unwrap();
    let signature = format!("t={at},v1={}", payments::sign(secret.as_bytes(), at, &body));
    let response = api
        .client
        .post(format!("{}/api/v1/credits/webhook", api.base))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        body,
        headers,
    }
}

fn paid(event_id: &str, purchase: &str, cents: i64) -> Value {
    json!({
        "id": event_id,
        "type": "checkout.session.completed",
        "data": { "object": {
            "client_reference_id": purchase, "amount_total": cents, "currency": "usd", "payment_status": "paid"
        } }
    })
}

#[tokio::test]
async fn purchases_are_credited_exactly_once() {
    let api = TestApi::start(|c| {
        c.signup_credits = 0;
        c.stripe_webhook_secret = Some(SecretString::from(SECRET));
    })
    .await;
    let user = api.register("buyer").await;
    let other = api.register("other").await;
    let pricing = api.get("/api/v1/credits/pricing", None).await;
    assert_eq!(pricing.body["credits_per_usd"], 2000);

    let bad = api
        .post(
            "/api/v1/credits/purchases",
            Some(&user.token),
            json!({ "credits": 2001 }),
        )
        .await;
    assert_eq!(bad.code(), "VALIDATION_ERROR");
    let purchase = api
        .post(
            "/api/v1/credits/purchases",
            Some(&user.token),
            json!({ "credits": 4000 }),
        )
        .await;
    assert_eq!(purchase.status, StatusCode::CREATED, "{}", purchase.body);
    assert_eq!(purchase.body["amount_cents"], 200);
    assert_eq!(purchase.body["status"], "pending");
    let id = purchase.body["id"].as_str().unwrap().to_owned();
    // Somebody else's purchase is invisible.
    let peek = api
        .get(
            &format!("/api/v1/credits/purchases/{id}"),
            Some(&other.token),
        )
        .await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);

    let event = paid("evt_1", &id, 200);
    // Forged, stale and tampered deliveries change nothing.
    assert_eq!(
        deliver(&api, &event, "whsec_wrong", now()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        deliver(&api, &event, SECRET, now() - 3600).await.status,
        StatusCode::UNAUTHORIZED
    );
    let body = serde_json::to_vec(&event).unwrap();
    let signature = format!(
        "t={},v1={}",
        now(),
        payments::sign(SECRET.as_bytes(), now(), &body)
    );
    let tampered = api
        .client
        .post(format!("{}/api/v1/credits/webhook", api.base))
        .header("stripe-signature", signature)
        .body(serde_json::to_vec(&paid("evt_1", &id, 99_999)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), StatusCode::UNAUTHORIZED);
    let wrong_amount = deliver(&api, &paid("evt_0", &id, 1), SECRET, now()).await;
    assert_eq!(wrong_amount.code(), "AMOUNT_MISMATCH");
    let balance = api.get("/api/v1/credits/balance", Some(&user.token)).await;
    assert_eq!(balance.body["balance"], 0);

    // The real one, delivered three times (and once more under another event id).
    for (n, event_id) in ["evt_1", "evt_1", "evt_1", "evt_2"].iter().enumerate() {
        let reply = deliver(&api, &paid(event_id, &id, 200), SECRET, now()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["credited"], n == 0);
    }
    let balance = api.get("/api/v1/credits/balance", Some(&user.token)).await;
    assert_eq!(balance.body["balance"], 4000);
    let ledger = api
        .get("/api/v1/credits/transactions", Some(&user.token))
        .await;
    let items = ledger.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["kind"], "purchase");
    assert_eq!(items[0]["balance_after"], 4000);
    let status = api
        .get(
            &format!("/api/v1/credits/purchases/{id}"),
            Some(&user.token),
        )
        .await;
    assert_eq!(status.body["status"], "completed");
    api.stop().await;
}

#[tokio::test]
async fn transfers_follow_the_team_rule() {
    let api = TestApi::start(|c| c.signup_credits = 100).await;
    let owner = api.register("owner").await;
    let member = api.register("member").await;
    let outsider = api.register("outsider").await;
    let team = api.team(&owner, "Studio").await;
    api.add_member(&owner, &team, &member, "viewer").await;
    let send = |from: &str, to: &str, amount: i64| {
        let token = from.to_owned();
        let body = json!({ "recipient_id": to, "team_id": team, "amount": amount });
        let api = &api;
        async move {
            api.send(
                Method::POST,
                "/api/v1/credits/transfers",
                Some(&token),
                Some(body),
                &[],
            )
            .await
        }
    };
    let ok = send(&owner.token, &member.id, 30).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    assert_eq!(ok.body["balance"], 70);
    // A viewer is not an admin of the team; an outsider is not a member to receive.
    assert_eq!(
        send(&member.token, &owner.id, 1).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&owner.token, &outsider.id, 1).await.status,
        StatusCode::FORBIDDEN
    );
    let short = send(&owner.token, &member.id, 71).await;
    assert_eq!(short.code(), "INSUFFICIENT_CREDITS");
    assert_eq!(
        send(&owner.token, &owner.id, 1).await.status,
        StatusCode::BAD_REQUEST
    );
    let member_balance = api
        .get("/api/v1/credits/balance", Some(&member.token))
        .await;
    assert_eq!(member_balance.body["balance"], 130);
    let ledger = api
        .get("/api/v1/credits/transactions", Some(&member.token))
        .await;
    assert_eq!(ledger.body["items"][0]["kind"], "transfer_in");
    api.stop().await;
}

#[tokio::test]
async fn webhooks_are_refused_when_payments_are_not_configured() {
    let api = TestApi::start(|_| {}).await;
    let reply = deliver(
        &api,
        &paid("evt", &uuid::Uuid::now_v7().to_string(), 1),
        SECRET,
        now(),
    )
    .await;
    assert_eq!(reply.code(), "PAYMENTS_NOT_CONFIGURED");
    api.stop().await;
}
