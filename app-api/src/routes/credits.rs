//! `/api/v1/credits`: balance, the ledger, pricing, purchases credited by a signed webhook exactly
//! once, and transfers to members of a team one administers (DESIGN §4, §8). Access is the PDP's
//! (`credits:view|purchase|transfer` on the credit account); the webhook is authenticated by its
//! signature, not by a user.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Page, Written, limit, written};
use crate::app::AppState;
use crate::auth::{User, now_secs};
use crate::authz::{Ask, Freshness, Kind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, parse_id, parse_opt_id};
use crate::models;
use crate::payments;
use crate::repo::credits::Credited;

/// 2000 credits = 1 USD, so 20 credits per cent.
pub const CREDITS_PER_USD: i64 = 2000;
const CREDITS_PER_CENT: i64 = CREDITS_PER_USD / 100;
/// Smallest and largest purchase, credits.
const PURCHASE_RANGE: (i64, i64) = (2_000, 2_000_000);

async fn require_account(
    state: &AppState,
    user: &User,
    owner: Uuid,
    action: &'static str,
    fresh: &Freshness,
) -> ApiResult<()> {
    let ask = Ask::new(action, Kind::CreditAccount, owner);
    state
        .pdp
        .require(user.principal(), "credits:view", ask, fresh)
        .await
}

pub(crate) async fn balance(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<Json<Value>> {
    require_account(&state, &user, user.id, "credits:view", &fresh).await?;
    Ok(Json(
        json!({ "balance": state.repo.balance(user.id).await? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// The caller's ledger, newest first.
pub(crate) async fn transactions(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Page<crate::repo::credits::TransactionRow>>> {
    let limit = limit(query.limit, 50, 200)?;
    let cursor = parse_opt_id("cursor", query.cursor.as_deref())?;
    require_account(&state, &user, user.id, "credits:view", &fresh).await?;
    let items = state
        .repo
        .transactions(user.id, cursor, i64::from(limit))
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// Model prices and the exchange rate (public).
pub(crate) async fn pricing() -> Json<Value> {
    let models: Vec<Value> = models::MODELS
        .iter()
        .map(|m| {
            json!({ "model_id": m.id, "name": m.name, "credits": m.cost,
                    "usd": m.cost as f64 / CREDITS_PER_USD as f64 })
        })
        .collect();
    Json(json!({
        "credits_per_usd": CREDITS_PER_USD,
        "models": models,
        "purchase": { "min_credits": PURCHASE_RANGE.0, "max_credits": PURCHASE_RANGE.1, "multiple_of": CREDITS_PER_CENT },
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPurchase {
    credits: i64,
}

/// Start a purchase: a pending record whose id the payment provider returns in its webhook as
/// `client_reference_id`.
pub(crate) async fn purchase(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<NewPurchase>,
) -> ApiResult<Written<Value>> {
    if !(PURCHASE_RANGE.0..=PURCHASE_RANGE.1).contains(&body.credits)
        || body.credits % CREDITS_PER_CENT != 0
    {
        return Err(ApiError::validation(
            "credits",
            format!(
                "credits must be {} to {} in steps of {CREDITS_PER_CENT}",
                PURCHASE_RANGE.0, PURCHASE_RANGE.1
            ),
        ));
    }
    require_account(&state, &user, user.id, "credits:purchase", &fresh).await?;
    let purchase = state
        .repo
        .create_purchase(user.id, body.credits, body.credits / CREDITS_PER_CENT)
        .await?;
    let mut body = json!(purchase);
    body["checkout"] = json!({
        "client_reference_id": purchase.id,
        "amount_total": purchase.amount_cents,
        "currency": purchase.currency,
    });
    Ok(Written::created(fresh, body))
}

pub(crate) async fn get_purchase(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id("purchase_id", &id)?;
    let purchase = state
        .repo
        .purchase(id)
        .await?
        .ok_or(ApiError::NotFound("purchase"))?;
    // A purchase is readable by whoever may view the account it credits.
    let ask = Ask::new("credits:view", Kind::CreditAccount, purchase.user_id);
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::NotFound("purchase"));
    }
    Ok(Json(json!(purchase)))
}

/// The payment provider's webhook. Only `checkout.session.completed` with `payment_status: paid`
/// credits anything; it is matched to the purchase by `client_reference_id`, must carry the
/// purchase's exact amount and currency, and is credited once however often it is delivered.
pub(crate) async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Some(secret) = &state.settings.webhook_secret else {
        return Err(ApiError::conflict(
            "PAYMENTS_NOT_CONFIGURED",
            "set STRIPE_WEBHOOK_SECRET to accept payment webhooks",
        ));
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthenticated("missing Stripe-Signature"))?;
    payments::verify(secret.expose_secret().as_bytes(), header, &body, now_secs()).map_err(
        |e| {
            tracing::warn!(reason = %e, "payment webhook refused");
            ApiError::Unauthenticated("invalid webhook signature")
        },
    )?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::validation("body", "not a JSON event"))?;
    let event_id = event["id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= 255)
        .ok_or_else(|| ApiError::validation("id", "the event has no id"))?;
    if event["type"] != "checkout.session.completed" {
        return Ok(Json(json!({ "received": true, "credited": false })));
    }
    let session = &event["data"]["object"];
    if session["payment_status"] != "paid" {
        return Ok(Json(json!({ "received": true, "credited": false })));
    }
    let purchase = session["client_reference_id"]
        .as_str()
        .ok_or_else(|| ApiError::validation("client_reference_id", "missing"))?;
    let purchase = parse_id("client_reference_id", purchase)?;
    let purchase = state
        .repo
        .purchase(purchase)
        .await?
        .ok_or(ApiError::NotFound("purchase"))?;
    if session["amount_total"].as_i64() != Some(purchase.amount_cents)
        || session["currency"].as_str() != Some(purchase.currency.as_str())
    {
        tracing::warn!(purchase = %purchase.id, event = event_id, "payment amount does not match the purchase");
        return Err(ApiError::conflict(
            "AMOUNT_MISMATCH",
            "the paid amount does not match the purchase",
        ));
    }
    let credited = state.repo.complete_purchase(&purchase, event_id).await?;
    if credited == Credited::Now {
        state.repo.wrote().await?;
        tracing::info!(purchase = %purchase.id, credits = purchase.credits, "purchase credited");
    }
    Ok(Json(
        json!({ "received": true, "credited": credited == Credited::Now }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTransfer {
    recipient_id: String,
    team_id: String,
    amount: i64,
}

/// Send credits to a member of a team in which the caller is admin or owner (the policy's rule).
pub(crate) async fn transfer(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<NewTransfer>,
) -> ApiResult<Written<Value>> {
    let recipient = parse_id("recipient_id", &body.recipient_id)?;
    let team = parse_id("team_id", &body.team_id)?;
    if !(1..=1_000_000_000).contains(&body.amount) {
        return Err(ApiError::validation(
            "amount",
            "amount must be 1 to 1000000000",
        ));
    }
    if recipient == user.id {
        return Err(ApiError::validation(
            "recipient_id",
            "cannot transfer to yourself",
        ));
    }
    let ask = Ask::new("credits:transfer", Kind::CreditAccount, user.id).with_context(json!({
        "team": { "type": "Velro::Team", "id": team.to_string() },
        "recipient": { "type": "Velro::User", "id": recipient.to_string() },
    }));
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    let balance = state.repo.transfer(user.id, recipient, body.amount).await?;
    let fresh = written(&state, &fresh).await?;
    Ok(Written::created(
        fresh,
        json!({ "recipient_id": recipient, "team_id": team, "amount": body.amount, "balance": balance }),
    ))
}
