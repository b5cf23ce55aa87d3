//! One validated version of one policy store: schema, policies with their `@id`s and `@reason`s,
//! loader settings and the content hash naming the version.
//!
//! A `PolicyStore` is built once per version and shared behind an `Arc`; requests never parse or
//! clone policies. It owns strict validation and the one evaluation rule every caller uses
//! (`authorize`). It does not watch folders (see `stores`) or load entities.

mod diagnostic;
mod sources;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, Authorizer, Effect, Entities, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, PrincipalConstraint, Request, ResourceConstraint, Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};

pub use diagnostic::Diagnostic;
pub use sources::{
    POLICY_EXTENSION, SCHEMA_FILE, SETTINGS_FILE, SourceFile, StoreSources, TESTS_DIR,
    store_name_of,
};

use crate::error::{Error, Result};

/// Annotation naming a policy; required and unique within a store.
pub const ID_ANNOTATION: &str = "id";
/// Annotation explaining a policy to humans; required, returned with decisions.
pub const REASON_ANNOTATION: &str = "reason";
/// `@cache("never")` keeps decisions this policy determines out of the decision cache.
pub const CACHE_ANNOTATION: &str = "cache";
/// `@severity("critical")` marks decisions this policy determines as critical in the audit log.
pub const SEVERITY_ANNOTATION: &str = "severity";

/// Longest policy id accepted.
const MAX_POLICY_ID_LEN: usize = 128;

/// Loader settings of a store (`store.toml`): facts about how far the entity loader must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Hops the loader follows up project parents and generation lineage.
    #[serde(default = "default_entity_depth")]
    pub entity_depth: u32,
}

fn default_entity_depth() -> u32 {
    3
}

/// Deepest `entity_depth` accepted.
const MAX_ENTITY_DEPTH: u32 = 8;

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            entity_depth: default_entity_depth(),
        }
    }
}

impl StoreSettings {
    /// Entity dereference level the validator enforces, so that no policy reads further than the
    /// loader fetches. The deepest path the loader serves is a generation's project's
    /// `entity_depth`-th ancestor's attributes: `resource.project.parent^depth.links.…` is
    /// `entity_depth + 2` dereferences.
    pub fn max_deref_level(&self) -> u32 {
        self.entity_depth + 2
    }
}

/// What the store knows about one policy, for receipts and listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    /// The `@id`.
    pub id: Arc<str>,
    /// The `@reason`.
    pub reason: Arc<str>,
    /// `permit` or `forbid`.
    pub effect: PolicyEffect,
    /// File the policy is in.
    pub file: String,
    /// 1-based line where the policy starts.
    pub line: u32,
    /// Byte range of the policy's text in its file (annotations included).
    pub span: std::ops::Range<usize>,
    /// `@cache("never")`.
    pub never_cache: bool,
    /// `@severity("critical")`.
    pub critical: bool,
}

/// A policy's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyEffect {
    /// Grants when it applies.
    Permit,
    /// Denies when it applies, overriding every permit.
    Forbid,
}

/// The outcome of evaluating one request against a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// `true` for allow.
    pub allowed: bool,
    /// Policies that determined the decision: the satisfied permits for an allow, the satisfied
    /// forbids for a deny, plus any forbid that failed to evaluate (a deny).
    pub determining: Vec<String>,
    /// Policies that failed to evaluate, with Cedar's message.
    pub errors: Vec<PolicyError>,
    /// A forbid policy failed to evaluate, so the request was denied (fail closed).
    pub forbid_errored: bool,
}

/// A policy that failed to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    /// The policy's `@id`.
    pub policy_id: String,
    /// Cedar's message.
    pub message: String,
}

