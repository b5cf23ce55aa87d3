//! `velro-api --demo`: seeds a small world through the same repository the handlers use, so a
//! newcomer can sign in and see every access rule at work. Idempotent: an existing demo user
//! means the world is already there.

use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::hash_password;
use crate::providers::Job;
use crate::repo::{Created, NewGeneration};

/// The demo accounts' password.
pub const PASSWORD: &str = "velro-demo-2026";

/// The demo accounts: (email, name, role in the Studio team).
pub const USERS: [(&str, &str, Option<&str>); 3] = [
    ("alice@demo.velro.dev", "Alice (team owner)", Some("owner")),
    ("bob@demo.velro.dev", "Bob (team editor)", Some("editor")),
    ("carol@demo.velro.dev", "Carol (outsider)", None),
];

/// Seed the world; returns false when it was already there.
pub async fn seed(state: &AppState) -> anyhow::Result<bool> {
    let repo = &state.repo;
    if repo.user_by_email(USERS[0].0).await?.is_some() {
        return Ok(false);
    }
    let hash = hash_password(PASSWORD.to_owned()).await?;
    let mut ids = Vec::new();
    for (email, name, _) in USERS {
        ids.push(repo.create_user(email, &hash, name, 5000).await?.id);
    }
    let (alice, bob) = (ids[0], ids[1]);
    let team = repo.create_team(alice, "Studio", "The demo team").await?;
    repo.add_member(team.id, bob, "editor").await?;

    let tags = json!(["demo"]);
    let campaign = repo
        .create_project(
            alice,
            "Launch campaign",
            "Shared with the Studio team",
            &tags,
            "team_open",
            Some(team.id),
            None,
            false,
        )
        .await?;
    let storyboards = repo
        .create_project(
            alice,
            "Storyboards",
            "A sub-project inheriting the team's access",
            &tags,
            "team_open",
            None,
            Some(campaign),
            true,
        )
        .await?;
    repo.create_project(
        alice,
        "Private sketches",
        "Only Alice",
        &tags,
        "private",
        None,
        None,
        false,
    )
    .await?;
    let gallery = repo
        .create_project(
            alice,
            "Public gallery",
            "Anyone may look",
            &tags,
            "public",
            None,
            None,
            false,
        )
        .await?;

    let mut parent = None;
    for (project, prompt) in [
        (
            gallery,
            "a lighthouse on a cliff at golden hour, film grain",
        ),
        (campaign, "the same lighthouse as a neon poster"),
        (
            storyboards,
            "storyboard frame: the lighthouse keeper opens the door",
        ),
    ] {
        let model = crate::models::find("flux-pro/v1.1-ultra")
            .ok_or_else(|| anyhow::anyhow!("the demo model is missing"))?;
        let new = NewGeneration {
            id: Uuid::now_v7(),
            owner_id: alice,
            project_id: project,
            parent_generation_id: parent,
            model_id: model.id.to_owned(),
            prompt: prompt.to_owned(),
            negative_prompt: String::new(),
            parameters: model.validate(None)?,
            cost: model.cost,
            style_stack_id: None,
            idempotency_key: None,
        };
        if let Created::New(row) = repo.create_generation(&new).await? {
            state.runner.spawn(Job {
                id: row.id,
                owner: row.owner_id,
                model_id: row.model_id.clone(),
                prompt: row.prompt.clone(),
                negative_prompt: row.negative_prompt.clone(),
                parameters: row.parameters.clone(),
            });
            parent = Some(row.id);
        }
    }
    Ok(true)
}
