//! A synthetic Velro world for load tests: N users in teams, projects (some nested, some shared
//! with teams, a mix of visibilities) and generations (some derived from others), written in bulk
//! straight into the database (the triggers log every row, as the app API's writes would). A
//! manifest of the ids lets the load generator pick principals and resources with a Zipf skew.
//!
//! Deterministic for a given seed; no dependency beyond the database.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use velro_engine::db::{Database, Dialect};

/// Sizes of a world.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WorldSize {
    /// Users.
    pub users: usize,
    /// Teams (each user joins up to three).
    pub teams: usize,
    /// Projects.
    pub projects: usize,
    /// Generations.
    pub generations: usize,
}

impl WorldSize {
    /// A world of about `entities` rows in total, in fixed proportions
    /// (users 20 %, teams 2 %, projects 18 %, generations 60 %).
    pub fn total(entities: usize) -> Self {
        let at_least = |n: usize| n.max(1);
        Self {
            users: at_least(entities / 5),
            teams: at_least(entities / 50),
            projects: at_least(entities * 18 / 100),
            generations: at_least(entities * 60 / 100),
        }
    }
}

/// The ids of a seeded world, most popular first (for Zipf sampling).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Sizes.
    pub size: WorldSize,
    /// User ids.
    pub users: Vec<Uuid>,
    /// Project ids.
    pub projects: Vec<Uuid>,
    /// Generation ids.
    pub generations: Vec<Uuid>,
}

/// SplitMix64: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % (n as u64)) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A UUIDv7-shaped id from this generator (deterministic, unlike `Uuid::now_v7`).
    pub fn uuid(&mut self) -> Uuid {
        let bytes = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        uuid::Builder::from_random_bytes(bytes.to_be_bytes()).into_uuid()
    }
}

/// Zipf sampler over ranks `0..n` with exponent `s`, by inverse CDF.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Ranks `0..n`, exponent `s` (1.0 is classic Zipf).
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    /// A rank, 0 most likely.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

const VISIBILITIES: [&str; 5] = [
    "private",
    "team_restricted",
    "team_open",
    "public_read",
    "public",
];
const ROLES: [&str; 5] = ["viewer", "contributor", "editor", "admin", "owner"];
const CAPS: [&str; 3] = ["read", "write", "admin"];

/// Every value is bound as text; integer and flag columns are converted in SQL, in each
/// dialect's way (flags are given as "1"/"0").
fn placeholder(dialect: Dialect, column: &str, n: usize) -> String {
    let integer = column.ends_with("_at");
    let flag = column == "inherit_access";
    match (dialect, integer, flag) {
        (Dialect::Postgres, true, _) => format!("${n}::BIGINT"),
        (Dialect::Postgres, _, true) => format!("(${n}::TEXT = '1')"),
        (Dialect::Sqlite, true, _) | (Dialect::Sqlite, _, true) => format!("CAST(${n} AS INTEGER)"),
        _ => format!("${n}"),
    }
}

