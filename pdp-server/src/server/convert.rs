//! Mapping between the wire (protobuf and JSON) and the engine's types, and the one place engine
//! errors become gRPC statuses and HTTP error codes. Internal causes are logged here once and
//! never sent to callers.

use std::time::Duration;

use serde_json::{Map, Value};
use tonic::{Code, Status};
use velro_engine::Error;
use velro_engine::cache::Tier;
use velro_engine::consistency::{Consistency, ConsistencyToken};
use velro_engine::decision::{self, CallerInfo, DenyKind, EntityInput};
use velro_engine::media_url::Disposition;

use crate::proto;

/// The gRPC status for an engine error. Backend failures are opaque to callers.
pub fn status(error: Error) -> Status {
    let (code, message) = classify(&error);
    Status::new(code, message)
}

/// (code, caller-facing message) for an engine error; logs what callers must not see.
pub fn classify(error: &Error) -> (Code, String) {
    match error {
        Error::InvalidRequest(m) => (Code::InvalidArgument, m.clone()),
        Error::InvalidToken(m) => (Code::InvalidArgument, format!("consistency token: {m}")),
        Error::UnknownStore(name) => (Code::NotFound, format!("unknown policy store `{name}`")),
        Error::MediaUrl(why) => (Code::InvalidArgument, format!("media URL rejected: {why}")),
        Error::InvalidStore { .. } | Error::InvalidTestFile { .. } => {
            (Code::FailedPrecondition, error.to_string())
        }
        Error::Unavailable(m) => {
            tracing::warn!(error = %m, "answering unavailable");
            (Code::Unavailable, m.clone())
        }
        Error::Database(_) => {
            tracing::error!(error = %error, "backend failure");
            (
                Code::Unavailable,
                "the decision backend is unavailable".into(),
            )
        }
        Error::Io { .. }
        | Error::Watch(_)
        | Error::Config(_)
        | Error::Keys(_)
        | Error::Audit(_) => {
            tracing::error!(error = %error, "internal failure");
            (Code::Internal, "internal error".into())
        }
    }
}

/// A request field that must be present.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("`{field}` is required")))
}

/// An entity reference from the wire.
pub fn entity(value: Option<proto::EntityRef>, field: &str) -> Result<EntityInput, Status> {
    let e = required(value, field)?;
    Ok(EntityInput::new(e.r#type, e.id))
}

/// A JSON object given as text; empty means `{}`.
pub fn context(text: &str, field: &str) -> Result<Map<String, Value>, Status> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Status::invalid_argument(format!(
            "`{field}` must be a JSON object"
        ))),
        Err(e) => Err(Status::invalid_argument(format!(
            "`{field}` is not JSON: {e}"
        ))),
    }
}

