//! Property: for random small worlds and random interleaved writes, decisions through the full
//! cached path equal decisions with every cache bypassed — once the change feed has run, and at
//! once for requests carrying the write's consistency token.

use proptest::prelude::*;
use uuid::Uuid;
use velro_engine::consistency::Consistency;

use crate::support::{Backend, Harness, Options, available, request};

const VISIBILITIES: [&str; 5] = [
    "private",
    "team_restricted",
    "team_open",
    "public_read",
    "public",
];
const ROLES: [&str; 5] = ["viewer", "contributor", "editor", "admin", "owner"];
const CAPS: [&str; 3] = ["read", "write", "admin"];
const STATUSES: [&str; 3] = ["pending", "completed", "failed"];

#[derive(Debug, Clone)]
struct WorldSpec {
    /// (team index, user index, role)
    memberships: Vec<(usize, usize, usize)>,
    projects: Vec<ProjectSpec>,
    /// (project, team, cap)
    links: Vec<(usize, usize, usize)>,
    /// (owner, project, parent among earlier generations, status)
    generations: Vec<(usize, usize, Option<usize>, usize)>,
    ops: Vec<Op>,
}

/// (owner, visibility, parent among earlier projects, inherit, home team)
type ProjectSpec = (usize, usize, Option<usize>, bool, Option<usize>);

#[derive(Debug, Clone)]
enum Op {
    SetRole(usize, usize, usize),
    RemoveMember(usize, usize),
    AddMember(usize, usize, usize),
    SetVisibility(usize, usize),
    Link(usize, usize, usize),
    Unlink(usize, usize),
    SetStatus(usize, usize),
    Suspend(usize),
}

const USERS: usize = 4;
const TEAMS: usize = 2;

fn world() -> impl Strategy<Value = WorldSpec> {
    let memberships = prop::collection::vec((0..TEAMS, 0..USERS, 0..5usize), 0..6);
    let projects = prop::collection::vec(
        (
            0..USERS,
            0..5usize,
            prop::option::of(0..8usize),
            any::<bool>(),
            prop::option::of(0..TEAMS),
        ),
        2..6,
    );
    let links = prop::collection::vec((0..6usize, 0..TEAMS, 0..3usize), 0..5);
    let generations = prop::collection::vec(
        (0..USERS, 0..6usize, prop::option::of(0..8usize), 0..3usize),
        1..5,
    );
    let op = prop_oneof![
        (0..TEAMS, 0..USERS, 0..5usize).prop_map(|(t, u, r)| Op::SetRole(t, u, r)),
        (0..TEAMS, 0..USERS).prop_map(|(t, u)| Op::RemoveMember(t, u)),
        (0..TEAMS, 0..USERS, 0..5usize).prop_map(|(t, u, r)| Op::AddMember(t, u, r)),
        (0..6usize, 0..5usize).prop_map(|(p, v)| Op::SetVisibility(p, v)),
        (0..6usize, 0..TEAMS, 0..3usize).prop_map(|(p, t, c)| Op::Link(p, t, c)),
        (0..6usize, 0..TEAMS).prop_map(|(p, t)| Op::Unlink(p, t)),
        (0..5usize, 0..3usize).prop_map(|(g, s)| Op::SetStatus(g, s)),
        (0..USERS).prop_map(Op::Suspend),
    ];
    let ops = prop::collection::vec(op, 1..7);
    (memberships, projects, links, generations, ops).prop_map(
        |(memberships, projects, links, generations, ops)| WorldSpec {
            memberships,
            projects,
            links,
            generations,
            ops,
        },
    )
}

struct Built {
    users: Vec<Uuid>,
    teams: Vec<Uuid>,
    projects: Vec<Uuid>,
    generations: Vec<Uuid>,
    members: std::collections::BTreeSet<(usize, usize)>,
    links: std::collections::BTreeSet<(usize, usize)>,
}

async fn build(h: &Harness, spec: &WorldSpec) -> Built {
    let w = &h.world;
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(w.user().await);
    }
    let mut teams = Vec::new();
    let mut members = std::collections::BTreeSet::new();
    for (t, owner) in users.iter().enumerate().take(TEAMS) {
        teams.push(w.team(*owner).await);
        members.insert((t, t));
    }
    for (t, u, r) in &spec.memberships {
        if members.insert((*t, *u)) {
            w.member(teams[*t], users[*u], ROLES[*r]).await;
        }
    }
    let mut projects: Vec<Uuid> = Vec::new();
    for (owner, vis, parent, inherit, home) in &spec.projects {
        let parent = parent.filter(|p| *p < projects.len()).map(|p| projects[p]);
        projects.push(
            w.project_full(
                users[*owner],
                VISIBILITIES[*vis],
                home.map(|t| teams[t]),
                parent,
                *inherit,
            )
            .await,
        );
    }
    let mut links = std::collections::BTreeSet::new();
    for (p, t, c) in &spec.links {
        if *p < projects.len() && links.insert((*p, *t)) {
            w.link(projects[*p], teams[*t], CAPS[*c]).await;
        }
    }
    let mut generations: Vec<Uuid> = Vec::new();
    for (owner, p, parent, status) in &spec.generations {
        let project = projects[p % projects.len()];
        let parent = parent
            .filter(|g| *g < generations.len())
            .map(|g| generations[g]);
        generations.push(
            w.generation(users[*owner], project, parent, STATUSES[*status])
                .await,
        );
    }
    Built {
        users,
        teams,
        projects,
        generations,
        members,
        links,
    }
}

