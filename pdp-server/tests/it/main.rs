//! Integration tests of `velro-pdp`: the servers over the network on ephemeral loopback ports,
//! and the binary run as an operator would run it.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

mod cli_ops;
mod distributed;
mod grpc;
mod http;
mod policy_cli;
mod security;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's policies root.
pub fn policies_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Run `velro-pdp` with `args`; returns (exit code, stdout).
pub fn pdp(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_velro-pdp"))
        .args(args)
        .env_remove("PDP_POLICIES")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
    )
}

/// Copy a folder tree.
pub fn copy_tree(from: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &dest.join(entry.file_name()));
        } else {
            std::fs::copy(&path, dest.join(entry.file_name())).unwrap();
        }
    }
}
