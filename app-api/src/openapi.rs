//! The OpenAPI 3.1 document (`GET /openapi.json`) and the interactive docs (`GET /docs`, Swagger
//! UI served from assets compiled into the binary, no CDN). The document is built from one table
//! of operations; an integration test calls every listed operation to prove each one is routed.

use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// A token is optional (anonymous callers get what the policies give anonymous).
    Optional,
    /// A token is required.
    Bearer,
}

/// One operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// HTTP method, lowercase.
    pub method: &'static str,
    /// Path template, `{name}` for parameters.
    pub path: &'static str,
    /// Group.
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Authentication.
    pub access: Access,
    /// Request body schema name, if any.
    pub body: Option<&'static str>,
    /// Success status.
    pub ok: u16,
}

const fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<&'static str>,
    ok: u16,
) -> Operation {
    Operation {
        method,
        path,
        tag,
        summary,
        access,
        body,
        ok,
    }
}

use Access::{Bearer, Optional, Public};

/// Every operation of the API.
pub const OPERATIONS: &[Operation] = &[
    op(
        "post",
        "/api/v1/auth/register",
        "auth",
        "Register; returns tokens",
        Public,
        Some("Register"),
        201,
    ),
    op(
        "post",
        "/api/v1/auth/login",
        "auth",
        "Sign in; returns tokens",
        Public,
        Some("Login"),
        200,
    ),
    op(
        "post",
        "/api/v1/auth/refresh",
        "auth",
        "Rotate a refresh token (reuse revokes the family)",
        Public,
        Some("Refresh"),
        200,
    ),
    op(
        "post",
        "/api/v1/auth/logout",
        "auth",
        "Revoke this access token (and a refresh token's family)",
        Bearer,
        Some("Logout"),
        204,
    ),
    op(
        "get",
        "/api/v1/auth/me",
        "auth",
        "The signed-in user",
        Bearer,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/users/me",
        "users",
        "Profile",
        Bearer,
        None,
        200,
    ),
    op(
        "patch",
        "/api/v1/users/me",
        "users",
        "Update the profile",
        Bearer,
        Some("ProfileUpdate"),
        200,
    ),
    op(
        "get",
        "/api/v1/users/me/settings",
        "users",
        "Settings document",
        Bearer,
        None,
        200,
    ),
    op(
        "put",
        "/api/v1/users/me/settings",
        "users",
        "Replace the settings document",
        Bearer,
        Some("Settings"),
        200,
    ),
    op(
        "post",
        "/api/v1/teams",
        "teams",
        "Create a team (you become its owner)",
        Bearer,
        Some("NewTeam"),
        201,
    ),
    op(
        "get",
        "/api/v1/teams",
        "teams",
        "Teams you belong to",
        Bearer,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/teams/{id}",
        "teams",
        "A team",
        Bearer,
        None,
        200,
    ),
    op(
        "patch",
        "/api/v1/teams/{id}",
        "teams",
        "Rename or describe a team (admin+)",
        Bearer,
        Some("TeamUpdate"),
        200,
    ),
    op(
        "delete",
        "/api/v1/teams/{id}",
        "teams",
        "Delete a team (owner)",
        Bearer,
        None,
        204,
    ),
    op(
        "get",
        "/api/v1/teams/{id}/members",
        "teams",
        "Members",
        Bearer,
        None,
        200,
    ),
    op(
        "post",
        "/api/v1/teams/{id}/members",
        "teams",
        "Add an existing user (admin+)",
        Bearer,
        Some("AddMember"),
        201,
    ),
    op(
        "patch",
        "/api/v1/teams/{id}/members/{user_id}",
        "teams",
        "Change a member's role",
        Bearer,
        Some("RoleChange"),
        200,
    ),
    op(
        "delete",
        "/api/v1/teams/{id}/members/{user_id}",
        "teams",
        "Remove a member (yourself: leave)",
        Bearer,
        None,
        204,
    ),
    op(
        "post",
        "/api/v1/teams/{id}/leave",
        "teams",
        "Leave a team",
        Bearer,
        None,
        204,
    ),
    op(
        "post",
        "/api/v1/teams/{id}/invitations",
        "teams",
        "Invite by email; returns the token to pass on",
        Bearer,
        Some("AddMember"),
        201,
    ),
    op(
        "post",
        "/api/v1/invitations/accept",
        "teams",
        "Accept an invitation addressed to you",
        Bearer,
        Some("Accept"),
        200,
    ),
    op(
        "post",
        "/api/v1/projects",
        "projects",
        "Create a project",
        Bearer,
        Some("NewProject"),
        201,
    ),
    op(
        "get",
        "/api/v1/projects",
        "projects",
        "Projects you may view (cursor pagination)",
        Optional,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/projects/{id}",
        "projects",
        "A project",
        Optional,
        None,
        200,
    ),
    op(
        "patch",
        "/api/v1/projects/{id}",
        "projects",
        "Update name, description, tags (editor+)",
        Bearer,
        Some("ProjectUpdate"),
        200,
    ),
    op(
        "delete",
        "/api/v1/projects/{id}",
        "projects",
        "Delete (project owner)",
        Bearer,
        None,
        204,
    ),
    op(
        "put",
        "/api/v1/projects/{id}/share",
        "projects",
        "Set visibility and inheritance (admin+)",
        Bearer,
        Some("Share"),
        200,
    ),
    op(
        "put",
        "/api/v1/projects/{id}/teams/{team_id}",
        "projects",
        "Link a team at an access cap",
        Bearer,
        Some("Link"),
        200,
    ),
    op(
        "delete",
        "/api/v1/projects/{id}/teams/{team_id}",
        "projects",
        "Remove a team link",
        Bearer,
        None,
        204,
    ),
    op(
        "get",
        "/api/v1/projects/{id}/subprojects",
        "projects",
        "Sub-projects you may view",
        Optional,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/projects/{id}/gallery",
        "projects",
        "Generations of the project you may view",
        Optional,
        None,
        200,
    ),
    op(
        "put",
        "/api/v1/projects/{id}/generations/{generation_id}",
        "projects",
        "Transfer a generation into this project",
        Bearer,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/models",
        "generations",
        "Models, prices and parameters",
        Public,
        None,
        200,
    ),
    op(
        "post",
        "/api/v1/generations",
        "generations",
        "Create a generation (charged; `Idempotency-Key` honoured)",
        Bearer,
        Some("NewGeneration"),
        202,
    ),
    op(
        "get",
        "/api/v1/generations",
        "generations",
        "Generations you may view (cursor pagination)",
        Optional,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/generations/{id}",
        "generations",
        "A generation",
        Optional,
        None,
        200,
    ),
    op(
        "delete",
        "/api/v1/generations/{id}",
        "generations",
        "Delete a generation",
        Bearer,
        None,
        204,
    ),
    op(
        "get",
        "/api/v1/generations/{id}/status",
        "generations",
        "Status and progress",
        Optional,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/generations/{id}/events",
        "generations",
        "Progress as server-sent events",
        Optional,
        None,
        200,
    ),
    op(
        "put",
        "/api/v1/generations/{id}/favorite",
        "generations",
        "Mark as favorite",
        Bearer,
        None,
        200,
    ),
    op(
        "delete",
        "/api/v1/generations/{id}/favorite",
        "generations",
        "Unmark as favorite",
        Bearer,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/generations/{id}/provenance",
        "generations",
        "Lineage you may view",
        Optional,
        None,
        200,
    ),
    op(
        "get",
        "/api/v1/generations/{id}/media-urls",
        "generations",
        "Signed media URLs (`?disposition=inline|attachment`)",
        Optional,
        None,
        200,
    ),
    op(
        "get",
        "/media/{key}",
        "media",
        "A media file, with a signed URL's query",
        Public,
        None,
        200,
    ),
    op("get", "/health", "health", "Liveness", Public, None, 200),
    op(
        "get",
        "/health/detailed",
        "health",
        "Database, PDP, Redis, providers",
        Public,
        None,
        200,
    ),
    op(
        "get",
        "/metrics",
        "health",
        "Prometheus metrics (platform admins)",
        Bearer,
        None,
        200,
    ),
];

