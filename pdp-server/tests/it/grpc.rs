//! Every gRPC call over the network, its bad inputs, health and reflection.

use futures::StreamExt;
use serde_json::json;
use tonic::Code;
use uuid::Uuid;
use velro_pdp::proto;

use crate::support::{ADMIN_KEY, API_KEY, TestPdp, generation, project, user};

fn entity(t: &str, id: impl ToString) -> Option<proto::EntityRef> {
    Some(proto::EntityRef {
        r#type: t.into(),
        id: id.to_string(),
    })
}

fn check(principal: Uuid, action: &str, kind: &str, resource: Uuid) -> proto::CheckRequest {
    proto::CheckRequest {
        principal: entity("User", principal),
        action: action.into(),
        resource: entity(kind, resource),
        ..proto::CheckRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authorizer_call_answers_over_the_network() {
    let pdp = TestPdp::start(|_| {}).await;
    let owner = user(&pdp.db).await;
    let stranger = user(&pdp.db).await;
    let mut projects = Vec::new();
    for _ in 0..5 {
        projects.push(project(&pdp.db, owner, "private").await);
    }
    let generation = generation(&pdp.db, owner, projects[0]).await;
    let mut client = pdp.client(Some(API_KEY)).authorizer();

    // Check
    let d = client
        .check(check(owner, "project:view", "Project", projects[0]))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert!(d.allowed);
    assert_eq!(d.policies[0].id, "project.owner");
    assert!(!d.policies[0].reason.is_empty());
    assert_eq!(d.store, "velro");
    assert!(!d.consistency_token.is_empty());
    assert_eq!(d.cache_tier, proto::CacheTier::L3 as i32);
    let again = client
        .check(check(owner, "project:view", "Project", projects[0]))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(again.cache_tier, proto::CacheTier::Decision as i32);

    // BatchCheck: order kept, a malformed item is an invalid decision, not a failed call.
    let mut malformed = check(owner, "project:view", "Project", projects[1]);
    malformed.resource = entity("Project", "not-a-uuid");
    let batch = client
        .batch_check(proto::BatchCheckRequest {
            items: vec![
                check(owner, "project:delete", "Project", projects[1]),
                malformed,
                check(stranger, "project:view", "Project", projects[1]),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    assert_eq!(batch.len(), 3);
    assert!(batch[0].allowed);
    assert_eq!(batch[1].deny_kind, proto::DenyKind::Invalid as i32);
    assert!(batch[1].error.contains("UUID"), "{}", batch[1].error);
    assert!(!batch[2].allowed);
    assert_eq!(batch[2].deny_kind, proto::DenyKind::NoPermit as i32);

    // LookupResources: pages of 2, followed by cursor.
    let mut found = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let mut stream = client
            .lookup_resources(proto::LookupResourcesRequest {
                principal: entity("User", owner),
                action: "project:view".into(),
                resource_type: "Project".into(),
                cursor: cursor.clone(),
                limit: 2,
                ..proto::LookupResourcesRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(message) = stream.next().await {
            let message = message.unwrap();
            found.extend(message.resource_ids.clone());
            if message.last {
                last = Some(message);
            }
        }
        let last = last.expect("a final message");
        pages += 1;
        assert_eq!(last.truncated, !last.next_cursor.is_empty());
        assert!(!last.consistency_token.is_empty());
        if !last.truncated {
            break;
        }
        cursor = last.next_cursor;
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = projects.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(found, expected);

    // MintMediaUrl and VerifyMediaUrl
    let minted = client
        .mint_media_url(proto::MintMediaUrlRequest {
            principal: entity("User", owner),
            generation_id: generation.to_string(),
            disposition: proto::Disposition::Attachment as i32,
            ttl_seconds: 60,
            ..proto::MintMediaUrlRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(minted.decision.unwrap().allowed);
    assert_eq!(minted.urls.len(), 1);
    let url = &minted.urls[0].url;
    let rest = url.split_once("/media/").unwrap().1;
    let (key, query) = rest.split_once('?').unwrap();
    let verified = client
        .verify_media_url(proto::VerifyMediaUrlRequest {
            path: format!("/media/{key}"),
            query: query.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid, "{}", verified.reason);
    assert_eq!(verified.subject, owner.to_string());
    assert_eq!(verified.disposition, proto::Disposition::Attachment as i32);
    let tampered = client
        .verify_media_url(proto::VerifyMediaUrlRequest {
            path: format!("/media/{key}x"),
            query: query.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!tampered.valid);
    assert_eq!(tampered.reason, "bad signature");
    let denied = client
        .mint_media_url(proto::MintMediaUrlRequest {
            principal: entity("User", stranger),
            generation_id: generation.to_string(),
            ..proto::MintMediaUrlRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!denied.decision.unwrap().allowed);
    assert!(denied.urls.is_empty());

    // Evaluate: Cedar's call and answer shapes, default policy ids.
    let call = json!({
        "principal": {"type": "User", "id": "alice"},
        "action": {"type": "Action", "id": "view"},
        "resource": {"type": "Photo", "id": "p"},
        "context": {},
        "policies": {"staticPolicies": "permit(principal == User::\"alice\", action, resource);"},
        "entities": []
    });
    let answer = client
        .evaluate(proto::EvaluateRequest {
            call_json: call.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision, "allow");
    assert_eq!(answer.reason, ["policy0"]);
    let answer_json: serde_json::Value = serde_json::from_str(&answer.answer_json).unwrap();
    assert_eq!(answer_json["diagnostics"]["reason"], json!(["policy0"]));
    pdp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_admin_lists_inspects_validates_and_reloads() {
    let pdp = TestPdp::start(|_| {}).await;
    let mut admin = pdp.client(Some(ADMIN_KEY)).admin();
    let stores = admin
        .list_stores(proto::ListStoresRequest {})
        .await
        .unwrap()
        .into_inner()
        .stores;
    assert_eq!(stores.len(), 1);
    assert_eq!(stores[0].name, "velro");
    assert_eq!(stores[0].policy_version.len(), 32);

    let store = admin
        .get_store(proto::GetStoreRequest {
            name: "velro".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(store.policies.len(), stores[0].policy_count as usize);
    let owner = store
        .policies
        .iter()
        .find(|p| p.id == "project.owner")
        .unwrap();
    assert!(owner.text.starts_with("@id(\"project.owner\")"));
    assert_eq!(owner.effect, "permit");
    assert_eq!(
        admin
            .get_store(proto::GetStoreRequest {
                name: "nope".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let good = proto::PolicyFile {
        name: "only.cedar".into(),
        text: "@id(\"x\")\n@reason(\"r\")\npermit (principal is Velro::User, action == Velro::Action::\"project:view\", resource);".into(),
    };
    let valid = admin
        .validate_policies(proto::ValidatePoliciesRequest {
            store: "velro".into(),
            files: vec![good],
            schema: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid, "{:?}", valid.diagnostics);
    assert_eq!(valid.policy_count, 1);
    let bad = proto::PolicyFile {
        name: "bad.cedar".into(),
        text: "@id(\"x\")\n@reason(\"r\")\npermit (principal, action, resource is Velro::Project)\nwhen { resource.visiblity == \"public\" };".into(),
    };
    let invalid = admin
        .validate_policies(proto::ValidatePoliciesRequest {
            store: "velro".into(),
            files: vec![bad],
            schema: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!invalid.valid);
    assert_eq!(invalid.diagnostics[0].file, "bad.cedar");
    assert_eq!(invalid.diagnostics[0].line, 4);
    assert_eq!(invalid.diagnostics[0].policy_id, "x");
    let traversal = admin
        .validate_policies(proto::ValidatePoliciesRequest {
            store: "velro".into(),
            files: vec![proto::PolicyFile {
                name: "../escape.cedar".into(),
                text: String::new(),
            }],
            schema: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(traversal.code(), Code::InvalidArgument);

    let reloaded = admin
        .reload_stores(proto::ReloadStoresRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.unchanged, ["velro"]);
    assert!(reloaded.rejected.is_empty());

    // The API key is not an admin key.
    let mut not_admin = pdp.client(Some(API_KEY)).admin();
    assert_eq!(
        not_admin
            .list_stores(proto::ListStoresRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    pdp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_statuses_and_the_server_stays_healthy() {
    let pdp = TestPdp::start(|c| c.max_request_bytes = 64 * 1024).await;
    let owner = user(&pdp.db).await;
    let project = project(&pdp.db, owner, "private").await;
    let mut client = pdp.client(Some(API_KEY)).authorizer();
    let good = check(owner, "project:view", "Project", project);

    let cases: Vec<(&str, proto::CheckRequest, Code)> = vec![
        (
            "malformed UUID",
            {
                let mut r = good.clone();
                r.resource = entity("Project", "12345");
                r
            },
            Code::InvalidArgument,
        ),
        (
            "uppercase UUID",
            {
                let mut r = good.clone();
                r.principal = entity("User", owner.to_string().to_uppercase());
                r
            },
            Code::InvalidArgument,
        ),
        (
            "injection in id",
            {
                let mut r = good.clone();
                r.resource = entity("Project", "' OR 1=1 --");
                r
            },
            Code::InvalidArgument,
        ),
        (
            "unknown type",
            {
                let mut r = good.clone();
                r.resource = entity("Spaceship", project);
                r
            },
            Code::InvalidArgument,
        ),
        (
            "unknown action",
            {
                let mut r = good.clone();
                r.action = "project:launch".into();
                r
            },
            Code::InvalidArgument,
        ),
        (
            "missing principal",
            {
                let mut r = good.clone();
                r.principal = None;
                r
            },
            Code::InvalidArgument,
        ),
        (
            "context not JSON",
            {
                let mut r = good.clone();
                r.context_json = "{nope".into();
                r
            },
            Code::InvalidArgument,
        ),
        (
            "context not an object",
            {
                let mut r = good.clone();
                r.context_json = "[1]".into();
                r
            },
            Code::InvalidArgument,
        ),
        (
            "oversize context",
            {
                let mut r = good.clone();
                r.context_json = json!({"pad": "x".repeat(17 * 1024)}).to_string();
                r
            },
            Code::InvalidArgument,
        ),
        (
            "reserved emergency",
            {
                let mut r = good.clone();
                r.context_json = json!({"emergency": {"enabled": true}}).to_string();
                r
            },
            Code::InvalidArgument,
        ),
        (
            "bad token",
            {
                let mut r = good.clone();
                r.consistency = Some(proto::Consistency {
                    requirement: Some(proto::consistency::Requirement::AtLeastAsFresh(
                        "garbage!".into(),
                    )),
                });
                r
            },
            Code::InvalidArgument,
        ),
        (
            "bad client ip",
            {
                let mut r = good.clone();
                r.client_ip = "999.1.1.1".into();
                r
            },
            Code::InvalidArgument,
        ),
        (
            "unknown store",
            {
                let mut r = good.clone();
                r.store = "elsewhere".into();
                r
            },
            Code::NotFound,
        ),
    ];
    for (name, request, code) in cases {
        let status = client.check(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(!status.message().is_empty(), "{name}");
    }

    // Tiny items, so the batch is within the message size limit and reaches the item limit.
    let oversize_batch = proto::BatchCheckRequest {
        items: vec![proto::CheckRequest::default(); 1001],
    };
    assert_eq!(
        client.batch_check(oversize_batch).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let too_big = proto::EvaluateRequest {
        call_json: "x".repeat(128 * 1024),
    };
    let status = client.evaluate(too_big).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert_eq!(
        client
            .lookup_resources(proto::LookupResourcesRequest {
                principal: entity("User", owner),
                action: "project:view".into(),
                resource_type: "Project".into(),
                limit: 5000,
                ..proto::LookupResourcesRequest::default()
            })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    // Missing and wrong keys.
    let mut anonymous = pdp.client(None).authorizer();
    assert_eq!(
        anonymous.check(good.clone()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut wrong = pdp.client(Some("not-the-key-0123456789")).authorizer();
    assert_eq!(
        wrong.check(good.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Still healthy, still deciding.
    assert!(
        client
            .check(good)
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap()
            .allowed
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(pdp.client(None).channel());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "velro.authz.v1.Authorizer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    pdp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let pdp = TestPdp::start(|_| {}).await;
    let channel = pdp.client(None).channel();

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut stream = Alpha::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(AlphaResponse::ListServicesResponse(list)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "velro.authz.v1.Authorizer",
        "velro.authz.v1.PolicyAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Request;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Response;
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1Request::FileContainingSymbol(
            "velro.authz.v1.Authorizer".into(),
        )),
    };
    let mut stream = V1::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap().message_response;
    assert!(
        matches!(response, Some(V1Response::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{response:?}"
    );
    pdp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_an_intact_audit_log() {
    let pdp = TestPdp::start(|_| {}).await;
    let owner = user(&pdp.db).await;
    let project = project(&pdp.db, owner, "private").await;
    let mut client = pdp.client(Some(API_KEY)).authorizer();
    for _ in 0..10 {
        client
            .check(check(owner, "project:view", "Project", project))
            .await
            .unwrap();
    }
    let grpc = pdp.grpc;
    let data = pdp.stop().await;
    let report = velro_engine::audit::verify_file(&TestPdp::audit_file(data.path())).unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(report.records >= 10, "{}", report.records);
    // The port is closed.
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
}
