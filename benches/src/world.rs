//! Seeding synthetic Velro worlds straight into the database, as the app API's writes would leave
//! them (triggers log the changes). Used by benches and the load generator; not by the product.

use anyhow::Result;
use uuid::Uuid;
use velro_engine::db::Database;

/// Rows of one typical request slice: a user in two teams, a project three levels below a
/// project linked to one of those teams, a completed generation there with a two-step lineage.
#[derive(Debug, Clone, Copy)]
pub struct TypicalSlice {
    /// The acting user (editor in the linked team).
    pub user: Uuid,
    /// The project (inherits from its ancestors).
    pub project: Uuid,
    /// A completed generation in it.
    pub generation: Uuid,
    /// The top project the team is linked to directly (a shallow slice).
    pub linked_project: Uuid,
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
    )
    .unwrap_or_default()
}

/// Insert a user.
pub async fn user(db: &Database) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, full_name, created_at, updated_at) \
         VALUES ($1, $2, 'x', 'Bench User', $3, $3)",
    )
    .bind(id.to_string())
    .bind(format!("{id}@bench.test"))
    .bind(now())
    .execute(db.pool())
    .await?;
    Ok(id)
}

/// Insert a team owned by `owner`.
pub async fn team(db: &Database, owner: Uuid) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO teams (id, name, created_by, created_at, updated_at) VALUES ($1, 't', $2, $3, $3)")
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(now())
        .execute(db.pool())
        .await?;
    member(db, id, owner, "owner").await?;
    Ok(id)
}

/// Add `user` to `team` with `role`.
pub async fn member(db: &Database, team: Uuid, user: Uuid, role: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(team.to_string())
    .bind(user.to_string())
    .bind(role)
    .bind(now())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Insert a project.
pub async fn project(
    db: &Database,
    owner: Uuid,
    visibility: &str,
    parent: Option<Uuid>,
    inherit: bool,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO projects (id, owner_id, name, visibility, parent_id, inherit_access, created_at, updated_at) \
         VALUES ($1, $2, 'p', $3, $4, $5, $6, $6)",
    )
    .bind(id.to_string())
    .bind(owner.to_string())
    .bind(visibility)
    .bind(parent.map(|p| p.to_string()))
    .bind(inherit)
    .bind(now())
    .execute(db.pool())
    .await?;
    Ok(id)
}

/// Link `team` to `project` at `access`.
pub async fn link(db: &Database, project: Uuid, team: Uuid, access: &str) -> Result<()> {
    sqlx::query("INSERT INTO project_teams (project_id, team_id, access) VALUES ($1, $2, $3)")
        .bind(project.to_string())
        .bind(team.to_string())
        .bind(access)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Insert a generation.
pub async fn generation(
    db: &Database,
    owner: Uuid,
    project: Uuid,
    parent: Option<Uuid>,
    status: &str,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO generations (id, owner_id, project_id, parent_generation_id, model_id, prompt, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'flux-pro/v1.1-ultra', 'p', $5, $6, $6)",
    )
    .bind(id.to_string())
    .bind(owner.to_string())
    .bind(project.to_string())
    .bind(parent.map(|p| p.to_string()))
    .bind(status)
    .bind(now())
    .execute(db.pool())
    .await?;
    Ok(id)
}

/// Seed one typical slice.
pub async fn typical_slice(db: &Database) -> Result<TypicalSlice> {
    let owner = user(db).await?;
    let acting = user(db).await?;
    let design = team(db, owner).await?;
    let other = team(db, owner).await?;
    member(db, design, acting, "editor").await?;
    member(db, other, acting, "viewer").await?;
    let root = project(db, owner, "team_open", None, false).await?;
    link(db, root, design, "write").await?;
    let mid = project(db, owner, "team_open", Some(root), true).await?;
    link(db, mid, other, "read").await?;
    let low = project(db, owner, "team_open", Some(mid), true).await?;
    let leaf = project(db, owner, "team_restricted", Some(low), true).await?;
    let g0 = generation(db, owner, leaf, None, "completed").await?;
    let g1 = generation(db, acting, leaf, Some(g0), "completed").await?;
    let g2 = generation(db, owner, leaf, Some(g1), "completed").await?;
    Ok(TypicalSlice {
        user: acting,
        project: leaf,
        generation: g2,
        linked_project: root,
    })
}
