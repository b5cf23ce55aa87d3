//! Two `velro-pdp` processes on one PostgreSQL and one Redis: a change written to the database
//! reaches both within the change-feed interval, and at once with the write's token.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use velro_engine::db::{Database, DbConfig};

use crate::support::{ADMIN_KEY, API_KEY, project, set_visibility, user, wait_ready, write_token};

fn pg_admin_url() -> String {
    std::env::var("VELRO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn redis_url() -> String {
    std::env::var("VELRO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn reachable(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    std::net::TcpStream::connect(host).is_ok()
}

/// A `velro-pdp serve` child process and its HTTP address.
struct Process {
    child: Child,
    http: std::net::SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(database_url: &str, redis_prefix: &str, name: &str, data: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_velro-pdp"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("PDP_POLICIES", crate::policies_root())
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url())
        .env("PDP_REDIS_PREFIX", redis_prefix)
        .env("DATA_DIR", data)
        .env(
            "PDP_AUDIT",
            format!("file:{}", data.join("audit").display()),
        )
        .env("PDP_AUDIT_INSTANCE", name)
        .env("PDP_API_KEY", API_KEY)
        .env("PDP_ADMIN_KEY", ADMIN_KEY)
        .env("PDP_TAIL_INTERVAL_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let http = line
        .split_whitespace()
        .find_map(|part| part.strip_prefix("http="))
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .parse()
        .unwrap();
    Process { child, http }
}

async fn decide(http: std::net::SocketAddr, body: &Value) -> Value {
    crate::support::http()
        .post(format!("http://{http}/v1/check"))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_and_redis_agree() {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    for url in [pg_admin_url(), redis_url()] {
        if !reachable(&url) {
            assert!(!in_ci, "{url} unreachable with CI=true");
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: {url} is unreachable\n").as_bytes(),
            );
            return;
        }
    }
    // A fresh database for this test.
    let name = format!("velro_test_{}", uuid::Uuid::new_v4().simple());
    let admin_url = pg_admin_url();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let db = Database::connect(&DbConfig::new(url.clone()))
        .await
        .unwrap();

    let prefix = format!("velro-test-{}:", uuid::Uuid::new_v4().simple());
    let data = tempfile::tempdir().unwrap();
    let a = spawn(&url, &prefix, "a", &data.path().join("a"));
    let b = spawn(&url, &prefix, "b", &data.path().join("b"));
    wait_ready(a.http).await;
    wait_ready(b.http).await;

    let owner = user(&db).await;
    let viewer = user(&db).await;
    let project = project(&db, owner, "public_read").await;
    let view = json!({
        "principal": {"type": "User", "id": viewer.to_string()},
        "action": "project:view",
        "resource": {"type": "Project", "id": project.to_string()},
    });
    // Both see the new rows once their feeds ran (read-your-writes with the token).
    let token = write_token(&db).await;
    let mut fresh = view.clone();
    fresh["consistency"] = json!({"at_least_as_fresh": token});
    assert_eq!(decide(a.http, &fresh).await["allowed"], true);
    assert_eq!(decide(b.http, &fresh).await["allowed"], true);
    // Warm both caches.
    assert_eq!(decide(a.http, &view).await["allowed"], true);
    assert_eq!(decide(b.http, &view).await["allowed"], true);

    // With the write's token: denied at once, on both.
    set_visibility(&db, project, "private").await;
    let token = write_token(&db).await;
    let mut fresh = view.clone();
    fresh["consistency"] = json!({"at_least_as_fresh": token});
    assert_eq!(decide(a.http, &fresh).await["allowed"], false);
    assert_eq!(decide(b.http, &fresh).await["allowed"], false);

    // Without a token: both deny within the tail interval (100 ms; NOTIFY usually sooner). The
    // bound below allows for a loaded CI machine.
    set_visibility(&db, project, "public_read").await;
    let token = write_token(&db).await;
    let mut fresh = view.clone();
    fresh["consistency"] = json!({"at_least_as_fresh": token});
    assert_eq!(decide(a.http, &fresh).await["allowed"], true);
    assert_eq!(decide(b.http, &fresh).await["allowed"], true);
    assert_eq!(decide(a.http, &view).await["allowed"], true);
    assert_eq!(decide(b.http, &view).await["allowed"], true);
    set_visibility(&db, project, "private").await;
    let written = Instant::now();
    for (name, process) in [("a", &a), ("b", &b)] {
        loop {
            let d = decide(process.http, &view).await;
            if d["allowed"] == false {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "process {name} still allows 2 s after the change"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let seen_after = written.elapsed();
    assert!(seen_after < Duration::from_secs(2), "{seen_after:?}");

    drop(a);
    drop(b);
    db.close().await;
    let _ = sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
    )
    .await;
}
