//! `Engine::check` and `Engine::batch_check`: validate, choose freshness, try the decision cache,
//! load the slice, evaluate, write the receipt, audit (DESIGN §6 steps 1–7).

use std::sync::Arc;
use std::time::Instant;

use cedar_policy::{Context, Entities, EntityId, EntityTypeName, EntityUid, Request};
use serde_json::Value;

use super::Engine;
use super::decision_cache::{CachedDecision, DecisionKey};
use super::slice::{Memo, SliceLoader, context_entities};
use crate::PolicyStore;
use crate::audit::{AuditRecord, RecordKind, Severity, truncate_ip};
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

/// A validated request.
pub(super) struct Prepared {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    /// Velro references (stores backed by the database only).
    pub refs: Option<(EntityRef, EntityRef)>,
    pub request: Request,
    /// The caller's context as canonical JSON (decision-cache key).
    pub context_key: String,
    pub context_entities: Vec<EntityRef>,
    pub justification: Option<String>,
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

/// The action uid, which must be declared by the store's schema.
pub(super) fn action_uid(store: &PolicyStore, action: &str) -> Result<EntityUid> {
    let text = if action.contains("::\"") {
        action.to_owned()
    } else {
        let escaped = action.replace('\\', "\\\\").replace('"', "\\\"");
        match store.namespace() {
            Some(ns) => format!("{ns}::Action::\"{escaped}\""),
            None => format!("Action::\"{escaped}\""),
        }
    };
    let uid: EntityUid = text
        .parse()
        .map_err(|_| Error::InvalidRequest(format!("invalid action `{}`", shorten(action))))?;
    if !store.schema().actions().any(|a| *a == uid) {
        return Err(Error::InvalidRequest(format!(
            "unknown action `{}`",
            shorten(action)
        )));
    }
    Ok(uid)
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
    /// Validate a request against the store (step 1).
    pub(super) fn prepare(&self, store: &PolicyStore, request: &CheckRequest) -> Result<Prepared> {
        let config = &self.inner.config;
        let sql_store = self.is_sql_store(store);
        let action = action_uid(store, &request.action)?;
        let (principal, resource, refs) = if sql_store {
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
        let context_key = serde_json::to_string(&request.context)
            .map_err(|_| Error::InvalidRequest("context is not valid JSON".into()))?;
        if context_key.len() > config.max_context_bytes {
            return Err(Error::InvalidRequest(format!(
                "context is larger than {} bytes",
                config.max_context_bytes
            )));
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
        let mut context_json = request.context.clone();
        let supplied = if sql_store {
            if context_json.contains_key("emergency") {
                return Err(Error::InvalidRequest(
                    "`emergency` is set by the PDP, not by callers".into(),
                ));
            }
            if request.entities.is_some() {
                return Err(Error::InvalidRequest(format!(
                    "store `{}` loads its entities from the database; do not send entities",
                    store.name()
                )));
            }
            let text = justification.clone().unwrap_or_default();
            context_json.insert(
                "emergency".into(),
                serde_json::json!({
                    "enabled": config.emergency_mode,
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
        let context =
            Context::from_json_value(Value::Object(context_json), Some((store.schema(), &action)))
                .map_err(|e| {
                    Error::InvalidRequest(format!("context does not match the schema: {e}"))
                })?;
        let cedar_request = Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            Some(store.schema()),
        )
        .map_err(|e| Error::InvalidRequest(format!("request does not match the schema: {e}")))?;
        Ok(Prepared {
            principal,
            action,
            resource,
            refs,
            request: cedar_request,
            context_key,
            context_entities,
            justification,
            supplied,
        })
    }

    /// Decide one request.
    pub async fn check(&self, request: CheckRequest) -> Result<Decision> {
        let mut memo = Memo::new();
        self.check_with(&request, &mut memo).await
    }

    /// Decide up to `max_batch` requests, in order, loading each entity once for the whole batch.
    /// Each item succeeds or fails on its own.
    pub async fn batch_check(&self, requests: &[CheckRequest]) -> Result<Vec<Result<Decision>>> {
        if requests.len() > self.inner.config.max_batch {
            return Err(Error::InvalidRequest(format!(
                "a batch holds at most {} items",
                self.inner.config.max_batch
            )));
        }
        let mut memo = Memo::new();
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(self.check_with(request, &mut memo).await);
        }
        Ok(out)
    }

    async fn check_with(&self, request: &CheckRequest, memo: &mut Memo) -> Result<Decision> {
        let started = Instant::now();
        let store = self.store(request.store.as_deref())?;
        let prepared = match self.prepare(&store, request) {
            Ok(prepared) => prepared,
            Err(e) => {
                metrics::counter!("velro_invalid_requests_total").increment(1);
                let principal = format!("{}:{}", request.principal.type_name, request.principal.id);
                self.note_offence(Some(shorten(&principal)), request, Offence::Invalid)
                    .await;
                return Err(e);
            }
        };
        let principal_text = prepared.principal.to_string();

        if self.inner.violations.locked_out(&principal_text).await {
            let decision =
                self.deny_without_evaluation(&store, &prepared, DenyKind::LockedOut, started);
            self.audit_decision(&store, &prepared, &decision, request, Severity::Warning)
                .await?;
            return Ok(decision);
        }

        let (trust_caches, revision) = self.freshness(&store, &request.consistency).await?;
        let token = ConsistencyToken::new(store.name(), Some(store.version()), revision);

        let Some((principal, resource)) = prepared.refs else {
            // A store without a database: the request carries its entities.
            let entities = prepared.supplied.clone().unwrap_or_else(Entities::empty);
            let entities = entities
                .add_entities(store.action_entities().iter().cloned(), None)
                .map_err(|e| Error::InvalidRequest(format!("entities: {e}")))?;
            let evaluated = self.evaluate(&store, &prepared, &entities, token, Tier::L1, started);
            return self.finish(&store, &prepared, &evaluated, request).await;
        };

        let emergency = self.inner.config.emergency_mode;
        let key = DecisionKey {
            store: Arc::from(store.name()),
            policy_version: Arc::from(store.version()),
            principal,
            action: Arc::from(prepared.action.id().unescaped()),
            resource,
            context: prepared.context_key.clone(),
        };
        if trust_caches
            && !emergency
            && let Some(hit) = self.inner.decisions.get(&key)
        {
            let decision = Decision {
                id: uuid::Uuid::now_v7(),
                allowed: hit.allowed,
                deny_kind: hit.deny_kind,
                policies: hit.policies.clone(),
                errors: Vec::new(),
                store: store.name().to_owned(),
                policy_version: store.version().to_owned(),
                consistency_token: token,
                cache_tier: Tier::Decision,
                eval_us: elapsed_us(started),
            };
            self.finish(
                &store,
                &prepared,
                &(decision.clone(), Severity::Info, false),
                request,
            )
            .await?;
            return Ok(decision);
        }

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
            let mut decision =
                self.deny_without_evaluation(&store, &prepared, DenyKind::NotFound, started);
            decision.consistency_token = token;
            decision.cache_tier = tier;
            if trust_caches && !emergency {
                self.inner.decisions.insert(
                    key,
                    CachedDecision {
                        allowed: false,
                        deny_kind: Some(DenyKind::NotFound),
                        policies: Vec::new(),
                        deps: slice.deps,
                    },
                );
            }
            self.finish(
                &store,
                &prepared,
                &(decision.clone(), Severity::Info, false),
                request,
            )
            .await?;
            return Ok(decision);
        }
        let entities = Entities::from_entities(
            slice
                .entities
                .into_iter()
                .chain(store.action_entities().iter().cloned()),
            None,
        )
        .map_err(|e| Error::Database(format!("inconsistent entity slice: {e}")))?;
        let evaluated = self.evaluate(&store, &prepared, &entities, token, tier, started);
        let (decision, _, cacheable) = &evaluated;
        if *cacheable && trust_caches && !emergency {
            self.inner.decisions.insert(
                key,
                CachedDecision {
                    allowed: decision.allowed,
                    deny_kind: decision.deny_kind,
                    policies: decision.policies.clone(),
                    deps: slice.deps,
                },
            );
        }
        self.finish(&store, &prepared, &evaluated, request).await
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

    fn deny_without_evaluation(
        &self,
        store: &PolicyStore,
        _prepared: &Prepared,
        kind: DenyKind,
        started: Instant,
    ) -> Decision {
        Decision {
            id: uuid::Uuid::now_v7(),
            allowed: false,
            deny_kind: Some(kind),
            policies: Vec::new(),
            errors: Vec::new(),
            store: store.name().to_owned(),
            policy_version: store.version().to_owned(),
            consistency_token: ConsistencyToken::new(
                store.name(),
                Some(store.version()),
                self.inner.feed.low_water(),
            ),
            cache_tier: Tier::L1,
            eval_us: elapsed_us(started),
        }
    }

    /// Evaluate with Cedar (step 5) and build the receipt (step 6). Returns the decision, its
    /// audit severity, and whether it may be cached.
    fn evaluate(
        &self,
        store: &PolicyStore,
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
            .filter_map(|id| store.policy(id))
            .collect();
        let policies = evaluation
            .determining
            .iter()
            .map(|id| DeterminingPolicy {
                id: id.clone(),
                reason: store
                    .policy(id)
                    .map(|p| p.reason.clone())
                    .unwrap_or_default(),
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
        } else if prepared.justification.is_some() {
            Severity::Warning
        } else {
            Severity::Info
        };
        let cacheable = evaluation.errors.is_empty() && !never_cache && !critical;
        let errors: Vec<PolicyError> = evaluation.errors;
        (
            Decision {
                id: uuid::Uuid::now_v7(),
                allowed: evaluation.allowed,
                deny_kind,
                policies,
                errors,
                store: store.name().to_owned(),
                policy_version: store.version().to_owned(),
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
        prepared: &Prepared,
        evaluated: &(Decision, Severity, bool),
        request: &CheckRequest,
    ) -> Result<Decision> {
        let (decision, severity, _) = evaluated;
        let mut decision = decision.clone();
        let outcome = if decision.allowed { "allow" } else { "deny" };
        metrics::counter!("velro_decisions_total", "outcome" => outcome, "tier" => decision.cache_tier.as_str())
            .increment(1);
        metrics::histogram!("velro_decision_latency_us", "tier" => decision.cache_tier.as_str())
            .record(decision.eval_us as f64);

        if *severity == Severity::Critical {
            let record = self.decision_record(store, prepared, &decision, request, *severity);
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
            self.audit_decision(store, prepared, &decision, request, *severity)
                .await?;
        }
        if !decision.allowed {
            self.note_offence(
                Some(prepared.principal.to_string()),
                request,
                Offence::Denied,
            )
            .await;
        }
        Ok(decision)
    }

    fn decision_record(
        &self,
        store: &PolicyStore,
        prepared: &Prepared,
        decision: &Decision,
        request: &CheckRequest,
        severity: Severity,
    ) -> AuditRecord {
        let mut record = AuditRecord::new(RecordKind::Decision, self.inner.clock.now_ms());
        record.id = decision.id;
        record.severity = severity;
        record.store = Some(store.name().to_owned());
        record.policy_version = Some(store.version().to_owned());
        record.revision = Some(decision.consistency_token.revision);
        record.principal = Some(prepared.principal.to_string());
        record.action = Some(prepared.action.id().unescaped().to_owned());
        record.resource = Some(prepared.resource.to_string());
        record.decision = Some(if decision.allowed { "allow" } else { "deny" }.into());
        record.deny_kind = decision.deny_kind.map(|k| k.as_str().to_owned());
        record.policies = decision.policies.iter().map(|p| p.id.clone()).collect();
        record.errors = decision
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.policy_id, e.message))
            .collect();
        record.cache_tier = Some(decision.cache_tier.as_str().to_owned());
        record.latency_us = Some(decision.eval_us);
        record.request_id = request.caller.request_id.clone();
        record.client_ip = request.caller.client_ip.map(truncate_ip);
        record.justification = prepared.justification.clone();
        record
    }

    async fn audit_decision(
        &self,
        store: &PolicyStore,
        prepared: &Prepared,
        decision: &Decision,
        request: &CheckRequest,
        severity: Severity,
    ) -> Result<()> {
        let record = self.decision_record(store, prepared, decision, request, severity);
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
            record.principal = principal.clone();
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

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}
