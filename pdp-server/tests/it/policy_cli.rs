//! `velro-pdp policy validate|test|fmt` against the real store and broken copies of it.

use crate::{copy_tree, pdp, policies_root};

fn velro() -> String {
    policies_root().join("velro").display().to_string()
}

#[test]
fn validate_accepts_the_velro_store() {
    let (code, out) = pdp(&["policy", "validate", &velro()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": valid ("), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn test_reports_every_case_and_a_summary() {
    let (code, out) = pdp(&["policy", "test", &velro()]);
    assert_eq!(code, 0, "{}", &out[out.len().saturating_sub(2000)..]);
    let summary = out.lines().last().unwrap();
    let passed: usize = summary
        .strip_suffix(" passed, 0 failed")
        .unwrap_or_else(|| panic!("bad summary `{summary}`"))
        .parse()
        .unwrap();
    let ok_lines = out.lines().filter(|l| l.starts_with("  ok    ")).count();
    assert_eq!(ok_lines, passed);
    assert!(passed >= 2000, "{passed}");
}

#[test]
fn test_fails_loudly_with_expected_actual_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("velro");
    copy_tree(&policies_root().join("velro"), &store);
    // Break one expectation: the owner may not delete their project (they may).
    let path = store.join("tests/projects.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replacen(
        "    expect: allow\n    policies: [project.owner]",
        "    expect: deny\n    policies: [project.owner]",
        1,
    );
    assert_ne!(text, broken);
    std::fs::write(&path, broken).unwrap();

    let (code, out) = pdp(&["policy", "test", store.to_str().unwrap()]);
    assert_eq!(code, 1);
    let fail = out.lines().position(|l| l.starts_with("  FAIL  ")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[fail].contains("the owner deletes by ownership alone"),
        "{}",
        lines[fail]
    );
    assert_eq!(lines[fail + 1].trim(), "expected deny, got allow");
    assert_eq!(lines[fail + 2].trim(), "expected policies [project.owner]");
    assert_eq!(
        lines[fail + 3].trim(),
        "determining policies [project.owner]"
    );
    assert!(lines.last().unwrap().ends_with(" passed, 1 failed"));
}

#[test]
fn validate_rejects_a_broken_store_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("velro");
    copy_tree(&policies_root().join("velro"), &store);
    std::fs::write(
        store.join("zz_extra.cedar"),
        "@id(\"project.owner\")\n@reason(\"dup\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let (code, out) = pdp(&["policy", "validate", store.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains(": invalid"), "{out}");
    assert!(
        out.contains("zz_extra.cedar:1:1: policy `project.owner`: duplicate `@id`: also used at projects.cedar:"),
        "{out}"
    );
}

#[test]
fn fmt_check_finds_unformatted_files_and_fmt_fixes_them() {
    let (code, out) = pdp(&["policy", "fmt", "--check", &velro()]);
    assert_eq!(code, 0, "the committed policies are formatted: {out}");

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("velro");
    copy_tree(&policies_root().join("velro"), &store);
    let path = store.join("platform.cedar");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("permit (", "permit(   ")).unwrap();

    let (code, out) = pdp(&["policy", "fmt", "--check", store.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("platform.cedar: not formatted"), "{out}");
    let (code, _) = pdp(&["policy", "fmt", store.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    let (code, _) = pdp(&["policy", "fmt", "--check", store.to_str().unwrap()]);
    assert_eq!(code, 0);
}

#[test]
fn a_folder_without_stores_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = pdp(&["policy", "validate", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("no policy store"), "{out}");
}
