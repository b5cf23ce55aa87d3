//! The policy test runner: YAML files of fixtures and expected decisions (DESIGN §5.2), evaluated
//! through `PolicyStore::authorize`, the same function the engine uses.
//!
//! File format (`policies/<store>/tests/*.yaml`):
//!
//! ```yaml
//! description: what this file covers
//! namespace: Velro            # short names resolve in it: `User::"a"`, action `team:view`
//! anchors:                  # optional: YAML anchors (`&user {…}`) reused below as `*user`
//! defaults:
//!   context: { … }            # merged (top-level keys) under every case's context
//! entities:                   # Cedar entities; `Type::"id"` strings are entity references
//!   - uid: User::"alice"
//!     attrs: { suspended: false, … }
//!     parents: [Role::"design#owner"]
//! cases:
//!   - name: the owner may delete the team
//!     principal: User::"alice"
//!     action: team:delete
//!     resource: Team::"design"
//!     context: { … }          # optional
//!     expect: allow           # allow | deny
//!     policies: [team.owner]  # optional: the exact determining policies
//! tables:                     # a grid: one row per principal (or per resource), one column per action
//!   - name: private project
//!     resource: Project::"private"   # or `principal:`, then rows are resources
//!     actions: [project:view, project:delete]
//!     expect:
//!       User::"owner":    [allow, allow]
//!       User::"stranger": [deny,  deny]
//! ```
//!
//! The runner does not decide anything itself, and does not load stores (see `policy_store`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Context, Entities, EntityUid, Request, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::policy_store::{PolicyStore, TESTS_DIR};

/// An expected or actual decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request is allowed.
    Allow,
    /// The request is denied.
    Deny,
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// Prose for readers of the file; not interpreted.
    #[serde(default, rename = "description")]
    _description: Option<serde::de::IgnoredAny>,
    /// A place to define YAML anchors (`&name`) for the rest of the file; not interpreted.
    #[serde(default, rename = "anchors")]
    _anchors: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    entities: Vec<EntitySpec>,
    #[serde(default)]
    cases: Vec<CaseSpec>,
    #[serde(default)]
    tables: Vec<TableSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default)]
    context: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntitySpec {
    uid: String,
    #[serde(default)]
    attrs: Map<String, Value>,
    #[serde(default)]
    parents: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: Map<String, Value>,
    expect: Expect,
    #[serde(default)]
    policies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpec {
    name: String,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Map<String, Value>,
    actions: Vec<String>,
    expect: serde_norway::Mapping,
}

/// One prepared request with its expectation.
#[derive(Debug)]
struct PreparedCase {
    name: String,
    /// `None` when the case itself is malformed; the message says why.
    request: std::result::Result<Request, String>,
    expect: Expect,
    policies: Option<Vec<String>>,
}

#[derive(Debug)]
struct PreparedFile {
    name: String,
    entities: Entities,
    cases: Vec<PreparedCase>,
}

/// A store's test files, parsed against its schema once and runnable against any store version
/// with that schema.
#[derive(Debug)]
pub struct TestSuite {
    files: Vec<PreparedFile>,
}

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    /// Test file name.
    pub file: String,
    /// Case name (for tables: table name, row and action).
    pub name: String,
    /// Expected decision.
    pub expected: Expect,
    /// Actual decision, when the case could be evaluated.
    pub actual: Option<Expect>,
    /// Expected determining policies, when the case names them.
    pub expected_policies: Option<Vec<String>>,
    /// Policies that determined the actual decision.
    pub determining: Vec<String>,
    /// Policy evaluation errors, or why the case could not be evaluated.
    pub errors: Vec<String>,
    /// Whether the case passed.
    pub passed: bool,
}

/// The outcome of a whole suite.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TestReport {
    /// Every case, in file and case order.
    pub outcomes: Vec<CaseOutcome>,
}

impl TestReport {
    /// Number of cases that passed.
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    /// Number of cases that failed.
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }

    /// The failing cases.
    pub fn failures(&self) -> impl Iterator<Item = &CaseOutcome> {
        self.outcomes.iter().filter(|o| !o.passed)
    }
}

impl TestSuite {
    /// Parse every `*.yaml`/`*.yml` file in `dir` (sorted by name) against `schema`.
    pub fn load(dir: &Path, schema: &Schema) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                paths.push(path);
            }
        }
        paths.sort();
        let files = paths
            .iter()
            .map(|path| prepare_file(path, schema))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { files })
    }

    /// Load the suite of a store's own `tests/` folder.
    pub fn for_store(store_dir: &Path, store: &PolicyStore) -> Result<Self> {
        Self::load(&store_dir.join(TESTS_DIR), store.schema())
    }

    /// Number of cases in the suite.
    pub fn len(&self) -> usize {
        self.files.iter().map(|f| f.cases.len()).sum()
    }

    /// The fixture entities of each file, in file order.
    pub fn entities(&self) -> impl Iterator<Item = &Entities> {
        self.files.iter().map(|f| &f.entities)
    }

    /// Whether the suite has no cases.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run every case against `store`.
    pub fn run(&self, store: &PolicyStore) -> TestReport {
        let mut outcomes = Vec::with_capacity(self.len());
        for file in &self.files {
            for case in &file.cases {
                outcomes.push(run_case(store, file, case));
            }
        }
        TestReport { outcomes }
    }
}

