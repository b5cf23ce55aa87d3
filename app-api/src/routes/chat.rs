//! `/api/v1/chat`: models, sessions (create, list, get with history, delete), messages with
//! completions (JSON, or server-sent `delta` events then `done` with `?stream=true`), and prompt
//! suggestions. Sessions are their owner's alone, as the PDP decides (`chat:*`).

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Page, Written};
use crate::app::AppState;
use crate::auth::User;
use crate::authz::{Ask, Freshness, Kind};
use crate::chat::{self, Context, SYSTEM_PROMPT, Turn};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, parse_id, text};
use crate::repo::chat::SessionRow;

/// Messages of history sent with each completion.
const HISTORY: i64 = 20;

pub(crate) async fn models(State(state): State<AppState>) -> Json<Value> {
    let provider = match &state.chat {
        chat::ChatProvider::Local => "local",
        chat::ChatProvider::Remote(_) => "openai-compatible",
    };
    Json(json!({ "provider": provider, "items": state.chat.models() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSession {
    #[serde(default)]
    title: String,
    model: Option<String>,
}

pub(crate) async fn create_session(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<NewSession>,
) -> ApiResult<Written<SessionRow>> {
    let title = text("title", &body.title, 200, false)?;
    let model = match body.model {
        None => state.chat.default_model(),
        Some(model) if state.chat.models().contains(&model) => model,
        Some(_) => {
            return Err(ApiError::validation(
                "model",
                "unknown model; see GET /api/v1/chat/models",
            ));
        }
    };
    let ask = Ask::new("user:create_chat", Kind::User, user.id);
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    let session = state.repo.create_session(user.id, &title, &model).await?;
    let fresh = super::written(&state, &fresh).await?;
    Ok(Written::created(fresh, session))
}

pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<Json<Page<SessionRow>>> {
    let candidates = state.repo.sessions_of(user.id).await?;
    let items = state
        .pdp
        .filter(
            user.principal(),
            "chat:view",
            Kind::ChatSession,
            candidates,
            |s| s.id,
            &fresh,
        )
        .await?;
    Ok(Json(Page::complete(items)))
}

async fn session_for(
    state: &AppState,
    user: &User,
    fresh: &Freshness,
    id: &str,
    action: &'static str,
) -> ApiResult<SessionRow> {
    let id = parse_id("session_id", id)?;
    let ask = Ask::new(action, Kind::ChatSession, id);
    state
        .pdp
        .require(user.principal(), "chat:view", ask, fresh)
        .await?;
    state
        .repo
        .session(id)
        .await?
        .ok_or(ApiError::NotFound("chat session"))
}

pub(crate) async fn get_session(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let session = session_for(&state, &user, &fresh, &id, "chat:view").await?;
    let messages = state.repo.messages(session.id, 200).await?;
    Ok(Json(json!({ "session": session, "messages": messages })))
}

pub(crate) async fn delete_session(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<()>> {
    let session = session_for(&state, &user, &fresh, &id, "chat:delete").await?;
    state.repo.delete_session(session.id).await?;
    Ok(Written::no_content(super::written(&state, &fresh).await?))
}

/// What the local assistant may mention: style stacks and projects the user may view.
async fn context_of(state: &AppState, user: &User, fresh: &Freshness) -> ApiResult<Context> {
    let styles = state.repo.style_candidates(Some(user.id), None).await?;
    let projects = state.repo.recent_project_ids(user.id, 5).await?;
    let mut asks: Vec<Ask> = styles
        .iter()
        .map(|s| Ask::new("style_stack:use", Kind::StyleStack, s.id))
        .collect();
    asks.extend(
        projects
            .iter()
            .map(|p| Ask::new("project:view", Kind::Project, *p)),
    );
    let allowed = state.pdp.decide(user.principal(), &asks, fresh).await?;
    let (style_ok, project_ok) = allowed.split_at(styles.len());
    let visible: Vec<Uuid> = projects
        .iter()
        .zip(project_ok)
        .filter_map(|(p, ok)| ok.then_some(*p))
        .collect();
    Ok(Context {
        styles: styles
            .iter()
            .zip(style_ok)
            .filter(|(_, ok)| **ok)
            .map(|(s, _)| (s.name.clone(), s.description.clone()))
            .collect(),
        projects: state
            .repo
            .projects(&visible)
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMessage {
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendQuery {
    #[serde(default)]
    stream: bool,
}

/// Send a message and get the assistant's answer, stored with the history.
pub(crate) async fn send(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
    Query(query): Query<SendQuery>,
    Json(body): Json<NewMessage>,
) -> ApiResult<Response> {
    let content = text("content", &body.content, 8000, true)?;
    let session = session_for(&state, &user, &fresh, &id, "chat:send").await?;
    let context = context_of(&state, &user, &fresh).await?;
    state.repo.add_message(session.id, "user", &content).await?;
    let mut history = vec![Turn {
        role: "system".into(),
        content: SYSTEM_PROMPT.into(),
    }];
    history.extend(
        state
            .repo
            .messages(session.id, HISTORY)
            .await?
            .into_iter()
            .map(|m| Turn {
                role: m.role,
                content: m.content,
            }),
    );
    let deltas = state
        .chat
        .complete(&session.model, &history, &context)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "chat provider failed");
            ApiError::conflict("CHAT_PROVIDER_FAILED", "the chat provider did not answer")
        })?;
    let repo = state.repo.clone();
    let session_id = session.id;
    if !query.stream {
        let mut answer = String::new();
        let mut deltas = deltas;
        while let Some(delta) = deltas.next().await {
            match delta {
                Ok(delta) => answer.push_str(&delta),
                Err(e) => {
                    tracing::warn!(error = %e, "chat stream failed");
                    return Err(ApiError::conflict(
                        "CHAT_PROVIDER_FAILED",
                        "the chat provider did not answer",
                    ));
                }
            }
        }
        let message = repo.add_message(session_id, "assistant", &answer).await?;
        return Ok(Json(json!({ "message": message })).into_response());
    }
    // Stream deltas as they come; store the whole answer at the end.
    let events = futures::stream::unfold(
        (deltas, String::new(), false),
        move |(mut deltas, mut answer, done)| {
            let repo = repo.clone();
            async move {
                if done {
                    return None;
                }
                match deltas.next().await {
                    Some(Ok(delta)) => {
                        answer.push_str(&delta);
                        let event = Event::default()
                            .event("delta")
                            .data(json!({ "content": delta }).to_string());
                        Some((Ok::<_, Infallible>(event), (deltas, answer, false)))
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "chat stream failed");
                        let event = Event::default()
                            .event("error")
                            .data(json!({ "code": "CHAT_PROVIDER_FAILED" }).to_string());
                        Some((Ok(event), (deltas, answer, true)))
                    }
                    None => {
                        let event = match repo.add_message(session_id, "assistant", &answer).await {
                            Ok(message) => Event::default()
                                .event("done")
                                .data(json!({ "message": message }).to_string()),
                            Err(e) => {
                                tracing::error!(error = %e, "storing the answer failed");
                                Event::default()
                                    .event("error")
                                    .data(json!({ "code": "INTERNAL" }).to_string())
                            }
                        };
                        Some((Ok(event), (deltas, answer, true)))
                    }
                }
            }
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Prompt ideas from the caller's projects and style stacks.
pub(crate) async fn suggestions(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<Json<Value>> {
    let context = context_of(&state, &user, &fresh).await?;
    Ok(Json(json!({ "items": chat::suggestions(&context) })))
}
