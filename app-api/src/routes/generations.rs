//! `/api/v1/models` and `/api/v1/generations`: the public model registry; create (validated per
//! model, idempotent, charged atomically, refunded on failure), list, get, status with
//! server-sent progress events, delete, favorite, provenance and signed media URLs.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Page, Written, limit, written};
use crate::app::AppState;
use crate::auth::{Caller, User};
use crate::authz::{Ask, Freshness, Kind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, parse_id, parse_opt_id, text};
use crate::models;
use crate::providers::Job;
use crate::ratelimit::Class;
use crate::repo::{Created, GenerationRow, NewGeneration};

/// The model registry (public).
pub(crate) async fn models() -> Json<Value> {
    Json(json!({ "items": models::MODELS, "credits_per_usd": 2000 }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewGenerationBody {
    model_id: String,
    prompt: String,
    #[serde(default)]
    negative_prompt: String,
    project_id: String,
    parameters: Option<Value>,
    parent_generation_id: Option<String>,
    style_stack_id: Option<String>,
    idempotency_key: Option<String>,
}

fn idempotency_key(headers: &HeaderMap, body: Option<String>) -> ApiResult<Option<String>> {
    let header = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::validation("idempotency_key", "not text"))
        })
        .transpose()?;
    let key = body.or(header);
    if let Some(key) = &key
        && (key.is_empty()
            || key.len() > 100
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')))
    {
        return Err(ApiError::validation(
            "idempotency_key",
            "1 to 100 characters of letters, digits and - _ . :",
        ));
    }
    Ok(key)
}

/// Validate, authorize, charge and start one generation.
async fn create_one(
    state: &AppState,
    user: &User,
    fresh: &Freshness,
    body: NewGenerationBody,
    key: Option<String>,
) -> ApiResult<Created> {
    state
        .limiter
        .hit(Class::Generation, &user.id.to_string())
        .await?;
    let model = models::find(&body.model_id)
        .ok_or_else(|| ApiError::validation("model_id", "unknown model; see GET /api/v1/models"))?;
    let prompt = text("prompt", &body.prompt, model.max_prompt_chars, true)?;
    let negative_prompt = text("negative_prompt", &body.negative_prompt, 1000, false)?;
    let parameters = model.validate(body.parameters.as_ref())?;
    let project = parse_id("project_id", &body.project_id)?;
    let parent = parse_opt_id("parent_generation_id", body.parent_generation_id.as_deref())?;
    let style = parse_opt_id("style_stack_id", body.style_stack_id.as_deref())?;
    let me = user.principal();

    let ask = Ask::new("project:create_generation", Kind::Project, project);
    state.pdp.require(me, "project:view", ask, fresh).await?;
    if let Some(parent) = parent {
        let ask = Ask::new("generation:view", Kind::Generation, parent);
        state.pdp.require(me, "generation:view", ask, fresh).await?;
    }
    let (prompt, negative_prompt) = match style {
        None => (prompt, negative_prompt),
        Some(style) => {
            let applied =
                super::styles::use_style(state, me, fresh, style, &prompt, &negative_prompt, model)
                    .await?;
            (applied.prompt, applied.negative_prompt)
        }
    };

    let new = NewGeneration {
        id: Uuid::now_v7(),
        owner_id: user.id,
        project_id: project,
        parent_generation_id: parent,
        model_id: model.id.to_owned(),
        prompt,
        negative_prompt,
        parameters,
        cost: model.cost,
        style_stack_id: style,
        idempotency_key: key,
    };
    let created = state.repo.create_generation(&new).await?;
    if let Created::New(row) = &created {
        state.runner.spawn(Job {
            id: row.id,
            owner: row.owner_id,
            model_id: row.model_id.clone(),
            prompt: row.prompt.clone(),
            negative_prompt: row.negative_prompt.clone(),
            parameters: row.parameters.clone(),
        });
        metrics::counter!("velro_api_generations_total", "model" => model.id).increment(1);
    }
    Ok(created)
}

pub(crate) async fn create(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    headers: HeaderMap,
    Json(mut body): Json<NewGenerationBody>,
) -> ApiResult<Written<GenerationRow>> {
    let key = idempotency_key(&headers, body.idempotency_key.take())?;
    match create_one(&state, &user, &fresh, body, key).await? {
        Created::Replay(existing) => Ok(Written::ok(fresh, existing)),
        Created::New(row) => {
            let fresh = written(&state, &fresh).await?;
            Ok(Written::accepted(fresh, row))
        }
    }
}

/// Most generations in one batch.
const MAX_BATCH: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Batch {
    items: Vec<NewGenerationBody>,
}

/// Create up to 10 generations; each item succeeds or fails on its own (and is charged on its
/// own), answered in order as `{status, generation}` or `{status, error}`.
pub(crate) async fn create_batch(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<Batch>,
) -> ApiResult<Written<Value>> {
    if body.items.is_empty() || body.items.len() > MAX_BATCH {
        return Err(ApiError::validation(
            "items",
            format!("a batch holds 1 to {MAX_BATCH} generations"),
        ));
    }
    let mut results = Vec::with_capacity(body.items.len());
    for mut item in body.items {
        let key = match idempotency_key(&HeaderMap::new(), item.idempotency_key.take()) {
            Ok(key) => key,
            Err(e) => {
                results.push(item_error(e));
                continue;
            }
        };
        match create_one(&state, &user, &fresh, item, key).await {
            Ok(Created::New(row)) => results.push(json!({ "status": 202, "generation": row })),
            Ok(Created::Replay(row)) => results.push(json!({ "status": 200, "generation": row })),
            // The PDP being down fails the whole batch, loudly.
            Err(ApiError::PdpUnavailable) => return Err(ApiError::PdpUnavailable),
            Err(e) => results.push(item_error(e)),
        }
    }
    let fresh = written(&state, &fresh).await?;
    Ok(Written::ok(fresh, json!({ "items": results })))
}

fn item_error(error: ApiError) -> Value {
    if let ApiError::Internal(detail) = &error {
        tracing::error!(error = %detail, "batch item failed");
    }
    let (status, code) = error.status_and_code();
    json!({ "status": status.as_u16(), "error": { "code": code, "message": error.to_string() } })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Generations the caller may view, ascending by id, one page at a time.
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Page<GenerationRow>>> {
    let limit = limit(query.limit, 50, 200)?;
    let cursor = parse_opt_id("cursor", query.cursor.as_deref())?;
    let page = state
        .pdp
        .lookup(
            caller,
            "generation:view",
            Kind::Generation,
            cursor.map(|c| c.to_string()).as_deref(),
            limit,
            &fresh,
        )
        .await?;
    Ok(Json(Page {
        items: state.repo.generations(&page.ids).await?,
        next_cursor: page.next_cursor,
    }))
}

async fn visible(
    state: &AppState,
    caller: crate::authz::Principal,
    fresh: &Freshness,
    id: &str,
) -> ApiResult<GenerationRow> {
    let id = parse_id("generation_id", id)?;
    let ask = Ask::new("generation:view", Kind::Generation, id);
    state
        .pdp
        .require(caller, "generation:view", ask, fresh)
        .await?;
    state
        .repo
        .generation(id)
        .await?
        .ok_or(ApiError::NotFound("generation"))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<GenerationRow>> {
    Ok(Json(visible(&state, caller, &fresh, &id).await?))
}

fn status_of(g: &GenerationRow) -> Value {
    json!({ "id": g.id, "status": g.status, "progress": g.progress, "error": g.error })
}

pub(crate) async fn status(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(status_of(
        &visible(&state, caller, &fresh, &id).await?,
    )))
}

/// Progress as server-sent events: a `progress` event on every change, then one `completed`,
/// `failed` or `cancelled` event, and the stream ends. At most 15 minutes.
pub(crate) async fn events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let first = visible(&state, caller, &fresh, &id).await?;
    let progress = Progress {
        repo: state.repo.clone(),
        id: first.id,
        first: Some(first),
        last: None,
        done: false,
        deadline: tokio::time::Instant::now() + Duration::from_secs(15 * 60),
    };
    Ok(Sse::new(progress_stream(progress)).keep_alive(KeepAlive::default()))
}

struct Progress {
    repo: crate::repo::Repo,
    id: Uuid,
    first: Option<GenerationRow>,
    last: Option<(String, i64)>,
    done: bool,
    deadline: tokio::time::Instant,
}

fn progress_stream(progress: Progress) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(progress, |mut p| async move {
        if p.done {
            return None;
        }
        loop {
            let row = match p.first.take() {
                Some(row) => row,
                None => {
                    if tokio::time::Instant::now() > p.deadline {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match p.repo.generation(p.id).await {
                        Ok(Some(row)) => row,
                        // Deleted or unreadable: end the stream.
                        _ => return None,
                    }
                }
            };
            let key = (row.status.clone(), row.progress);
            if p.last.as_ref() == Some(&key) {
                continue;
            }
            let finished = !matches!(row.status.as_str(), "pending" | "processing");
            let name = if finished {
                row.status.clone()
            } else {
                "progress".to_owned()
            };
            let event = Event::default()
                .event(name)
                .data(status_of(&row).to_string());
            p.last = Some(key);
            p.done = finished;
            return Some((Ok(event), p));
        }
    })
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<()>> {
    let id = parse_id("generation_id", &id)?;
    let ask = Ask::new("generation:delete", Kind::Generation, id);
    state
        .pdp
        .require(user.principal(), "generation:view", ask, &fresh)
        .await?;
    let keys = state.repo.delete_generation(id).await?;
    state.media.remove(&keys).await;
    Ok(Written::no_content(written(&state, &fresh).await?))
}

async fn set_favorite(
    state: &AppState,
    user: &User,
    fresh: &Freshness,
    id: &str,
    favorite: bool,
) -> ApiResult<Written<GenerationRow>> {
    let id = parse_id("generation_id", id)?;
    let ask = Ask::new("generation:update", Kind::Generation, id);
    state
        .pdp
        .require(user.principal(), "generation:view", ask, fresh)
        .await?;
    state.repo.set_favorite(id, favorite).await?;
    let row = state
        .repo
        .generation(id)
        .await?
        .ok_or(ApiError::NotFound("generation"))?;
    Ok(Written::ok(fresh.clone(), row))
}

pub(crate) async fn favorite(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<GenerationRow>> {
    set_favorite(&state, &user, &fresh, &id, true).await
}

pub(crate) async fn unfavorite(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<GenerationRow>> {
    set_favorite(&state, &user, &fresh, &id, false).await
}

/// How far provenance walks up the lineage.
const PROVENANCE_DEPTH: usize = 16;

/// The generation's ancestors (parent first) as far as the caller may view them: the walk stops
/// at the first ancestor the caller may not see, so hidden lineage is not revealed.
pub(crate) async fn provenance(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let generation = visible(&state, caller, &fresh, &id).await?;
    let mut ancestors = Vec::new();
    let mut next = generation.parent_generation_id;
    while let Some(parent) = next {
        if ancestors.len() >= PROVENANCE_DEPTH {
            break;
        }
        let ask = Ask::new("generation:view", Kind::Generation, parent);
        if !state.pdp.allows(caller, ask, &fresh).await? {
            break;
        }
        let Some(row) = state.repo.generation(parent).await? else {
            break;
        };
        next = row.parent_generation_id;
        ancestors.push(row);
    }
    Ok(Json(
        json!({ "generation": generation, "ancestors": ancestors }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MediaQuery {
    disposition: Option<String>,
}

/// Signed URLs for the generation's media, minted by the PDP (`inline` needs
/// `generation:view_media`, `attachment` needs `generation:download`).
pub(crate) async fn media_urls(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
    Query(query): Query<MediaQuery>,
) -> ApiResult<Json<Value>> {
    let attachment = match query.disposition.as_deref() {
        None | Some("inline") => false,
        Some("attachment") => true,
        Some(_) => {
            return Err(ApiError::validation(
                "disposition",
                "disposition must be inline or attachment",
            ));
        }
    };
    let generation = visible(&state, caller, &fresh, &id).await?;
    if generation.status != "completed" {
        return Err(ApiError::conflict(
            "GENERATION_NOT_READY",
            format!("the generation is {}", generation.status),
        ));
    }
    match state
        .pdp
        .mint(caller, generation.id, attachment, &fresh)
        .await?
    {
        Some(urls) => Ok(Json(json!({ "items": urls }))),
        None => Err(ApiError::Forbidden),
    }
}