fn schemas() -> Value {
    let s = |props: Value, required: &[&str]| json!({ "type": "object", "additionalProperties": false, "properties": props, "required": required });
    let string = json!({ "type": "string" });
    let id = json!({ "type": "string", "format": "uuid" });
    let role =
        json!({ "type": "string", "enum": ["viewer", "contributor", "editor", "admin", "owner"] });
    let visibility = json!({ "type": "string", "enum": ["private", "team_restricted", "team_open", "public_read", "public"] });
    json!({
        "Register": s(json!({ "email": string, "password": { "type": "string", "minLength": 10, "maxLength": 128 }, "full_name": string }), &["email", "password", "full_name"]),
        "Login": s(json!({ "email": string, "password": string }), &["email", "password"]),
        "Refresh": s(json!({ "refresh_token": string }), &["refresh_token"]),
        "Logout": s(json!({ "refresh_token": string }), &[]),
        "ProfileUpdate": s(json!({ "full_name": string }), &[]),
        "Settings": { "type": "object" },
        "NewTeam": s(json!({ "name": string, "description": string }), &["name"]),
        "TeamUpdate": s(json!({ "name": string, "description": string }), &[]),
        "AddMember": s(json!({ "email": string, "role": role }), &["email", "role"]),
        "RoleChange": s(json!({ "role": role }), &["role"]),
        "Accept": s(json!({ "token": string }), &["token"]),
        "NewProject": s(json!({ "name": string, "description": string, "tags": { "type": "array", "items": string, "maxItems": 20 },
            "visibility": visibility, "team_id": id, "parent_id": id, "inherit_access": { "type": "boolean" } }), &["name"]),
        "ProjectUpdate": s(json!({ "name": string, "description": string, "tags": { "type": "array", "items": string } }), &[]),
        "Share": s(json!({ "visibility": visibility, "inherit_access": { "type": "boolean" } }), &[]),
        "Link": s(json!({ "access": { "type": "string", "enum": ["read", "write", "admin"] } }), &["access"]),
        "NewGeneration": s(json!({ "model_id": string, "prompt": string, "negative_prompt": string, "project_id": id,
            "parameters": { "type": "object" }, "parent_generation_id": id, "style_stack_id": id, "idempotency_key": string }), &["model_id", "prompt", "project_id"]),
        "NewPurchase": s(json!({ "credits": { "type": "integer", "minimum": 2000, "maximum": 2000000, "multipleOf": 20 } }), &["credits"]),
        "NewTransfer": s(json!({ "recipient_id": id, "team_id": id, "amount": { "type": "integer", "minimum": 1 } }), &["recipient_id", "team_id", "amount"]),
        "StyleDefinition": s(json!({ "prefix": string, "suffix": string, "negative": string, "image": string, "video": string,
            "models": { "type": "object", "additionalProperties": string } }), &[]),
        "NewStyle": s(json!({ "name": string, "description": string, "tier": { "type": "string", "enum": ["basic", "enhanced", "signature"] },
            "public": { "type": "boolean" }, "definition": { "$ref": "#/components/schemas/StyleDefinition" } }), &["name", "tier", "definition"]),
        "StyleUpdate": s(json!({ "name": string, "description": string, "tier": { "type": "string", "enum": ["basic", "enhanced", "signature"] },
            "public": { "type": "boolean" }, "definition": { "$ref": "#/components/schemas/StyleDefinition" } }), &[]),
        "ApplyStyle": s(json!({ "prompt": string, "model_id": string, "negative_prompt": string }), &["prompt", "model_id"]),
        "NewSession": s(json!({ "title": string, "model": string }), &[]),
        "NewMessage": s(json!({ "content": string }), &["content"]),
        "GenerationBatch": s(json!({ "items": { "type": "array", "maxItems": 10, "items": { "$ref": "#/components/schemas/NewGeneration" } } }), &["items"]),
        "Error": {
            "type": "object",
            "properties": {
                "error": { "type": "object", "properties": {
                    "code": { "type": "string", "examples": ["VALIDATION_ERROR", "NOT_FOUND", "PDP_UNAVAILABLE"] },
                    "message": string,
                    "details": { "type": "object" } } },
                "request_id": string
            }
        }
    })
}

