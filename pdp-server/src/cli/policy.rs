//! `velro-pdp policy validate|test|fmt`: the security team's loop of editing, checking and
//! formatting policy stores. A `DIR` is a store folder or a folder of stores.

use std::io::Write;
use std::path::{Path, PathBuf};

use velro_engine::format::format_policies;
use velro_engine::policy_store::{StoreSources, TESTS_DIR};
use velro_engine::policy_test::TestSuite;
use velro_engine::stores::store_dirs;
use velro_engine::{Error, PolicyStore};

type Outcome = Result<u8, Box<dyn std::error::Error>>;

/// Store folders named by `dir`; an error when there are none.
fn stores_in(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let dirs = store_dirs(dir);
    if dirs.is_empty() {
        return Err(format!(
            "no policy store in `{}` (a store is a folder holding schema.cedarschema)",
            dir.display()
        )
        .into());
    }
    Ok(dirs)
}

/// Validate every store; exit 1 if any is invalid.
pub(super) fn validate(dir: &Path, out: &mut dyn Write) -> Outcome {
    let mut code = 0;
    for store_dir in stores_in(dir)? {
        match PolicyStore::load(&store_dir) {
            Ok(store) => {
                writeln!(
                    out,
                    "{}: valid ({} policies, version {})",
                    store_dir.display(),
                    store.policy_info().count(),
                    store.version()
                )?;
                for warning in store.warnings() {
                    writeln!(out, "  warning: {warning}")?;
                }
            }
            Err(Error::InvalidStore { diagnostics, .. }) => {
                writeln!(out, "{}: invalid", store_dir.display())?;
                for d in diagnostics {
                    writeln!(out, "  {}", d)?;
                }
                code = 1;
            }
            Err(e) => {
                writeln!(out, "{}: {e}", store_dir.display())?;
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Run every store's tests, printing every case; exit 1 if any case fails or a store is invalid.
pub(super) fn test(dir: &Path, out: &mut dyn Write) -> Outcome {
    let mut passed = 0;
    let mut failed = 0;
    let mut code = 0;
    for store_dir in stores_in(dir)? {
        let store = match PolicyStore::load(&store_dir) {
            Ok(store) => store,
            Err(e) => {
                writeln!(out, "{}: {e}", store_dir.display())?;
                code = 1;
                continue;
            }
        };
        if !store_dir.join(TESTS_DIR).is_dir() {
            writeln!(out, "{}: no tests/ folder", store_dir.display())?;
            code = 1;
            continue;
        }
        let suite = TestSuite::for_store(&store_dir, &store)?;
        let report = suite.run(&store);
        let mut current_file = None;
        for case in &report.outcomes {
            if current_file != Some(&case.file) {
                writeln!(
                    out,
                    "{}",
                    store_dir.join(TESTS_DIR).join(&case.file).display()
                )?;
                current_file = Some(&case.file);
            }
            if case.passed {
                writeln!(out, "  ok    {}", case.name)?;
                continue;
            }
            writeln!(out, "  FAIL  {}", case.name)?;
            let actual = case
                .actual
                .map_or_else(|| "no decision".to_owned(), |a| a.to_string());
            writeln!(out, "        expected {}, got {actual}", case.expected)?;
            if let Some(expected) = &case.expected_policies {
                writeln!(out, "        expected policies [{}]", expected.join(", "))?;
            }
            writeln!(
                out,
                "        determining policies [{}]",
                case.determining.join(", ")
            )?;
            for error in &case.errors {
                writeln!(out, "        error: {error}")?;
            }
        }
        passed += report.passed();
        failed += report.failed();
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    if failed > 0 {
        code = 1;
    }
    Ok(code)
}

/// Format every policy file; with `check`, only report unformatted files and exit 1 if any.
pub(super) fn fmt(dir: &Path, check: bool, out: &mut dyn Write) -> Outcome {
    let mut code = 0;
    for store_dir in stores_in(dir)? {
        let sources = StoreSources::read(&store_dir)?;
        for file in &sources.policies {
            let path = store_dir.join(&file.name);
            let formatted = match format_policies(&file.name, &file.text) {
                Ok(formatted) => formatted,
                Err(diagnostics) => {
                    for d in diagnostics {
                        writeln!(out, "{}: {d}", store_dir.display())?;
                    }
                    code = 1;
                    continue;
                }
            };
            if formatted == file.text {
                continue;
            }
            if check {
                writeln!(out, "{}: not formatted", path.display())?;
                code = 1;
            } else {
                std::fs::write(&path, formatted)?;
                writeln!(out, "{}: formatted", path.display())?;
            }
        }
    }
    Ok(code)
}