impl TestSuite {
    /// Run the cases numbered by `order` (indices into the suite's cases, in file and case order)
    /// against `store` until one fails, and return its index. Cheaper than `run` when the question
    /// is only whether the suite notices a change (mutation testing).
    pub fn first_failure(
        &self,
        store: &PolicyStore,
        order: impl IntoIterator<Item = usize>,
    ) -> Option<usize> {
        let cases: Vec<(&PreparedFile, &PreparedCase)> = self
            .files
            .iter()
            .flat_map(|file| file.cases.iter().map(move |case| (file, case)))
            .collect();
        order.into_iter().find(|&i| {
            cases
                .get(i)
                .is_some_and(|(file, case)| !run_case(store, file, case).passed)
        })
    }
}

fn run_case(store: &PolicyStore, file: &PreparedFile, case: &PreparedCase) -> CaseOutcome {
    let mut outcome = CaseOutcome {
        file: file.name.clone(),
        name: case.name.clone(),
        expected: case.expect,
        actual: None,
        expected_policies: case.policies.clone(),
        determining: Vec::new(),
        errors: Vec::new(),
        passed: false,
    };
    let request = match &case.request {
        Ok(request) => request,
        Err(message) => {
            outcome.errors.push(message.clone());
            return outcome;
        }
    };
    let evaluation = store.authorize(request, &file.entities);
    let actual = if evaluation.allowed {
        Expect::Allow
    } else {
        Expect::Deny
    };
    outcome.actual = Some(actual);
    outcome.errors = evaluation
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.policy_id, e.message))
        .collect();
    outcome.determining = evaluation.determining;
    let policies_match = case.policies.as_ref().is_none_or(|expected| {
        let mut expected = expected.clone();
        expected.sort();
        expected == outcome.determining
    });
    outcome.passed = actual == case.expect && policies_match;
    outcome
}

