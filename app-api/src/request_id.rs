//! Request ids: taken from a well-formed `x-request-id` header or generated (UUIDv7), echoed in the
//! response, passed to the PDP (and so into the audit log) and put into every error body.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static REQUEST_ID: String;
    static CLIENT_IP: String;
}

/// Header carrying the id both ways.
pub const HEADER: &str = "x-request-id";

/// The current request's id ("" outside a request).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The current request's peer address ("" outside a request). The PDP truncates it for the audit
/// log and feeds it to its violation detector.
pub fn client_ip() -> String {
    CLIENT_IP.try_with(Clone::clone).unwrap_or_default()
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Middleware: assign the id, run the request inside its scope, echo it.
pub async fn middleware(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let mut response = REQUEST_ID
        .scope(id.clone(), CLIENT_IP.scope(ip, next.run(request)))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_are_replaced() {
        assert!(acceptable("req-123_abc.4"));
        assert!(!acceptable("a\nb"));
        assert!(!acceptable("<script>"));
        assert!(!acceptable(&"x".repeat(65)));
        assert!(!acceptable(""));
    }
}
