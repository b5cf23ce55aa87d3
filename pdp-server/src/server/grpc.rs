//! The gRPC services: `Authorizer` (decisions, lookups, media URLs, inline evaluation) and
//! `PolicyAdmin` (stores). Each handler authenticates, takes a per-caller permit, converts, calls
//! the engine and records its latency; nothing here decides.

use std::pin::Pin;
use std::time::Instant;

use futures::Stream;
use tonic::{Request, Response, Status};
use velro_engine::PolicyStore;
use velro_engine::audit::RecordKind;
use velro_engine::policy_store::{PolicyEffect, SourceFile};

use super::Shared;
use super::auth::{AuthError, Caller};
use super::convert;
use crate::proto;
use crate::proto::authorizer_server::Authorizer;
use crate::proto::policy_admin_server::PolicyAdmin;

/// Ids per streamed lookup message.
const LOOKUP_CHUNK: usize = 100;

/// The `Authorizer` service.
#[derive(Debug, Clone)]
pub struct AuthorizerService {
    pub(super) shared: Shared,
}

/// The `PolicyAdmin` service.
#[derive(Debug, Clone)]
pub struct PolicyAdminService {
    pub(super) shared: Shared,
}

fn auth_status(error: AuthError) -> Status {
    match error {
        AuthError::Missing => Status::unauthenticated("missing `authorization: Bearer <key>`"),
        AuthError::Denied => Status::permission_denied("this key may not make this call"),
    }
}

impl Shared {
    /// Authenticate and take a concurrency permit for one call.
    fn admit<T>(
        &self,
        request: &Request<T>,
        admin: bool,
    ) -> Result<(Caller, tokio::sync::OwnedSemaphorePermit), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let caller = self.keys.authenticate(header, admin).map_err(auth_status)?;
        let permit = self.limits.acquire(&caller).ok_or_else(|| {
            metrics::counter!("velro_rejected_concurrency_total").increment(1);
            Status::resource_exhausted("too many concurrent calls from this caller")
        })?;
        Ok((caller, permit))
    }
}

/// Record an RPC's latency and outcome.
fn observe<T>(rpc: &'static str, started: Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => "ok",
        Err(status) => code_name(status.code()),
    };
    metrics::histogram!("velro_rpc_latency_us", "rpc" => rpc)
        .record(started.elapsed().as_micros() as f64);
    metrics::counter!("velro_rpc_requests_total", "rpc" => rpc, "code" => code).increment(1);
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::NotFound => "not_found",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::FailedPrecondition => "failed_precondition",
        _ => "other",
    }
}

