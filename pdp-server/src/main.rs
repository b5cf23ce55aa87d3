//! The `velro-pdp` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = velro_pdp::cli::Cli::parse();
    velro_pdp::cli::run(cli)
}
