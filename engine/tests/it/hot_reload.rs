//! Hot reload: valid edits are applied within a second; invalid ones are rejected while the last
//! good version keeps answering and the error is readable.

use std::time::Duration;

use velro_engine::stores::PolicyStores;

use crate::{copy_store, velro_dir};

fn stores_in_tempdir() -> (tempfile::TempDir, PolicyStores) {
    let dir = tempfile::tempdir().unwrap();
    copy_store(&velro_dir(), &dir.path().join("velro"));
    let stores = PolicyStores::open(dir.path()).unwrap();
    (dir, stores)
}

/// Wait for the next reload finished by the watcher, at most one second.
async fn next_reload(rx: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .expect("no reload within a second")
        .unwrap();
}

#[tokio::test]
async fn a_valid_edit_is_applied_within_a_second() {
    let (dir, stores) = stores_in_tempdir();
    let before = stores.get("velro").unwrap();
    let mut rx = stores.subscribe();
    let _watcher = stores.watch().unwrap();

    let extra = "\n@id(\"platform.metrics_for_all\")\n@reason(\"test edit\")\npermit (principal is Velro::User, action == Velro::Action::\"platform:read_metrics\", resource);\n";
    let path = dir.path().join("velro/platform.cedar");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();

    loop {
        next_reload(&mut rx).await;
        if stores.get("velro").unwrap().version() != before.version() {
            break;
        }
    }
    let after = stores.get("velro").unwrap();
    assert!(after.policy("platform.metrics_for_all").is_some());
    assert!(stores.status("velro").unwrap().last_error.is_none());
    assert_eq!(stores.reload_counts().1, 0);
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_last_good_version_and_reports_why() {
    let (dir, stores) = stores_in_tempdir();
    let good = stores.get("velro").unwrap();
    let mut rx = stores.subscribe();
    let _watcher = stores.watch().unwrap();

    let path = dir.path().join("velro/teams.cedar");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n@id(\"team.typo\")\n@reason(\"x\")\npermit (principal, action, resource is Velro::Team) when { resource.ownr_count > 1 };\n");
    std::fs::write(&path, text).unwrap();

    let failure = loop {
        next_reload(&mut rx).await;
        if let Some(failure) = stores.status("velro").unwrap().last_error {
            break failure;
        }
    };
    // The old version still answers.
    assert_eq!(stores.get("velro").unwrap().version(), good.version());
    // The error is readable and located.
    assert!(failure.message.contains("team.typo"), "{}", failure.message);
    let d = &failure.diagnostics[0];
    assert_eq!(d.file, "teams.cedar");
    assert_eq!(d.policy_id.as_deref(), Some("team.typo"));
    assert!(d.line.is_some());
    assert_ne!(failure.version.as_deref(), Some(good.version()));
    assert_eq!(stores.reload_counts().1, 1);

    // Reverting the edit clears the error without a new version.
    std::fs::write(
        &path,
        &good
            .sources()
            .policies
            .iter()
            .find(|f| f.name == "teams.cedar")
            .unwrap()
            .text,
    )
    .unwrap();
    loop {
        next_reload(&mut rx).await;
        if stores.status("velro").unwrap().last_error.is_none() {
            break;
        }
    }
    assert_eq!(stores.get("velro").unwrap().version(), good.version());
}

#[test]
fn opening_refuses_an_invalid_store_or_an_empty_root() {
    let dir = tempfile::tempdir().unwrap();
    let err = PolicyStores::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("no policy store"), "{err}");
    copy_store(&velro_dir(), &dir.path().join("velro"));
    std::fs::write(dir.path().join("velro/bad.cedar"), "permit(").unwrap();
    let err = PolicyStores::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("bad.cedar"), "{err}");
}

#[test]
fn unknown_stores_are_an_error() {
    let (_dir, stores) = stores_in_tempdir();
    assert!(stores.get("nope").is_err());
    assert!(stores.get("velro").is_ok());
}
