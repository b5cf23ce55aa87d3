//! `/api/v1/style-stacks`: list and get (own, public and built-in, as the PDP allows), create,
//! update, delete, and apply (prompt + model in, adapted prompt out).

use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Page, Written, written};
use crate::app::AppState;
use crate::auth::{Caller, User};
use crate::authz::{Ask, Freshness, Kind, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, parse_id, text};
use crate::models;
use crate::repo::styles::StyleRow;
use crate::styles::{self, Applied, Definition, TIERS};

fn tier(value: &str) -> ApiResult<String> {
    TIERS
        .iter()
        .find(|t| **t == value)
        .map(|t| (*t).to_owned())
        .ok_or_else(|| ApiError::validation("tier", "tier must be basic, enhanced or signature"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    tier: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Page<StyleRow>>> {
    let tier = query.tier.as_deref().map(tier).transpose()?;
    let user = match caller {
        Principal::User(id) => Some(id),
        Principal::Anonymous => None,
    };
    let candidates = state.repo.style_candidates(user, tier.as_deref()).await?;
    let items = state
        .pdp
        .filter(
            caller,
            "style_stack:view",
            Kind::StyleStack,
            candidates,
            |s| s.id,
            &fresh,
        )
        .await?;
    Ok(Json(Page::complete(items)))
}

async fn visible(
    state: &AppState,
    caller: Principal,
    fresh: &Freshness,
    id: Uuid,
) -> ApiResult<StyleRow> {
    let ask = Ask::new("style_stack:view", Kind::StyleStack, id);
    state
        .pdp
        .require(caller, "style_stack:view", ask, fresh)
        .await?;
    state
        .repo
        .style(id)
        .await?
        .ok_or(ApiError::NotFound("style stack"))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<StyleRow>> {
    let id = parse_id("style_stack_id", &id)?;
    Ok(Json(visible(&state, caller, &fresh, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewStyle {
    name: String,
    #[serde(default)]
    description: String,
    tier: String,
    #[serde(default)]
    public: bool,
    definition: Value,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<NewStyle>,
) -> ApiResult<Written<StyleRow>> {
    let name = text("name", &body.name, 100, true)?;
    let description = text("description", &body.description, 1000, false)?;
    let tier = tier(&body.tier)?;
    let definition = Definition::parse(&body.definition)?;
    let definition = serde_json::to_value(&definition)
        .map_err(|e| ApiError::Internal(format!("style definition: {e}")))?;
    let ask = Ask::new("user:create_style_stack", Kind::User, user.id);
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    let id = state
        .repo
        .create_style(
            user.id,
            &name,
            &description,
            &tier,
            body.public,
            &definition,
        )
        .await?;
    let fresh = written(&state, &fresh).await?;
    let row = state
        .repo
        .style(id)
        .await?
        .ok_or(ApiError::NotFound("style stack"))?;
    Ok(Written::created(fresh, row))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StyleUpdate {
    name: Option<String>,
    description: Option<String>,
    tier: Option<String>,
    public: Option<bool>,
    definition: Option<Value>,
}

pub(crate) async fn update(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
    Json(body): Json<StyleUpdate>,
) -> ApiResult<Written<StyleRow>> {
    let id = parse_id("style_stack_id", &id)?;
    let name = body
        .name
        .as_deref()
        .map(|n| text("name", n, 100, true))
        .transpose()?;
    let description = body
        .description
        .as_deref()
        .map(|d| text("description", d, 1000, false))
        .transpose()?;
    let tier = body.tier.as_deref().map(tier).transpose()?;
    let definition = body
        .definition
        .as_ref()
        .map(|d| {
            Definition::parse(d).and_then(|d| {
                serde_json::to_value(d)
                    .map_err(|e| ApiError::Internal(format!("style definition: {e}")))
            })
        })
        .transpose()?;
    let ask = Ask::new("style_stack:update", Kind::StyleStack, id);
    state
        .pdp
        .require(user.principal(), "style_stack:view", ask, &fresh)
        .await?;
    state
        .repo
        .update_style(
            id,
            name.as_deref(),
            description.as_deref(),
            tier.as_deref(),
            body.public,
            definition.as_ref(),
        )
        .await?;
    let fresh = written(&state, &fresh).await?;
    let row = state
        .repo
        .style(id)
        .await?
        .ok_or(ApiError::NotFound("style stack"))?;
    Ok(Written::ok(fresh, row))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<()>> {
    let id = parse_id("style_stack_id", &id)?;
    let ask = Ask::new("style_stack:delete", Kind::StyleStack, id);
    state
        .pdp
        .require(user.principal(), "style_stack:view", ask, &fresh)
        .await?;
    state.repo.delete_style(id).await?;
    Ok(Written::no_content(written(&state, &fresh).await?))
}

/// Check `style_stack:use` and adapt a prompt for a model; counts one use.
pub(crate) async fn use_style(
    state: &AppState,
    caller: Principal,
    fresh: &Freshness,
    id: Uuid,
    prompt: &str,
    negative: &str,
    model: &models::Model,
) -> ApiResult<Applied> {
    let ask = Ask::new("style_stack:use", Kind::StyleStack, id);
    state
        .pdp
        .require(caller, "style_stack:view", ask, fresh)
        .await?;
    let row = state
        .repo
        .style(id)
        .await?
        .ok_or(ApiError::NotFound("style stack"))?;
    let definition = Definition::parse(&row.definition)?;
    let applied = styles::apply(&definition, prompt, negative, model);
    state.repo.count_style_use(id).await?;
    Ok(applied)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyBody {
    prompt: String,
    model_id: String,
    #[serde(default)]
    negative_prompt: String,
}

pub(crate) async fn apply(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
    Json(body): Json<ApplyBody>,
) -> ApiResult<Json<Value>> {
    let id = parse_id("style_stack_id", &id)?;
    let model = models::find(&body.model_id)
        .ok_or_else(|| ApiError::validation("model_id", "unknown model; see GET /api/v1/models"))?;
    let prompt = text("prompt", &body.prompt, 10_000, true)?;
    let negative = text("negative_prompt", &body.negative_prompt, 1000, false)?;
    let applied = use_style(&state, caller, &fresh, id, &prompt, &negative, model).await?;
    Ok(Json(json!({
        "style_stack_id": id,
        "model_id": model.id,
        "prompt": applied.prompt,
        "negative_prompt": applied.negative_prompt,
        "truncated": applied.truncated,
        "max_prompt_chars": model.max_prompt_chars,
    })))
}
