//! The decision path against real databases: the same suite on SQLite and PostgreSQL, each with
//! and without Redis.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use velro_engine::Error;
use velro_engine::audit::{file_path, verify_file};
use velro_engine::cache::Tier;
use velro_engine::consistency::Consistency;
use velro_engine::decision::{CheckRequest, DenyKind, EntityInput, LookupRequest};
use velro_engine::engine::MintRequest;
use velro_engine::media_url::Disposition;

use crate::support::{
    Backend, Harness, Options, Proxy, TestDb, available, clock_at_now, request, through,
};

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if crate::support::available(crate::support::Backend::Sqlite).await {
                        super::$name(crate::support::Backend::Sqlite).await;
                    }
                }
            )*
        }
        mod sqlite_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if crate::support::available(crate::support::Backend::SqliteRedis).await {
                        super::$name(crate::support::Backend::SqliteRedis).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if crate::support::available(crate::support::Backend::Postgres).await {
                        super::$name(crate::support::Backend::Postgres).await;
                    }
                }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if crate::support::available(crate::support::Backend::PostgresRedis).await {
                        super::$name(crate::support::Backend::PostgresRedis).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    decides_from_database_rows,
    serves_repeats_from_the_caches,
    refuses_malformed_requests,
    revocation_is_immediate_with_a_token_and_bounded_without,
    inheritance_and_lineage_stop_at_the_policy_depth,
    batches_keep_order_and_share_loading,
    lookup_equals_a_brute_force_check,
    lookup_pages_are_never_cut_silently,
    media_urls_need_the_media_right,
    break_glass_is_audited_as_critical,
    the_audit_log_is_tamper_evident,
    repeated_denials_are_reported_and_locked_out,
);

async fn decides_from_database_rows(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let w = &h.world;
    let owner = w.user().await;
    let editor = w.user().await;
    let stranger = w.user().await;
    let team = w.team(owner).await;
    w.member(team, editor, "editor").await;
    let project = w.project(owner, "team_restricted").await;
    w.link(project, team, "write").await;

    let d = h.check(owner, "project:delete", "Project", project).await;
    assert!(d.allowed);
    assert_eq!(&*d.policies[0].id, "project.owner");
    assert!(!d.policies[0].reason.is_empty());
    assert_eq!(&*d.store, "velro");
    assert_eq!(d.policy_version.len(), 32);

    assert!(
        h.allowed(editor, "project:update", "Project", project)
            .await
    );
    let d = h.check(editor, "project:share", "Project", project).await;
    assert!(!d.allowed);
    assert_eq!(d.deny_kind, Some(DenyKind::NoPermit));

    let d = h.check(stranger, "project:view", "Project", project).await;
    assert!(!d.allowed);
    assert_eq!(d.deny_kind, Some(DenyKind::NoPermit));

    let d = h
        .check(owner, "project:view", "Project", Uuid::now_v7())
        .await;
    assert_eq!(d.deny_kind, Some(DenyKind::NotFound));
    let d = h
        .check(Uuid::now_v7(), "project:view", "Project", project)
        .await;
    assert_eq!(d.deny_kind, Some(DenyKind::NotFound));

    // Media of an unfinished generation: denied by a forbid.
    let generation = w.generation(owner, project, None, "processing").await;
    let d = h
        .check(owner, "generation:view_media", "Generation", generation)
        .await;
    assert_eq!(d.deny_kind, Some(DenyKind::Forbidden));
    assert_eq!(&*d.policies[0].id, "guard.media_requires_completed");

    // Suspension wins over ownership.
    w.suspend(owner).await;
    h.sync().await;
    let d = h.check(owner, "project:view", "Project", project).await;
    assert_eq!(d.deny_kind, Some(DenyKind::Forbidden));
    assert_eq!(&*d.policies[0].id, "guard.suspended");

    // Anonymous callers see public projects only.
    let public = w.project(editor, "public").await;
    let anonymous = |p: Uuid| {
        CheckRequest::new(
            EntityInput::new("Anonymous", "anonymous"),
            "project:view",
            EntityInput::new("Project", p.to_string()),
        )
    };
    assert!(h.engine.check(anonymous(public)).await.unwrap().allowed);
    assert!(!h.engine.check(anonymous(project)).await.unwrap().allowed);
    h.stop().await;
}

