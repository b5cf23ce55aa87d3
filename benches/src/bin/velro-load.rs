//! `velro-load`: seed a synthetic world into the PDP's database, then drive the PDP with it.
//!
//! ```sh
//! velro-load seed --database-url sqlite://./data/velro.db --entities 100000 --manifest world.json
//! velro-load run --manifest world.json --grpc http://127.0.0.1:50051 --concurrency 32 --duration 10s
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use velro_benches::load::{Mode, Pacing, RunConfig, Target, run};
use velro_benches::synthetic::{Manifest, WorldSize, seed};
use velro_engine::db::{Database, DbConfig};
use velro_pdp::client::{ClientConfig, PdpClient};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for the Velro PDP.
#[derive(Debug, Parser)]
#[command(name = "velro-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic world into a database and its ids into a manifest.
    Seed {
        /// `sqlite://…` or `postgres://…` (the PDP's database).
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// About how many entities (users, teams, projects, generations) in total.
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        /// RNG seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write the manifest.
        #[arg(long, default_value = "world.json")]
        manifest: PathBuf,
    },
    /// Send load and report.
    Run {
        /// The manifest written by `seed`.
        #[arg(long, default_value = "world.json")]
        manifest: PathBuf,
        /// gRPC address, e.g. `http://127.0.0.1:50051`.
        #[arg(long, conflicts_with = "http")]
        grpc: Option<String>,
        /// HTTP base address, e.g. `http://127.0.0.1:9091` (Check only).
        #[arg(long, conflicts_with = "api")]
        http: Option<String>,
        /// The app API's base address, e.g. `http://127.0.0.1:8080`: GET a generation as a
        /// manifest user (needs `--jwt-secret`).
        #[arg(long, conflicts_with = "grpc")]
        api: Option<String>,
        /// The app API's access-token secret (its JWT_SECRET), to sign each user's token.
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<SecretString>,
        /// API key.
        #[arg(long, env = "PDP_API_KEY")]
        api_key: Option<String>,
        /// gRPC connections to spread calls over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Items per BatchCheck; single Checks when absent.
        #[arg(long)]
        batch: Option<usize>,
        /// Closed loop with this many workers.
        #[arg(long, conflicts_with = "rate")]
        concurrency: Option<usize>,
        /// Open loop at this many calls per second.
        #[arg(long)]
        rate: Option<f64>,
        /// How long to send.
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
        /// Zipf exponent of popularity.
        #[arg(long, default_value_t = 1.0)]
        zipf: f64,
        /// Seconds of warm-up traffic before measuring (same pacing).
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One access token per manifest user, as velro-api issues them (HS256, `aud` velro-api, `iss`
/// velro), valid for a day.
fn sign_tokens(world: &Manifest, secret: &SecretString) -> anyhow::Result<Vec<String>> {
    use secrecy::ExposeSecret;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.expose_secret().as_bytes())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    world
        .users
        .iter()
        .map(|user| {
            let claims = serde_json::json!({
                "sub": user.to_string(), "iat": now, "exp": now + 86_400,
                "jti": uuid::Uuid::now_v7().to_string(), "aud": "velro-api", "iss": "velro",
            });
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &key,
            )
            .map_err(Into::into)
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest's rustls backend, when compiled in, needs a process-wide provider: ring.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Seed {
            database_url,
            entities,
            seed: rng_seed,
            manifest,
        } => {
            let db = Database::connect(&DbConfig::new(database_url)).await?;
            let started = std::time::Instant::now();
            let world = seed(&db, WorldSize::total(entities), rng_seed).await?;
            std::fs::write(&manifest, serde_json::to_vec(&world)?)
                .with_context(|| format!("writing {}", manifest.display()))?;
            let out = format!(
                "seeded {} users, {} teams, {} projects, {} generations in {:.1} s; manifest {}\n",
                world.size.users,
                world.size.teams,
                world.size.projects,
                world.size.generations,
                started.elapsed().as_secs_f64(),
                manifest.display()
            );
            std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
        }
        Command::Run {
            manifest,
            grpc,
            http,
            api,
            jwt_secret,
            api_key,
            connections,
            batch,
            concurrency,
            rate,
            duration,
            zipf,
            warmup,
            json,
        } => {
            let world: Manifest = serde_json::from_slice(
                &std::fs::read(&manifest)
                    .with_context(|| format!("reading {}", manifest.display()))?,
            )?;
            let target = match (grpc, http) {
                (None, None) if api.is_some() => {
                    let secret = jwt_secret.context("--api needs --jwt-secret (JWT_SECRET)")?;
                    Target::Api {
                        base: api.unwrap_or_default(),
                        tokens: Arc::new(sign_tokens(&world, &secret)?),
                        client: reqwest::Client::builder()
                            .pool_max_idle_per_host(256)
                            .build()?,
                    }
                }
                (Some(url), None) => {
                    let mut config = ClientConfig::new(url);
                    config.api_key = api_key.map(SecretString::from);
                    config.timeout = std::time::Duration::from_secs(10);
                    let mut clients = Vec::new();
                    for _ in 0..connections.max(1) {
                        clients.push(PdpClient::connect(&config).await?);
                    }
                    Target::Grpc(clients)
                }
                (None, Some(base)) => Target::Http {
                    base,
                    key: api_key,
                    client: reqwest::Client::builder()
                        .pool_max_idle_per_host(256)
                        .build()?,
                },
                _ => anyhow::bail!("give --grpc, --http or --api"),
            };
            let mode = match batch {
                Some(n) => Mode::Batch(n),
                None => Mode::Check,
            };
            let pacing = match (concurrency, rate) {
                (_, Some(rate)) => Pacing::Open { rate },
                (Some(concurrency), None) => Pacing::Closed { concurrency },
                (None, None) => Pacing::Closed { concurrency: 16 },
            };
            let world = Arc::new(world);
            let config = |duration: std::time::Duration, seed: u64| RunConfig {
                target: target.clone(),
                mode,
                pacing,
                duration,
                zipf,
                manifest: Arc::clone(&world),
                seed,
            };
            if warmup > 0 {
                run(config(std::time::Duration::from_secs(warmup), 7)).await?;
            }
            let report = run(config(duration.into(), 42)).await?;
            let text = if json {
                serde_json::to_string_pretty(&report)?
            } else {
                format!(
                    "calls {} ({:.0}/s), decisions {} ({:.0}/s), errors {}\n\
                     latency us: p50 {} p90 {} p99 {} p99.9 {} max {} mean {:.0}\n\
                     tiers: decision {} l1 {} l2 {} l3 {}; cache hit rate {:.2} %{}",
                    report.calls,
                    report.calls_per_sec,
                    report.decisions,
                    report.decisions_per_sec,
                    report.errors,
                    report.latency_us.p50,
                    report.latency_us.p90,
                    report.latency_us.p99,
                    report.latency_us.p999,
                    report.latency_us.max,
                    report.latency_us.mean,
                    report.tiers.decision,
                    report.tiers.l1,
                    report.tiers.l2,
                    report.tiers.l3,
                    report.cache_hit_rate * 100.0,
                    if report.sample_errors.is_empty() {
                        String::new()
                    } else {
                        format!("\nerrors: {:?}", report.sample_errors)
                    }
                )
            };
            std::io::Write::write_all(&mut std::io::stdout(), format!("{text}\n").as_bytes())?;
        }
    }
    Ok(())
}
