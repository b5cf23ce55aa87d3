//! Criterion benches of the decision path (DESIGN §11). Run with
//! `cargo bench -p velro-benches --bench engine`; results go to `benches/RESULTS.md`.
//!
//! Two requests, each measured raw (Cedar alone on the slice the engine builds: the floor) and
//! through every engine tier:
//! - *deep*: an editor downloading a generation three project levels below the team link that
//!   grants it, with a two-step lineage (the most expensive slice the velro policies allow);
//! - *shallow*: the same editor updating the project the team is linked to directly (the common
//!   case).
//!
//! PostgreSQL and Redis benches run when `VELRO_TEST_DATABASE_URL` / `VELRO_TEST_REDIS_URL` (or the
//! local defaults) answer.
#![expect(clippy::unwrap_used, reason = "a bench aborts on setup failure")]

use std::sync::Arc;
use std::time::Duration;

use cedar_policy::{Authorizer, Context, Entities, Request};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use velro_benches::world::{TypicalSlice, typical_slice};
use velro_engine::audit::{AuditConfig, AuditLog, AuditRecord, RecordKind, SinkConfig};
use velro_engine::clock::SystemClock;
use velro_engine::db::DbConfig;
use velro_engine::decision::{CheckRequest, EntityInput};
use velro_engine::entities::{load, to_cedar};
use velro_engine::ids::{EntityKind, EntityRef};
use velro_engine::media_url::{Disposition, KeyRing, MediaUrlConfig, MediaUrlSigner};
use velro_engine::stores::PolicyStores;
use velro_engine::{Engine, EngineConfig, EngineTasks};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn policies_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Setup {
    engine: Engine,
    slice: TypicalSlice,
    _tasks: EngineTasks,
    _dir: tempfile::TempDir,
}

async fn setup(database_url: Option<String>, tweak: impl FnOnce(&mut EngineConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::embedded(dir.path());
    if let Some(url) = database_url {
        config.database = DbConfig::new(url);
    }
    tweak(&mut config);
    let stores = PolicyStores::open(&policies_root()).unwrap();
    let (engine, tasks) = Engine::start(config, stores, Arc::new(SystemClock))
        .await
        .unwrap();
    let slice = typical_slice(engine.database()).await.unwrap();
    engine.change_feed().tick().await.unwrap();
    Setup {
        engine,
        slice,
        _tasks: tasks,
        _dir: dir,
    }
}

fn download(slice: &TypicalSlice) -> CheckRequest {
    CheckRequest::new(
        EntityInput::new("User", slice.user.to_string()),
        "generation:download",
        EntityInput::new("Generation", slice.generation.to_string()),
    )
}

fn update(slice: &TypicalSlice) -> CheckRequest {
    CheckRequest::new(
        EntityInput::new("User", slice.user.to_string()),
        "project:update",
        EntityInput::new("Project", slice.linked_project.to_string()),
    )
}

fn pg_url() -> Option<String> {
    let admin = std::env::var("VELRO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let rt = runtime();
    rt.block_on(async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .ok()?;
        // Databases of earlier runs (criterion gives no hook to drop them at exit).
        let old: Vec<(String,)> =
            sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'velro_bench_%'")
                .fetch_all(&mut conn)
                .await
                .ok()?;
        for (old,) in old {
            let _ = sqlx::Executor::execute(
                &mut conn,
                sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)")),
            )
            .await;
        }
        let name = format!("velro_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .ok()?;
        Some(format!("{}/{name}", admin.rsplit_once('/')?.0))
    })
}

fn redis_url() -> Option<String> {
    let url =
        std::env::var("VELRO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let addr = url.trim_start_matches("redis://").to_owned();
    std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1))
        .ok()
        .map(|_| url)
}