async fn serves_repeats_from_the_caches(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let owner = h.world.user().await;
    let project = h.world.project(owner, "private").await;
    // Entities read before the feed has seen their creation are re-read once it has; start from
    // a feed that is up to date.
    h.sync().await;

    let first = h.check(owner, "project:view", "Project", project).await;
    assert_eq!(first.cache_tier, Tier::L3);
    let again = h.check(owner, "project:view", "Project", project).await;
    assert_eq!(again.cache_tier, Tier::Decision);
    assert!(again.allowed);
    assert_ne!(first.id, again.id);
    let other_action = h.check(owner, "project:update", "Project", project).await;
    assert_eq!(other_action.cache_tier, Tier::L1);

    // A fully consistent read goes around every cache.
    let mut fresh = request(owner, "project:view", "Project", project);
    fresh.consistency = Consistency::FullyConsistent;
    assert_eq!(h.engine.check(fresh).await.unwrap().cache_tier, Tier::L3);

    if backend.redis() {
        // Puts to Redis happen off the request path; wait (bounded) until both entities are there.
        let keys = [
            format!("{}e:project:{project}", h.redis_prefix),
            format!("{}e:user:{owner}", h.redis_prefix),
        ];
        assert!(
            crate::support::eventually(|| async { crate::support::redis_exists(&keys).await })
                .await,
            "entities never reached Redis"
        );
        // A second engine on the same database and Redis finds them in L2.
        let second = Harness::start_on(
            backend,
            std::sync::Arc::clone(&h.db),
            Options::default(),
            Some(h.redis_prefix.clone()),
        )
        .await;
        let d = second
            .check(owner, "project:delete", "Project", project)
            .await;
        assert_eq!(d.cache_tier, Tier::L2);
        assert!(d.allowed);
        // A change seen by the second engine is never served stale from L2.
        h.world.suspend(owner).await;
        second.sync().await;
        let d = second
            .check(owner, "project:view", "Project", project)
            .await;
        assert!(!d.allowed, "suspended user served from stale L2");
        second.stop().await;
    }
    h.stop().await;
}

async fn refuses_malformed_requests(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let owner = h.world.user().await;
    let project = h.world.project(owner, "private").await;
    let good = || request(owner, "project:view", "Project", project);

    let mut r = good();
    r.resource.id = "not-a-uuid".into();
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.resource.id = project.to_string().to_uppercase();
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.resource.id = "'; DROP TABLE projects; --".into();
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.resource.type_name = "Spaceship".into();
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.action = "project:teleport".into();
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.action = "generation:view".into();
    assert!(
        matches!(h.engine.check(r).await, Err(Error::InvalidRequest(_))),
        "wrong resource type for the action"
    );
    let mut r = good();
    r.context
        .insert("emergency".into(), json!({"enabled": true}));
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.context
        .insert("padding".into(), json!("x".repeat(17 * 1024)));
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.store = Some("nope".into());
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::UnknownStore(_))
    ));
    let team = h.world.team(owner).await;
    let mut r = request(owner, "team:set_role", "Team", team);
    r.context.insert("target_role".into(), json!(5));
    r.context.insert(
        "new_role".into(),
        json!({"type": "Velro::TeamRole", "id": "admin"}),
    );
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.entities = Some(json!([]));
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut r = good();
    r.consistency = Consistency::AtLeastAsFresh(velro_engine::consistency::ConsistencyToken::new(
        "other", None, 1,
    ));
    assert!(matches!(
        h.engine.check(r).await,
        Err(Error::InvalidToken(_))
    ));

    let too_many: Vec<CheckRequest> = (0..1001).map(|_| good()).collect();
    assert!(matches!(
        h.engine.batch_check(&too_many).await,
        Err(Error::InvalidRequest(_))
    ));

    // The engine still answers normally afterwards.
    assert!(h.engine.check(good()).await.unwrap().allowed);
    h.stop().await;
}

