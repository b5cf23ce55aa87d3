//! The API's side of the PDP: every protected handler asks through here, over gRPC, with the caller
//! as principal. Deadlines come from the client, reads are retried once on a transport failure, and
//! a circuit breaker fails fast while the PDP is down. Whatever goes wrong, the answer is never
//! "allow": an unreachable PDP is `PdpUnavailable` (503).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::Value;
use tonic::Code;
use uuid::Uuid;
use velro_engine::consistency::ConsistencyToken;
use velro_pdp::client::PdpClient;
use velro_pdp::proto;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::request_id;

/// The store the product's policies live in.
pub const STORE: &str = "velro";

/// Header carrying consistency tokens both ways (DESIGN §6.2).
pub const CONSISTENCY_HEADER: &str = "x-velro-consistency";

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in user.
    User(Uuid),
    /// No token.
    Anonymous,
}

impl Principal {
    fn entity(self) -> proto::EntityRef {
        match self {
            Self::User(id) => entity("User", id),
            Self::Anonymous => proto::EntityRef {
                r#type: "Anonymous".into(),
                id: "anonymous".into(),
            },
        }
    }
}

fn entity(kind: &str, id: Uuid) -> proto::EntityRef {
    proto::EntityRef {
        r#type: kind.into(),
        id: id.to_string(),
    }
}

/// Resource types the API asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A user (self-service actions).
    User,
    /// A team.
    Team,
    /// A project.
    Project,
    /// A generation.
    Generation,
    /// A user's credit account (its id is the user's).
    CreditAccount,
    /// A style stack.
    StyleStack,
    /// A chat session.
    ChatSession,
    /// An uploaded media file.
    MediaFile,
    /// The platform itself (`Platform::"velro"`; the id is ignored).
    Platform,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Team => "Team",
            Self::Project => "Project",
            Self::Generation => "Generation",
            Self::CreditAccount => "CreditAccount",
            Self::StyleStack => "StyleStack",
            Self::ChatSession => "ChatSession",
            Self::MediaFile => "MediaFile",
            Self::Platform => "Platform",
        }
    }

    /// What a 404 calls it.
    pub fn noun(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Team => "team",
            Self::Project => "project",
            Self::Generation => "generation",
            Self::CreditAccount => "credit account",
            Self::StyleStack => "style stack",
            Self::ChatSession => "chat session",
            Self::MediaFile => "upload",
            Self::Platform => "platform",
        }
    }
}

/// One question for the PDP.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Action id, e.g. `project:view`.
    pub action: &'static str,
    /// Resource type.
    pub kind: Kind,
    /// Resource id.
    pub id: Uuid,
    /// Request facts (JSON object), if the action needs any.
    pub context: Option<Value>,
}

impl Ask {
    /// A question without context.
    pub fn new(action: &'static str, kind: Kind, id: Uuid) -> Self {
        Self {
            action,
            kind,
            id,
            context: None,
        }
    }

    /// With request facts.
    pub fn with_context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }
}

/// The freshest consistency token the request knows: sent by the client, or produced by the
/// handler's own write. Both are validated before use.
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    token: Option<ConsistencyToken>,
}

impl Freshness {
    /// After a write at `revision`: at least that fresh (and at least what the client asked for).
    pub fn after_write(&self, revision: i64) -> Self {
        let newer = self.token.as_ref().is_none_or(|t| t.revision < revision);
        if newer {
            Self {
                token: Some(ConsistencyToken::new(STORE, None, revision)),
            }
        } else {
            self.clone()
        }
    }

    /// The token to put in `X-Velro-Consistency`.
    pub fn header(&self) -> Option<String> {
        self.token.as_ref().map(ConsistencyToken::encode)
    }

    fn proto(&self) -> Option<proto::Consistency> {
        self.token.as_ref().map(|t| proto::Consistency {
            requirement: Some(proto::consistency::Requirement::AtLeastAsFresh(t.encode())),
        })
    }
}

/// A request is at least as fresh as the client's token and as this API's own latest write, so a
/// caller reads what any request to this instance wrote before (across replicas, the header does
/// it).
impl FromRequestParts<AppState> for Freshness {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sent = match parts.headers.get(CONSISTENCY_HEADER) {
            None => Self::default(),
            Some(value) => {
                let invalid =
                    || ApiError::validation("x-velro-consistency", "malformed consistency token");
                let text = value.to_str().map_err(|_| invalid())?;
                let token = ConsistencyToken::parse(text).map_err(|_| invalid())?;
                if token.store != STORE {
                    return Err(invalid());
                }
                Self { token: Some(token) }
            }
        };
        let own = state.repo.last_write();
        Ok(if own > 0 { sent.after_write(own) } else { sent })
    }
}