fn prepare_file(path: &Path, schema: &Schema) -> Result<PreparedFile> {
    let invalid = |message: String| Error::InvalidTestFile {
        file: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let spec: TestFile = serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let names = Names {
        namespace: spec.namespace.as_deref(),
    };

    let mut entity_json = Vec::with_capacity(spec.entities.len());
    for entity in &spec.entities {
        let uid = names.uid(&entity.uid).map_err(&invalid)?;
        let parents = entity
            .parents
            .iter()
            .map(|p| names.uid(p).map(|uid| entity_ref(&uid)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(&invalid)?;
        let attrs = names
            .convert(&Value::Object(entity.attrs.clone()))
            .map_err(&invalid)?;
        entity_json.push(serde_json::json!({
            "uid": entity_ref(&uid)["__entity"],
            "attrs": attrs,
            "parents": parents.iter().map(|p| p["__entity"].clone()).collect::<Vec<_>>(),
        }));
    }
    let entities =
        Entities::from_json_value(Value::Array(entity_json), Some(schema)).map_err(|e| {
            invalid(format!(
                "entities do not match the schema: {}",
                miette_text(&e)
            ))
        })?;

    let mut cases = Vec::new();
    for case in spec.cases {
        let request = names.request(
            schema,
            &spec.defaults.context,
            &case.principal,
            &case.action,
            &case.resource,
            &case.context,
        );
        cases.push(PreparedCase {
            name: case.name,
            request,
            expect: case.expect,
            policies: case.policies,
        });
    }
    for table in spec.tables {
        let fixed_principal = table.principal.as_deref();
        let fixed_resource = table.resource.as_deref();
        if fixed_principal.is_some() == fixed_resource.is_some() {
            return Err(invalid(format!(
                "table `{}` needs exactly one of `principal` and `resource`",
                table.name
            )));
        }
        for (row_key, row) in &table.expect {
            let row_name = row_key
                .as_str()
                .ok_or_else(|| invalid(format!("table `{}`: row keys must be text", table.name)))?;
            let expects: Vec<Expect> = serde_norway::from_value(row.clone())
                .map_err(|e| invalid(format!("table `{}`, row `{row_name}`: {e}", table.name)))?;
            if expects.len() != table.actions.len() {
                return Err(invalid(format!(
                    "table `{}`, row `{row_name}`: {} expectations for {} actions",
                    table.name,
                    expects.len(),
                    table.actions.len()
                )));
            }
            let (principal, resource) = match (fixed_principal, fixed_resource) {
                (Some(p), _) => (p, row_name),
                (_, Some(r)) => (row_name, r),
                (None, None) => continue,
            };
            let mut context = spec.defaults.context.clone();
            context.extend(table.context.clone());
            for (action, expect) in table.actions.iter().zip(expects) {
                let request =
                    names.request(schema, &context, principal, action, resource, &Map::new());
                cases.push(PreparedCase {
                    name: format!("{}: {row_name} {action}", table.name),
                    request,
                    expect,
                    policies: None,
                });
            }
        }
    }
    Ok(PreparedFile {
        name: path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned(),
        entities,
        cases,
    })
}

/// Resolves the file's short names in its namespace.
#[derive(Debug, Clone, Copy)]
struct Names<'a> {
    namespace: Option<&'a str>,
}

impl Names<'_> {
    /// `User::"a"` → `Ns::User::"a"`; fully qualified names are kept.
    fn uid(&self, text: &str) -> std::result::Result<EntityUid, String> {
        let Some(split) = text.find("::\"") else {
            return Err(format!(
                "`{text}` is not an entity reference like `User::\"alice\"`"
            ));
        };
        let type_name = &text[..split];
        let qualified = match self.namespace {
            Some(ns) if !type_name.contains("::") => format!("{ns}::{text}"),
            _ => text.to_owned(),
        };
        EntityUid::from_str(&qualified).map_err(|e| format!("`{text}`: {}", miette_text(&e)))
    }

    /// `team:view` → `Ns::Action::"team:view"`; full references are kept.
    fn action(&self, text: &str) -> std::result::Result<EntityUid, String> {
        if text.contains("::\"") {
            return self.uid(text);
        }
        let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
        let qualified = match self.namespace {
            Some(ns) => format!("{ns}::Action::\"{escaped}\""),
            None => format!("Action::\"{escaped}\""),
        };
        EntityUid::from_str(&qualified).map_err(|e| format!("`{text}`: {}", miette_text(&e)))
    }

    /// Turn `Type::"id"` strings into Cedar entity references, recursively.
    fn convert(&self, value: &Value) -> std::result::Result<Value, String> {
        Ok(match value {
            Value::String(s) if looks_like_uid(s) => entity_ref(&self.uid(s)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.convert(v))
                    .collect::<std::result::Result<_, _>>()?,
            ),
            Value::Object(map) if !map.contains_key("__entity") && !map.contains_key("__extn") => {
                let mut out = Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.convert(v)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn request(
        &self,
        schema: &Schema,
        defaults: &Map<String, Value>,
        principal: &str,
        action: &str,
        resource: &str,
        context: &Map<String, Value>,
    ) -> std::result::Result<Request, String> {
        let principal = self.uid(principal)?;
        let action = self.action(action)?;
        let resource = self.uid(resource)?;
        let mut merged = defaults.clone();
        merged.extend(context.clone());
        let context_json = self.convert(&Value::Object(merged))?;
        let context = Context::from_json_value(context_json, Some((schema, &action)))
            .map_err(|e| format!("context: {}", miette_text(&e)))?;
        Request::new(principal, action, resource, context, Some(schema))
            .map_err(|e| format!("request: {}", miette_text(&e)))
    }
}

fn looks_like_uid(s: &str) -> bool {
    let Some(split) = s.find("::\"") else {
        return false;
    };
    s.ends_with('"')
        && s[..split].split("::").all(|segment| {
            let mut chars = segment.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn entity_ref(uid: &EntityUid) -> Value {
    serde_json::json!({
        "__entity": { "type": uid.type_name().to_string(), "id": uid.id().unescaped() }
    })
}

/// A Cedar error's message with its underlying causes, on one line.
fn miette_text(e: &dyn miette::Diagnostic) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if let Some(help) = e.help() {
        text.push_str(" (");
        text.push_str(&help.to_string());
        text.push(')');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_strings_are_recognised_exactly() {
        assert!(looks_like_uid(r#"User::"a""#));
        assert!(looks_like_uid(r#"Velro::User::"a b""#));
        assert!(!looks_like_uid("team_open"));
        assert!(!looks_like_uid(r#"not a::"uid""#));
        assert!(!looks_like_uid(r#"User::"unterminated"#));
    }

    #[test]
    fn short_names_resolve_in_the_namespace() {
        let names = Names {
            namespace: Some("Velro"),
        };
        assert_eq!(
            names.uid(r#"User::"a""#).unwrap().to_string(),
            r#"Velro::User::"a""#
        );
        assert_eq!(
            names.uid(r#"Other::User::"a""#).unwrap().to_string(),
            r#"Other::User::"a""#
        );
        assert_eq!(
            names.action("team:view").unwrap().to_string(),
            r#"Velro::Action::"team:view""#
        );
        assert!(names.uid("alice").is_err());
    }
}