async fn revocation_is_immediate_with_a_token_and_bounded_without(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let w = &h.world;
    let owner = w.user().await;
    let member = w.user().await;
    let team = w.team(owner).await;
    w.member(team, member, "editor").await;
    let project = w.project(owner, "team_open").await;
    w.link(project, team, "write").await;
    h.sync().await;
    assert!(
        h.allowed(member, "project:update", "Project", project)
            .await
    );
    assert!(
        h.allowed(member, "project:update", "Project", project)
            .await
    );

    w.remove_member(team, member).await;
    let token = h.write_token().await;

    // With the write's token: denied on the very next check, before the feed has run.
    let mut r = request(member, "project:update", "Project", project);
    r.consistency = Consistency::AtLeastAsFresh(token.clone());
    let d = h.engine.check(r).await.unwrap();
    assert!(!d.allowed, "revoked member allowed with the write's token");
    assert!(d.consistency_token.revision >= token.revision);

    // Re-add, then revoke without handing out the token.
    w.member(team, member, "editor").await;
    h.sync().await;
    assert!(
        h.allowed(member, "project:update", "Project", project)
            .await
    );
    w.remove_member(team, member).await;
    // The cached answer may stand until the feed next reads the log (on PostgreSQL a NOTIFY may
    // already have woken it): an allow now can only come from the decision cache ...
    let cached = h.check(member, "project:update", "Project", project).await;
    assert!(!cached.allowed || cached.cache_tier == Tier::Decision);
    // ... and not a tick longer.
    h.sync().await;
    let d = h.check(member, "project:update", "Project", project).await;
    assert!(!d.allowed);

    // Unlinking a team and changing visibility are revocations too.
    let viewer = w.user().await;
    w.member(team, viewer, "viewer").await;
    h.sync().await;
    assert!(h.allowed(viewer, "project:view", "Project", project).await);
    w.set_visibility(project, "team_restricted").await;
    let mut r = request(viewer, "project:view", "Project", project);
    r.consistency = Consistency::AtLeastAsFresh(h.write_token().await);
    assert!(!h.engine.check(r).await.unwrap().allowed);
    h.stop().await;
}

async fn inheritance_and_lineage_stop_at_the_policy_depth(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let w = &h.world;
    let owner = w.user().await;
    let admin = w.user().await;
    let team = w.team(owner).await;
    w.member(team, admin, "admin").await;
    // root (linked) <- p1 <- p2 <- p3 <- p4, all inheriting and team_open.
    let root = w.project(owner, "team_open").await;
    w.link(root, team, "admin").await;
    let mut chain = vec![root];
    for _ in 0..4 {
        let parent = *chain.last().unwrap();
        chain.push(
            w.project_full(owner, "team_open", None, Some(parent), true)
                .await,
        );
    }
    let outsider = w.user().await;
    for (depth, project) in chain.iter().enumerate() {
        let allowed = h.allowed(admin, "project:share", "Project", *project).await;
        assert_eq!(allowed, depth <= 3, "depth {depth}");
        assert!(h.allowed(owner, "project:share", "Project", *project).await);
        assert!(
            !h.allowed(outsider, "project:view", "Project", *project)
                .await
        );
    }
    // A generation in the depth-3 project is shared with the team; in depth 4 it is not.
    let g3 = w.generation(owner, chain[3], None, "completed").await;
    let g4 = w.generation(owner, chain[4], None, "completed").await;
    assert!(
        h.allowed(admin, "generation:download", "Generation", g3)
            .await
    );
    assert!(
        !h.allowed(admin, "generation:download", "Generation", g4)
            .await
    );

    // Lineage: g0 <- g1 <- g2 <- g3 <- g4, each by a different user, in a private project.
    let private = w.project(owner, "private").await;
    let mut users = Vec::new();
    let mut gens: Vec<Uuid> = Vec::new();
    for _ in 0..5 {
        let u = w.user().await;
        gens.push(
            w.generation(u, private, gens.last().copied(), "completed")
                .await,
        );
        users.push(u);
    }
    let last = gens[4];
    for (steps_up, user) in users.iter().rev().enumerate() {
        let d = h
            .check(*user, "generation:view_media", "Generation", last)
            .await;
        assert_eq!(d.allowed, steps_up <= 3, "{steps_up} steps up");
        if (1..=3).contains(&steps_up) {
            assert_eq!(
                &*d.policies[0].id,
                format!("generation.lineage.depth{steps_up}").as_str()
            );
        }
    }
    h.stop().await;
}