/// The slice the engine builds for `principal` on `resource`, as Cedar entities.
fn slice_entities(
    rt: &Runtime,
    s: &Setup,
    resource: EntityRef,
    action: &cedar_policy::EntityUid,
) -> Entities {
    let store = s.engine.stores().get("velro").unwrap();
    let db = s.engine.database().clone();
    rt.block_on(async {
        let mut all = Vec::new();
        let mut keys = vec![EntityRef::new(EntityKind::User, s.slice.user), resource];
        let mut i = 0;
        while i < keys.len() {
            let facts = load(&db, keys[i]).await.unwrap();
            for hop in facts.next_hops() {
                if !keys.contains(&hop) && keys.len() < 12 {
                    keys.push(hop);
                }
            }
            all.extend(to_cedar(&keys[i], &facts).unwrap());
            i += 1;
        }
        let mut seen = std::collections::HashSet::new();
        all.retain(|e| seen.insert(e.uid()));
        let action_entity = store
            .action_entities()
            .iter()
            .find(|e| e.uid() == *action)
            .cloned()
            .unwrap();
        Entities::from_entities(all.into_iter().chain(std::iter::once(action_entity)), None)
            .unwrap()
    })
}

/// Raw Cedar `is_authorized` with the whole velro policy set on the engine's slice: the floor.
fn cedar_floor(c: &mut Criterion) {
    let rt = runtime();
    let s = rt.block_on(setup(None, |_| {}));
    let store = s.engine.stores().get("velro").unwrap();
    let authorizer = Authorizer::new();
    let policies = store.policies().clone();
    let cases = [
        (
            "deep",
            "generation:download",
            EntityRef::new(EntityKind::Generation, s.slice.generation),
        ),
        (
            "shallow",
            "project:update",
            EntityRef::new(EntityKind::Project, s.slice.linked_project),
        ),
    ];
    for (name, action, resource) in cases {
        let action: cedar_policy::EntityUid =
            format!("Velro::Action::\"{action}\"").parse().unwrap();
        let entities = slice_entities(&rt, &s, resource, &action);
        let context = Context::from_json_value(
            serde_json::json!({"emergency": {"enabled": false, "justification": "", "justification_length": 0}}),
            Some((store.schema(), &action)),
        )
        .unwrap();
        let request = Request::new(
            velro_engine::entities::uid(&EntityRef::new(EntityKind::User, s.slice.user)),
            action,
            velro_engine::entities::uid(&resource),
            context,
            Some(store.schema()),
        )
        .unwrap();
        assert_eq!(
            authorizer
                .is_authorized(&request, &policies, &entities)
                .decision(),
            cedar_policy::Decision::Allow
        );
        c.bench_function(&format!("floor/cedar_is_authorized_{name}"), |b| {
            b.iter(|| authorizer.is_authorized(&request, &policies, &entities))
        });
    }
}

