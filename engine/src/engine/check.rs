//! `Engine::check` and `Engine::batch_check`: validate, choose freshness, try the decision cache,
//! load the slice, evaluate, write the receipt, audit (DESIGN §6 steps 1–7).
//!
//! Validation is split so that a decision-cache hit costs only what identifies the question
//! (ids, action, context text): the context is parsed against the schema, and the Cedar request
//! built, only when Cedar has to evaluate.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cedar_policy::{Context, Entities, EntityId, EntityTypeName, EntityUid, Request};
use futures::StreamExt;
use serde_json::Value;

use super::Engine;
use super::decision_cache::{CachedDecision, DecisionKey};
use super::slice::{Memo, SliceLoader, context_entities, request_entities};
use crate::PolicyStore;
use crate::audit::{AuditRecord, RecordKind, Severity, Subject, truncate_ip};
use crate::cache::Tier;
use crate::consistency::{Consistency, ConsistencyToken};
use crate::decision::{CheckRequest, Decision, DenyKind, DeterminingPolicy, EntityInput};
use crate::error::{Error, Result};
use crate::ids::EntityRef;
use crate::policy_store::PolicyError;
use crate::violations::Offence;

/// Longest break-glass justification kept.
const MAX_JUSTIFICATION: usize = 1024;
/// Longest entity id accepted for stores without a database.
const MAX_ID_LEN: usize = 256;

/// What identifies a request (cheap to compute; enough for a decision-cache lookup).
pub(super) struct Identified {
    pub principal: EntityUid,
    pub action: EntityUid,
    /// The action's id text (`project:view`), shared.
    pub action_name: Arc<str>,
    pub resource: EntityUid,
    /// Velro references (stores backed by the database only).
    pub refs: Option<(EntityRef, EntityRef)>,
    /// The caller's context as canonical JSON.
    pub context_key: String,
    pub justification: Option<String>,
}

impl Identified {
    /// The principal as text for logs, audit and violation windows (cheap for Velro entities).
    pub fn subject(&self) -> String {
        match self.refs {
            Some((principal, _)) => principal.to_string(),
            None => self.principal.to_string(),
        }
    }
}

/// A request ready for Cedar.
pub(super) struct Prepared {
    pub request: Request,
    pub context_entities: Vec<EntityRef>,
    /// Entities supplied with the request (stores without a database).
    pub supplied: Option<Entities>,
}

/// Resolve a short or qualified type name in the store's namespace.
fn qualified(store: &PolicyStore, type_name: &str) -> String {
    match store.namespace() {
        Some(ns) if !type_name.contains("::") => format!("{ns}::{type_name}"),
        _ => type_name.to_owned(),
    }
}

fn entity_uid(store: &PolicyStore, input: &EntityInput) -> Result<EntityUid> {
    let name = qualified(store, &input.type_name);
    let type_name: EntityTypeName = name
        .parse()
        .map_err(|_| Error::InvalidRequest(format!("invalid entity type `{}`", shorten(&name))))?;
    if !store.schema().entity_types().any(|t| *t == type_name) {
        return Err(Error::InvalidRequest(format!(
            "unknown entity type `{}`",
            shorten(&input.type_name)
        )));
    }
    if input.id.is_empty() || input.id.len() > MAX_ID_LEN {
        return Err(Error::InvalidRequest(format!(
            "entity ids must be 1 to {MAX_ID_LEN} characters"
        )));
    }
    Ok(EntityUid::from_type_name_and_id(
        type_name,
        EntityId::new(&input.id),
    ))
}

/// The action uid, which must be declared by the store's schema: `project:view`, or the full
/// `Velro::Action::"project:view"`.
pub(super) fn action_uid(store: &PolicyStore, action: &str) -> Result<(EntityUid, Arc<str>)> {
    let unknown = || Error::InvalidRequest(format!("unknown action `{}`", shorten(action)));
    if let Some((uid, name)) = store.action_named(action) {
        return Ok((uid.clone(), Arc::clone(name)));
    }
    if !action.contains("::\"") {
        return Err(unknown());
    }
    let uid: EntityUid = action.parse().map_err(|_| unknown())?;
    match store.action_named(uid.id().unescaped()) {
        Some((known, name)) if *known == uid => Ok((uid, Arc::clone(name))),
        _ => Err(unknown()),
    }
}