/// One validated, immutable version of a policy store.
#[derive(Debug)]
pub struct PolicyStore {
    name: String,
    version: String,
    shared_name: Arc<str>,
    shared_version: Arc<str>,
    schema: Schema,
    policies: PolicySet,
    info: BTreeMap<String, PolicyInfo>,
    settings: StoreSettings,
    warnings: Vec<Diagnostic>,
    sources: StoreSources,
    authorizer: Authorizer,
    /// The schema's action entities (with their groups), built once per version.
    action_entities: Vec<cedar_policy::Entity>,
    /// The same, by uid, as shareable Cedar-core entities for assembling request entities.
    action_index: HashMap<EntityUid, Arc<cedar_policy_core::ast::Entity>>,
    /// Actions by id text (`project:view`), with the text shared for receipts and cache keys.
    action_names: HashMap<String, (EntityUid, Arc<str>)>,
    /// Per action: the principal and resource types it applies to.
    applies_to: HashMap<EntityUid, (Vec<EntityTypeName>, Vec<EntityTypeName>)>,
    /// Per (principal type, action, resource type): the policies whose scope can match.
    applicable: RwLock<HashMap<ScopeKey, Arc<PolicySet>>>,
    /// The namespace all entity types share, if they share one (`Velro`).
    namespace: Option<String>,
}

