//! The shapes of the decision API: what a caller asks (`CheckRequest`, `LookupRequest`) and the
//! receipt it gets back (`Decision`, DESIGN §6 step 6). Transport-neutral; the PDP maps them to
//! protobuf and JSON.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::cache::Tier;
use crate::consistency::{Consistency, ConsistencyToken};
use crate::policy_store::PolicyError;

/// The store requests use when they name none.
pub const DEFAULT_STORE: &str = "velro";

/// An entity as a caller names it: a type (`User` or `Velro::User`) and an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityInput {
    /// Entity type; short names resolve in the store's namespace.
    pub type_name: String,
    /// Entity id.
    pub id: String,
}

impl EntityInput {
    /// `type_name` / `id`.
    pub fn new(type_name: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            type_name: type_name.into(),
            id: id.into(),
        }
    }
}

/// Facts about the call that go into the audit record and the violation detector.
#[derive(Debug, Clone, Default)]
pub struct CallerInfo {
    /// The caller's request id, for correlation.
    pub request_id: Option<String>,
    /// The end user's IP address, if the caller knows it.
    pub client_ip: Option<IpAddr>,
}

/// One authorization question.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// Policy store; `velro` when `None`.
    pub store: Option<String>,
    /// Who acts.
    pub principal: EntityInput,
    /// The action id, e.g. `project:view`.
    pub action: String,
    /// On what.
    pub resource: EntityInput,
    /// Request facts the policies read (e.g. `target_role`); `emergency` is reserved for the PDP.
    pub context: Map<String, Value>,
    /// Break-glass justification.
    pub justification: Option<String>,
    /// How fresh the answer must be.
    pub consistency: Consistency,
    /// Cedar entities supplied with the request (stores without a database only).
    pub entities: Option<Value>,
    /// Correlation and client facts.
    pub caller: CallerInfo,
}

impl CheckRequest {
    /// A request against the default store with an empty context.
    pub fn new(principal: EntityInput, action: impl Into<String>, resource: EntityInput) -> Self {
        Self {
            store: None,
            principal,
            action: action.into(),
            resource,
            context: Map::new(),
            justification: None,
            consistency: Consistency::default(),
            entities: None,
            caller: CallerInfo::default(),
        }
    }
}

/// Why a request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyKind {
    /// No policy permits it.
    NoPermit,
    /// A `forbid` applies (or errored, which denies).
    Forbidden,
    /// The principal or resource does not exist.
    NotFound,
    /// The request is malformed (batch items only; single checks return an error).
    Invalid,
    /// The principal is locked out by the security-violation detector.
    LockedOut,
}

impl DenyKind {
    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoPermit => "no_permit",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Invalid => "invalid",
            Self::LockedOut => "locked_out",
        }
    }
}

/// A policy that determined a decision, with its `@reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeterminingPolicy {
    /// The `@id`.
    pub id: Arc<str>,
    /// The `@reason`.
    pub reason: Arc<str>,
}

/// The receipt of one decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Decision id (UUIDv7), also the audit record id.
    pub id: Uuid,
    /// Allowed?
    pub allowed: bool,
    /// Why not, when denied.
    pub deny_kind: Option<DenyKind>,
    /// Policies that determined it.
    pub policies: Vec<DeterminingPolicy>,
    /// Policy evaluation errors.
    pub errors: Vec<PolicyError>,
    /// Store name.
    pub store: Arc<str>,
    /// Store policy version.
    pub policy_version: Arc<str>,
    /// What the answer reflects.
    pub consistency_token: ConsistencyToken,
    /// The tier that served it.
    pub cache_tier: Tier,
    /// Time spent, in microseconds.
    pub eval_us: u64,
}

/// A `LookupResources` question: which resources of a type may the principal act on?
#[derive(Debug, Clone)]
pub struct LookupRequest {
    /// Policy store; `velro` when `None`.
    pub store: Option<String>,
    /// Who acts.
    pub principal: EntityInput,
    /// The action.
    pub action: String,
    /// Resource type, e.g. `Project`.
    pub resource_type: String,
    /// Request facts, as in `CheckRequest`.
    pub context: Map<String, Value>,
    /// Break-glass justification.
    pub justification: Option<String>,
    /// Continue after this resource id (from a previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Most resources to return (1..=1000; default 100).
    pub limit: Option<u32>,
    /// Freshness.
    pub consistency: Consistency,
    /// Correlation and client facts.
    pub caller: CallerInfo,
}

/// One page of a lookup.
#[derive(Debug, Clone, Serialize)]
pub struct LookupPage {
    /// Allowed resource ids, ascending.
    pub ids: Vec<String>,
    /// Where the next page starts; present exactly when `truncated`.
    pub next_cursor: Option<String>,
    /// More candidates remain beyond this page (the page was cut at `limit` or at the scan budget).
    pub truncated: bool,
    /// Candidates examined for this page.
    pub examined: usize,
    /// What the answer reflects.
    pub consistency_token: ConsistencyToken,
}