/// Trips after consecutive transport failures and fails fast for a while, so a dead PDP costs
/// callers nothing but a 503.
#[derive(Debug, Default)]
struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicI64,
}

const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_OPEN: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Breaker {
    fn allows(&self) -> bool {
        now_ms() >= self.open_until_ms.load(Ordering::Relaxed)
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    fn failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= BREAKER_THRESHOLD {
            let until = now_ms() + i64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(2000);
            self.open_until_ms.store(until, Ordering::Relaxed);
            // Half-open afterwards: the next failure re-opens at once.
            self.failures
                .store(BREAKER_THRESHOLD - 1, Ordering::Relaxed);
            tracing::error!(
                open_ms = BREAKER_OPEN.as_millis() as u64,
                "PDP unreachable; circuit open, requests are denied"
            );
        }
    }
}

/// A page of `LookupResources`.
#[derive(Debug, Clone, Default)]
pub struct LookupPage {
    /// Allowed ids, ascending.
    pub ids: Vec<Uuid>,
    /// Where the next page starts, when truncated.
    pub next_cursor: Option<String>,
}

/// A signed media URL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MediaUrl {
    /// The media file.
    pub media_id: String,
    /// Its content type.
    pub content_type: String,
    /// The signed URL.
    pub url: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A verified media request.
#[derive(Debug, Clone)]
pub struct VerifiedMedia {
    /// Storage key.
    pub key: String,
    /// `true` for attachment (download), `false` for inline.
    pub attachment: bool,
}

/// The PDP as the API uses it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pdp {
    client: PdpClient,
    breaker: Arc<Breaker>,
}

fn transport_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

impl Pdp {
    /// Ask through `client`.
    pub fn new(client: PdpClient) -> Self {
        Self {
            client,
            breaker: Arc::new(Breaker::default()),
        }
    }