impl PolicyStore {
    /// Read and build the store in folder `dir`; the store is named after the folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let sources = StoreSources::read(dir)?;
        Self::build(&store_name_of(dir), sources)
    }

    /// Build a store version from its files: parse, check `@id`/`@reason`, validate strictly.
    /// On any error nothing is returned but the full list of problems.
    pub fn build(name: &str, sources: StoreSources) -> Result<Self> {
        Self::build_reusing(name, sources, None)
    }

    /// Build the next version of this store from `sources`, reusing the parsed schema when the
    /// schema file did not change (parsing it dominates a policy-only reload).
    pub fn rebuild(&self, sources: StoreSources) -> Result<Self> {
        Self::build_reusing(&self.name, sources, Some(self))
    }

    fn build_reusing(name: &str, sources: StoreSources, previous: Option<&Self>) -> Result<Self> {
        let invalid = |diagnostics| Error::InvalidStore {
            store: name.to_owned(),
            diagnostics,
        };
        let mut problems = Vec::new();
        let mut warnings = Vec::new();

        let settings = parse_settings(sources.settings.as_ref()).map_err(|d| invalid(vec![d]))?;

        let reusable = previous.filter(|p| p.sources.schema == sources.schema);
        let parsed_schema = match reusable {
            Some(previous) => {
                warnings.extend(
                    previous
                        .warnings
                        .iter()
                        .filter(|w| w.file == SCHEMA_FILE)
                        .cloned(),
                );
                Ok(previous.schema.clone())
            }
            None => Schema::from_cedarschema_str(&sources.schema.text).map(|(schema, found)| {
                for w in found {
                    warnings.extend(Diagnostic::from_miette(
                        SCHEMA_FILE,
                        &sources.schema.text,
                        &w,
                    ));
                }
                schema
            }),
        };
        let schema = match parsed_schema {
            Ok(schema) => Some(schema),
            Err(e) => {
                problems.extend(Diagnostic::from_miette(
                    SCHEMA_FILE,
                    &sources.schema.text,
                    &e,
                ));
                None
            }
        };

        let mut policies = PolicySet::new();
        let mut info: BTreeMap<String, PolicyInfo> = BTreeMap::new();
        // policy id -> index of the source file it came from, to locate validation errors
        let mut origin: HashMap<String, usize> = HashMap::new();
        for (file_index, file) in sources.policies.iter().enumerate() {
            let parsed = match PolicySet::from_str(&file.text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    problems.extend(Diagnostic::from_miette(&file.name, &file.text, &e));
                    continue;
                }
            };
            if let Some(template) = parsed.templates().next() {
                problems.push(
                    Diagnostic::at(
                        &file.name,
                        &file.text,
                        policy_offset_of_template(template),
                        "templates are not supported in policy stores; write static policies"
                            .into(),
                    )
                    .in_policy(template.annotation(ID_ANNOTATION).unwrap_or_default()),
                );
            }
            let mut in_file: Vec<&Policy> = parsed.policies().collect();
            in_file.sort_by_key(|p| policy_span(p).map(|s| s.start));
            for policy in in_file {
                let span = policy_span(policy);
                let offset = span.as_ref().map(|s| s.start);
                let at = |message: String| Diagnostic::at(&file.name, &file.text, offset, message);
                let Some(id) = policy.annotation(ID_ANNOTATION) else {
                    problems.push(at("policy has no `@id(\"…\")` annotation".into()));
                    continue;
                };
                if let Err(why) = check_policy_id(id) {
                    problems.push(at(why).in_policy(id));
                    continue;
                }
                let reason = match policy.annotation(REASON_ANNOTATION) {
                    Some(reason) if !reason.trim().is_empty() => reason.to_owned(),
                    _ => {
                        problems.push(
                            at("policy has no `@reason(\"…\")` annotation".into()).in_policy(id),
                        );
                        continue;
                    }
                };
                if let Some(first) = info.get(id) {
                    problems.push(
                        at(format!(
                            "duplicate `@id`: also used at {}:{}",
                            first.file, first.line
                        ))
                        .in_policy(id),
                    );
                    continue;
                }
                let line = at(String::new()).line.unwrap_or(1);
                let effect = match policy.effect() {
                    Effect::Permit => PolicyEffect::Permit,
                    Effect::Forbid => PolicyEffect::Forbid,
                };
                let renamed = policy.new_id(PolicyId::new(id));
                if let Err(e) = policies.add(renamed) {
                    problems.push(at(e.to_string()).in_policy(id));
                    continue;
                }
                origin.insert(id.to_owned(), file_index);
                info.insert(
                    id.to_owned(),
                    PolicyInfo {
                        id: Arc::from(id),
                        reason: Arc::from(reason.as_str()),
                        effect,
                        file: file.name.clone(),
                        line,
                        span: span.unwrap_or_default(),
                        never_cache: policy.annotation(CACHE_ANNOTATION) == Some("never"),
                        critical: policy.annotation(SEVERITY_ANNOTATION) == Some("critical"),
                    },
                );
            }
        }

        let Some(schema) = schema else {
            return Err(invalid(problems));
        };
        if !problems.is_empty() {
            return Err(invalid(problems));
        }

        let validator = Validator::new(schema.clone());
        let result = validator.validate_with_level(
            &policies,
            ValidationMode::Strict,
            settings.max_deref_level(),
        );
        let locate = |policy_id: &PolicyId| {
            origin
                .get(policy_id.as_ref() as &str)
                .and_then(|&i| sources.policies.get(i))
        };
        for error in result.validation_errors() {
            let id = error.policy_id();
            if let Some(file) = locate(id) {
                problems.extend(
                    Diagnostic::from_miette(&file.name, &file.text, error)
                        .into_iter()
                        .map(|d| d.in_policy(id.to_string())),
                );
            } else {
                problems.push(Diagnostic::at("?", "", None, error.to_string()));
            }
        }
        for warning in result.validation_warnings() {
            let id = warning.policy_id();
            if let Some(file) = locate(id) {
                warnings.extend(
                    Diagnostic::from_miette(&file.name, &file.text, warning)
                        .into_iter()
                        .map(|d| d.in_policy(id.to_string())),
                );
            }
        }
        if !problems.is_empty() {
            return Err(invalid(problems));
        }

        let action_entities: Vec<cedar_policy::Entity> = schema
            .action_entities()
            .map_err(|e| invalid(vec![Diagnostic::at(SCHEMA_FILE, "", None, e.to_string())]))?
            .into_iter()
            .collect();
        let namespace = common_namespace(&schema);
        let action_index = action_entities
            .iter()
            .map(|e| {
                let ast: &cedar_policy_core::ast::Entity = e.as_ref();
                (e.uid(), Arc::new(ast.clone()))
            })
            .collect();
        let action_names = schema
            .actions()
            .map(|a| {
                let name = a.id().unescaped();
                (name.to_owned(), (a.clone(), Arc::from(name)))
            })
            .collect();
        let applies_to = schema
            .actions()
            .map(|a| {
                let principals = schema
                    .principals_for_action(a)
                    .map(|it| it.cloned().collect())
                    .unwrap_or_default();
                let resources = schema
                    .resources_for_action(a)
                    .map(|it| it.cloned().collect())
                    .unwrap_or_default();
                (a.clone(), (principals, resources))
            })
            .collect();
        let version = sources.version();
        Ok(Self {
            shared_name: Arc::from(name),
            shared_version: Arc::from(version.as_str()),
            action_names,
            applies_to,
            action_index,
            applicable: RwLock::new(HashMap::new()),
            action_entities,
            namespace,
            name: name.to_owned(),
            version,
            schema,
            policies,
            info,
            settings,
            warnings,
            sources,
            authorizer: Authorizer::new(),
        })
    }

    /// Store name (its folder name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (for receipts and cache keys).
    pub fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.shared_name)
    }

    /// The version, shared.
    pub fn shared_version(&self) -> Arc<str> {
        Arc::clone(&self.shared_version)
    }

    /// Content hash of the files this version was built from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The policies, with their `@id`s as policy ids.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// Every policy's id, reason, effect and location, ordered by id.
    pub fn policy_info(&self) -> impl Iterator<Item = &PolicyInfo> {
        self.info.values()
    }

    /// One policy's info.
    pub fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.info.get(id)
    }

    /// Loader settings.
    pub fn settings(&self) -> StoreSettings {
        self.settings
    }

    /// Non-fatal findings (Cedar validation and schema warnings).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The files this version was built from.
    pub fn sources(&self) -> &StoreSources {
        &self.sources
    }

    /// The schema's action entities, to add to every request's entities.
    pub fn action_entities(&self) -> &[cedar_policy::Entity] {
        &self.action_entities
    }

    /// The action named `id` (`project:view`), if the schema declares it.
    pub fn action_named(&self, id: &str) -> Option<(&EntityUid, &Arc<str>)> {
        self.action_names.get(id).map(|(uid, name)| (uid, name))
    }

    /// Whether `action` applies to a principal of type `principal` and a resource of type
    /// `resource` (the schema's `appliesTo`).
    pub fn applies_to(
        &self,
        action: &EntityUid,
        principal: &EntityTypeName,
        resource: &EntityTypeName,
    ) -> bool {
        self.applies_to
            .get(action)
            .is_some_and(|(p, r)| p.contains(principal) && r.contains(resource))
    }

    /// The action entity `uid` (with its transitively closed groups), if the schema declares it.
    pub fn action_entity(&self, uid: &EntityUid) -> Option<&Arc<cedar_policy_core::ast::Entity>> {
        self.action_index.get(uid)
    }

    /// The policies whose scope can match a request of these types and action: the others are
    /// false for it without evaluating their conditions, so leaving them out changes no decision,
    /// reason or error. Built once per combination and shared.
    pub fn applicable(
        &self,
        principal_type: &EntityTypeName,
        action: &EntityUid,
        resource_type: &EntityTypeName,
    ) -> Arc<PolicySet> {
        let key = (
            principal_type.clone(),
            action.clone(),
            resource_type.clone(),
        );
        if let Some(hit) = self
            .applicable
            .read()
            .ok()
            .and_then(|map| map.get(&key).cloned())
        {
            return hit;
        }
        let groups: Vec<EntityUid> = self
            .action_index
            .get(action)
            .map(|e| e.ancestors().map(|a| EntityUid::from(a.clone())).collect())
            .unwrap_or_default();
        let subset = self
            .policies
            .policies()
            .filter(|p| scope_may_match(p, principal_type, action, &groups, resource_type))
            .cloned();
        let set =
            Arc::new(PolicySet::from_policies(subset).unwrap_or_else(|_| self.policies.clone()));
        if let Ok(mut map) = self.applicable.write() {
            map.insert(key, Arc::clone(&set));
        }
        set
    }

    /// The namespace shared by all entity types, used to resolve short type names.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Evaluate one request. This is the only place a decision is made, for the engine and the
    /// policy test runner alike. Cedar skips a policy that fails to evaluate; for a `forbid` that
    /// would fail open, so here a forbid that errors denies the request.
    pub fn authorize(&self, request: &Request, entities: &Entities) -> Evaluation {
        let subset = match (request.principal(), request.action(), request.resource()) {
            (Some(p), Some(a), Some(r)) => Some(self.applicable(p.type_name(), a, r.type_name())),
            _ => None,
        };
        let policies = subset.as_deref().unwrap_or(&self.policies);
        let response = self.authorizer.is_authorized(request, policies, entities);
        let errors: Vec<PolicyError> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => PolicyError {
                    policy_id: e.policy_id().to_string(),
                    message: e.inner().to_string(),
                },
            })
            .collect();
        let errored_forbids: Vec<String> = errors
            .iter()
            .filter(|e| {
                self.info
                    .get(&e.policy_id)
                    .is_none_or(|p| p.effect == PolicyEffect::Forbid)
            })
            .map(|e| e.policy_id.clone())
            .collect();
        if !errored_forbids.is_empty() {
            let mut determining: Vec<String> = match response.decision() {
                cedar_policy::Decision::Deny => response
                    .diagnostics()
                    .reason()
                    .map(|id| id.to_string())
                    .collect(),
                cedar_policy::Decision::Allow => Vec::new(),
            };
            determining.extend(errored_forbids);
            determining.sort();
            determining.dedup();
            return Evaluation {
                allowed: false,
                determining,
                errors,
                forbid_errored: true,
            };
        }
        let mut determining: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        determining.sort();
        Evaluation {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            determining,
            errors,
            forbid_errored: false,
        }
    }
}

