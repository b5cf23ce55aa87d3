//! The API's one error type and its one mapping to HTTP: every failure becomes
//! `{"error":{"code","message","details"},"request_id"}` with a stable code (DESIGN §8, §10).
//! Internal failures are logged here, once, and answered with an opaque 5xx body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::request_id;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body or a parameter is malformed or out of bounds.
    #[error("{message}")]
    Validation {
        /// What is wrong, for the caller.
        message: String,
        /// Which field, when known.
        field: Option<&'static str>,
    },
    /// A path or query id is not a canonical UUID.
    #[error("`{0}` is not a valid id")]
    InvalidId(&'static str),
    /// The body is larger than allowed.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// An uploaded file is not one of the accepted image or video types (by its bytes).
    #[error("only JPEG, PNG, WebP, GIF, MP4, WebM and QuickTime files are accepted")]
    UnsupportedFileType,
    /// No or an invalid access token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Wrong email or password.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// A refresh token was used twice: its whole family is revoked.
    #[error("refresh token reuse detected; please sign in again")]
    TokenReused,
    /// The caller may see the resource but not do this.
    #[error("you are not allowed to do this")]
    Forbidden,
    /// Missing, or not visible to the caller (no existence oracle).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Stable code, e.g. `EMAIL_TAKEN`.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// Not enough credits.
    #[error("insufficient credits: {needed} needed, {balance} available")]
    InsufficientCredits {
        /// Cost of the request.
        needed: i64,
        /// Current balance.
        balance: i64,
    },
    /// Too many requests; retry after this many seconds.
    #[error("too many requests")]
    RateLimited {
        /// Seconds until the window frees up.
        retry_after: u64,
    },
    /// The PDP could not answer: deny, loudly.
    #[error("authorization service unavailable")]
    PdpUnavailable,
    /// A dependency (database, provider) failed; details are logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A validation error about `field`.
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            field: Some(field),
        }
    }

    /// A conflict with a stable code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Validation { .. } => (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
            Self::InvalidId(_) => (StatusCode::BAD_REQUEST, "INVALID_ID"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            Self::UnsupportedFileType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_FILE_TYPE")
            }
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            Self::TokenReused => (StatusCode::UNAUTHORIZED, "TOKEN_REUSED"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::InsufficientCredits { .. } => {
                (StatusCode::PAYMENT_REQUIRED, "INSUFFICIENT_CREDITS")
            }
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            Self::PdpUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "PDP_UNAVAILABLE"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    fn details(&self) -> Value {
        match self {
            Self::Validation {
                field: Some(field), ..
            } => json!({ "field": field }),
            Self::InvalidId(field) => json!({ "field": field }),
            Self::InsufficientCredits { needed, balance } => {
                json!({ "needed": needed, "balance": balance })
            }
            Self::RateLimited { retry_after } => json!({ "retry_after": retry_after }),
            _ => json!({}),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl From<velro_engine::Error> for ApiError {
    fn from(e: velro_engine::Error) -> Self {
        Self::Internal(format!("engine: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let request_id = request_id::current();
        match &self {
            Self::Internal(detail) => {
                tracing::error!(error = %detail, request_id = %request_id, "request failed")
            }
            Self::PdpUnavailable => {
                tracing::warn!(request_id = %request_id, "PDP unavailable; request denied")
            }
            _ => tracing::debug!(code, request_id = %request_id, "request refused"),
        }
        let body = json!({
            "error": { "code": code, "message": self.to_string(), "details": self.details() },
            "request_id": request_id,
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        }
        response
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_details() {
        let response = ApiError::Internal("password=hunter2 at db".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ApiError::Internal("x".into()).to_string(), "internal error");
    }

    #[test]
    fn rate_limits_say_when_to_retry() {
        let response = ApiError::RateLimited { retry_after: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
