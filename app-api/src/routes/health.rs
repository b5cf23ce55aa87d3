//! `/health` (liveness), `/health/detailed` (database, PDP, Redis, providers; 503 when a
//! dependency is down) and `/metrics` (Prometheus; platform admins only, per the policies).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::AppState;
use crate::auth::User;
use crate::authz::{Ask, Freshness, Kind};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;

pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn detailed(State(state): State<AppState>) -> impl IntoResponse {
    let database = state.repo.database().ping().await.is_ok();
    let pdp = state.pdp.healthy().await;
    let redis = match state.redis.clone() {
        None => None,
        Some(mut conn) => Some(
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok(),
        ),
    };
    let healthy = database && pdp && redis.unwrap_or(true);
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let up = |ok: bool| if ok { "up" } else { "down" };
    (
        status,
        Json(json!({
            "status": if healthy { "ok" } else { "degraded" },
            "checks": {
                "database": up(database),
                "pdp": { "status": up(pdp), "embedded": state.settings.embedded_pdp },
                "redis": redis.map_or("not configured", up),
                "storage": state.media.backend(),
                "providers": {
                    "generation": state.runner.provider.name(),
                    "chat": match state.chat { crate::chat::ChatProvider::Local => "local", crate::chat::ChatProvider::Remote(_) => "openai-compatible" },
                },
            }
        })),
    )
}

pub(crate) async fn metrics(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<impl IntoResponse> {
    let ask = Ask::new("platform:read_metrics", Kind::Platform, uuid::Uuid::nil());
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        velro_pdp::telemetry::metrics().render(),
    ))
}