/// Insert `rows` (each a list of text values; `None` is NULL) into `table` in batches.
async fn insert(
    db: &Database,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Option<String>>],
) -> Result<()> {
    // PostgreSQL allows 65535 parameters per statement; SQLite 32766.
    let per_statement = (30_000 / columns.len()).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut n = 0;
        for r in 0..chunk.len() {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (c, column) in columns.iter().enumerate() {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push_str(&placeholder(db.dialect(), column, n));
            }
            sql.push(')');
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            for value in row {
                query = query.bind(value.clone());
            }
        }
        let mut tx = db.pool().begin().await?;
        query.execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Seed a world of `size` with `seed`; returns its manifest.
pub async fn seed(db: &Database, size: WorldSize, seed: u64) -> Result<Manifest> {
    let mut rng = Rng::new(seed);
    let now = "1800000000000".to_owned();
    let users: Vec<Uuid> = (0..size.users).map(|_| rng.uuid()).collect();
    let rows: Vec<Vec<Option<String>>> = users
        .iter()
        .map(|u| {
            vec![
                Some(u.to_string()),
                Some(format!("{u}@load.test")),
                Some("x".into()),
                Some("Load User".into()),
                Some(now.clone()),
                Some(now.clone()),
            ]
        })
        .collect();
    insert(
        db,
        "users",
        &[
            "id",
            "email",
            "password_hash",
            "full_name",
            "created_at",
            "updated_at",
        ],
        &rows,
    )
    .await?;

    let teams: Vec<(Uuid, Uuid)> = (0..size.teams)
        .map(|_| (rng.uuid(), users[rng.below(users.len())]))
        .collect();
    let rows: Vec<Vec<Option<String>>> = teams
        .iter()
        .map(|(t, owner)| {
            vec![
                Some(t.to_string()),
                Some("Load Team".into()),
                Some(owner.to_string()),
                Some(now.clone()),
                Some(now.clone()),
            ]
        })
        .collect();
    insert(
        db,
        "teams",
        &["id", "name", "created_by", "created_at", "updated_at"],
        &rows,
    )
    .await?;

    let mut members = std::collections::BTreeSet::new();
    let mut rows = Vec::new();
    for (t, owner) in &teams {
        members.insert((*t, *owner));
        rows.push(vec![
            Some(t.to_string()),
            Some(owner.to_string()),
            Some("owner".into()),
            Some(now.clone()),
        ]);
    }
    for u in &users {
        for _ in 0..rng.below(4) {
            let (t, _) = teams[rng.below(teams.len())];
            if members.insert((t, *u)) {
                rows.push(vec![
                    Some(t.to_string()),
                    Some(u.to_string()),
                    Some(ROLES[rng.below(4)].into()),
                    Some(now.clone()),
                ]);
            }
        }
    }
    insert(
        db,
        "team_members",
        &["team_id", "user_id", "role", "joined_at"],
        &rows,
    )
    .await?;

    let mut projects: Vec<Uuid> = Vec::with_capacity(size.projects);
    let mut rows = Vec::new();
    let mut links = Vec::new();
    for i in 0..size.projects {
        let id = rng.uuid();
        let parent = (i > 0 && rng.below(4) == 0).then(|| projects[rng.below(projects.len())]);
        let home = (rng.below(3) == 0).then(|| teams[rng.below(teams.len())].0);
        rows.push(vec![
            Some(id.to_string()),
            Some(users[rng.below(users.len())].to_string()),
            Some("Load Project".into()),
            Some(VISIBILITIES[rng.below(5)].into()),
            home.map(|h| h.to_string()),
            parent.map(|p| p.to_string()),
            Some(
                if parent.is_some() && rng.below(2) == 0 {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ),
            Some(now.clone()),
            Some(now.clone()),
        ]);
        if rng.below(2) == 0 {
            links.push(vec![
                Some(id.to_string()),
                Some(teams[rng.below(teams.len())].0.to_string()),
                Some(CAPS[rng.below(3)].into()),
            ]);
        }
        projects.push(id);
    }
    insert(
        db,
        "projects",
        &[
            "id",
            "owner_id",
            "name",
            "visibility",
            "home_team_id",
            "parent_id",
            "inherit_access",
            "created_at",
            "updated_at",
        ],
        &rows,
    )
    .await?;
    links.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));
    links.dedup_by(|a, b| a[0] == b[0] && a[1] == b[1]);
    insert(
        db,
        "project_teams",
        &["project_id", "team_id", "access"],
        &links,
    )
    .await?;

    let mut generations: Vec<Uuid> = Vec::with_capacity(size.generations);
    let mut rows = Vec::new();
    for i in 0..size.generations {
        let id = rng.uuid();
        let parent =
            (i > 0 && rng.below(5) == 0).then(|| generations[rng.below(generations.len())]);
        rows.push(vec![
            Some(id.to_string()),
            Some(users[rng.below(users.len())].to_string()),
            Some(projects[rng.below(projects.len())].to_string()),
            parent.map(|p| p.to_string()),
            Some("flux-pro/v1.1-ultra".into()),
            Some("a load-test prompt".into()),
            Some(
                if rng.below(10) == 0 {
                    "processing"
                } else {
                    "completed"
                }
                .into(),
            ),
            Some(now.clone()),
            Some(now.clone()),
        ]);
        generations.push(id);
    }
    insert(
        db,
        "generations",
        &[
            "id",
            "owner_id",
            "project_id",
            "parent_generation_id",
            "model_id",
            "prompt",
            "status",
            "created_at",
            "updated_at",
        ],
        &rows,
    )
    .await?;
    Ok(Manifest {
        size,
        users,
        projects,
        generations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_prefers_low_ranks() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(7);
        let mut top10 = 0;
        for _ in 0..10_000 {
            if zipf.sample(&mut rng) < 10 {
                top10 += 1;
            }
        }
        // The top 1 % of ranks draw about 39 % of samples with s = 1 over 1000 ranks.
        assert!((3_000..5_000).contains(&top10), "{top10}");
    }

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        assert_eq!(a.uuid(), b.uuid());
        assert_ne!(a.uuid(), Rng::new(2).uuid());
    }

    #[tokio::test]
    async fn a_small_world_seeds_into_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&velro_engine::db::DbConfig::new(format!(
            "sqlite://{}",
            dir.path().join("w.db").display()
        )))
        .await
        .unwrap();
        let manifest = seed(&db, WorldSize::total(200), 1).await.unwrap();
        assert_eq!(manifest.users.len(), 40);
        assert_eq!(manifest.generations.len(), 120);
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM projects")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(row.0, 36);
    }
}