async fn batches_keep_order_and_share_loading(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let owner = h.world.user().await;
    let stranger = h.world.user().await;
    let mut projects = Vec::new();
    for _ in 0..20 {
        projects.push(h.world.project(owner, "private").await);
    }
    let mut requests = Vec::new();
    for (i, p) in projects.iter().enumerate() {
        let who = if i % 2 == 0 { owner } else { stranger };
        requests.push(request(who, "project:view", "Project", *p));
    }
    let mut bad = request(owner, "project:view", "Project", projects[0]);
    bad.resource.id = "nope".into();
    requests.insert(5, bad);
    let results = h.engine.batch_check(&requests).await.unwrap();
    assert_eq!(results.len(), 21);
    for (i, result) in results.iter().enumerate() {
        if i == 5 {
            assert!(matches!(result, Err(Error::InvalidRequest(_))));
            continue;
        }
        let original = if i < 5 { i } else { i - 1 };
        assert_eq!(
            result.as_ref().unwrap().allowed,
            original % 2 == 0,
            "item {i}"
        );
    }
    // Entities are loaded once per batch: after the first item, the same principal and resource
    // come from memory.
    let fresh = h.world.project(owner, "private").await;
    let actions = [
        "project:view",
        "project:update",
        "project:share",
        "project:delete",
    ];
    let same: Vec<CheckRequest> = actions
        .iter()
        .map(|a| request(owner, a, "Project", fresh))
        .collect();
    let h2 = h.engine.batch_check(&same).await.unwrap();
    let tiers: Vec<Tier> = h2.iter().map(|r| r.as_ref().unwrap().cache_tier).collect();
    assert_eq!(tiers, [Tier::L3, Tier::L1, Tier::L1, Tier::L1]);
    assert!(h2.iter().all(|r| r.as_ref().unwrap().allowed));
    h.stop().await;
}

/// A small world with every relationship the policies read.
struct LookupWorld {
    users: Vec<Uuid>,
    projects: Vec<Uuid>,
    generations: Vec<Uuid>,
}