type ScopeKey = (EntityTypeName, EntityUid, EntityTypeName);

/// Whether `policy`'s scope can be satisfied by a request with these types and this action
/// (whose action groups are `groups`). Only provable mismatches return false; constraints that
/// depend on entity data (`principal in …`) are kept.
fn scope_may_match(
    policy: &Policy,
    principal_type: &EntityTypeName,
    action: &EntityUid,
    groups: &[EntityUid],
    resource_type: &EntityTypeName,
) -> bool {
    let action_ok = match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => a == *action,
        ActionConstraint::In(list) => list.iter().any(|a| a == action || groups.contains(a)),
    };
    let principal_ok = match policy.principal_constraint() {
        PrincipalConstraint::Any | PrincipalConstraint::In(_) => true,
        PrincipalConstraint::Eq(uid) => uid.type_name() == principal_type,
        PrincipalConstraint::Is(t) | PrincipalConstraint::IsIn(t, _) => t == *principal_type,
    };
    let resource_ok = match policy.resource_constraint() {
        ResourceConstraint::Any | ResourceConstraint::In(_) => true,
        ResourceConstraint::Eq(uid) => uid.type_name() == resource_type,
        ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => t == *resource_type,
    };
    action_ok && principal_ok && resource_ok
}

/// The namespace every entity type of `schema` is in, if there is exactly one.
fn common_namespace(schema: &Schema) -> Option<String> {
    let mut namespaces = schema.entity_types().map(|t| t.namespace());
    let first = namespaces.next()?;
    if first.is_empty() || namespaces.any(|n| n != first) {
        return None;
    }
    Some(first)
}

