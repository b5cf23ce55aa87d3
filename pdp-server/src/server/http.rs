//! The HTTP surface (DESIGN §7): health, readiness, Prometheus metrics, a JSON mirror of
//! `Check`/`BatchCheck`, Cedar-shaped inline evaluation, the JWKS of the media URL keys and the
//! store list. One error shape: `{"error": {"code": "...", "message": "..."}}`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Code;
use velro_engine::consistency::{Consistency, ConsistencyToken};
use velro_engine::decision::{self, EntityInput};

use super::Shared;
use super::auth::{AuthError, Caller};
use super::convert;

/// An HTTP error in the one shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }
}

impl From<velro_engine::Error> for ApiError {
    fn from(error: velro_engine::Error) -> Self {
        let (code, message) = convert::classify(&error);
        Self::from_code(code, message)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::from_code(status.code(), status.message().to_owned())
    }
}

impl ApiError {
    fn from_code(code: Code, message: String) -> Self {
        let (status, name) = match code {
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        Self::new(status, name, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        (self.status, body).into_response()
    }
}

/// The routes, with the shared state.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/check", post(check))
        .route("/v1/batch-check", post(batch_check))
        .route("/v1/evaluate", post(evaluate))
        .route("/v1/keys", get(keys))
        .route("/v1/stores", get(stores))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
        .layer(axum::middleware::from_fn(observe))
        .with_state(shared)
}

/// Latency per route template.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics::histogram!("velro_http_latency_us", "route" => route.clone())
        .record(started.elapsed().as_micros() as f64);
    metrics::counter!("velro_http_requests_total", "route" => route, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}

impl Shared {
    fn admit_http(
        &self,
        headers: &HeaderMap,
        admin: bool,
    ) -> Result<(Caller, tokio::sync::OwnedSemaphorePermit), ApiError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let caller = self.keys.authenticate(header, admin).map_err(|e| match e {
            AuthError::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "missing `authorization: Bearer <key>`",
            ),
            AuthError::Denied => ApiError::new(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "this key may not make this call",
            ),
        })?;
        let permit = self.limits.acquire(&caller).ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "too many concurrent calls from this caller",
            )
        })?;
        Ok((caller, permit))
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let health = shared.engine.health().await;
    let status = if health.ready() && !shared.draining() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": status == StatusCode::OK, "health": health})),
    )
        .into_response()
}

async fn metrics(State(shared): State<Shared>) -> Response {
    shared.publish_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityJson {
    r#type: String,
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyJson {
    #[serde(default)]
    minimize_latency: Option<bool>,
    #[serde(default)]
    at_least_as_fresh: Option<String>,
    #[serde(default)]
    fully_consistent: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckJson {
    #[serde(default)]
    store: Option<String>,
    principal: EntityJson,
    action: String,
    resource: EntityJson,
    #[serde(default)]
    context: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    justification: Option<String>,
    #[serde(default)]
    consistency: Option<ConsistencyJson>,
    #[serde(default)]
    entities: Option<Value>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    client_ip: Option<String>,
}

impl CheckJson {
    fn into_request(self) -> Result<decision::CheckRequest, ApiError> {
        let consistency = match self.consistency {
            None => Consistency::MinimizeLatency,
            Some(c) => match (c.minimize_latency, c.at_least_as_fresh, c.fully_consistent) {
                (_, Some(token), None | Some(false)) => Consistency::AtLeastAsFresh(
                    ConsistencyToken::parse(&token)
                        .map_err(|e| ApiError::invalid(e.to_string()))?,
                ),
                (_, None, Some(true)) => Consistency::FullyConsistent,
                (_, None, _) => Consistency::MinimizeLatency,
                _ => {
                    return Err(ApiError::invalid(
                        "`consistency` takes one of minimize_latency, at_least_as_fresh, fully_consistent",
                    ));
                }
            },
        };
        let caller = convert::caller(
            self.request_id.unwrap_or_default(),
            self.client_ip.as_deref().unwrap_or(""),
        )?;
        Ok(decision::CheckRequest {
            store: self.store,
            principal: EntityInput::new(self.principal.r#type, self.principal.id),
            action: self.action,
            resource: EntityInput::new(self.resource.r#type, self.resource.id),
            context: self.context.unwrap_or_default(),
            justification: self.justification,
            consistency,
            entities: self.entities,
            caller,
        })
    }
}

async fn check(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<decision::Decision>, ApiError> {
    let (_caller, _permit) = shared.admit_http(&headers, false)?;
    let request = parse::<CheckJson>(&body)?.into_request()?;
    Ok(Json(shared.engine.check(request).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchJson {
    items: Vec<Value>,
}

async fn batch_check(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (_caller, _permit) = shared.admit_http(&headers, false)?;
    let batch: BatchJson = parse(&body)?;
    let max = shared.engine.config().max_batch;
    if batch.items.len() > max {
        return Err(ApiError::invalid(format!(
            "a batch holds at most {max} items, got {}",
            batch.items.len()
        )));
    }
    let mut parsed = Vec::new();
    let mut slots: Vec<Option<Value>> = Vec::new();
    for item in batch.items {
        match serde_json::from_value::<CheckJson>(item)
            .map_err(|e| ApiError::invalid(e.to_string()))
            .and_then(CheckJson::into_request)
        {
            Ok(request) => {
                parsed.push(request);
                slots.push(None);
            }
            Err(e) => slots.push(Some(json!({
                "allowed": false, "deny_kind": "invalid", "error": e.message
            }))),
        }
    }
    let mut decided = shared.engine.batch_check(&parsed).await?.into_iter();
    let decisions: Vec<Value> = slots
        .into_iter()
        .map(|slot| match slot {
            Some(invalid) => invalid,
            None => match decided.next() {
                Some(Ok(d)) => serde_json::to_value(d).unwrap_or(Value::Null),
                Some(Err(e)) => {
                    let e = ApiError::from(e);
                    json!({"allowed": false, "deny_kind": "invalid", "error": e.message})
                }
                None => json!({"allowed": false, "error": "not decided"}),
            },
        })
        .collect();
    Ok(Json(json!({ "decisions": decisions })))
}

async fn evaluate(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (_caller, _permit) = shared.admit_http(&headers, false)?;
    let call: Value = parse(&body)?;
    let answer = velro_engine::evaluate::evaluate(call)?;
    Ok(Json(json!({
        "decision": answer.decision,
        "diagnostics": answer.diagnostics,
    })))
}

async fn keys(State(shared): State<Shared>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(shared.engine.signer().jwks()),
    )
        .into_response()
}

async fn stores(State(shared): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (_caller, _permit) = shared.admit_http(&headers, true)?;
    let stores: Vec<Value> = shared
        .engine
        .stores()
        .statuses()
        .into_iter()
        .map(|(name, status)| {
            json!({
                "name": name,
                "policy_version": status.current.as_ref().map(|s| s.version().to_owned()),
                "policy_count": status.current.as_ref().map_or(0, |s| s.policy_info().count()),
                "last_error": status.last_error.as_ref().map(|e| json!({
                    "message": e.message,
                    "diagnostics": e.diagnostics,
                })),
            })
        })
        .collect();
    Ok(Json(json!({ "stores": stores })))
}