async fn lookup_world(h: &Harness) -> LookupWorld {
    let w = &h.world;
    let mut users = Vec::new();
    for _ in 0..5 {
        users.push(w.user().await);
    }
    let team_a = w.team(users[0]).await;
    let team_b = w.team(users[1]).await;
    w.member(team_a, users[2], "viewer").await;
    w.member(team_a, users[3], "editor").await;
    w.member(team_b, users[3], "contributor").await;
    let mut projects = Vec::new();
    for (i, vis) in [
        "private",
        "team_restricted",
        "team_open",
        "public_read",
        "public",
    ]
    .iter()
    .enumerate()
    {
        let p = w.project(users[i % 2], vis).await;
        w.link(
            p,
            if i % 2 == 0 { team_a } else { team_b },
            ["read", "write", "admin"][i % 3],
        )
        .await;
        projects.push(p);
    }
    let home = w
        .project_full(users[4], "team_open", Some(team_b), None, false)
        .await;
    projects.push(home);
    let child = w
        .project_full(users[4], "team_open", None, Some(projects[2]), true)
        .await;
    projects.push(child);
    let grandchild = w
        .project_full(users[4], "team_restricted", None, Some(child), true)
        .await;
    projects.push(grandchild);
    let mut generations = Vec::new();
    let mut parent = None;
    for (i, p) in projects.iter().enumerate() {
        let g = w
            .generation(
                users[i % 5],
                *p,
                parent,
                if i % 3 == 0 {
                    "processing"
                } else {
                    "completed"
                },
            )
            .await;
        parent = Some(g);
        generations.push(g);
    }
    LookupWorld {
        users,
        projects,
        generations,
    }
}

