//! The files that make up one policy store, read from its folder, and the content hash that names
//! their version. Reading never interprets the files; `PolicyStore::build` does.

use std::path::{Path, PathBuf};

use ring::digest;
use serde::Serialize;

use crate::error::{Error, Result};

/// File name of a store's schema.
pub const SCHEMA_FILE: &str = "schema.cedarschema";
/// File name of a store's loader settings.
pub const SETTINGS_FILE: &str = "store.toml";
/// Extension of policy files.
pub const POLICY_EXTENSION: &str = "cedar";
/// Folder of a store's policy tests.
pub const TESTS_DIR: &str = "tests";

/// Largest file a store may contain; bigger files are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most policy files one store may contain.
const MAX_POLICY_FILES: usize = 1000;

/// One file of a store: its name relative to the store folder and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceFile {
    /// Name relative to the store folder, e.g. `teams.cedar`.
    pub name: String,
    /// The file's full text.
    pub text: String,
}

/// Everything a store version is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSources {
    /// `schema.cedarschema`.
    pub schema: SourceFile,
    /// Every `*.cedar` file directly in the store folder, sorted by name.
    pub policies: Vec<SourceFile>,
    /// `store.toml`, when present.
    pub settings: Option<SourceFile>,
}

impl StoreSources {
    /// Read a store folder. Sub-folders (such as `tests/`) are not part of the store.
    pub fn read(dir: &Path) -> Result<Self> {
        let schema = read_file(dir, SCHEMA_FILE)?;
        let settings_path = dir.join(SETTINGS_FILE);
        let settings = if settings_path.is_file() {
            Some(read_file(dir, SETTINGS_FILE)?)
        } else {
            None
        };
        let entries = std::fs::read_dir(dir).map_err(|source| io(dir, source))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| io(dir, source))?;
            let path = entry.path();
            let is_policy_file = path.extension().is_some_and(|e| e == POLICY_EXTENSION);
            if is_policy_file
                && path.is_file()
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                names.push(name.to_owned());
            }
        }
        if names.len() > MAX_POLICY_FILES {
            return Err(Error::InvalidStore {
                store: store_name_of(dir),
                diagnostics: vec![crate::policy_store::Diagnostic::at(
                    ".",
                    "",
                    None,
                    format!("more than {MAX_POLICY_FILES} policy files"),
                )],
            });
        }
        names.sort();
        let policies = names
            .iter()
            .map(|name| read_file(dir, name))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema,
            policies,
            settings,
        })
    }

    /// Content hash of the store: SHA-256 over every file's name and text, in a fixed order.
    /// Two folders with the same files have the same version; any byte changed changes it.
    pub fn version(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        let files = std::iter::once(&self.schema)
            .chain(self.settings.iter())
            .chain(self.policies.iter());
        for file in files {
            // Length-prefix both parts so that no two different file lists hash the same.
            for part in [file.name.as_bytes(), file.text.as_bytes()] {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part);
            }
        }
        let hash = ctx.finish();
        hex::encode(&hash.as_ref()[..16])
    }
}

fn read_file(dir: &Path, name: &str) -> Result<SourceFile> {
    let path = dir.join(name);
    let metadata = std::fs::metadata(&path).map_err(|source| io(&path, source))?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(Error::InvalidStore {
            store: store_name_of(dir),
            diagnostics: vec![crate::policy_store::Diagnostic::at(
                name,
                "",
                None,
                format!("file is larger than {MAX_FILE_BYTES} bytes"),
            )],
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| io(&path, source))?;
    Ok(SourceFile {
        name: name.to_owned(),
        text,
    })
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from(path),
        source,
    }
}

/// The store name a folder gives: its last path component.
pub fn store_name_of(dir: &Path) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(schema: &str, policies: &[(&str, &str)]) -> StoreSources {
        StoreSources {
            schema: SourceFile {
                name: SCHEMA_FILE.into(),
                text: schema.into(),
            },
            policies: policies
                .iter()
                .map(|(n, t)| SourceFile {
                    name: (*n).into(),
                    text: (*t).into(),
                })
                .collect(),
            settings: None,
        }
    }

    #[test]
    fn version_changes_with_any_byte_and_name() {
        let a = sources("s", &[("a.cedar", "x")]);
        let b = sources("s", &[("a.cedar", "y")]);
        let c = sources("s", &[("b.cedar", "x")]);
        // Moving a byte between name and text must not collide.
        let d = sources("s", &[("a.cedarx", "")]);
        assert_eq!(a.version(), a.clone().version());
        assert_ne!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert_ne!(a.version(), d.version());
        assert_eq!(a.version().len(), 32);
    }

    #[test]
    fn read_takes_cedar_files_sorted_and_ignores_tests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SCHEMA_FILE), "namespace N {}").unwrap();
        std::fs::write(dir.path().join("b.cedar"), "b").unwrap();
        std::fs::write(dir.path().join("a.cedar"), "a").unwrap();
        std::fs::write(dir.path().join("notes.md"), "n").unwrap();
        std::fs::create_dir(dir.path().join(TESTS_DIR)).unwrap();
        std::fs::write(dir.path().join(TESTS_DIR).join("c.cedar"), "c").unwrap();
        let read = StoreSources::read(dir.path()).unwrap();
        let names: Vec<_> = read.policies.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.cedar", "b.cedar"]);
        assert!(read.settings.is_none());
    }

    #[test]
    fn missing_schema_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = StoreSources::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains(SCHEMA_FILE), "{err}");
    }
}