/// User input echoed in errors is cut short.
pub(super) fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

impl Engine {
    /// Step 1a: identify the question and validate everything but the context's shape.
    pub(super) fn identify(
        &self,
        store: &PolicyStore,
        request: &CheckRequest,
    ) -> Result<Identified> {
        let config = &self.inner.config;
        let (action, action_name) = action_uid(store, &request.action)?;
        let (principal, resource, refs) = if self.is_sql_store(store) {
            let p = EntityRef::parse(&request.principal.type_name, &request.principal.id)?;
            let r = EntityRef::parse(&request.resource.type_name, &request.resource.id)?;
            (
                crate::entities::uid(&p),
                crate::entities::uid(&r),
                Some((p, r)),
            )
        } else {
            (
                entity_uid(store, &request.principal)?,
                entity_uid(store, &request.resource)?,
                None,
            )
        };
        if !store.applies_to(&action, principal.type_name(), resource.type_name()) {
            return Err(Error::InvalidRequest(format!(
                "action `{}` does not apply to a {} acting on a {}",
                shorten(&request.action),
                principal.type_name().basename(),
                resource.type_name().basename()
            )));
        }
        let context_key = serde_json::to_string(&request.context)
            .map_err(|_| Error::InvalidRequest("context is not valid JSON".into()))?;
        if context_key.len() > config.max_context_bytes {
            return Err(Error::InvalidRequest(format!(
                "context is larger than {} bytes",
                config.max_context_bytes
            )));
        }
        if refs.is_some() && request.context.contains_key("emergency") {
            return Err(Error::InvalidRequest(
                "`emergency` is set by the PDP, not by callers".into(),
            ));
        }
        let justification = match &request.justification {
            Some(j) if j.chars().count() > MAX_JUSTIFICATION => {
                return Err(Error::InvalidRequest(format!(
                    "justification is longer than {MAX_JUSTIFICATION} characters"
                )));
            }
            Some(j) if !j.trim().is_empty() => Some(j.trim().to_owned()),
            _ => None,
        };
        Ok(Identified {
            principal,
            action,
            action_name,
            resource,
            refs,
            context_key,
            justification,
        })
    }

    /// Step 1b: parse the context against the schema and build the Cedar request.
    pub(super) fn complete(
        &self,
        store: &PolicyStore,
        request: &CheckRequest,
        id: &Identified,
    ) -> Result<Prepared> {
        let sql_store = id.refs.is_some();
        let mut context_json = request.context.clone();
        let supplied = if sql_store {
            if request.entities.is_some() {
                return Err(Error::InvalidRequest(format!(
                    "store `{}` loads its entities from the database; do not send entities",
                    store.name()
                )));
            }
            let text = id.justification.clone().unwrap_or_default();
            context_json.insert(
                "emergency".into(),
                serde_json::json!({
                    "enabled": self.inner.config.emergency_mode,
                    "justification": text,
                    "justification_length": text.chars().count(),
                }),
            );
            None
        } else {
            let entities = request.entities.clone().unwrap_or(Value::Array(Vec::new()));
            Some(
                Entities::from_json_value(entities, Some(store.schema())).map_err(|e| {
                    Error::InvalidRequest(format!("entities do not match the schema: {e}"))
                })?,
            )
        };
        let context_entities = if sql_store {
            context_entities(&context_json)
        } else {
            Vec::new()
        };
        let context = self.context(store, &id.action, context_json)?;
        // Types were checked against the action's `appliesTo` in `identify`.
        let cedar_request = Request::new(
            id.principal.clone(),
            id.action.clone(),
            id.resource.clone(),
            context,
            None,
        )
        .map_err(|e| Error::InvalidRequest(format!("request does not match the schema: {e}")))?;
        Ok(Prepared {
            request: cedar_request,
            context_entities,
            supplied,
        })
    }