async fn lookup_all(
    h: &Harness,
    principal: Uuid,
    action: &str,
    kind: &str,
    limit: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = h
            .engine
            .lookup_resources(&LookupRequest {
                store: None,
                principal: EntityInput::new("User", principal.to_string()),
                action: action.into(),
                resource_type: kind.into(),
                context: serde_json::Map::new(),
                justification: None,
                cursor: cursor.clone(),
                limit: Some(limit),
                consistency: Consistency::MinimizeLatency,
                caller: Default::default(),
            })
            .await
            .unwrap();
        assert!(page.ids.len() <= limit as usize);
        assert_eq!(page.truncated, page.next_cursor.is_some());
        out.extend(page.ids);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

async fn lookup_equals_a_brute_force_check(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let world = lookup_world(&h).await;
    h.sync().await;
    let cases = [
        ("Project", "project:view", &world.projects),
        ("Project", "project:update", &world.projects),
        ("Project", "project:share", &world.projects),
        ("Generation", "generation:view", &world.generations),
        ("Generation", "generation:view_media", &world.generations),
        ("Generation", "generation:delete", &world.generations),
    ];
    for user in &world.users {
        for (kind, action, all) in &cases {
            let mut expected = BTreeSet::new();
            for id in all.iter() {
                if h.allowed(*user, action, kind, *id).await {
                    expected.insert(id.to_string());
                }
            }
            let found: Vec<String> = lookup_all(&h, *user, action, kind, 2).await;
            let sorted: Vec<String> = {
                let mut s = found.clone();
                s.sort();
                s
            };
            assert_eq!(found, sorted, "results come in id order");
            let found: BTreeSet<String> = found.into_iter().collect();
            assert_eq!(found, expected, "{user} {action} on {kind}");
        }
    }
    h.stop().await;
}

async fn lookup_pages_are_never_cut_silently(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let owner = h.world.user().await;
    let mut projects = BTreeSet::new();
    for _ in 0..7 {
        projects.insert(h.world.project(owner, "private").await.to_string());
    }
    let page = |cursor: Option<String>| LookupRequest {
        store: None,
        principal: EntityInput::new("User", owner.to_string()),
        action: "project:view".into(),
        resource_type: "Project".into(),
        context: serde_json::Map::new(),
        justification: None,
        cursor,
        limit: Some(3),
        consistency: Consistency::MinimizeLatency,
        caller: Default::default(),
    };
    let first = h.engine.lookup_resources(&page(None)).await.unwrap();
    assert_eq!(first.ids.len(), 3);
    assert!(first.truncated);
    let second = h
        .engine
        .lookup_resources(&page(first.next_cursor.clone()))
        .await
        .unwrap();
    assert_eq!(second.ids.len(), 3);
    assert!(second.truncated);
    let third = h
        .engine
        .lookup_resources(&page(second.next_cursor.clone()))
        .await
        .unwrap();
    assert_eq!(third.ids.len(), 1);
    assert!(!third.truncated && third.next_cursor.is_none());
    let all: BTreeSet<String> = first
        .ids
        .into_iter()
        .chain(second.ids)
        .chain(third.ids)
        .collect();
    assert_eq!(all, projects);

    let mut bad = page(Some("garbage".into()));
    assert!(h.engine.lookup_resources(&bad).await.is_err());
    bad.cursor = None;
    bad.limit = Some(0);
    assert!(h.engine.lookup_resources(&bad).await.is_err());
    bad.limit = Some(1001);
    assert!(h.engine.lookup_resources(&bad).await.is_err());
    bad.limit = Some(1);
    bad.resource_type = "Platform".into();
    assert!(h.engine.lookup_resources(&bad).await.is_err());
    h.stop().await;
}

async fn media_urls_need_the_media_right(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let w = &h.world;
    let owner = w.user().await;
    let viewer = w.user().await;
    let stranger = w.user().await;
    let team = w.team(owner).await;
    w.member(team, viewer, "viewer").await;
    let project = w.project(owner, "team_open").await;
    w.link(project, team, "read").await;
    let generation = w.generation(owner, project, None, "completed").await;
    w.media(
        owner,
        generation,
        &format!("generations/{generation}/0.png"),
    )
    .await;
    let mint = |who: Uuid, disposition| MintRequest {
        store: None,
        principal: EntityInput::new("User", who.to_string()),
        generation_id: generation.to_string(),
        media_id: None,
        disposition,
        ttl: None,
        consistency: Consistency::MinimizeLatency,
        caller: Default::default(),
    };
    let outcome = h
        .engine
        .mint_media_urls(&mint(viewer, Disposition::Inline))
        .await
        .unwrap();
    assert!(outcome.decision.allowed);
    assert_eq!(outcome.urls.len(), 1);
    let url = &outcome.urls[0].url.url;
    let (path, query) = url
        .split_once("/media/")
        .map(|(_, rest)| rest.split_once('?').unwrap())
        .unwrap();
    let verified = h
        .engine
        .signer()
        .verify(&format!("/media/{path}"), query)
        .unwrap();
    assert_eq!(verified.subject, viewer.to_string());
    // A viewer may look but not download; a stranger gets nothing.
    let outcome = h
        .engine
        .mint_media_urls(&mint(viewer, Disposition::Attachment))
        .await
        .unwrap();
    assert!(!outcome.decision.allowed && outcome.urls.is_empty());
    let outcome = h
        .engine
        .mint_media_urls(&mint(stranger, Disposition::Inline))
        .await
        .unwrap();
    assert!(!outcome.decision.allowed && outcome.urls.is_empty());
    // An unfinished generation has no viewable media.
    w.set_status(generation, "processing").await;
    h.sync().await;
    let outcome = h
        .engine
        .mint_media_urls(&mint(owner, Disposition::Inline))
        .await
        .unwrap();
    assert!(!outcome.decision.allowed && outcome.urls.is_empty());
    h.stop().await;
}

async fn break_glass_is_audited_as_critical(backend: Backend) {
    let h = Harness::start(
        backend,
        Options {
            emergency_mode: true,
            ..Options::default()
        },
    )
    .await;
    let owner = h.world.user().await;
    let responder = h.world.user_with(false, true, false).await;
    let project = h.world.project(owner, "private").await;
    let mut r = request(responder, "project:view", "Project", project);
    assert!(
        !h.engine.check(r.clone()).await.unwrap().allowed,
        "no justification"
    );
    r.justification = Some("short".into());
    assert!(
        !h.engine.check(r.clone()).await.unwrap().allowed,
        "too short"
    );
    r.justification = Some("incident 42: customer data recovery".into());
    let d = h.engine.check(r.clone()).await.unwrap();
    assert!(d.allowed);
    assert_eq!(&*d.policies[0].id, "break_glass.read");
    // Never cached: the same request is evaluated again.
    let again = h.engine.check(r.clone()).await.unwrap();
    assert_ne!(again.cache_tier, Tier::Decision);
    // Never a write.
    let mut w = request(responder, "project:update", "Project", project);
    w.justification = r.justification.clone();
    assert!(!h.engine.check(w).await.unwrap().allowed);

    let data = h.stop().await;
    let text = std::fs::read_to_string(file_path(&data.path().join("audit"), "pdp")).unwrap();
    let critical: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"severity\":\"critical\""))
        .collect();
    assert_eq!(critical.len(), 2, "both break-glass grants are critical");
    assert!(critical[0].contains("incident 42: customer data recovery"));
}

