//! The load generator's engine: drive `Check` or `BatchCheck` over gRPC (or `/v1/check` over HTTP)
//! against a running PDP, closed-loop at a concurrency or open-loop at a rate, for a duration, and
//! report throughput, latency percentiles (HdrHistogram), cache tiers and errors.
//!
//! Open-loop latencies are measured from each request's *scheduled* start, so a PDP that falls
//! behind shows it (no coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use velro_pdp::client::PdpClient;
use velro_pdp::proto;

use crate::synthetic::{Manifest, Rng, Zipf};

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The gRPC `Authorizer` over one or more connections (calls are spread over them; one
    /// HTTP/2 connection is served by one task on the server).
    Grpc(Vec<PdpClient>),
    /// The app API: `GET {base}/api/v1/generations/{id}` as a manifest user (its access token
    /// in `tokens`, aligned with the manifest's users). 200 and 404 are both decided answers.
    Api {
        /// e.g. `http://127.0.0.1:8080`.
        base: String,
        /// One bearer token per manifest user.
        tokens: Arc<Vec<String>>,
        /// Shared HTTP client.
        client: reqwest::Client,
    },
    /// `POST {base}/v1/check` with an optional bearer key.
    Http {
        /// e.g. `http://127.0.0.1:9091`.
        base: String,
        /// API key.
        key: Option<String>,
        /// Shared HTTP client.
        client: reqwest::Client,
    },
}

/// One decision per call, or batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Check`.
    Check,
    /// `BatchCheck` with this many items (gRPC only).
    Batch(usize),
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// `concurrency` workers, each sending the next request when the previous answered.
    Closed {
        /// Workers.
        concurrency: usize,
    },
    /// A request every 1/`rate` seconds regardless of answers.
    Open {
        /// Requests per second.
        rate: f64,
    },
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Where to send.
    pub target: Target,
    /// Check or batch.
    pub mode: Mode,
    /// Closed or open loop.
    pub pacing: Pacing,
    /// How long to send.
    pub duration: Duration,
    /// Zipf exponent of principal and resource popularity.
    pub zipf: f64,
    /// The world to pick ids from.
    pub manifest: Arc<Manifest>,
    /// RNG seed.
    pub seed: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// Decisions by the tier that served them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tiers {
    /// Decision cache.
    pub decision: u64,
    /// In-process entity cache.
    pub l1: u64,
    /// Redis.
    pub l2: u64,
    /// Database.
    pub l3: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Calls answered without error.
    pub calls: u64,
    /// Decisions received (calls × batch size).
    pub decisions: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Seconds measured.
    pub seconds: f64,
    /// Calls per second.
    pub calls_per_sec: f64,
    /// Decisions per second.
    pub decisions_per_sec: f64,
    /// Per-call latency.
    pub latency_us: Latency,
    /// Decisions by tier.
    pub tiers: Tiers,
    /// Share of decisions served without the database (decision cache, L1, L2).
    pub cache_hit_rate: f64,
    /// First few error messages.
    pub sample_errors: Vec<String>,
}

/// Picks requests from the world.
#[derive(Debug, Clone)]
struct Picker {
    manifest: Arc<Manifest>,
    users: Arc<Zipf>,
    projects: Arc<Zipf>,
    generations: Arc<Zipf>,
}

impl Picker {
    fn new(manifest: Arc<Manifest>, s: f64) -> Self {
        Self {
            users: Arc::new(Zipf::new(manifest.users.len(), s)),
            projects: Arc::new(Zipf::new(manifest.projects.len(), s)),
            generations: Arc::new(Zipf::new(manifest.generations.len(), s)),
            manifest,
        }
    }

    /// A user (by index) and a generation to read as them.
    fn read(&self, rng: &mut Rng) -> (usize, uuid::Uuid) {
        let user = self.users.sample(rng);
        let generation = self.manifest.generations[self.generations.sample(rng)];
        (user, generation)
    }

