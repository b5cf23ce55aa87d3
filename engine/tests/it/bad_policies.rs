//! Broken store files are refused with errors that name the file, the line and the policy.

use velro_engine::{Error, PolicyStore};

const SCHEMA: &str = r#"namespace App {
  entity User { admin: Bool };
  entity Doc { owner: User };
  action view appliesTo { principal: User, resource: Doc };
}
"#;

const GOOD: &str = r#"@id("doc.owner")
@reason("owners read their documents")
permit (principal, action == App::Action::"view", resource)
when { resource.owner == principal };
"#;

/// Write a store with `files` and load it, returning the rendered diagnostics.
fn load_with(files: &[(&str, &str)]) -> Result<PolicyStore, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("app");
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("schema.cedarschema"), SCHEMA).unwrap();
    for (name, text) in files {
        std::fs::write(store.join(name), text).unwrap();
    }
    match PolicyStore::load(&store) {
        Ok(store) => Ok(store),
        Err(Error::InvalidStore { store, diagnostics }) => {
            assert_eq!(store, "app");
            Err(diagnostics.iter().map(ToString::to_string).collect())
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

#[test]
fn a_good_store_loads() {
    let store = load_with(&[("docs.cedar", GOOD)]).unwrap();
    let info = store.policy("doc.owner").unwrap();
    assert_eq!(&*info.reason, "owners read their documents");
    assert_eq!((info.file.as_str(), info.line), ("docs.cedar", 1));
    assert_eq!(store.version().len(), 32);
}

#[test]
fn a_syntax_error_names_file_and_line() {
    let text =
        format!("{GOOD}\n@id(\"broken\")\n@reason(\"x\")\npermit (principal, action resource);\n");
    let errors = load_with(&[("docs.cedar", &text)]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("docs.cedar:8:"), "{errors:?}");
}

#[test]
fn an_unknown_attribute_names_file_line_and_policy() {
    let text = format!(
        "{GOOD}\n@id(\"doc.typo\")\n@reason(\"x\")\npermit (principal, action, resource is App::Doc)\nwhen {{ resource.ownr == principal }};\n"
    );
    let errors = load_with(&[("docs.cedar", &text)]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("docs.cedar:9:"), "{errors:?}");
    assert!(errors[0].contains("policy `doc.typo`"), "{errors:?}");
    assert!(errors[0].contains("ownr"), "{errors:?}");
}

#[test]
fn a_missing_id_is_an_error_at_the_policy() {
    let text = format!("{GOOD}\n@reason(\"x\")\npermit (principal, action, resource);\n");
    let errors = load_with(&[("docs.cedar", &text)]).unwrap_err();
    assert_eq!(
        errors,
        ["docs.cedar:6:1: policy has no `@id(\"…\")` annotation"]
    );
}

#[test]
fn a_missing_reason_is_an_error_at_the_policy() {
    let errors = load_with(&[(
        "docs.cedar",
        "@id(\"a\")\npermit (principal, action, resource);",
    )])
    .unwrap_err();
    assert_eq!(
        errors,
        ["docs.cedar:1:1: policy `a`: policy has no `@reason(\"…\")` annotation"]
    );
}

#[test]
fn a_duplicate_id_names_both_places() {
    let errors = load_with(&[("a.cedar", GOOD), ("b.cedar", &format!("\n\n{GOOD}"))]).unwrap_err();
    assert_eq!(
        errors,
        ["b.cedar:3:1: policy `doc.owner`: duplicate `@id`: also used at a.cedar:1"]
    );
}

#[test]
fn a_bad_schema_is_located() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        "namespace App {\n  entity User {\n};",
    )
    .unwrap();
    let err = PolicyStore::load(dir.path()).unwrap_err();
    let Error::InvalidStore { diagnostics, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(diagnostics[0].file, "schema.cedarschema");
    assert!(diagnostics[0].line.is_some(), "{diagnostics:?}");
}

#[test]
fn templates_and_odd_ids_are_refused() {
    let template =
        "@id(\"t\")\n@reason(\"x\")\npermit (principal == ?principal, action, resource);";
    let errors = load_with(&[("t.cedar", template)]).unwrap_err();
    assert!(
        errors[0].contains("templates are not supported"),
        "{errors:?}"
    );
    let odd = "@id(\"has space\")\n@reason(\"x\")\npermit (principal, action, resource);";
    let errors = load_with(&[("o.cedar", odd)]).unwrap_err();
    assert!(errors[0].starts_with("o.cedar:1:1:"), "{errors:?}");
}

#[test]
fn a_bad_settings_file_is_located() {
    let errors = load_with(&[
        ("docs.cedar", GOOD),
        ("store.toml", "entity_depth = \"three\"\n"),
    ])
    .unwrap_err();
    assert!(errors[0].starts_with("store.toml:1:"), "{errors:?}");
    let errors =
        load_with(&[("docs.cedar", GOOD), ("store.toml", "entiti_depth = 3\n")]).unwrap_err();
    assert!(errors[0].contains("entiti_depth"), "{errors:?}");
}

#[test]
fn a_forbid_that_errors_denies() {
    // `resource.owner.admin` is fine for the validator but the owner entity is absent at runtime.
    let text = format!(
        "{GOOD}\n@id(\"no.admins\")\n@reason(\"x\")\nforbid (principal, action, resource)\nwhen {{ resource.owner.admin }};\n"
    );
    let store = load_with(&[("docs.cedar", &text)]).unwrap();
    let entities = cedar_policy::Entities::from_json_value(
        serde_json::json!([{"uid": {"type": "App::Doc", "id": "d"}, "attrs": {"owner": {"__entity": {"type": "App::User", "id": "u"}}}, "parents": []}]),
        None,
    )
    .unwrap();
    let request = cedar_policy::Request::new(
        r#"App::User::"u""#.parse().unwrap(),
        r#"App::Action::"view""#.parse().unwrap(),
        r#"App::Doc::"d""#.parse().unwrap(),
        cedar_policy::Context::empty(),
        None,
    )
    .unwrap();
    let evaluation = store.authorize(&request, &entities);
    assert!(!evaluation.allowed);
    assert!(evaluation.forbid_errored);
    assert_eq!(evaluation.determining, ["no.admins"]);
    assert_eq!(evaluation.errors.len(), 1);
}
