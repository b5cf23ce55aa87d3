//! The command line (DESIGN §7): argument parsing and dispatch to one module per command group.
//! Commands write their report to the given output and return the process exit code; they hold
//! no logic of their own beyond presenting engine results.

mod ops;
mod policy;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Velro policy decision point.
#[derive(Debug, Parser)]
#[command(name = "velro-pdp", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Settings shared by the commands that open the engine; each overrides the configuration
/// (defaults → `--config` file → environment).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// TOML configuration file (`PDP_CONFIG`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder of policy stores (`PDP_POLICIES`).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…` (`DATABASE_URL`).
    #[arg(long)]
    database_url: Option<String>,
    /// Redis URL (`REDIS_URL`).
    #[arg(long)]
    redis_url: Option<String>,
    /// Audit sink: `file:<dir>`, `stdout` or `postgres` (`PDP_AUDIT`).
    #[arg(long)]
    audit: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the decision service (gRPC and HTTP).
    Serve {
        #[command(flatten)]
        engine: EngineArgs,
        /// gRPC address (`PDP_GRPC_ADDR`); port 0 picks a free port.
        #[arg(long)]
        grpc_addr: Option<SocketAddr>,
        /// HTTP address (`PDP_HTTP_ADDR`); port 0 picks a free port.
        #[arg(long)]
        http_addr: Option<SocketAddr>,
    },
    /// Decide one request from the shell: exit 0 if allowed, 2 if denied, 1 on error.
    Check {
        #[command(flatten)]
        engine: EngineArgs,
        /// Policy store.
        #[arg(long, default_value = "velro")]
        store: String,
        /// Principal as `Type:id`, e.g. `User:0190…` or `Anonymous:anonymous`.
        #[arg(long)]
        principal: String,
        /// Action, e.g. `project:view`.
        #[arg(long)]
        action: String,
        /// Resource as `Type:id`.
        #[arg(long)]
        resource: String,
        /// Request context as a JSON object.
        #[arg(long)]
        context: Option<String>,
        /// Break-glass justification.
        #[arg(long)]
        justification: Option<String>,
    },
    /// Validate, test and format policy stores.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Media URL signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        engine: EngineArgs,
    },
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

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check an audit chain and name the first broken record: a file, or with `--database` the
    /// `audit_records` chain of `--instance`.
    Verify {
        /// An audit file (`audit-<instance>.jsonl`).
        file: Option<PathBuf>,
        /// Verify the chain in the database instead (`DATABASE_URL` or `--database-url`).
        #[arg(long)]
        database: bool,
        /// The chain's instance name.
        #[arg(long, default_value = "pdp")]
        instance: String,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key ring with one signing key.
    Generate {
        /// Key ring file (`PDP_KEYS_FILE`, default `<DATA_DIR>/keys/media-signing.json`).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Replace an existing ring.
        #[arg(long)]
        force: bool,
    },
    /// Add a new signing key; older keys keep verifying for `--grace`, then retire. A running
    /// PDP picks the ring up on `ReloadStores`.
    Rotate {
        /// Key ring file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// How long older keys keep verifying (at least the longest URL lifetime).
        #[arg(long, default_value = "24h")]
        grace: humantime::Duration,
    },
    /// List the keys of a ring.
    List {
        /// Key ring file.
        #[arg(long)]
        file: Option<PathBuf>,
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
        Command::Serve {
            engine,
            grpc_addr,
            http_addr,
        } => ops::serve(&engine, grpc_addr, http_addr, out),
        Command::Check {
            engine,
            store,
            principal,
            action,
            resource,
            context,
            justification,
        } => ops::check(
            &engine,
            ops::CheckArgs {
                store,
                principal,
                action,
                resource,
                context,
                justification,
            },
            out,
        ),
        Command::Policy(PolicyCommand::Validate { dir }) => policy::validate(&dir, out),
        Command::Policy(PolicyCommand::Test { dir }) => policy::test(&dir, out),
        Command::Policy(PolicyCommand::Fmt { check, dir }) => policy::fmt(&dir, check, out),
        Command::Audit(AuditCommand::Verify {
            file,
            database,
            instance,
            engine,
        }) => ops::audit_verify(file.as_deref(), database, &instance, &engine, out),
        Command::Keys(KeysCommand::Generate { file, force }) => {
            ops::keys_generate(file.as_deref(), force, out)
        }
        Command::Keys(KeysCommand::Rotate { file, grace }) => {
            ops::keys_rotate(file.as_deref(), grace.into(), out)
        }
        Command::Keys(KeysCommand::List { file }) => ops::keys_list(file.as_deref(), out),
        Command::Migrate { engine } => ops::migrate(&engine, out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            1
        }
    }
}