/// The document.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut paths = Map::new();
        for op in OPERATIONS {
            let mut operation = json!({
                "tags": [op.tag],
                "summary": op.summary,
                "operationId": format!("{}_{}", op.method, op.path.trim_start_matches('/').replace(['/', '{', '}', '-'], "_")),
                "responses": {
                    op.ok.to_string(): { "description": "success" },
                    "4XX": { "description": "client error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "503": { "description": "the PDP cannot answer: denied", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                },
                "parameters": op.path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).map(|name| json!({
                    "name": name, "in": "path", "required": true, "schema": { "type": "string" }
                })).collect::<Vec<_>>(),
            });
            match op.access {
                Public => operation["security"] = json!([]),
                Optional => operation["security"] = json!([{}, { "bearer": [] }]),
                Bearer => operation["security"] = json!([{ "bearer": [] }]),
            }
            if let Some(body) = op.body {
                operation["requestBody"] = json!({
                    "required": true,
                    "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{body}") } } }
                });
            }
            let entry = paths
                .entry(op.path.to_owned())
                .or_insert_with(|| json!({}));
            entry[op.method] = operation;
        }
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Velro API",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "The Velro product API. Every protected operation is decided by the Velro PDP; invisible resources are 404, visible but forbidden 403, and an unreachable PDP 503. Writes return `X-Velro-Consistency`; send it back to read your writes.",
            },
            "paths": paths,
            "components": {
                "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
                "schemas": schemas(),
            },
        })
    })
}

pub(crate) async fn openapi_json() -> axum::Json<Value> {
    axum::Json(document().clone())
}

pub(crate) async fn docs_root() -> Redirect {
    Redirect::permanent("/docs/")
}

fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from("/openapi.json")))
        .clone()
}

pub(crate) async fn docs_index() -> Response {
    swagger_file("")
}

pub(crate) async fn docs(Path(tail): Path<String>) -> Response {
    swagger_file(&tail)
}

fn swagger_file(tail: &str) -> Response {
    match utoipa_swagger_ui::serve(tail, swagger_config()) {
        Ok(Some(file)) => {
            let mut response = (StatusCode::OK, file.bytes.into_owned()).into_response();
            if let Ok(value) = HeaderValue::from_str(&file.content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        Ok(None) => crate::error::ApiError::NotFound("file").into_response(),
        Err(e) => crate::error::ApiError::Internal(format!("docs: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_operation_once() {
        let doc = document();
        let mut count = 0;
        for op in OPERATIONS {
            assert!(
                doc["paths"][op.path][op.method].is_object(),
                "{} {}",
                op.method,
                op.path
            );
            count += 1;
        }
        let listed: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(listed, count, "no duplicates");
        for op in OPERATIONS {
            if let Some(body) = op.body {
                assert!(doc["components"]["schemas"][body].is_object(), "{body}");
            }
        }
    }
}
