use super::*;

fn velro_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/velro")
}

#[test]
fn rebuild_reuses_the_schema_and_keeps_its_warnings() {
    let store = PolicyStore::load(&velro_dir()).unwrap();
    let mut sources = store.sources().clone();
    sources.policies.retain(|f| f.name != "platform.cedar");
    let next = store.rebuild(sources.clone()).unwrap();
    assert!(next.policy("platform.admin").is_none());
    assert_eq!(next.version(), sources.version());
    // A changed schema is parsed again, and its errors are reported.
    sources.schema.text.push_str("garbage");
    assert!(store.rebuild(sources).is_err());
}
