//! Inline evaluation (DESIGN §7 `Evaluate`): policies, schema and entities come with the request,
//! no store is involved. The input is Cedar's JSON `AuthorizationCall` and the output Cedar's
//! answer, so tests, playgrounds and conformance suites written for Cedar work unchanged; policy
//! ids default to `policy0`, `policy1`, … as Cedar assigns them.
//!
//! Only shape and size are checked here; the caller bounds the request body. Store-backed
//! decisions do not come through here.

use cedar_policy::ffi::{self, AuthorizationAnswer};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Cedar's answer to an inline evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluateAnswer {
    /// `allow` or `deny`.
    pub decision: String,
    /// Cedar's diagnostics: `reason` (determining policy ids) and `errors`.
    pub diagnostics: Value,
    /// Warnings about the inputs (schema, entities), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Evaluate a Cedar `AuthorizationCall` given as JSON.
///
/// Malformed calls (wrong shape, unparsable policies, entities or context that do not match the
/// schema, a request the schema rejects) are `Error::InvalidRequest` with Cedar's messages.
pub fn evaluate(call: Value) -> Result<EvaluateAnswer> {
    let call: ffi::AuthorizationCall = serde_json::from_value(call)
        .map_err(|e| Error::InvalidRequest(format!("not a Cedar authorization call: {e}")))?;
    match ffi::is_authorized(call) {
        AuthorizationAnswer::Success { response, warnings } => {
            let response = serde_json::to_value(&response)
                .map_err(|e| Error::InvalidRequest(format!("cannot encode the answer: {e}")))?;
            let decision = response
                .get("decision")
                .and_then(Value::as_str)
                .unwrap_or("deny")
                .to_owned();
            let mut diagnostics = response.get("diagnostics").cloned().unwrap_or(Value::Null);
            sort_reasons(&mut diagnostics);
            Ok(EvaluateAnswer {
                decision,
                diagnostics,
                warnings: warnings.iter().map(detailed_message).collect(),
            })
        }
        AuthorizationAnswer::Failure { errors, .. } => Err(Error::InvalidRequest(
            errors
                .iter()
                .map(detailed_message)
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// Cedar returns `reason` as a set; sort it so answers are stable.
fn sort_reasons(diagnostics: &mut Value) {
    if let Some(Value::Array(reasons)) = diagnostics.get_mut("reason") {
        reasons.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
}

fn detailed_message(error: &ffi::DetailedError) -> String {
    serde_json::to_value(error)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "unknown error".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(policies: &str) -> Value {
        json!({
            "principal": {"type": "User", "id": "alice"},
            "action": {"type": "Action", "id": "view"},
            "resource": {"type": "Photo", "id": "p1"},
            "context": {},
            "policies": {"staticPolicies": policies},
            "entities": [
                {"uid": {"type": "Photo", "id": "p1"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "alice"}}}, "parents": []}
            ]
        })
    }

    #[test]
    fn allows_with_default_policy_ids() {
        let answer = evaluate(call(
            r#"forbid(principal, action, resource) when { false };
               permit(principal, action == Action::"view", resource) when { resource.owner == principal };"#,
        ))
        .unwrap();
        assert_eq!(answer.decision, "allow");
        assert_eq!(answer.diagnostics["reason"], json!(["policy1"]));
        assert_eq!(answer.diagnostics["errors"], json!([]));
    }

    #[test]
    fn denies_when_nothing_permits() {
        let answer = evaluate(call(
            r#"permit(principal == User::"bob", action, resource);"#,
        ))
        .unwrap();
        assert_eq!(answer.decision, "deny");
        assert_eq!(answer.diagnostics["reason"], json!([]));
    }

    #[test]
    fn evaluation_errors_are_reported_not_fatal() {
        let answer = evaluate(call(
            r#"permit(principal, action, resource) when { resource.missing };"#,
        ))
        .unwrap();
        assert_eq!(answer.decision, "deny");
        assert_eq!(answer.diagnostics["errors"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn malformed_calls_are_invalid_requests() {
        let err = evaluate(call("permit(principal, action, resource")).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
        let err = evaluate(json!({"principal": 1})).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    }
}