async fn the_audit_log_is_tamper_evident(backend: Backend) {
    let h = Harness::start(backend, Options::default()).await;
    let owner = h.world.user().await;
    let project = h.world.project(owner, "private").await;
    for _ in 0..5 {
        h.check(owner, "project:view", "Project", project).await;
    }
    let data = h.stop().await;
    let path = file_path(&data.path().join("audit"), "pdp");
    let report = verify_file(&path).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, 5);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("@example.test"),
        "no emails in the audit log"
    );

    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replace("\"allow\"", "\"deny\"");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let report = verify_file(&path).unwrap();
    assert_eq!(report.first_broken.map(|(n, _)| n), Some(3));

    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.remove(1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let report = verify_file(&path).unwrap();
    assert_eq!(report.first_broken.map(|(n, _)| n), Some(2));
}

async fn repeated_denials_are_reported_and_locked_out(backend: Backend) {
    let h = Harness::start(
        backend,
        Options {
            threshold: 3,
            lockout: Duration::from_secs(60),
            ..Options::default()
        },
    )
    .await;
    let owner = h.world.user().await;
    let prober = h.world.user().await;
    let project = h.world.project(owner, "private").await;
    let mine = h.world.project(prober, "private").await;
    for _ in 0..4 {
        assert!(!h.allowed(prober, "project:view", "Project", project).await);
    }
    // Locked out: even their own project is denied now.
    let d = h.check(prober, "project:view", "Project", mine).await;
    assert_eq!(d.deny_kind, Some(DenyKind::LockedOut));
    assert!(h.allowed(owner, "project:view", "Project", project).await);
    let data = h.stop().await;
    let text = std::fs::read_to_string(file_path(&data.path().join("audit"), "pdp")).unwrap();
    assert!(text.contains("\"kind\":\"security_violation\""));
}

/// Redis unreachable mid-run: answers stay correct, nothing surfaces to callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_only_a_slowdown() {
    for backend in [Backend::SqliteRedis, Backend::PostgresRedis] {
        if !available(backend).await {
            continue;
        }
        let proxy = Proxy::start(
            crate::support::redis_url()
                .trim_start_matches("redis://")
                .to_owned(),
        )
        .await;
        let h = Harness::start(
            backend,
            Options {
                redis_url: Some(format!("redis://{}", proxy.addr)),
                ..Options::default()
            },
        )
        .await;
        let owner = h.world.user().await;
        let member = h.world.user().await;
        let team = h.world.team(owner).await;
        h.world.member(team, member, "editor").await;
        let project = h.world.project(owner, "team_open").await;
        h.world.link(project, team, "write").await;
        h.sync().await;
        assert!(
            h.allowed(member, "project:update", "Project", project)
                .await
        );
        assert_eq!(h.engine.health().await.redis, Some(true));

        proxy.cut();
        h.world.remove_member(team, member).await;
        h.sync().await;
        for action in [
            "project:update",
            "project:view",
            "project:create_generation",
        ] {
            let d = h.check(member, action, "Project", project).await;
            assert!(!d.allowed, "{action} after revocation with Redis down");
        }
        assert!(h.allowed(owner, "project:delete", "Project", project).await);
        let health = h.engine.health().await;
        assert_eq!(health.redis, Some(false));
        assert!(health.ready(), "Redis is optional for readiness");

        proxy.restore();
        h.world.member(team, member, "editor").await;
        h.sync().await;
        assert!(
            h.allowed(member, "project:update", "Project", project)
                .await
        );
        h.stop().await;
    }
}

