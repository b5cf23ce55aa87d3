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