type LookupStream =
    Pin<Box<dyn Stream<Item = Result<proto::LookupResourcesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Authorizer for AuthorizerService {
    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let (_caller, _permit) = self.shared.admit(&request, false)?;
            let check = convert::check_request(request.into_inner())?;
            let decision = self
                .shared
                .engine
                .check(check)
                .await
                .map_err(convert::status)?;
            Ok(Response::new(proto::CheckResponse {
                decision: Some(convert::decision(decision)),
            }))
        }
        .await;
        observe("Check", started, &result);
        result
    }

    async fn batch_check(
        &self,
        request: Request<proto::BatchCheckRequest>,
    ) -> Result<Response<proto::BatchCheckResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let (_caller, _permit) = self.shared.admit(&request, false)?;
            let items = request.into_inner().items;
            let max = self.shared.engine.config().max_batch;
            if items.len() > max {
                return Err(Status::invalid_argument(format!(
                    "a batch holds at most {max} items, got {}",
                    items.len()
                )));
            }
            // Items that do not even parse keep their place as invalid decisions.
            let mut parsed = Vec::with_capacity(items.len());
            let mut slots = Vec::with_capacity(items.len());
            for item in items {
                match convert::check_request(item) {
                    Ok(check) => {
                        slots.push(None);
                        parsed.push(check);
                    }
                    Err(status) => slots.push(Some(proto::Decision {
                        deny_kind: proto::DenyKind::Invalid as i32,
                        error: status.message().to_owned(),
                        ..proto::Decision::default()
                    })),
                }
            }
            let mut decided = self
                .shared
                .engine
                .batch_check(&parsed)
                .await
                .map_err(convert::status)?
                .into_iter();
            let decisions = slots
                .into_iter()
                .map(|slot| match slot {
                    Some(invalid) => invalid,
                    None => match decided.next() {
                        Some(Ok(d)) => convert::decision(d),
                        Some(Err(e)) => convert::failed_item(e),
                        None => convert::failed_item(velro_engine::Error::Unavailable(
                            "item was not decided".into(),
                        )),
                    },
                })
                .collect();
            Ok(Response::new(proto::BatchCheckResponse { decisions }))
        }
        .await;
        observe("BatchCheck", started, &result);
        result
    }

    type LookupResourcesStream = LookupStream;

    async fn lookup_resources(
        &self,
        request: Request<proto::LookupResourcesRequest>,
    ) -> Result<Response<Self::LookupResourcesStream>, Status> {
        let started = Instant::now();
        let result = async {
            let (_caller, _permit) = self.shared.admit(&request, false)?;
            let lookup = convert::lookup_request(request.into_inner())?;
            let page = self
                .shared
                .engine
                .lookup_resources(&lookup)
                .await
                .map_err(convert::status)?;
            let mut messages: Vec<proto::LookupResourcesResponse> = page
                .ids
                .chunks(LOOKUP_CHUNK)
                .map(|chunk| proto::LookupResourcesResponse {
                    resource_ids: chunk.to_vec(),
                    ..proto::LookupResourcesResponse::default()
                })
                .collect();
            messages.push(proto::LookupResourcesResponse {
                resource_ids: Vec::new(),
                last: true,
                truncated: page.truncated,
                next_cursor: page.next_cursor.unwrap_or_default(),
                consistency_token: page.consistency_token.encode(),
            });
            let stream: LookupStream = Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)));
            Ok(Response::new(stream))
        }
        .await;
        observe("LookupResources", started, &result);
        result
    }

    async fn mint_media_url(
        &self,
        request: Request<proto::MintMediaUrlRequest>,
    ) -> Result<Response<proto::MintMediaUrlResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let (_caller, _permit) = self.shared.admit(&request, false)?;
            let mint = convert::mint_request(request.into_inner())?;
            let outcome = self
                .shared
                .engine
                .mint_media_urls(&mint)
                .await
                .map_err(convert::status)?;
            Ok(Response::new(proto::MintMediaUrlResponse {
                decision: Some(convert::decision(outcome.decision)),
                urls: outcome
                    .urls
                    .into_iter()
                    .map(|m| proto::SignedMediaUrl {
                        media_id: m.media_id,
                        content_type: m.content_type,
                        url: m.url.url,
                        expires_at: m.url.expires_at,
                        kid: m.url.kid,
                    })
                    .collect(),
            }))
        }
        .await;
        observe("MintMediaUrl", started, &result);
        result
    }

    async fn verify_media_url(
        &self,
        request: Request<proto::VerifyMediaUrlRequest>,
    ) -> Result<Response<proto::VerifyMediaUrlResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let (_caller, _permit) = self.shared.admit(&request, false)?;
            let r = request.into_inner();
            if r.path.len() > 2048 || r.query.len() > 4096 {
                return Err(Status::invalid_argument("URL too long"));
            }
            let response = match self.shared.engine.signer().verify(&r.path, &r.query) {
                Ok(v) => proto::VerifyMediaUrlResponse {
                    valid: true,
                    reason: String::new(),
                    key: v.key,
                    subject: v.subject,
                    disposition: convert::disposition_out(v.disposition),
                    expires_at: v.expires_at,
                },
                Err(velro_engine::Error::MediaUrl(why)) => proto::VerifyMediaUrlResponse {
                    valid: false,
                    reason: why.to_owned(),
                    ..proto::VerifyMediaUrlResponse::default()
                },
                Err(e) => return Err(convert::status(e)),
            };
            Ok(Response::new(response))
        }
        .await;
        observe("VerifyMediaUrl", started, &result);
        result
    }

    async fn evaluate(
        &self,
        request: Request<proto::EvaluateRequest>,
    ) -> Result<Response<proto::EvaluateResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let (_caller, _permit) = self.shared.admit(&request, false)?;
            let call: serde_json::Value = serde_json::from_str(&request.into_inner().call_json)
                .map_err(|e| Status::invalid_argument(format!("`call_json` is not JSON: {e}")))?;
            let answer = velro_engine::evaluate::evaluate(call).map_err(convert::status)?;
            let strings = |key: &str| -> Vec<String> {
                answer.diagnostics[key]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let answer_json = serde_json::json!({
                "decision": answer.decision,
                "diagnostics": answer.diagnostics,
            });
            Ok(Response::new(proto::EvaluateResponse {
                decision: answer.decision.clone(),
                reason: strings("reason"),
                errors: strings("errors"),
                answer_json: answer_json.to_string(),
            }))
        }
        .await;
        observe("Evaluate", started, &result);
        result
    }
}

fn summary(name: &str, status: &velro_engine::stores::StoreStatus) -> proto::StoreSummary {
    proto::StoreSummary {
        name: name.to_owned(),
        policy_version: status
            .current
            .as_ref()
            .map(|s| s.version().to_owned())
            .unwrap_or_default(),
        policy_count: status.current.as_ref().map_or(0, |s| {
            u32::try_from(s.policy_info().count()).unwrap_or(u32::MAX)
        }),
        last_error: status
            .last_error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
    }
}

