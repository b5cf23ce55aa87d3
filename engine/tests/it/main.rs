//! Integration tests of the engine against the real policy stores and real files.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

mod bad_policies;
mod cache_tiers;
mod consistency_property;
mod decisions;
mod hot_reload;
mod policy_suite;
mod support;

use std::path::{Path, PathBuf};

/// The product's policy store.
pub fn velro_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/velro")
}

/// Copy a store folder (files only, plus `tests/`) into `dest`.
pub fn copy_store(from: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_store(&path, &dest.join(entry.file_name()));
        } else {
            std::fs::copy(&path, dest.join(entry.file_name())).unwrap();
        }
    }
}
