//! The README's run command: the `velro-api` binary with no configuration (embedded PDP, SQLite
//! and media under ./data), the demo world, the docs, and a graceful stop on SIGTERM. Also: every
//! operation the OpenAPI document lists is routed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{TestApi, policies_root};

#[tokio::test]
async fn the_run_command_works_with_no_configuration() {
    let cwd = tempfile::tempdir().unwrap();
    // As from the repository root: ./policies is there.
    std::os::unix::fs::symlink(policies_root(), cwd.path().join("policies")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_velro-api"))
        .arg("--demo")
        .current_dir(cwd.path())
        // Port 0 instead of 8080 so tests never collide; everything else is the default.
        .env("API_ADDR", "127.0.0.1:0")
        .env("LOCAL_PROVIDER_STEP_MS", "5")
        .env("RUST_LOG", "warn")
        .env_remove("PDP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("DATA_DIR")
        .env_remove("PDP_POLICIES")
        .env_remove("JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut base = None;
    let mut banner = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(url) = line.strip_prefix("velro-api listening on ") {
            base = Some(url.trim().to_owned());
        }
        let done = line.starts_with("  curl");
        banner.push(line);
        if done {
            break;
        }
    }
    let base = base.unwrap_or_else(|| panic!("no banner: {banner:?}"));
    assert!(
        banner.iter().any(|l| l.contains("embedded PDP")),
        "{banner:?}"
    );

    let client = crate::support::http();
    let health = client
        .get(format!("{base}/health/detailed"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let login = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(
            &json!({ "email": velro_api::demo::USERS[1].0, "password": velro_api::demo::PASSWORD }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let token = login.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let projects: serde_json::Value = client
        .get(format!("{base}/api/v1/projects"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = projects["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Launch campaign", "Storyboards", "Public gallery"],
        "bob's view of the demo"
    );
    let docs = client.get(format!("{base}/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
    let spec: serde_json::Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");

    // SIGTERM: a clean, prompt exit; the data landed under ./data.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..400 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    assert!(exited.expect("exits within 20 s").success());
    let data = cwd.path().join("data");
    assert!(data.join("velro.db").is_file());
    assert!(data.join("keys").join("jwt-secret").is_file());
    assert!(data.join("audit").join("audit-pdp.jsonl").is_file());
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let api = TestApi::start(|_| {}).await;
    let user = api.register("user").await;
    for op in velro_api::openapi::OPERATIONS {
        let mut path = op.path.to_owned();
        for name in ["{id}", "{user_id}", "{team_id}", "{generation_id}"] {
            path = path.replace(name, &uuid::Uuid::now_v7().to_string());
        }
        path = path.replace("{key}", "generations/x.png");
        let method = Method::from_bytes(op.method.to_uppercase().as_bytes()).unwrap();
        let body = op.body.map(|_| json!({}));
        let reply = api.send(method, &path, Some(&user.token), body, &[]).await;
        assert_ne!(
            reply.body["error"]["message"], "route not found",
            "{} {} is documented but not routed",
            op.method, op.path
        );
        assert!(
            !reply.status.is_server_error(),
            "{} {}: {}",
            op.method,
            op.path,
            reply.status
        );
    }
    api.stop().await;
}
