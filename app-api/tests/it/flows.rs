//! End-to-end flows through the API and the PDP: the access matrix, 404-not-403, revocation with
//! the consistency header, team rules, lists and pagination.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Session, TestApi};

/// Owner, editor and viewer (through the project's home team), a stranger and anonymous, across
/// the five visibilities: view (GET), update (PATCH) and the project list.
pub async fn access_matrix(api: &TestApi) {
    let owner = api.register("owner").await;
    let editor = api.register("editor").await;
    let viewer = api.register("viewer").await;
    let stranger = api.register("stranger").await;
    let team = api.team(&owner, "Studio").await;
    assert_eq!(
        api.add_member(&owner, &team, &editor, "editor")
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.add_member(&owner, &team, &viewer, "viewer")
            .await
            .status,
        StatusCode::CREATED
    );

    let visibilities = [
        "private",
        "team_restricted",
        "team_open",
        "public_read",
        "public",
    ];
    let mut projects = Vec::new();
    for v in visibilities {
        let id = api
            .project(
                &owner,
                json!({ "name": v, "visibility": v, "team_id": team }),
            )
            .await;
        projects.push((v, id));
    }

    // (who, token) → expected view per visibility, in the order above.
    let o = StatusCode::OK;
    let n = StatusCode::NOT_FOUND;
    let who: [(&str, Option<&Session>, [StatusCode; 5]); 5] = [
        ("owner", Some(&owner), [o, o, o, o, o]),
        ("editor", Some(&editor), [n, o, o, o, o]),
        ("viewer", Some(&viewer), [n, n, o, o, o]),
        ("stranger", Some(&stranger), [n, n, n, o, o]),
        ("anonymous", None, [n, n, n, n, o]),
    ];
    for (name, session, expected) in &who {
        let token = session.map(|s| s.token.as_str());
        for ((visibility, id), want) in projects.iter().zip(expected) {
            let reply = api.get(&format!("/api/v1/projects/{id}"), token).await;
            assert_eq!(
                reply.status, *want,
                "{name} viewing a {visibility} project: {}",
                reply.body
            );
            if *want == n {
                assert_eq!(reply.code(), "NOT_FOUND");
            }
        }
        // The list shows exactly the viewable projects.
        let reply = api.get("/api/v1/projects?limit=200", token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let listed: Vec<&str> = reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let expected_names: Vec<&str> = visibilities
            .iter()
            .zip(expected)
            .filter(|(_, s)| **s == o)
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(listed, expected_names, "{name}'s project list");
    }

    // Update: editors and the owner may; a viewer who can see gets 403, an invisible project 404.
    let f = StatusCode::FORBIDDEN;
    let updates: [(&Session, [StatusCode; 5]); 4] = [
        (&owner, [o, o, o, o, o]),
        (&editor, [n, o, o, o, o]),
        (&viewer, [n, n, f, f, f]),
        (&stranger, [n, n, n, f, f]),
    ];
    for (session, expected) in updates {
        for ((visibility, id), want) in projects.iter().zip(expected) {
            let reply = api
                .send(
                    Method::PATCH,
                    &format!("/api/v1/projects/{id}"),
                    Some(&session.token),
                    Some(json!({ "description": "edited" })),
                    &[],
                )
                .await;
            assert_eq!(reply.status, want, "update of {visibility}: {}", reply.body);
        }
    }
    let reply = api
        .send(
            Method::PATCH,
            &format!("/api/v1/projects/{}", projects[4].1),
            None,
            Some(json!({ "description": "x" })),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Delete is the project owner's alone, even for a team owner... here the editor is refused.
    let reply = api
        .send(
            Method::DELETE,
            &format!("/api/v1/projects/{}", projects[2].1),
            Some(&editor.token),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = api
        .send(
            Method::DELETE,
            &format!("/api/v1/projects/{}", projects[2].1),
            Some(&owner.token),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = api
        .get(
            &format!("/api/v1/projects/{}", projects[2].1),
            Some(&owner.token),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_access_matrix_holds_through_the_api() {
    let api = TestApi::start(|_| {}).await;
    access_matrix(&api).await;
    api.stop().await;
}

/// Removing a member takes effect on the very next request that carries the write's token, and
/// within the change-feed interval for requests without it.
pub async fn revocation(api: &TestApi) {
    let owner = api.register("owner").await;
    let member = api.register("member").await;
    let team = api.team(&owner, "Studio").await;
    api.add_member(&owner, &team, &member, "editor").await;
    let project = api
        .project(
            &owner,
            json!({ "name": "p", "visibility": "team_open", "team_id": team }),
        )
        .await;
    let path = format!("/api/v1/projects/{project}");
    assert_eq!(
        api.get(&path, Some(&member.token)).await.status,
        StatusCode::OK
    );

    let reply = api
        .send(
            Method::DELETE,
            &format!("/api/v1/teams/{team}/members/{}", member.id),
            Some(&owner.token),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let token = reply
        .consistency()
        .expect("writes return a consistency token");
    let reply = api
        .send(
            Method::GET,
            &path,
            Some(&member.token),
            None,
            &[("x-velro-consistency", &token)],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "denied on the very next request"
    );

    // Without the token: denied within the tail interval (bounded wait, no fixed sleep).
    let mut denied = false;
    for _ in 0..100 {
        if api.get(&path, Some(&member.token)).await.status == StatusCode::NOT_FOUND {
            denied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(denied);
}

#[tokio::test]
async fn revocation_is_effective_on_the_next_request_with_the_consistency_header() {
    let api = TestApi::start(|_| {}).await;
    revocation(&api).await;
    api.stop().await;
}

#[tokio::test]
async fn team_rules_come_from_the_policies() {
    let api = TestApi::start(|_| {}).await;
    let owner = api.register("owner").await;
    let admin = api.register("admin").await;
    let editor = api.register("editor").await;
    let outsider = api.register("outsider").await;
    let team = api.team(&owner, "Studio").await;
    api.add_member(&owner, &team, &admin, "admin").await;
    api.add_member(&owner, &team, &editor, "editor").await;

    // An admin may not grant admin or owner, nor touch another admin; may manage editors.
    let set = |who: &Session, target: &Session, role: &str| {
        let path = format!("/api/v1/teams/{team}/members/{}", target.id);
        let token = who.token.clone();
        let role = role.to_owned();
        let api = &api;
        async move {
            api.send(
                Method::PATCH,
                &path,
                Some(&token),
                Some(json!({ "role": role })),
                &[],
            )
            .await
            .status
        }
    };
    assert_eq!(set(&admin, &editor, "owner").await, StatusCode::FORBIDDEN);
    assert_eq!(set(&admin, &editor, "admin").await, StatusCode::FORBIDDEN);
    assert_eq!(set(&admin, &editor, "contributor").await, StatusCode::OK);
    assert_eq!(set(&admin, &owner, "viewer").await, StatusCode::FORBIDDEN);
    // An editor may not manage members at all; an outsider does not even see the team.
    assert_eq!(set(&editor, &admin, "viewer").await, StatusCode::FORBIDDEN);
    assert_eq!(
        set(&outsider, &editor, "viewer").await,
        StatusCode::NOT_FOUND
    );
    // The owner may do all of it, except leave or demote themselves as the last owner.
    assert_eq!(set(&owner, &admin, "owner").await, StatusCode::OK);
    let leave = api
        .post(
            &format!("/api/v1/teams/{team}/leave"),
            Some(&owner.token),
            json!({}),
        )
        .await;
    assert_eq!(
        leave.status,
        StatusCode::NO_CONTENT,
        "two owners now: {}",
        leave.body
    );
    let leave = api
        .post(
            &format!("/api/v1/teams/{team}/leave"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(leave.status, StatusCode::FORBIDDEN, "the last owner stays");

    // Invitations: token for an email, accepted once by that account only.
    let invite = api
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            Some(&admin.token),
            json!({ "email": outsider.email, "role": "viewer" }),
        )
        .await;
    assert_eq!(invite.status, StatusCode::CREATED, "{}", invite.body);
    let token = invite.body["token"].as_str().unwrap();
    let wrong = api
        .post(
            "/api/v1/invitations/accept",
            Some(&editor.token),
            json!({ "token": token }),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::NOT_FOUND);
    let accepted = api
        .post(
            "/api/v1/invitations/accept",
            Some(&outsider.token),
            json!({ "token": token }),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    let again = api
        .post(
            "/api/v1/invitations/accept",
            Some(&outsider.token),
            json!({ "token": token }),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let team_view = api
        .send(
            Method::GET,
            &format!("/api/v1/teams/{team}"),
            Some(&outsider.token),
            None,
            &[(
                "x-velro-consistency",
                accepted.consistency().unwrap().as_str(),
            )],
        )
        .await;
    assert_eq!(team_view.status, StatusCode::OK);
    assert_eq!(team_view.body["role"], "viewer");
    api.stop().await;
}

#[tokio::test]
async fn lists_paginate_with_cursors() {
    let api = TestApi::start(|_| {}).await;
    let owner = api.register("owner").await;
    let other = api.register("other").await;
    for i in 0..7 {
        api.project(&owner, json!({ "name": format!("mine {i}") }))
            .await;
    }
    api.project(&other, json!({ "name": "not mine" })).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/projects?limit=3&cursor={c}"),
            None => "/api/v1/projects?limit=3".to_owned(),
        };
        let reply = api.get(&path, Some(&owner.token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        for p in reply.body["items"].as_array().unwrap() {
            seen.push(p["name"].as_str().unwrap().to_owned());
        }
        match reply.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    seen.sort();
    let expected: Vec<String> = (0..7).map(|i| format!("mine {i}")).collect();
    assert_eq!(seen, expected);
    let bad = api
        .get("/api/v1/projects?limit=0", Some(&owner.token))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = api
        .get("/api/v1/projects?cursor=abc", Some(&owner.token))
        .await;
    assert_eq!(bad.code(), "INVALID_ID");
    api.stop().await;
}