    /// Run `call`, retrying once on a transport failure (all PDP calls here are reads), through
    /// the breaker; map statuses to API errors.
    async fn call<T, F, Fut>(&self, rpc: &'static str, mut call: F) -> ApiResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        if !self.breaker.allows() {
            return Err(ApiError::PdpUnavailable);
        }
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => {
                    self.breaker.success();
                    return Ok(value);
                }
                Err(status) if transport_failure(status.code()) => {
                    attempt += 1;
                    if attempt < 2 && status.code() != Code::DeadlineExceeded {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    tracing::warn!(rpc, code = ?status.code(), message = status.message(), "PDP call failed");
                    self.breaker.failure();
                    return Err(ApiError::PdpUnavailable);
                }
                Err(status) if status.code() == Code::InvalidArgument => {
                    self.breaker.success();
                    return Err(ApiError::Validation {
                        message: status.message().to_owned(),
                        field: None,
                    });
                }
                Err(status) => {
                    // Wrong key, unknown store, overload: the PDP answered but not with a
                    // decision. Deny as unavailable; operators see why in the log.
                    tracing::error!(rpc, code = ?status.code(), message = status.message(), "PDP refused the call");
                    return Err(ApiError::PdpUnavailable);
                }
            }
        }
    }

    fn request(&self, caller: Principal, ask: &Ask, fresh: &Freshness) -> proto::CheckRequest {
        proto::CheckRequest {
            store: STORE.into(),
            principal: Some(caller.entity()),
            action: ask.action.into(),
            resource: Some(match ask.kind {
                Kind::Platform => proto::EntityRef {
                    r#type: "Platform".into(),
                    id: "velro".into(),
                },
                kind => entity(kind.name(), ask.id),
            }),
            context_json: ask
                .context
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            consistency: fresh.proto(),
            request_id: request_id::current(),
            client_ip: request_id::client_ip(),
            ..Default::default()
        }
    }

    /// Decide several questions in one call; one answer per question, in order.
    pub async fn decide(
        &self,
        caller: Principal,
        asks: &[Ask],
        fresh: &Freshness,
    ) -> ApiResult<Vec<bool>> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<proto::CheckRequest> = asks
            .iter()
            .map(|a| self.request(caller, a, fresh))
            .collect();
        let decisions = if let [item] = items.as_slice() {
            let response = self
                .call("Check", || {
                    let mut client = self.client.authorizer();
                    let item = item.clone();
                    async move { client.check(item).await }
                })
                .await;
            match response {
                Ok(response) => vec![response.into_inner().decision.unwrap_or_default()],
                // A request the schema does not admit (e.g. an anonymous principal for a
                // users-only action) is a deny, as BatchCheck answers it.
                Err(ApiError::Validation { message, .. }) => {
                    tracing::warn!(action = item.action, reason = %message, "PDP refused the request as invalid; denied");
                    vec![proto::Decision::default()]
                }
                Err(e) => return Err(e),
            }
        } else {
            let mut all = Vec::with_capacity(items.len());
            for chunk in items.chunks(1000) {
                let response = self
                    .call("BatchCheck", || {
                        let mut client = self.client.authorizer();
                        let request = proto::BatchCheckRequest {
                            items: chunk.to_vec(),
                        };
                        async move { client.batch_check(request).await }
                    })
                    .await?;
                all.extend(response.into_inner().decisions);
            }
            all
        };
        if decisions.len() != asks.len() {
            tracing::error!(
                asked = asks.len(),
                answered = decisions.len(),
                "PDP answered a different number of items"
            );
            return Err(ApiError::PdpUnavailable);
        }
        Ok(decisions.into_iter().map(|d| d.allowed).collect())
    }

    /// Keep the items `caller` may perform `action` on (one BatchCheck), in order: how lists turn
    /// SQL candidates into what the caller may see.
    pub async fn filter<T>(
        &self,
        caller: Principal,
        action: &'static str,
        kind: Kind,
        items: Vec<T>,
        id: impl Fn(&T) -> Uuid,
        fresh: &Freshness,
    ) -> ApiResult<Vec<T>> {
        let asks: Vec<Ask> = items
            .iter()
            .map(|t| Ask::new(action, kind, id(t)))
            .collect();
        let allowed = self.decide(caller, &asks, fresh).await?;
        Ok(items
            .into_iter()
            .zip(allowed)
            .filter_map(|(t, ok)| ok.then_some(t))
            .collect())
    }

    /// Whether `caller` may do `ask`.
    pub async fn allows(&self, caller: Principal, ask: Ask, fresh: &Freshness) -> ApiResult<bool> {
        Ok(self
            .decide(caller, std::slice::from_ref(&ask), fresh)
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Require `ask`; if it is denied, answer 404 when `view` is denied too (no existence
    /// oracle) and 403 otherwise. One round trip.
    pub async fn require(
        &self,
        caller: Principal,
        view: &'static str,
        ask: Ask,
        fresh: &Freshness,
    ) -> ApiResult<()> {
        let noun = ask.kind.noun();
        if ask.action == view {
            return match self.allows(caller, ask, fresh).await? {
                true => Ok(()),
                false => Err(ApiError::NotFound(noun)),
            };
        }
        let view_ask = Ask::new(view, ask.kind, ask.id);
        let answers = self.decide(caller, &[view_ask, ask], fresh).await?;
        match answers.as_slice() {
            [_, true] => Ok(()),
            [true, false] => Err(ApiError::Forbidden),
            _ => Err(ApiError::NotFound(noun)),
        }
    }

    /// Which resources of `kind` may `caller` perform `action` on: one page.
    pub async fn lookup(
        &self,
        caller: Principal,
        action: &'static str,
        kind: Kind,
        cursor: Option<&str>,
        limit: u32,
        fresh: &Freshness,
    ) -> ApiResult<LookupPage> {
        let request = proto::LookupResourcesRequest {
            store: STORE.into(),
            principal: Some(caller.entity()),
            action: action.into(),
            resource_type: kind.name().into(),
            cursor: cursor.unwrap_or_default().into(),
            limit,
            consistency: fresh.proto(),
            request_id: request_id::current(),
            client_ip: request_id::client_ip(),
            ..Default::default()
        };
        self.call("LookupResources", || {
            let mut client = self.client.authorizer();
            let request = request.clone();
            async move {
                let mut stream = client.lookup_resources(request).await?.into_inner();
                let mut page = LookupPage::default();
                while let Some(message) = stream.message().await? {
                    for id in &message.resource_ids {
                        let id = Uuid::parse_str(id)
                            .map_err(|_| tonic::Status::internal("PDP returned a bad id"))?;
                        page.ids.push(id);
                    }
                    if message.last {
                        if message.truncated && !message.next_cursor.is_empty() {
                            page.next_cursor = Some(message.next_cursor);
                        }
                        return Ok(page);
                    }
                }
                // A stream that ends without its final message was cut: do not trust it.
                Err(tonic::Status::unavailable("lookup stream ended early"))
            }
        })
        .await
    }

    /// Sign URLs for a generation's media; `None` when the decision is deny.
    pub async fn mint(
        &self,
        caller: Principal,
        generation: Uuid,
        attachment: bool,
        fresh: &Freshness,
    ) -> ApiResult<Option<Vec<MediaUrl>>> {
        self.mint_for(
            caller,
            generation.to_string(),
            String::new(),
            attachment,
            fresh,
        )
        .await
    }

    /// Sign the URL of an upload; `None` when the decision is deny.
    pub async fn mint_upload(
        &self,
        caller: Principal,
        media: Uuid,
        attachment: bool,
        fresh: &Freshness,
    ) -> ApiResult<Option<Vec<MediaUrl>>> {
        self.mint_for(caller, String::new(), media.to_string(), attachment, fresh)
            .await
    }

    async fn mint_for(
        &self,
        caller: Principal,
        generation_id: String,
        media_id: String,
        attachment: bool,
        fresh: &Freshness,
    ) -> ApiResult<Option<Vec<MediaUrl>>> {
        let disposition = if attachment {
            proto::Disposition::Attachment
        } else {
            proto::Disposition::Inline
        };
        let request = proto::MintMediaUrlRequest {
            store: STORE.into(),
            principal: Some(caller.entity()),
            generation_id,
            media_id,
            disposition: disposition.into(),
            consistency: fresh.proto(),
            request_id: request_id::current(),
            client_ip: request_id::client_ip(),
            ..Default::default()
        };
        let response = match self
            .call("MintMediaUrl", || {
                let mut client = self.client.authorizer();
                let request = request.clone();
                async move { client.mint_media_url(request).await }
            })
            .await
        {
            Ok(response) => response.into_inner(),
            Err(ApiError::Validation { message, .. }) => {
                tracing::warn!(reason = %message, "PDP refused the mint request as invalid; denied");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if !response.decision.is_some_and(|d| d.allowed) {
            return Ok(None);
        }
        Ok(Some(
            response
                .urls
                .into_iter()
                .map(|u| MediaUrl {
                    media_id: u.media_id,
                    content_type: u.content_type,
                    url: u.url,
                    expires_at: u.expires_at,
                })
                .collect(),
        ))
    }

    /// Verify a signed media request; `None` when invalid (tampered, malformed, expired, retired
    /// key).
    pub async fn verify(&self, path: &str, query: &str) -> ApiResult<Option<VerifiedMedia>> {
        let request = proto::VerifyMediaUrlRequest {
            path: path.into(),
            query: query.into(),
        };
        let response = match self
            .call("VerifyMediaUrl", || {
                let mut client = self.client.authorizer();
                let request = request.clone();
                async move { client.verify_media_url(request).await }
            })
            .await
        {
            Ok(response) => response.into_inner(),
            Err(ApiError::Validation { message, .. }) => {
                tracing::info!(reason = %message, "malformed media URL refused");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if !response.valid {
            tracing::info!(reason = %response.reason, "media URL refused");
            return Ok(None);
        }
        Ok(Some(VerifiedMedia {
            key: response.key,
            attachment: response.disposition == i32::from(proto::Disposition::Attachment),
        }))
    }

    /// Whether the PDP answers its health check.
    pub async fn healthy(&self) -> bool {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.client.channel());
        matches!(
            tokio::time::timeout(
                Duration::from_secs(1),
                health.check(tonic_health::pb::HealthCheckRequest {
                    service: String::new()
                })
            )
            .await,
            Ok(Ok(response)) if response.get_ref().status
                == i32::from(tonic_health::pb::health_check_response::ServingStatus::Serving)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_half_opens() {
        let breaker = Breaker::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            breaker.failure();
            assert!(breaker.allows());
        }
        breaker.failure();
        assert!(!breaker.allows());
        breaker.open_until_ms.store(0, Ordering::Relaxed);
        assert!(breaker.allows());
        breaker.failure();
        assert!(!breaker.allows(), "half-open: one failure re-opens");
        breaker.open_until_ms.store(0, Ordering::Relaxed);
        breaker.success();
        breaker.failure();
        assert!(breaker.allows());
    }

    #[test]
    fn freshness_keeps_the_newer_token() {
        let fresh = Freshness::default().after_write(10);
        assert_eq!(fresh.token.as_ref().unwrap().revision, 10);
        assert_eq!(fresh.after_write(5).token.unwrap().revision, 10);
        assert_eq!(fresh.after_write(12).token.unwrap().revision, 12);
        let header = fresh.header().unwrap();
        assert_eq!(ConsistencyToken::parse(&header).unwrap().revision, 10);
    }
}