    fn request(&self, rng: &mut Rng) -> proto::CheckRequest {
        let user = self.manifest.users[self.users.sample(rng)];
        let entity = |t: &str, id: uuid::Uuid| {
            Some(proto::EntityRef {
                r#type: t.into(),
                id: id.to_string(),
            })
        };
        let (action, resource) = if rng.below(2) == 0 {
            let p = self.manifest.projects[self.projects.sample(rng)];
            let action = match rng.below(10) {
                0..=6 => "project:view",
                7 | 8 => "project:update",
                _ => "project:create_generation",
            };
            (action, entity("Project", p))
        } else {
            let g = self.manifest.generations[self.generations.sample(rng)];
            let action = match rng.below(10) {
                0..=5 => "generation:view",
                6..=8 => "generation:view_media",
                _ => "generation:download",
            };
            (action, entity("Generation", g))
        };
        proto::CheckRequest {
            principal: entity("User", user),
            action: action.into(),
            resource,
            ..proto::CheckRequest::default()
        }
    }
}

/// A decision whose cache tier the answer does not say (the app API's responses).
const UNKNOWN_TIER: i32 = -1;

/// Outcome of one call.
struct CallResult {
    latency_us: u64,
    tiers: Vec<i32>,
    error: Option<String>,
}

async fn call(
    target: &Target,
    mode: Mode,
    picker: &Picker,
    rng: &mut Rng,
    started: Instant,
) -> CallResult {
    let outcome: Result<Vec<i32>, String> = match (target, mode) {
        (Target::Grpc(clients), _) if clients.is_empty() => Err("no gRPC connection".into()),
        (Target::Grpc(clients), Mode::Check) => clients[rng.below(clients.len())]
            .authorizer()
            .check(picker.request(rng))
            .await
            .map(|r| {
                r.into_inner()
                    .decision
                    .map(|d| d.cache_tier)
                    .into_iter()
                    .collect()
            })
            .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        (Target::Grpc(clients), Mode::Batch(n)) => {
            let items = (0..n).map(|_| picker.request(rng)).collect();
            clients[rng.below(clients.len())]
                .authorizer()
                .batch_check(proto::BatchCheckRequest { items })
                .await
                .map(|r| {
                    r.into_inner()
                        .decisions
                        .iter()
                        .map(|d| d.cache_tier)
                        .collect()
                })
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        }
        (
            Target::Api {
                base,
                tokens,
                client,
            },
            _,
        ) => {
            let (user, generation) = picker.read(rng);
            let token = tokens.get(user).map_or("", String::as_str);
            match client
                .get(format!("{base}/api/v1/generations/{generation}"))
                .bearer_auth(token)
                .send()
                .await
            {
                Ok(response)
                    if response.status().is_success()
                        || response.status() == reqwest::StatusCode::NOT_FOUND =>
                {
                    // Read the body: the call ends when the answer has arrived.
                    match response.bytes().await {
                        Ok(_) => Ok(vec![UNKNOWN_TIER]),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(e) => Err(e.to_string()),
            }
        }
        (Target::Http { base, key, client }, _) => {
            let r = picker.request(rng);
            let body = serde_json::json!({
                "principal": {"type": "User", "id": r.principal.map(|p| p.id).unwrap_or_default()},
                "action": r.action,
                "resource": r.resource.map(|e| serde_json::json!({"type": e.r#type, "id": e.id})),
            });
            let mut request = client.post(format!("{base}/v1/check")).json(&body);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    match response.json::<serde_json::Value>().await {
                        Ok(v) => Ok(vec![match v["cache_tier"].as_str() {
                            Some("decision") => proto::CacheTier::Decision as i32,
                            Some("l1") => proto::CacheTier::L1 as i32,
                            Some("l2") => proto::CacheTier::L2 as i32,
                            _ => proto::CacheTier::L3 as i32,
                        }]),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match outcome {
        Ok(tiers) => CallResult {
            latency_us,
            tiers,
            error: None,
        },
        Err(e) => CallResult {
            latency_us,
            tiers: Vec::new(),
            error: Some(e),
        },
    }
}

#[derive(Debug)]
struct Tally {
    histogram: Histogram<u64>,
    tiers: Tiers,
    calls: u64,
    decisions: u64,
    errors: u64,
    sample_errors: Vec<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            tiers: Tiers::default(),
            calls: 0,
            decisions: 0,
            errors: 0,
            sample_errors: Vec::new(),
        })
    }

    fn add(&mut self, result: CallResult) {
        match result.error {
            Some(e) => {
                self.errors += 1;
                if self.sample_errors.len() < 5 {
                    self.sample_errors.push(e);
                }
            }
            None => {
                self.calls += 1;
                self.decisions += result.tiers.len() as u64;
                // Values beyond the histogram's bound are clamped rather than lost.
                let _ = self
                    .histogram
                    .record(result.latency_us.clamp(1, 60_000_000));
                for tier in result.tiers.into_iter().filter(|t| *t != UNKNOWN_TIER) {
                    match proto::CacheTier::try_from(tier) {
                        Ok(proto::CacheTier::Decision) => self.tiers.decision += 1,
                        Ok(proto::CacheTier::L1) => self.tiers.l1 += 1,
                        Ok(proto::CacheTier::L2) => self.tiers.l2 += 1,
                        _ => self.tiers.l3 += 1,
                    }
                }
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.histogram.add(&other.histogram);
        self.tiers.decision += other.tiers.decision;
        self.tiers.l1 += other.tiers.l1;
        self.tiers.l2 += other.tiers.l2;
        self.tiers.l3 += other.tiers.l3;
        self.calls += other.calls;
        self.decisions += other.decisions;
        self.errors += other.errors;
        for e in other.sample_errors {
            if self.sample_errors.len() < 5 {
                self.sample_errors.push(e);
            }
        }
    }

    fn report(self, seconds: f64) -> Report {
        let h = &self.histogram;
        let total = self.tiers.decision + self.tiers.l1 + self.tiers.l2 + self.tiers.l3;
        Report {
            calls: self.calls,
            decisions: self.decisions,
            errors: self.errors,
            seconds,
            calls_per_sec: self.calls as f64 / seconds,
            decisions_per_sec: self.decisions as f64 / seconds,
            latency_us: Latency {
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                mean: h.mean(),
            },
            cache_hit_rate: if total == 0 {
                0.0
            } else {
                (total - self.tiers.l3) as f64 / total as f64
            },
            tiers: self.tiers,
            sample_errors: self.sample_errors,
        }
    }
}

/// Run the load and report.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    let picker = Picker::new(Arc::clone(&config.manifest), config.zipf);
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut tally = Tally::new()?;
    match config.pacing {
        Pacing::Closed { concurrency } => {
            let mut workers = Vec::with_capacity(concurrency);
            for worker in 0..concurrency {
                let (target, picker) = (config.target.clone(), picker.clone());
                let mode = config.mode;
                let mut rng = Rng::new(config.seed ^ ((worker as u64 + 1) << 32));
                workers.push(tokio::spawn(async move {
                    let mut tally = Tally::new()?;
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        tally.add(call(&target, mode, &picker, &mut rng, t0).await);
                    }
                    Ok::<_, anyhow::Error>(tally)
                }));
            }
            for worker in workers {
                tally.merge(worker.await??);
            }
        }
        Pacing::Open { rate } => {
            anyhow::ensure!(rate > 0.0, "the rate must be positive");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<CallResult>();
            let mut rng = Rng::new(config.seed);
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                let scheduled = next;
                let (target, picker, tx) = (config.target.clone(), picker.clone(), tx.clone());
                let mode = config.mode;
                let mut request_rng = Rng::new(rng.next_u64());
                tokio::spawn(async move {
                    let result = call(&target, mode, &picker, &mut request_rng, scheduled).await;
                    let _ = tx.send(result);
                });
                next += period;
            }
            drop(tx);
            while let Some(result) = rx.recv().await {
                tally.add(result);
            }
        }
    }
    Ok(tally.report(started.elapsed().as_secs_f64().max(1e-9)))
}
