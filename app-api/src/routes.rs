//! The HTTP surface: one module per resource under `/api/v1`, plus media, health and metrics.
//! Shared response shapes live here: `{items, next_cursor}` pages and write responses carrying the
//! write's consistency token in `X-Velro-Consistency`.

pub mod auth;
pub mod chat;
pub mod credits;
pub mod generations;
pub mod health;
pub mod media;
pub mod projects;
pub mod storage;
pub mod styles;
pub mod teams;
pub mod users;

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;

use crate::app::AppState;
use crate::authz::{CONSISTENCY_HEADER, Freshness};
use crate::error::{ApiError, ApiResult};

/// A page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A list that is never paginated.
    pub fn complete(items: Vec<T>) -> Self {
        Self {
            items,
            next_cursor: None,
        }
    }
}

/// A response to a write: status, body, and the consistency token of the write.
#[derive(Debug)]
pub struct Written<T> {
    status: StatusCode,
    fresh: Freshness,
    body: Option<T>,
}

impl<T> Written<T> {
    /// 200 with a body.
    pub fn ok(fresh: Freshness, body: T) -> Self {
        Self {
            status: StatusCode::OK,
            fresh,
            body: Some(body),
        }
    }

    /// 201 with a body.
    pub fn created(fresh: Freshness, body: T) -> Self {
        Self {
            status: StatusCode::CREATED,
            fresh,
            body: Some(body),
        }
    }

    /// 202 with a body.
    pub fn accepted(fresh: Freshness, body: T) -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            fresh,
            body: Some(body),
        }
    }

    /// 204.
    pub fn no_content(fresh: Freshness) -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            fresh,
            body: None,
        }
    }
}

impl<T: Serialize> IntoResponse for Written<T> {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, axum::Json(body)).into_response(),
            None => self.status.into_response(),
        };
        if let Some(token) = self.fresh.header()
            && let Ok(value) = HeaderValue::from_str(&token)
        {
            response.headers_mut().insert(CONSISTENCY_HEADER, value);
        }
        response
    }
}

/// The freshness after the caller's committed write: at least the current data revision, which
/// also becomes this instance's latest write.
pub async fn written(state: &AppState, fresh: &Freshness) -> ApiResult<Freshness> {
    Ok(fresh.after_write(state.repo.wrote().await?))
}

/// Parse a `limit` query parameter: 1 to `max`, `default` when absent.
pub fn limit(value: Option<u32>, default: u32, max: u32) -> ApiResult<u32> {
    match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation(
            "limit",
            format!("limit must be 1 to {max}"),
        )),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// Every route; uploads may be up to `max_file_bytes` (other bodies keep the global limit).
pub fn router(max_file_bytes: u64) -> Router<AppState> {
    let upload_limit = usize::try_from(max_file_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(storage::MULTIPART_OVERHEAD);
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route(
            "/users/me",
            get(users::profile).patch(users::update_profile),
        )
        .route(
            "/users/me/settings",
            get(users::settings).put(users::put_settings),
        )
        .route("/teams", post(teams::create).get(teams::list))
        .route(
            "/teams/{id}",
            get(teams::get).patch(teams::update).delete(teams::delete),
        )
        .route(
            "/teams/{id}/members",
            get(teams::members).post(teams::add_member),
        )
        .route(
            "/teams/{id}/members/{user_id}",
            axum::routing::patch(teams::set_role).delete(teams::remove_member),
        )
        .route("/teams/{id}/leave", post(teams::leave))
        .route("/teams/{id}/invitations", post(teams::invite))
        .route("/invitations/accept", post(teams::accept))
        .route("/projects", post(projects::create).get(projects::list))
        .route(
            "/projects/{id}",
            get(projects::get)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route("/projects/{id}/share", put(projects::share))
        .route(
            "/projects/{id}/teams/{team_id}",
            put(projects::link_team).delete(projects::unlink_team),
        )
        .route("/projects/{id}/subprojects", get(projects::subprojects))
        .route("/projects/{id}/gallery", get(projects::gallery))
        .route(
            "/projects/{id}/generations/{generation_id}",
            put(projects::transfer_in),
        )
        .route("/credits/balance", get(credits::balance))
        .route("/credits/transactions", get(credits::transactions))
        .route("/credits/pricing", get(credits::pricing))
        .route("/credits/purchases", post(credits::purchase))
        .route("/credits/purchases/{id}", get(credits::get_purchase))
        .route("/credits/webhook", post(credits::webhook))
        .route("/credits/transfers", post(credits::transfer))
        .route("/style-stacks", get(styles::list).post(styles::create))
        .route(
            "/style-stacks/{id}",
            get(styles::get)
                .patch(styles::update)
                .delete(styles::delete),
        )
        .route("/style-stacks/{id}/apply", post(styles::apply))
        .route("/chat/models", get(chat::models))
        .route("/chat/suggestions", get(chat::suggestions))
        .route(
            "/chat/sessions",
            post(chat::create_session).get(chat::list_sessions),
        )
        .route(
            "/chat/sessions/{id}",
            get(chat::get_session).delete(chat::delete_session),
        )
        .route("/chat/sessions/{id}/messages", post(chat::send))
        .route(
            "/storage/uploads",
            post(storage::upload)
                .layer(axum::extract::DefaultBodyLimit::max(upload_limit))
                .get(storage::list),
        )
        .route(
            "/storage/uploads/{id}",
            get(storage::get).delete(storage::delete),
        )
        .route("/storage/uploads/{id}/url", get(storage::url))
        .route("/storage/uploads/{id}/verify", post(storage::verify))
        .route("/storage/usage", get(storage::usage))
        .route("/models", get(generations::models))
        .route(
            "/generations",
            post(generations::create).get(generations::list),
        )
        .route("/generations/batch", post(generations::create_batch))
        .route(
            "/generations/{id}",
            get(generations::get).delete(generations::delete),
        )
        .route("/generations/{id}/status", get(generations::status))
        .route("/generations/{id}/events", get(generations::events))
        .route(
            "/generations/{id}/favorite",
            put(generations::favorite).delete(generations::unfavorite),
        )
        .route("/generations/{id}/provenance", get(generations::provenance))
        .route("/generations/{id}/media-urls", get(generations::media_urls))
        .fallback(not_found);
    Router::new()
        .nest("/api/v1", api)
        .route("/media/{*key}", get(media::serve))
        .route("/health", get(health::live))
        .route("/health/detailed", get(health::detailed))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/docs", get(crate::openapi::docs_root))
        .route("/docs/", get(crate::openapi::docs_index))
        .route("/docs/{*tail}", get(crate::openapi::docs))
        .fallback(not_found)
}
