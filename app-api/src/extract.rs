//! Request parsing at the edge: JSON bodies whose rejections become API errors, and ids that must
//! be canonical UUIDs before anything else looks at them.

use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use uuid::Uuid;

use crate::error::ApiError;

/// `axum::Json`, with malformed, oversize or non-JSON bodies answered in the API's error shape.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            _ => Self::Validation {
                // serde's message names the field and the expected type, never internals.
                message: rejection.body_text(),
                field: None,
            },
        }
    }
}

/// Parse an id from a path or body: canonical lowercase UUID text only (DESIGN §6 step 1).
pub fn parse_id(field: &'static str, text: &str) -> Result<Uuid, ApiError> {
    velro_engine::ids::parse_uuid(text).map_err(|_| ApiError::InvalidId(field))
}

/// Parse an optional id.
pub fn parse_opt_id(field: &'static str, text: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    text.map(|t| parse_id(field, t)).transpose()
}

/// Bound a free-text field: trimmed, non-empty when `required`, at most `max` characters, no
/// control characters except newlines and tabs.
pub fn text(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<String, ApiError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(ApiError::validation(field, format!("{field} is required")));
    }
    if value.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::validation(
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_canonical() {
        assert!(parse_id("id", "0190f1c2-7a7b-7cc0-8000-000000000001").is_ok());
        for bad in [
            "0190F1C2-7A7B-7CC0-8000-000000000001",
            "1 OR 1=1",
            "../../etc/passwd",
            "",
            "0190f1c27a7b7cc08000000000000001",
        ] {
            assert!(parse_id("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_is_bounded() {
        assert_eq!(text("name", "  a  ", 10, true).unwrap(), "a");
        assert!(text("name", "   ", 10, true).is_err());
        assert!(text("name", &"x".repeat(11), 10, true).is_err());
        assert!(text("name", "a\u{0}b", 10, true).is_err());
        assert_eq!(text("name", "", 10, false).unwrap(), "");
    }
}
