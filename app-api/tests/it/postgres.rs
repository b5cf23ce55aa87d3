//! The distributed mode: the same flows on PostgreSQL with Redis (rate limits and the PDP's shared
//! cache). Outside CI an unreachable service skips with a clear line; with `CI=true` it fails.

use secrecy::SecretString;

use crate::support::TestApi;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn reachable(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    std::net::TcpStream::connect(host).is_ok()
}

/// A fresh PostgreSQL database and the Redis URL, or `None` (skip) outside CI.
async fn services() -> Option<(String, String)> {
    let admin = std::env::var("VELRO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis =
        std::env::var("VELRO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    for url in [&admin, &redis] {
        if !reachable(url) {
            assert!(!in_ci(), "{url} unreachable with CI=true");
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: {url} is unreachable (set CI=true to fail instead)\n").as_bytes(),
            );
            return None;
        }
    }
    let name = format!("velro_api_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .unwrap();
    Some((
        format!("{}/{name}", admin.rsplit_once('/').unwrap().0),
        redis,
    ))
}

#[tokio::test]
async fn the_access_matrix_and_revocation_hold_on_postgres_and_redis() {
    let Some((database, redis)) = services().await else {
        return;
    };
    let api = TestApi::start(move |c| {
        c.database_url = Some(SecretString::from(database));
        c.redis_url = Some(SecretString::from(redis));
    })
    .await;
    crate::flows::access_matrix(&api).await;
    crate::flows::revocation(&api).await;
    api.stop().await;
}

#[tokio::test]
async fn concurrent_creates_never_overdraw_on_postgres() {
    let Some((database, redis)) = services().await else {
        return;
    };
    let api = TestApi::start(move |c| {
        c.database_url = Some(SecretString::from(database));
        c.redis_url = Some(SecretString::from(redis));
        c.signup_credits = 7 * 45;
    })
    .await;
    crate::generations::no_double_spend(&api).await;
    api.stop().await;
}

/// Two API replicas, each with its own PDP, on one database: a revocation written through one is
/// effective at the other on the very next request that carries the write's token.
#[tokio::test]
async fn the_consistency_header_carries_writes_across_replicas() {
    let Some((database, redis)) = services().await else {
        return;
    };
    let (db2, redis2) = (database.clone(), redis.clone());
    let a = TestApi::start(move |c| {
        c.database_url = Some(SecretString::from(database));
        c.redis_url = Some(SecretString::from(redis));
    })
    .await;
    let b = TestApi::start(move |c| {
        c.database_url = Some(SecretString::from(db2));
        c.redis_url = Some(SecretString::from(redis2));
    })
    .await;
    let owner = a.register("owner").await;
    let member = a.register("member").await;
    let team = a.team(&owner, "Studio").await;
    let added = a.add_member(&owner, &team, &member, "viewer").await;
    let project = a
        .project(
            &owner,
            serde_json::json!({ "name": "p", "visibility": "team_open", "team_id": team }),
        )
        .await;
    let path = format!("/api/v1/projects/{project}");
    // Replica B, told how fresh to be, sees the membership at once...
    let token = added.consistency().unwrap();
    let seen = b
        .send(
            reqwest::Method::GET,
            &path,
            Some(&member.token),
            None,
            &[("x-velro-consistency", &token)],
        )
        .await;
    // (the project itself was created after the membership: wait for B to know it)
    let mut status = seen.status;
    for _ in 0..100 {
        if status == reqwest::StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        status = b.get(&path, Some(&member.token)).await.status;
    }
    assert_eq!(status, reqwest::StatusCode::OK);
    // ...and after A removes the member, B denies the next request that carries A's token.
    let removed = a
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/teams/{team}/members/{}", member.id),
            Some(&owner.token),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, reqwest::StatusCode::NO_CONTENT);
    let token = removed.consistency().unwrap();
    let denied = b
        .send(
            reqwest::Method::GET,
            &path,
            Some(&member.token),
            None,
            &[("x-velro-consistency", &token)],
        )
        .await;
    assert_eq!(denied.status, reqwest::StatusCode::NOT_FOUND);
    a.stop().await;
    b.stop().await;
}

/// Rate limits live in Redis when it is configured, so replicas share them.
#[tokio::test]
async fn rate_limits_are_shared_by_replicas_through_redis() {
    let Some((database, redis)) = services().await else {
        return;
    };
    let (db2, redis2) = (database.clone(), redis.clone());
    let a = TestApi::start(move |c| {
        c.database_url = Some(SecretString::from(database));
        c.redis_url = Some(SecretString::from(redis));
        c.rate_generations = 2;
    })
    .await;
    let b = TestApi::start(move |c| {
        c.database_url = Some(SecretString::from(db2));
        c.redis_url = Some(SecretString::from(redis2));
        c.rate_generations = 2;
    })
    .await;
    let user = a.register("user").await;
    let created = a
        .post(
            "/api/v1/projects",
            Some(&user.token),
            serde_json::json!({ "name": "p" }),
        )
        .await;
    let token = created.consistency().unwrap();
    let body = serde_json::json!({ "model_id": "imagen4/preview/ultra", "prompt": "p",
        "project_id": created.body["id"] });
    // Fixed one-minute windows: the third request (through either replica) is refused, or the
    // fourth or fifth if a window boundary passed in between.
    let mut statuses = Vec::new();
    for api in [&a, &b, &a, &b, &a] {
        let reply = api
            .send(
                reqwest::Method::POST,
                "/api/v1/generations",
                Some(&user.token),
                Some(body.clone()),
                &[("x-velro-consistency", &token)],
            )
            .await;
        statuses.push(reply.status);
        if reply.status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(statuses[..2], [reqwest::StatusCode::ACCEPTED; 2]);
    assert_eq!(
        statuses.last(),
        Some(&reqwest::StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    a.stop().await;
    b.stop().await;
}