fn policies(store: &PolicyStore) -> Vec<proto::PolicySummary> {
    store
        .policy_info()
        .map(|p| proto::PolicySummary {
            id: p.id.to_string(),
            reason: p.reason.to_string(),
            effect: match p.effect {
                PolicyEffect::Permit => "permit".into(),
                PolicyEffect::Forbid => "forbid".into(),
            },
            file: p.file.clone(),
            line: p.line,
            text: store
                .sources()
                .policies
                .iter()
                .find(|f| f.name == p.file)
                .and_then(|f| f.text.get(p.span.clone()))
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

/// Candidate policy file names: plain `*.cedar` names, no paths.
fn valid_file_name(name: &str) -> bool {
    name.ends_with(".cedar")
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
}

#[tonic::async_trait]
impl PolicyAdmin for PolicyAdminService {
    async fn list_stores(
        &self,
        request: Request<proto::ListStoresRequest>,
    ) -> Result<Response<proto::ListStoresResponse>, Status> {
        let (_caller, _permit) = self.shared.admit(&request, true)?;
        let stores = self
            .shared
            .engine
            .stores()
            .statuses()
            .iter()
            .map(|(name, status)| summary(name, status))
            .collect();
        Ok(Response::new(proto::ListStoresResponse { stores }))
    }

    async fn get_store(
        &self,
        request: Request<proto::GetStoreRequest>,
    ) -> Result<Response<proto::GetStoreResponse>, Status> {
        let (_caller, _permit) = self.shared.admit(&request, true)?;
        let name = request.into_inner().name;
        let status = self
            .shared
            .engine
            .stores()
            .status(&name)
            .ok_or_else(|| Status::not_found(format!("unknown policy store `{name}`")))?;
        Ok(Response::new(proto::GetStoreResponse {
            store: Some(summary(&name, &status)),
            policies: status.current.as_deref().map(policies).unwrap_or_default(),
            last_error_diagnostics: status
                .last_error
                .as_ref()
                .map(|e| e.diagnostics.iter().map(convert::diagnostic).collect())
                .unwrap_or_default(),
            warnings: status
                .current
                .as_ref()
                .map(|s| s.warnings().iter().map(convert::diagnostic).collect())
                .unwrap_or_default(),
        }))
    }

    async fn validate_policies(
        &self,
        request: Request<proto::ValidatePoliciesRequest>,
    ) -> Result<Response<proto::ValidatePoliciesResponse>, Status> {
        let (caller, _permit) = self.shared.admit(&request, true)?;
        let r = request.into_inner();
        let store_name = if r.store.is_empty() {
            velro_engine::decision::DEFAULT_STORE.to_owned()
        } else {
            r.store
        };
        let store = self
            .shared
            .engine
            .stores()
            .get(&store_name)
            .map_err(convert::status)?;
        if r.files.is_empty() {
            return Err(Status::invalid_argument("no policy files to validate"));
        }
        let mut sources = store.sources().clone();
        sources.policies.clear();
        for file in r.files {
            if !valid_file_name(&file.name) {
                return Err(Status::invalid_argument(format!(
                    "file name `{}` must be a plain `*.cedar` name",
                    file.name.chars().take(64).collect::<String>()
                )));
            }
            sources.policies.push(SourceFile {
                name: file.name,
                text: file.text,
            });
        }
        sources.policies.sort_by(|a, b| a.name.cmp(&b.name));
        if !r.schema.is_empty() {
            sources.schema.text = r.schema;
        }
        let outcome = store.rebuild(sources);
        let _ = self
            .shared
            .engine
            .record_event(
                RecordKind::Admin,
                format!(
                    "ValidatePolicies on `{store_name}`: {}",
                    if outcome.is_ok() { "valid" } else { "invalid" }
                ),
                Some(caller.id),
            )
            .await;
        Ok(Response::new(match outcome {
            Ok(candidate) => proto::ValidatePoliciesResponse {
                valid: true,
                diagnostics: candidate
                    .warnings()
                    .iter()
                    .map(convert::diagnostic)
                    .collect(),
                policy_count: u32::try_from(candidate.policy_info().count()).unwrap_or(u32::MAX),
                policy_version: candidate.version().to_owned(),
            },
            Err(velro_engine::Error::InvalidStore { diagnostics, .. }) => {
                proto::ValidatePoliciesResponse {
                    valid: false,
                    diagnostics: diagnostics.iter().map(convert::diagnostic).collect(),
                    ..proto::ValidatePoliciesResponse::default()
                }
            }
            Err(e) => return Err(convert::status(e)),
        }))
    }

    async fn reload_stores(
        &self,
        request: Request<proto::ReloadStoresRequest>,
    ) -> Result<Response<proto::ReloadStoresResponse>, Status> {
        let (caller, _permit) = self.shared.admit(&request, true)?;
        let report = self.shared.engine.stores().reload();
        self.shared.reload_keys();
        let _ = self
            .shared
            .engine
            .record_event(
                RecordKind::Admin,
                format!(
                    "ReloadStores: {} applied, {} rejected",
                    report.applied.len(),
                    report.rejected.len()
                ),
                Some(caller.id),
            )
            .await;
        Ok(Response::new(proto::ReloadStoresResponse {
            applied: report
                .applied
                .into_iter()
                .map(|(name, version)| format!("{name}@{version}"))
                .collect(),
            unchanged: report.unchanged,
            rejected: report
                .rejected
                .into_iter()
                .map(|(name, why)| format!("{name}: {why}"))
                .collect(),
        }))
    }
}