fn parse_settings(file: Option<&SourceFile>) -> std::result::Result<StoreSettings, Diagnostic> {
    let Some(file) = file else {
        return Ok(StoreSettings::default());
    };
    let settings: StoreSettings = toml::from_str(&file.text).map_err(|e| {
        Diagnostic::at(
            &file.name,
            &file.text,
            e.span().map(|s| s.start),
            e.message().to_owned(),
        )
    })?;
    if settings.entity_depth > MAX_ENTITY_DEPTH {
        return Err(Diagnostic::at(
            &file.name,
            &file.text,
            None,
            format!("`entity_depth` must be at most {MAX_ENTITY_DEPTH}"),
        ));
    }
    Ok(settings)
}

/// Policy ids appear in receipts, logs and metrics labels: keep them short and plain.
fn check_policy_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > MAX_POLICY_ID_LEN {
        return Err(format!(
            "`@id` must be 1 to {MAX_POLICY_ID_LEN} characters long"
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
    {
        return Err(format!(
            "`@id` `{id}` may contain only ASCII letters, digits and `. _ - : /`"
        ));
    }
    Ok(())
}

/// Byte range of a parsed policy in the text it was parsed from.
fn policy_span(policy: &Policy) -> Option<std::ops::Range<usize>> {
    let ast: &cedar_policy_core::ast::Policy = policy.as_ref();
    ast.loc().map(|loc| loc.start()..loc.end())
}

fn policy_offset_of_template(template: &cedar_policy::Template) -> Option<usize> {
    let ast: &cedar_policy_core::ast::Template = template.as_ref();
    ast.loc().map(|loc| loc.start())
}

#[cfg(test)]
mod tests;
