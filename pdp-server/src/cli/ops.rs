//! `velro-pdp serve | check | audit verify | keys | migrate`: the operator's commands around the
//! engine. Each opens only what it needs and reports in plain text (or JSON for `check`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use velro_engine::audit::{database_lines, verify_file, verify_lines};
use velro_engine::clock::{Clock, SystemClock};
use velro_engine::db::{Database, DbConfig};
use velro_engine::decision::{CheckRequest, EntityInput};
use velro_engine::media_url::KeyRing;
use velro_engine::stores::PolicyStores;
use velro_engine::{Engine, Error};

use super::EngineArgs;
use crate::config::PdpConfig;
use crate::server;

type Outcome = Result<u8, Box<dyn std::error::Error>>;

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The configuration with `args` applied over defaults, file and environment.
fn config(args: &EngineArgs) -> Result<PdpConfig, Box<dyn std::error::Error>> {
    let mut config = PdpConfig::load(args.config.as_deref())?;
    if let Some(p) = &args.policies {
        config.policies = p.clone();
    }
    if let Some(url) = &args.database_url {
        config.database_url = SecretString::from(url.clone());
    }
    if let Some(url) = &args.redis_url {
        config.redis_url = Some(SecretString::from(url.clone()));
    }
    if let Some(audit) = &args.audit {
        config.audit = audit.clone();
    }
    Ok(config)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `serve`: bind, report the bound addresses, serve until SIGINT/SIGTERM.
pub(super) fn serve(
    args: &EngineArgs,
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    out: &mut dyn Write,
) -> Outcome {
    let mut config = config(args)?;
    if let Some(a) = grpc_addr {
        config.grpc_addr = a;
    }
    if let Some(a) = http_addr {
        config.http_addr = a;
    }
    crate::telemetry::init_logging(config.log_format);
    crate::telemetry::metrics();
    config.validate()?;
    runtime()?.block_on(async {
        let grpc = tokio::net::TcpListener::bind(config.grpc_addr).await?;
        let http = tokio::net::TcpListener::bind(config.http_addr).await?;
        // Scripts (and tests) read the bound ports from this line when they asked for port 0.
        writeln!(
            out,
            "velro-pdp listening: grpc={} http={}",
            grpc.local_addr()?,
            http.local_addr()?
        )?;
        out.flush()?;
        server::run(config, grpc, http, shutdown_signal()).await?;
        Ok(0)
    })
}

/// Arguments of `check`.
pub(super) struct CheckArgs {
    pub store: String,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub context: Option<String>,
    pub justification: Option<String>,
}

fn entity(text: &str, what: &str) -> Result<EntityInput, Box<dyn std::error::Error>> {
    let (type_name, id) = text
        .split_once(':')
        .ok_or_else(|| format!("--{what} must be `Type:id`"))?;
    Ok(EntityInput::new(type_name, id))
}

/// `check`: one decision from the shell.
pub(super) fn check(args: &EngineArgs, check: CheckArgs, out: &mut dyn Write) -> Outcome {
    let config = config(args)?;
    let context = match &check.context {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text)? {
            serde_json::Value::Object(map) => map,
            _ => return Err("--context must be a JSON object".into()),
        },
    };
    let mut request = CheckRequest::new(
        entity(&check.principal, "principal")?,
        check.action,
        entity(&check.resource, "resource")?,
    );
    request.store = Some(check.store);
    request.context = context;
    request.justification = check.justification;
    runtime()?.block_on(async {
        let stores = PolicyStores::open(&config.policies)?;
        let (engine, tasks) = Engine::start(config.engine(), stores, Arc::new(SystemClock)).await?;
        let decision = engine.check(request).await;
        engine.shutdown();
        drop(engine);
        tasks.finished().await;
        let decision = decision?;
        writeln!(out, "{}", serde_json::to_string_pretty(&decision)?)?;
        Ok(if decision.allowed { 0 } else { 2 })
    })
}

/// `audit verify`.
pub(super) fn audit_verify(
    file: Option<&Path>,
    database: bool,
    instance: &str,
    args: &EngineArgs,
    out: &mut dyn Write,
) -> Outcome {
    let report = match (file, database) {
        (Some(path), false) => verify_file(path)?,
        (None, true) => {
            let config = config(args)?;
            runtime()?.block_on(async {
                let db = Database::connect(&DbConfig::new(
                    config.database_url.expose_secret().to_owned(),
                ))
                .await?;
                let lines = database_lines(&db, instance).await?;
                Ok::<_, Error>(verify_lines(lines.iter().map(String::as_str)))
            })?
        }
        _ => return Err("give an audit file, or --database".into()),
    };
    match report.first_broken {
        None => {
            writeln!(out, "{} records; the chain is intact", report.records)?;
            Ok(0)
        }
        Some((line, why)) => {
            writeln!(
                out,
                "record {line} is broken: {why} ({} records before it verify)",
                report.records
            )?;
            Ok(1)
        }
    }
}

fn keys_path(file: Option<&Path>) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    Ok(match file {
        Some(f) => f.to_path_buf(),
        None => PdpConfig::load(None)?.keys_path(),
    })
}

/// `keys generate`.
pub(super) fn keys_generate(file: Option<&Path>, force: bool, out: &mut dyn Write) -> Outcome {
    let path = keys_path(file)?;
    if path.exists() && !force {
        return Err(format!("{} exists; use --force to replace it", path.display()).into());
    }
    let ring = KeyRing::generate(SystemClock.now_ms())?;
    ring.save(&path)?;
    writeln!(
        out,
        "wrote {} with key {}",
        path.display(),
        ring.describe()[0].0
    )?;
    Ok(0)
}

/// `keys rotate`.
pub(super) fn keys_rotate(file: Option<&Path>, grace: Duration, out: &mut dyn Write) -> Outcome {
    let path = keys_path(file)?;
    let mut ring = KeyRing::load(&path)?;
    let now = SystemClock.now_ms();
    ring.prune(now);
    let kid = ring.rotate(now, grace)?;
    ring.save(&path)?;
    writeln!(
        out,
        "new signing key {kid}; older keys verify for {}",
        humantime::format_duration(grace)
    )?;
    Ok(0)
}

/// `keys list`.
pub(super) fn keys_list(file: Option<&Path>, out: &mut dyn Write) -> Outcome {
    let path = keys_path(file)?;
    let ring = KeyRing::load(&path)?;
    for (kid, created, retire) in ring.describe() {
        writeln!(
            out,
            "{kid} created_ms={created} retires_ms={}",
            retire.map_or_else(|| "-".into(), |r| r.to_string())
        )?;
    }
    Ok(0)
}

/// `migrate`.
pub(super) fn migrate(args: &EngineArgs, out: &mut dyn Write) -> Outcome {
    let config = config(args)?;
    runtime()?.block_on(async {
        let db = Database::connect(&DbConfig::new(
            config.database_url.expose_secret().to_owned(),
        ))
        .await?;
        writeln!(out, "{}: migrations applied", db.display_url())?;
        Ok(0)
    })
}