async fn apply(h: &Harness, b: &mut Built, op: &Op) {
    let w = &h.world;
    match op {
        Op::SetRole(t, u, r) => {
            if b.members.contains(&(*t, *u)) {
                w.set_role(b.teams[*t], b.users[*u], ROLES[*r]).await;
            }
        }
        Op::RemoveMember(t, u) => {
            if b.members.remove(&(*t, *u)) {
                w.remove_member(b.teams[*t], b.users[*u]).await;
            }
        }
        Op::AddMember(t, u, r) => {
            if b.members.insert((*t, *u)) {
                w.member(b.teams[*t], b.users[*u], ROLES[*r]).await;
            }
        }
        Op::SetVisibility(p, v) => {
            let p = p % b.projects.len();
            w.set_visibility(b.projects[p], VISIBILITIES[*v]).await;
        }
        Op::Link(p, t, c) => {
            let p = p % b.projects.len();
            if b.links.insert((p, *t)) {
                w.link(b.projects[p], b.teams[*t], CAPS[*c]).await;
            }
        }
        Op::Unlink(p, t) => {
            let p = p % b.projects.len();
            if b.links.remove(&(p, *t)) {
                w.unlink(b.projects[p], b.teams[*t]).await;
            }
        }
        Op::SetStatus(g, s) => {
            let g = g % b.generations.len();
            w.set_status(b.generations[g], STATUSES[*s]).await;
        }
        Op::Suspend(u) => w.suspend(b.users[*u]).await,
    }
}

/// Every (user, action, resource) question of the world.
fn questions(b: &Built) -> Vec<(Uuid, &'static str, &'static str, Uuid)> {
    let mut out = Vec::new();
    for u in &b.users {
        for p in &b.projects {
            for a in ["project:view", "project:update"] {
                out.push((*u, a, "Project", *p));
            }
        }
        for g in &b.generations {
            for a in ["generation:view_media", "generation:delete"] {
                out.push((*u, a, "Generation", *g));
            }
        }
    }
    out
}

async fn answers(h: &Harness, b: &Built, consistency: &Consistency) -> Vec<(bool, Option<String>)> {
    let mut out = Vec::new();
    for (u, a, k, r) in questions(b) {
        let mut req = request(u, a, k, r);
        req.consistency = consistency.clone();
        let d = h.engine.check(req).await.unwrap();
        out.push((d.allowed, d.deny_kind.map(|k| k.as_str().to_owned())));
    }
    out
}

async fn run(backend: Backend, spec: WorldSpec) {
    let h = Harness::start(backend, Options::default()).await;
    let mut b = build(&h, &spec).await;
    h.sync().await;
    // Warm every cache.
    let cached = answers(&h, &b, &Consistency::MinimizeLatency).await;
    let truth = answers(&h, &b, &Consistency::FullyConsistent).await;
    assert_eq!(cached, truth, "initial world");
    for (step, op) in spec.ops.iter().enumerate() {
        apply(&h, &mut b, op).await;
        let token = h.write_token().await;
        let truth = answers(&h, &b, &Consistency::FullyConsistent).await;
        let with_token = answers(&h, &b, &Consistency::AtLeastAsFresh(token)).await;
        assert_eq!(
            with_token, truth,
            "with the write's token after step {step} ({op:?})"
        );
        h.sync().await;
        let cached = answers(&h, &b, &Consistency::MinimizeLatency).await;
        assert_eq!(cached, truth, "cached path after step {step} ({op:?})");
    }
    h.stop().await;
}

fn run_cases(backend: Backend, cases: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if !runtime.block_on(available(backend)) {
        return;
    }
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(spec in world())| {
        runtime.block_on(run(backend, spec));
    });
}

#[test]
fn cached_decisions_equal_uncached_decisions_on_sqlite() {
    run_cases(Backend::Sqlite, 12);
}

#[test]
fn cached_decisions_equal_uncached_decisions_on_postgres_with_redis() {
    run_cases(Backend::PostgresRedis, 6);
}