/// Database unreachable: cached answers only within `max_staleness`, then unavailable; never an
/// allow the policies would not give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_closed() {
    let backend = Backend::Postgres;
    if !available(backend).await {
        return;
    }
    let db = std::sync::Arc::new(TestDb::new(backend).await);
    let target = db
        .url
        .split("://")
        .nth(1)
        .unwrap()
        .rsplit_once('@')
        .map_or("", |(_, r)| r);
    let target = target.split('/').next().unwrap().to_owned();
    let proxy = Proxy::start(target).await;
    let clock = clock_at_now();
    let h = Harness::start_on(
        backend,
        std::sync::Arc::clone(&db),
        Options {
            database_url: Some(through(&db.url, &proxy)),
            manual_clock: Some(clock.clone()),
            ..Options::default()
        },
        None,
    )
    .await;
    let owner = h.world.user().await;
    let stranger = h.world.user().await;
    let project = h.world.project(owner, "private").await;
    h.sync().await;
    assert!(h.allowed(owner, "project:view", "Project", project).await);
    assert!(
        !h.allowed(stranger, "project:view", "Project", project)
            .await
    );

    proxy.cut();
    assert!(h.engine.change_feed().tick().await.is_err());
    // Within max_staleness, what is cached still answers, exactly as before.
    assert!(h.allowed(owner, "project:view", "Project", project).await);
    assert!(
        !h.allowed(stranger, "project:view", "Project", project)
            .await
    );
    // Anything needing the database is unavailable, never allowed.
    let other = h
        .engine
        .check(request(owner, "project:view", "Project", Uuid::now_v7()))
        .await;
    assert!(matches!(other, Err(Error::Unavailable(_))), "{other:?}");

    clock.advance(5_001);
    assert!(!h.engine.change_feed().fresh());
    let stale = h
        .engine
        .check(request(owner, "project:view", "Project", project))
        .await;
    assert!(matches!(stale, Err(Error::Unavailable(_))), "{stale:?}");
    let health = h.engine.health().await;
    assert!(!health.ready());

    proxy.restore();
    // The pool reconnects; the feed catches up and caches are trusted again.
    let feed = h.engine.change_feed().clone();
    assert!(crate::support::eventually(|| async { feed.tick().await.is_ok() }).await);
    assert!(h.allowed(owner, "project:view", "Project", project).await);
    h.stop().await;
}

/// A break-glass grant whose audit record cannot be written is a deny.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_denies_when_its_audit_record_cannot_be_written() {
    let h = Harness::start(
        Backend::Sqlite,
        Options {
            emergency_mode: true,
            audit_sink: Some("database".into()),
            ..Options::default()
        },
    )
    .await;
    let owner = h.world.user().await;
    let responder = h.world.user_with(false, true, false).await;
    let project = h.world.project(owner, "private").await;
    let mut r = request(responder, "project:view", "Project", project);
    r.justification = Some("incident 7: restore a deleted gallery".into());
    assert!(h.engine.check(r.clone()).await.unwrap().allowed);

    // The audit table disappears (a broken disk, a hostile operator): writes fail.
    sqlx::query("DROP TABLE audit_records")
        .execute(h.world.db.pool())
        .await
        .unwrap();
    let d = h.engine.check(r).await.unwrap();
    assert!(!d.allowed, "break-glass allowed without an audit record");
    assert_eq!(d.deny_kind, Some(DenyKind::Forbidden));
    assert!(d.errors.iter().any(|e| e.policy_id == "audit"));
    h.stop().await;
}