    /// The context, parsed against the action's context type; parsed contexts are reused.
    fn context(
        &self,
        store: &PolicyStore,
        action: &EntityUid,
        json: serde_json::Map<String, Value>,
    ) -> Result<Context> {
        let text = serde_json::to_string(&json)
            .map_err(|_| Error::InvalidRequest("context is not valid JSON".into()))?;
        let key = (Arc::<str>::from(store.version()), action.to_string(), text);
        if let Some(hit) = self.inner.contexts.get(&key) {
            return Ok(hit);
        }
        let context = Context::from_json_value(Value::Object(json), Some((store.schema(), action)))
            .map_err(|e| {
                Error::InvalidRequest(format!("context does not match the schema: {e}"))
            })?;
        self.inner.contexts.insert(key, context.clone());
        Ok(context)
    }

    /// Decide one request.
    pub async fn check(&self, request: CheckRequest) -> Result<Decision> {
        let mut memo = Memo::new();
        self.check_with(&request, &mut memo).await
    }

    /// Decide up to `max_batch` requests, in order, loading each entity once for the whole batch:
    /// the principals and resources of items that share a consistency requirement are fetched
    /// concurrently first, then each item is decided. Each item succeeds or fails on its own.
    pub async fn batch_check(&self, requests: &[CheckRequest]) -> Result<Vec<Result<Decision>>> {
        if requests.len() > self.inner.config.max_batch {
            return Err(Error::InvalidRequest(format!(
                "a batch holds at most {} items",
                self.inner.config.max_batch
            )));
        }
        // Entities read for one consistency requirement must not answer another.
        let mut memos: HashMap<String, Memo> = HashMap::new();
        self.prefetch(requests, &mut memos).await;
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            let memo = memos
                .entry(consistency_key(&request.consistency))
                .or_default();
            out.push(self.check_with(request, memo).await);
        }
        Ok(out)
    }

    /// Load the principals and resources of a batch concurrently into the memos.
    async fn prefetch(&self, requests: &[CheckRequest], memos: &mut HashMap<String, Memo>) {
        /// Concurrent loads per batch.
        const PARALLEL: usize = 16;
        let mut wanted: HashMap<String, (Consistency, std::collections::BTreeSet<EntityRef>)> =
            HashMap::new();
        for request in requests {
            let Ok(store) = self.store(request.store.as_deref()) else {
                continue;
            };
            if !self.is_sql_store(&store) {
                continue;
            }
            let refs = [&request.principal, &request.resource]
                .into_iter()
                .filter_map(|e| EntityRef::parse(&e.type_name, &e.id).ok())
                .filter(|r| r.kind.fixed_id().is_none());
            wanted
                .entry(consistency_key(&request.consistency))
                .or_insert_with(|| (request.consistency.clone(), Default::default()))
                .1
                .extend(refs);
        }
        for (key, (consistency, refs)) in wanted {
            let Ok(store) = self.store(None) else { return };
            let Ok((trust_caches, revision)) = self.freshness(&store, &consistency).await else {
                continue;
            };
            let loaded: Vec<_> = futures::stream::iter(refs)
                .map(|r| async move { (r, self.inner.cache.get(r, revision, trust_caches).await) })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
            let memo = memos.entry(key).or_default();
            for (r, result) in loaded {
                // A failed prefetch is retried (and reported) by the item itself.
                if let Ok(entry) = result {
                    memo.insert(r, entry);
                }
            }
        }
    }

    async fn check_with(&self, request: &CheckRequest, memo: &mut Memo) -> Result<Decision> {
        let started = Instant::now();
        let store = self.store(request.store.as_deref())?;
        let id = match self.identify(&store, request) {
            Ok(id) => id,
            Err(e) => return Err(self.invalid(request, e).await),
        };

        if self.inner.violations.lockouts_enabled()
            && self.inner.violations.locked_out(&id.subject()).await
        {
            let decision = self.receipt_without_evaluation(
                &store,
                DenyKind::LockedOut,
                self.inner.feed.low_water(),
                Tier::L1,
                started,
            );
            self.audit_decision(&store, &id, &decision, request, Severity::Warning)
                .await?;
            return Ok(decision);
        }

        // Before anything is read: see `CachedDecision::epoch`.
        let epoch = self.inner.cache.versions().epoch();
        let (trust_caches, revision) = self.freshness(&store, &request.consistency).await?;
        let token = ConsistencyToken::new(store.name(), Some(store.version()), revision);

        let Some((principal, resource)) = id.refs else {
            // A store without a database: the request carries its entities.
            let prepared = match self.complete(&store, request, &id) {
                Ok(p) => p,
                Err(e) => return Err(self.invalid(request, e).await),
            };
            let entities = prepared.supplied.clone().unwrap_or_else(Entities::empty);
            let entities = entities
                .add_entities(store.action_entities().iter().cloned(), None)
                .map_err(|e| Error::InvalidRequest(format!("entities: {e}")))?;
            let evaluated =
                self.evaluate(&store, &id, &prepared, &entities, token, Tier::L1, started);
            return self.finish(&store, &id, evaluated, request).await;
        };

        let emergency = self.inner.config.emergency_mode;
        let use_decision_cache = trust_caches && !emergency;
        let key = DecisionKey {
            store: store.shared_name(),
            policy_version: store.shared_version(),
            principal,
            action: Arc::clone(&id.action_name),
            resource,
            context: id.context_key.clone(),
        };
        if use_decision_cache && let Some(hit) = self.inner.decisions.get(&key) {
            let decision = Decision {
                id: uuid::Uuid::now_v7(),
                allowed: hit.allowed,
                deny_kind: hit.deny_kind,
                policies: hit.policies.clone(),
                errors: Vec::new(),
                store: store.shared_name(),
                policy_version: store.shared_version(),
                consistency_token: token,
                cache_tier: Tier::Decision,
                eval_us: elapsed_us(started),
            };
            return self
                .finish(&store, &id, (decision, Severity::Info, false), request)
                .await;
        }

        let prepared = match self.complete(&store, request, &id) {
            Ok(p) => p,
            Err(e) => return Err(self.invalid(request, e).await),
        };
        let mut loader = SliceLoader {
            cache: &self.inner.cache,
            read_seq: revision,
            trust_caches,
            depth: store.settings().entity_depth,
            memo,
        };
        let slice = loader
            .load(principal, resource, &prepared.context_entities)
            .await
            .map_err(super::unavailable)?;
        let tier = slice.tier.unwrap_or(Tier::L1);
        if !slice.principal_exists || !slice.resource_exists {
            let decision = self.receipt_without_evaluation(
                &store,
                DenyKind::NotFound,
                revision,
                tier,
                started,
            );
            if use_decision_cache {
                self.inner.decisions.insert(
                    key,
                    CachedDecision {
                        allowed: false,
                        deny_kind: Some(DenyKind::NotFound),
                        policies: Vec::new(),
                        deps: slice.deps,
                        epoch,
                    },
                );
            }
            return self
                .finish(&store, &id, (decision, Severity::Info, false), request)
                .await;
        }
        let entities = request_entities(slice.entities, store.action_entity(&id.action))?;
        let evaluated = self.evaluate(&store, &id, &prepared, &entities, token, tier, started);
        let (decision, _, cacheable) = &evaluated;
        if *cacheable && use_decision_cache {
            self.inner.decisions.insert(
                key,
                CachedDecision {
                    allowed: decision.allowed,
                    deny_kind: decision.deny_kind,
                    policies: decision.policies.clone(),
                    deps: slice.deps,
                    epoch,
                },
            );
        }
        self.finish(&store, &id, evaluated, request).await
    }

    /// Count an invalid request as a possible probe and hand the error back.
    async fn invalid(&self, request: &CheckRequest, error: Error) -> Error {
        if matches!(error, Error::InvalidRequest(_)) {
            metrics::counter!("velro_invalid_requests_total").increment(1);
            let principal = format!("{}:{}", request.principal.type_name, request.principal.id);
            self.note_offence(Some(shorten(&principal)), request, Offence::Invalid)
                .await;
        }
        error
    }

    /// Whether caches may answer, and the data revision the answer reflects (step 2).
    pub(super) async fn freshness(
        &self,
        store: &PolicyStore,
        consistency: &Consistency,
    ) -> Result<(bool, i64)> {
        let feed = &self.inner.feed;
        let fresh = feed.fresh();
        if !fresh {
            metrics::counter!("velro_stale_cache_bypass_total").increment(1);
        }
        match consistency {
            Consistency::MinimizeLatency => Ok((fresh, feed.low_water())),
            Consistency::FullyConsistent => Ok((false, feed.low_water())),
            Consistency::AtLeastAsFresh(token) => {
                if token.store != store.name() {
                    return Err(Error::InvalidToken(format!(
                        "issued for store `{}`",
                        shorten(&token.store)
                    )));
                }
                if feed.low_water() < token.revision {
                    // Catch up now; if the log is still behind, read around the caches.
                    let _ = feed.tick().await;
                }
                let caught_up = feed.low_water() >= token.revision;
                Ok((fresh && caught_up, feed.low_water().max(token.revision)))
            }
        }
    }

    fn receipt_without_evaluation(
        &self,
        store: &PolicyStore,
        kind: DenyKind,
        revision: i64,
        tier: Tier,
        started: Instant,
    ) -> Decision {
        Decision {
            id: uuid::Uuid::now_v7(),
            allowed: false,
            deny_kind: Some(kind),
            policies: Vec::new(),
            errors: Vec::new(),
            store: store.shared_name(),
            policy_version: store.shared_version(),
            consistency_token: ConsistencyToken::new(store.name(), Some(store.version()), revision),
            cache_tier: tier,
            eval_us: elapsed_us(started),
        }
    }

    /// Evaluate with Cedar (step 5) and build the receipt (step 6). Returns the decision, its
    /// audit severity, and whether it may be cached.
    #[expect(clippy::too_many_arguments, reason = "the parts of one decision")]
    fn evaluate(
        &self,
        store: &PolicyStore,
        id: &Identified,
        prepared: &Prepared,
        entities: &Entities,
        token: ConsistencyToken,
        tier: Tier,
        started: Instant,
    ) -> (Decision, Severity, bool) {
        let evaluation = store.authorize(&prepared.request, entities);
        let infos: Vec<_> = evaluation
            .determining
            .iter()
            .filter_map(|policy| store.policy(policy))
            .collect();
        let policies = evaluation
            .determining
            .iter()
            .map(|policy| match store.policy(policy) {
                Some(info) => DeterminingPolicy {
                    id: Arc::clone(&info.id),
                    reason: Arc::clone(&info.reason),
                },
                None => DeterminingPolicy {
                    id: Arc::from(policy.as_str()),
                    reason: Arc::from(""),
                },
            })
            .collect();
        let deny_kind = if evaluation.allowed {
            None
        } else if evaluation.forbid_errored || !evaluation.determining.is_empty() {
            Some(DenyKind::Forbidden)
        } else {
            Some(DenyKind::NoPermit)
        };
        let critical = evaluation.allowed && infos.iter().any(|p| p.critical);
        let never_cache = infos.iter().any(|p| p.never_cache);
        let severity = if critical {
            Severity::Critical
        } else if id.justification.is_some() {
            Severity::Warning
        } else {
            Severity::Info
        };
        let cacheable = evaluation.errors.is_empty() && !never_cache && !critical;
        (
            Decision {
                id: uuid::Uuid::now_v7(),
                allowed: evaluation.allowed,
                deny_kind,
                policies,
                errors: evaluation.errors,
                store: store.shared_name(),
                policy_version: store.shared_version(),
                consistency_token: token,
                cache_tier: tier,
                eval_us: elapsed_us(started),
            },
            severity,
            cacheable,
        )
    }

    /// Audit, count offences and record metrics (step 7). A critical decision that cannot be
    /// audited becomes a deny.
    async fn finish(
        &self,
        store: &PolicyStore,
        id: &Identified,
        evaluated: (Decision, Severity, bool),
        request: &CheckRequest,
    ) -> Result<Decision> {
        let (mut decision, severity, _) = evaluated;
        let outcome = if decision.allowed { "allow" } else { "deny" };
        metrics::counter!("velro_decisions_total", "outcome" => outcome, "tier" => decision.cache_tier.as_str())
            .increment(1);
        metrics::histogram!("velro_decision_latency_us", "tier" => decision.cache_tier.as_str())
            .record(decision.eval_us as f64);

        if severity == Severity::Critical {
            let record = self.decision_record(store, id, &decision, request, severity);
            if let Err(e) = self.inner.audit.record_durably(record).await {
                tracing::error!(
                    error = %e,
                    decision.id = %decision.id,
                    "break-glass decision could not be audited; denying"
                );
                decision.allowed = false;
                decision.deny_kind = Some(DenyKind::Forbidden);
                decision.errors.push(PolicyError {
                    policy_id: "audit".into(),
                    message: "the audit record of this break-glass decision could not be written"
                        .into(),
                });
                return Ok(decision);
            }
        } else {
            self.audit_decision(store, id, &decision, request, severity)
                .await?;
        }
        if !decision.allowed {
            self.note_offence(Some(id.subject()), request, Offence::Denied)
                .await;
        }
        Ok(decision)
    }

    fn decision_record(
        &self,
        store: &PolicyStore,
        id: &Identified,
        decision: &Decision,
        request: &CheckRequest,
        severity: Severity,
    ) -> AuditRecord {
        let mut record =
            AuditRecord::with_id(decision.id, RecordKind::Decision, self.inner.clock.now_ms());
        record.severity = severity;
        record.store = Some(store.shared_name());
        record.policy_version = Some(store.shared_version());
        record.revision = Some(decision.consistency_token.revision);
        record.principal = Some(match id.refs {
            Some((principal, _)) => Subject::Entity(principal),
            None => Subject::Text(id.principal.to_string()),
        });
        record.action = Some(Arc::clone(&id.action_name));
        record.resource = Some(match id.refs {
            Some((_, resource)) => Subject::Entity(resource),
            None => Subject::Text(id.resource.to_string()),
        });
        record.decision = Some(Cow::Borrowed(if decision.allowed {
            "allow"
        } else {
            "deny"
        }));
        record.deny_kind = decision.deny_kind.map(|k| Cow::Borrowed(k.as_str()));
        record.policies = decision
            .policies
            .iter()
            .map(|p| Arc::clone(&p.id))
            .collect();
        record.errors = decision
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.policy_id, e.message))
            .collect();
        record.cache_tier = Some(Cow::Borrowed(decision.cache_tier.as_str()));
        record.latency_us = Some(decision.eval_us);
        record.request_id = request.caller.request_id.clone();
        record.client_ip = request.caller.client_ip.map(truncate_ip);
        record.justification = id.justification.clone();
        record
    }

    async fn audit_decision(
        &self,
        store: &PolicyStore,
        id: &Identified,
        decision: &Decision,
        request: &CheckRequest,
        severity: Severity,
    ) -> Result<()> {
        let record = self.decision_record(store, id, decision, request, severity);
        self.inner.audit.record(record).await
    }

    /// Count a denial or invalid input; report (audit + SIEM line) any violation it triggers.
    async fn note_offence(
        &self,
        principal: Option<String>,
        request: &CheckRequest,
        offence: Offence,
    ) {
        let violations = self
            .inner
            .violations
            .note(principal.as_deref(), request.caller.client_ip, offence)
            .await;
        for violation in violations {
            tracing::warn!(
                target: "velro::siem",
                event = "security_violation",
                subject = %violation.subject,
                rate_per_sec = violation.rate,
                locked_out = violation.locked_out,
                request_id = request.caller.request_id.as_deref().unwrap_or(""),
                "security violation: too many denied or invalid requests"
            );
            let mut record =
                AuditRecord::new(RecordKind::SecurityViolation, self.inner.clock.now_ms());
            record.severity = Severity::Critical;
            record.principal = principal.clone().map(Subject::Text);
            record.client_ip = request.caller.client_ip.map(truncate_ip);
            record.request_id = request.caller.request_id.clone();
            record.detail = Some(format!(
                "{} exceeded {} offences per second (rate {:.1}){}",
                violation.subject,
                self.inner.config.violations.threshold_per_sec,
                violation.rate,
                if violation.locked_out {
                    "; locked out"
                } else {
                    ""
                }
            ));
            if let Err(e) = self.inner.audit.record(record).await {
                tracing::error!(error = %e, "cannot audit a security violation");
            }
        }
    }
}

/// Items with equal keys may share loaded entities.
fn consistency_key(consistency: &Consistency) -> String {
    match consistency {
        Consistency::MinimizeLatency => "minimize_latency".into(),
        Consistency::FullyConsistent => "fully_consistent".into(),
        Consistency::AtLeastAsFresh(token) => format!("token:{}", token.encode()),
    }
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}
