//! The `velro-pdp` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

// glibc malloc contends on arena locks when the audit writer frees what request threads
// allocated; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = velro_pdp::cli::Cli::parse();
    velro_pdp::cli::run(cli)
}
