//! The command line (DESIGN §7): argument parsing and dispatch to one module per command group.
//! Commands write their report to the given output and return the process exit code; they hold
//! no logic of their own beyond presenting engine results.

mod policy;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Velro policy decision point.
#[derive(Debug, Parser)]
#[command(name = "velro-pdp", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate, test and format policy stores.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy store (or every store under a folder) strictly against its schema.
    Validate {
        /// A store folder, or a folder of stores.
        #[arg(default_value = "./policies", env = "PDP_POLICIES")]
        dir: PathBuf,
    },
    /// Run the YAML policy tests of a store (or of every store under a folder).
    Test {
        /// A store folder, or a folder of stores.
        #[arg(default_value = "./policies", env = "PDP_POLICIES")]
        dir: PathBuf,
    },
    /// Format policy files with Cedar's formatter.
    Fmt {
        /// Report files that are not formatted instead of rewriting them; exit 1 if any.
        #[arg(long)]
        check: bool,
        /// A store folder, or a folder of stores.
        #[arg(default_value = "./policies", env = "PDP_POLICIES")]
        dir: PathBuf,
    },
}

/// Run a parsed command line, writing its report to standard output.
pub fn run(cli: Cli) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = run_to(cli, &mut out);
    // Nothing useful is left to do if stdout itself is gone.
    let _ = out.flush();
    ExitCode::from(code)
}

/// Run a parsed command line, writing its report to `out`; returns the exit code.
pub fn run_to(cli: Cli, out: &mut dyn Write) -> u8 {
    let result = match cli.command {
        Command::Policy(PolicyCommand::Validate { dir }) => policy::validate(&dir, out),
        Command::Policy(PolicyCommand::Test { dir }) => policy::test(&dir, out),
        Command::Policy(PolicyCommand::Fmt { check, dir }) => policy::fmt(&dir, check, out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            1
        }
    }
}
