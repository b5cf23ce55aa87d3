//! `velro-pdp check | audit verify | keys | migrate` run as an operator would.

use std::process::Command;

use crate::{pdp, policies_root};

fn velro_pdp(data: &std::path::Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_velro-pdp"))
        .args(args)
        .env_clear()
        .env("PDP_POLICIES", policies_root())
        .env("DATA_DIR", data)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", data.join("velro.db").display()),
        )
        .env(
            "PDP_AUDIT",
            format!("file:{}", data.join("audit").display()),
        )
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_0_on_allow_and_2_on_deny() {
    let data = tempfile::tempdir().unwrap();
    let (code, out) = velro_pdp(data.path(), &["migrate"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("migrations applied"));
    let db = velro_engine::db::Database::connect(&velro_engine::db::DbConfig::new(format!(
        "sqlite://{}",
        data.path().join("velro.db").display()
    )))
    .await
    .unwrap();
    let owner = crate::support::user(&db).await;
    let stranger = crate::support::user(&db).await;
    let project = crate::support::project(&db, owner, "private").await;
    db.close().await;

    let (code, out) = velro_pdp(
        data.path(),
        &[
            "check",
            "--principal",
            &format!("User:{owner}"),
            "--action",
            "project:delete",
            "--resource",
            &format!("Project:{project}"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let decision: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(decision["policies"][0]["id"], "project.owner");

    let (code, out) = velro_pdp(
        data.path(),
        &[
            "check",
            "--principal",
            &format!("User:{stranger}"),
            "--action",
            "project:view",
            "--resource",
            &format!("Project:{project}"),
        ],
    );
    assert_eq!(code, 2, "{out}");
    let (code, out) = velro_pdp(
        data.path(),
        &[
            "check",
            "--principal",
            "User:nope",
            "--action",
            "project:view",
            "--resource",
            &format!("Project:{project}"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("canonical UUID"), "{out}");

    // Both checks were audited; the chain verifies, and a tampered copy does not.
    let audit = data.path().join("audit/audit-pdp.jsonl");
    let (code, out) = velro_pdp(data.path(), &["audit", "verify", audit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("2 records; the chain is intact"), "{out}");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.replacen("\"deny\"", "\"allow\"", 1)).unwrap();
    let (code, out) = velro_pdp(data.path(), &["audit", "verify", audit.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.starts_with("record 2 is broken"), "{out}");
}

#[test]
fn keys_are_generated_rotated_and_listed() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("keys.json");
    let file = file.to_str().unwrap();
    let (code, out) = velro_pdp(data.path(), &["keys", "generate", "--file", file]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = velro_pdp(data.path(), &["keys", "generate", "--file", file]);
    assert_eq!(code, 1, "refuses to overwrite: {out}");
    let (code, out) = velro_pdp(
        data.path(),
        &["keys", "rotate", "--file", file, "--grace", "1h"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = velro_pdp(data.path(), &["keys", "list", "--file", file]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("retires_ms=-")).count(),
        1
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The policy CLI still works from the same binary.
    let (code, _) = pdp(&[
        "policy",
        "validate",
        policies_root().join("velro").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
}