/// A consistency requirement from the wire.
pub fn consistency(value: Option<proto::Consistency>) -> Result<Consistency, Status> {
    use proto::consistency::Requirement;
    match value.and_then(|c| c.requirement) {
        None | Some(Requirement::MinimizeLatency(_)) => Ok(Consistency::MinimizeLatency),
        Some(Requirement::FullyConsistent(_)) => Ok(Consistency::FullyConsistent),
        Some(Requirement::AtLeastAsFresh(token)) => ConsistencyToken::parse(&token)
            .map(Consistency::AtLeastAsFresh)
            .map_err(|e| Status::invalid_argument(e.to_string())),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Caller facts: request id (bounded) and client IP (must parse).
pub fn caller(request_id: String, client_ip: &str) -> Result<CallerInfo, Status> {
    if request_id.len() > 128 {
        return Err(Status::invalid_argument(
            "`request_id` is longer than 128 bytes",
        ));
    }
    let client_ip = if client_ip.is_empty() {
        None
    } else {
        Some(
            client_ip
                .parse()
                .map_err(|_| Status::invalid_argument("`client_ip` is not an IP address"))?,
        )
    };
    Ok(CallerInfo {
        request_id: non_empty(request_id),
        client_ip,
    })
}

/// An engine check request from the wire.
pub fn check_request(r: proto::CheckRequest) -> Result<decision::CheckRequest, Status> {
    let entities =
        if r.entities_json.trim().is_empty() {
            None
        } else {
            Some(serde_json::from_str(&r.entities_json).map_err(|e| {
                Status::invalid_argument(format!("`entities_json` is not JSON: {e}"))
            })?)
        };
    Ok(decision::CheckRequest {
        store: non_empty(r.store),
        principal: entity(r.principal, "principal")?,
        action: r.action,
        resource: entity(r.resource, "resource")?,
        context: context(&r.context_json, "context_json")?,
        justification: non_empty(r.justification),
        consistency: consistency(r.consistency)?,
        entities,
        caller: caller(r.request_id, &r.client_ip)?,
    })
}

fn deny_kind(kind: Option<DenyKind>) -> i32 {
    let kind = match kind {
        None => proto::DenyKind::Unspecified,
        Some(DenyKind::NoPermit) => proto::DenyKind::NoPermit,
        Some(DenyKind::Forbidden) => proto::DenyKind::Forbidden,
        Some(DenyKind::NotFound) => proto::DenyKind::NotFound,
        Some(DenyKind::Invalid) => proto::DenyKind::Invalid,
        Some(DenyKind::LockedOut) => proto::DenyKind::LockedOut,
    };
    kind as i32
}

fn tier(tier: Tier) -> i32 {
    (match tier {
        Tier::Decision => proto::CacheTier::Decision,
        Tier::L1 => proto::CacheTier::L1,
        Tier::L2 => proto::CacheTier::L2,
        Tier::L3 => proto::CacheTier::L3,
    }) as i32
}

/// A decision on the wire.
pub fn decision(d: decision::Decision) -> proto::Decision {
    proto::Decision {
        decision_id: d.id.to_string(),
        allowed: d.allowed,
        deny_kind: deny_kind(d.deny_kind),
        policies: d
            .policies
            .iter()
            .map(|p| proto::DeterminingPolicy {
                id: p.id.to_string(),
                reason: p.reason.to_string(),
            })
            .collect(),
        errors: d
            .errors
            .into_iter()
            .map(|e| proto::PolicyError {
                policy_id: e.policy_id,
                message: e.message,
            })
            .collect(),
        store: d.store.to_string(),
        policy_version: d.policy_version.to_string(),
        consistency_token: d.consistency_token.encode(),
        cache_tier: tier(d.cache_tier),
        eval_us: d.eval_us,
        error: String::new(),
    }
}

/// A batch item that could not be decided: a deny that says why.
pub fn failed_item(error: Error) -> proto::Decision {
    let (code, message) = classify(&error);
    proto::Decision {
        allowed: false,
        deny_kind: if code == Code::InvalidArgument || code == Code::NotFound {
            proto::DenyKind::Invalid as i32
        } else {
            proto::DenyKind::Unspecified as i32
        },
        error: message,
        ..proto::Decision::default()
    }
}

/// A lookup request from the wire.
pub fn lookup_request(r: proto::LookupResourcesRequest) -> Result<decision::LookupRequest, Status> {
    Ok(decision::LookupRequest {
        store: non_empty(r.store),
        principal: entity(r.principal, "principal")?,
        action: r.action,
        resource_type: r.resource_type,
        context: context(&r.context_json, "context_json")?,
        justification: non_empty(r.justification),
        cursor: non_empty(r.cursor),
        limit: (r.limit != 0).then_some(r.limit),
        consistency: consistency(r.consistency)?,
        caller: caller(r.request_id, &r.client_ip)?,
    })
}

/// Disposition from the wire (inline when unspecified).
pub fn disposition(value: i32) -> Result<Disposition, Status> {
    match proto::Disposition::try_from(value) {
        Ok(proto::Disposition::Unspecified | proto::Disposition::Inline) => Ok(Disposition::Inline),
        Ok(proto::Disposition::Attachment) => Ok(Disposition::Attachment),
        Err(_) => Err(Status::invalid_argument("unknown `disposition`")),
    }
}

/// Disposition to the wire.
pub fn disposition_out(d: Disposition) -> i32 {
    (match d {
        Disposition::Inline => proto::Disposition::Inline,
        Disposition::Attachment => proto::Disposition::Attachment,
    }) as i32
}

/// A mint request from the wire.
pub fn mint_request(
    r: proto::MintMediaUrlRequest,
) -> Result<velro_engine::engine::MintRequest, Status> {
    Ok(velro_engine::engine::MintRequest {
        store: non_empty(r.store),
        principal: entity(r.principal, "principal")?,
        media_id: match (r.generation_id.is_empty(), r.media_id.is_empty()) {
            (false, true) => None,
            (true, false) => Some(r.media_id),
            _ => {
                return Err(Status::invalid_argument(
                    "give exactly one of generation_id and media_id",
                ));
            }
        },
        generation_id: r.generation_id,
        disposition: disposition(r.disposition)?,
        ttl: (r.ttl_seconds != 0).then(|| Duration::from_secs(u64::from(r.ttl_seconds))),
        consistency: consistency(r.consistency)?,
        caller: caller(r.request_id, &r.client_ip)?,
    })
}

/// A diagnostic on the wire.
pub fn diagnostic(d: &velro_engine::Diagnostic) -> proto::Diagnostic {
    proto::Diagnostic {
        file: d.file.clone(),
        line: d.line.unwrap_or(0),
        column: d.column.unwrap_or(0),
        policy_id: d.policy_id.clone().unwrap_or_default(),
        message: d.message.clone(),
    }
}