fn check_tiers(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("check");

    let hit = rt.block_on(setup(None, |_| {}));
    let request = download(&hit.slice);
    assert!(
        rt.block_on(hit.engine.check(request.clone()))
            .unwrap()
            .allowed
    );
    group.bench_function("decision_cache_hit", |b| {
        b.to_async(&rt).iter(|| hit.engine.check(request.clone()))
    });

    let warm = rt.block_on(setup(None, |c| c.decision_cache_capacity = 0));
    for (name, request) in [
        ("deep", download(&warm.slice)),
        ("shallow", update(&warm.slice)),
    ] {
        let d = rt.block_on(warm.engine.check(request.clone())).unwrap();
        assert!(d.allowed);
        assert_eq!(
            rt.block_on(warm.engine.check(request.clone()))
                .unwrap()
                .cache_tier
                .as_str(),
            "l1"
        );
        group.bench_function(format!("warm_l1_{name}"), |b| {
            b.to_async(&rt).iter(|| warm.engine.check(request.clone()))
        });
    }

    if let Some(url) = redis_url() {
        let l2 = rt.block_on(setup(None, |c| {
            c.decision_cache_capacity = 0;
            c.entity_cache.l1_capacity = 0;
            c.redis_url = Some(url);
            c.redis_prefix = format!("velro-bench-{}:", uuid::Uuid::new_v4().simple());
        }));
        let request = download(&l2.slice);
        for _ in 0..3 {
            rt.block_on(l2.engine.check(request.clone())).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        let tier = rt
            .block_on(l2.engine.check(request.clone()))
            .unwrap()
            .cache_tier;
        assert_eq!(tier.as_str(), "l2");
        group.bench_function("l2_redis", |b| {
            b.to_async(&rt).iter(|| l2.engine.check(request.clone()))
        });
    }

    let cold = rt.block_on(setup(None, |c| {
        c.decision_cache_capacity = 0;
        c.entity_cache.l1_capacity = 0;
    }));
    let request = download(&cold.slice);
    assert_eq!(
        rt.block_on(cold.engine.check(request.clone()))
            .unwrap()
            .cache_tier
            .as_str(),
        "l3"
    );
    group.bench_function("l3_sqlite", |b| {
        b.to_async(&rt).iter(|| cold.engine.check(request.clone()))
    });

    if let Some(url) = pg_url() {
        let pg = rt.block_on(setup(Some(url), |c| {
            c.decision_cache_capacity = 0;
            c.entity_cache.l1_capacity = 0;
        }));
        let request = download(&pg.slice);
        assert_eq!(
            rt.block_on(pg.engine.check(request.clone()))
                .unwrap()
                .cache_tier
                .as_str(),
            "l3"
        );
        group.bench_function("l3_postgres", |b| {
            b.to_async(&rt).iter(|| pg.engine.check(request.clone()))
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let rt = runtime();
    let warm = rt.block_on(setup(None, |c| c.decision_cache_capacity = 0));
    let actions = [
        "generation:view",
        "generation:view_media",
        "generation:download",
        "generation:update",
    ];
    let requests: Vec<CheckRequest> = (0..100)
        .map(|i| {
            let mut r = download(&warm.slice);
            r.action = actions[i % actions.len()].into();
            r
        })
        .collect();
    rt.block_on(warm.engine.batch_check(&requests)).unwrap();
    let mut group = c.benchmark_group("batch_check");
    group.throughput(criterion::Throughput::Elements(100));
    group.bench_function("100_warm", |b| {
        b.to_async(&rt).iter(|| warm.engine.batch_check(&requests))
    });
    group.finish();
}

fn media_urls(c: &mut Criterion) {
    let clock = Arc::new(SystemClock);
    let signer = MediaUrlSigner::new(
        KeyRing::generate(velro_engine::clock::Clock::now_ms(&SystemClock)).unwrap(),
        MediaUrlConfig::default(),
        clock,
    );
    c.bench_function("media_url/mint_and_verify", |b| {
        b.iter(|| {
            let url = signer
                .mint(
                    "generations/0190b2f4/0.png",
                    "0190b2f4-6c1e-7c2a-9d7e-1f2a3b4c5d6e",
                    Disposition::Inline,
                    None,
                )
                .unwrap();
            let (path, query) = url
                .url
                .split_once("8080")
                .unwrap()
                .1
                .split_once('?')
                .unwrap();
            signer.verify(path, query).unwrap()
        })
    });
}

fn audit(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (log, _writer) = rt
        .block_on(AuditLog::start(AuditConfig::new(SinkConfig::File {
            dir: dir.path().to_path_buf(),
            instance: "bench".into(),
        })))
        .unwrap();
    let mut record = AuditRecord::new(RecordKind::Decision, 0);
    record.principal = Some(velro_engine::audit::Subject::Entity(EntityRef::new(
        EntityKind::User,
        uuid::Uuid::now_v7(),
    )));
    record.action = Some(Arc::from("generation:download"));
    record.decision = Some(std::borrow::Cow::Borrowed("allow"));
    record.policies = vec![Arc::from("project.link.contributor.depth3")];
    c.bench_function("audit/append", |b| {
        b.to_async(&rt).iter(|| log.record(record.clone()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(50);
    targets = cedar_floor, check_tiers, batch, media_urls, audit
}
criterion_main!(benches);
