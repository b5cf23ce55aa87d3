//! `Engine::lookup_resources`: which resources of a type may the principal act on?
//!
//! Candidates come from SQL in id order: every resource the principal is related to in a way the
//! velro policies read (owner, team member through a home team or link, inherited through
//! ancestors to the store's depth, lineage, public visibility, built-in or public style stacks; all
//! of a type for a break-glass user in emergency mode). Every candidate is then *decided by Cedar*,
//! exactly as `check` would; SQL only narrows, it never grants. A page stops at `limit` allowed
//! resources or at the scan budget, and says so with `truncated` and a cursor; nothing is cut
//! silently. A policy that grants through a relationship not listed here needs a candidate query
//! added here too (the brute-force test in `tests/it` guards the velro store).

use std::sync::Arc;
use std::time::Instant;

use sqlx::Row;

use super::Engine;
use super::slice::Memo;
use crate::audit::{AuditRecord, RecordKind, Subject, truncate_ip};
use crate::consistency::ConsistencyToken;
use crate::db::db_error;
use crate::decision::{CheckRequest, EntityInput, LookupPage, LookupRequest};
use crate::entities::Facts;
use crate::error::{Error, Result};
use crate::ids::{EntityKind, EntityRef, parse_uuid};

/// Default and largest page sizes.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Candidates fetched per SQL round trip.
const CANDIDATE_BATCH: i64 = 200;

/// Projects a user reaches through teams: linked or homed projects, and their descendants that may
/// inherit, to depth $2.
const TEAM_REACH: &str = "
  mine(team_id) AS (SELECT team_id FROM team_members WHERE user_id = $1),
  linked(id) AS (
    SELECT project_id FROM project_teams WHERE team_id IN (SELECT team_id FROM mine)
    UNION SELECT id FROM projects WHERE home_team_id IN (SELECT team_id FROM mine)
  ),
  reach(id, depth) AS (
    SELECT id, 0 FROM linked
    UNION ALL
    SELECT p.id, r.depth + 1 FROM projects p JOIN reach r ON p.parent_id = r.id WHERE r.depth < $2
  ),
  projs(id) AS (
    SELECT id FROM reach
    UNION SELECT id FROM projects WHERE owner_id = $1
    UNION SELECT id FROM projects WHERE visibility IN ('public_read', 'public')
  )";

impl Engine {
    /// One page of resources of `request.resource_type` the principal may `request.action`.
    pub async fn lookup_resources(&self, request: &LookupRequest) -> Result<LookupPage> {
        let started = Instant::now();
        let store = self.store(request.store.as_deref())?;
        if !self.is_sql_store(&store) {
            return Err(Error::InvalidRequest(format!(
                "store `{}` has no database to look resources up in",
                store.name()
            )));
        }
        let kind = EntityKind::from_type_name(&request.resource_type)
            .filter(|k| k.fixed_id().is_none())
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "cannot look up resources of type `{}`",
                    super::check::shorten(&request.resource_type)
                ))
            })?;
        let principal = EntityRef::parse(&request.principal.type_name, &request.principal.id)?;
        let _ = super::check::action_uid(&store, &request.action)?;
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::InvalidRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let mut cursor = match request.cursor.as_deref() {
            None | Some("") => String::new(),
            Some(c) => parse_uuid(c)?.hyphenated().to_string(),
        };

        let mut memo = Memo::new();
        // Break-glass users in emergency mode may read anything: every row is a candidate.
        let all = self.inner.config.emergency_mode
            && principal.kind == EntityKind::User
            && matches!(
                self.inner
                    .cache
                    .get(principal, self.inner.feed.low_water(), true)
                    .await
                    .map_err(super::unavailable)?
                    .0
                    .facts,
                Facts::User(ref u) if u.break_glass
            );
        let depth = i64::from(store.settings().entity_depth);
        let budget = self.inner.config.lookup_scan_budget.max(limit as usize);

        let mut ids = Vec::new();
        let mut examined = 0usize;
        let mut exhausted = false;
        let mut revision = self.inner.feed.low_water();
        'pages: while ids.len() < limit as usize && examined < budget {
            let candidates = self
                .candidates(kind, principal, all, depth, &cursor)
                .await
                .map_err(super::unavailable)?;
            if candidates.is_empty() {
                exhausted = true;
                break;
            }
            let fetched = candidates.len();
            for id in candidates {
                examined += 1;
                cursor = id.clone();
                let check = CheckRequest {
                    store: Some(store.name().to_owned()),
                    principal: request.principal.clone(),
                    action: request.action.clone(),
                    resource: EntityInput::new(kind.type_name(), id.clone()),
                    context: request.context.clone(),
                    justification: request.justification.clone(),
                    consistency: request.consistency.clone(),
                    entities: None,
                    caller: request.caller.clone(),
                };
                let decision = self.decide_quietly(&check, &mut memo).await?;
                revision = revision.max(decision.1);
                if decision.0 {
                    ids.push(id);
                    if ids.len() == limit as usize {
                        break 'pages;
                    }
                }
                if examined >= budget {
                    break 'pages;
                }
            }
            if (fetched as i64) < CANDIDATE_BATCH {
                exhausted = true;
                break;
            }
        }
        // More candidates may remain unless the last query came back short and was fully used.
        let truncated = !exhausted
            && (ids.len() == limit as usize || examined >= budget)
            && self.has_more(kind, principal, all, depth, &cursor).await?;
        let page = LookupPage {
            ids,
            next_cursor: truncated.then(|| cursor.clone()),
            truncated,
            examined,
            consistency_token: ConsistencyToken::new(store.name(), Some(store.version()), revision),
        };
        let mut record = AuditRecord::new(RecordKind::Decision, self.inner.clock.now_ms());
        record.store = Some(store.shared_name());
        record.policy_version = Some(store.shared_version());
        record.revision = Some(revision);
        record.principal = Some(Subject::Entity(principal));
        record.action = Some(Arc::from(request.action.as_str()));
        record.resource = Some(Subject::Text(format!("lookup:{}", kind.type_name())));
        record.detail = Some(format!(
            "{} allowed of {} examined{}",
            page.ids.len(),
            examined,
            if truncated { ", truncated" } else { "" }
        ));
        record.latency_us = Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        record.request_id = request.caller.request_id.clone();
        record.client_ip = request.caller.client_ip.map(truncate_ip);
        self.inner.audit.record(record).await?;
        Ok(page)
    }

    async fn has_more(
        &self,
        kind: EntityKind,
        principal: EntityRef,
        all: bool,
        depth: i64,
        cursor: &str,
    ) -> Result<bool> {
        Ok(!self
            .candidates_limited(kind, principal, all, depth, cursor, 1)
            .await
            .map_err(super::unavailable)?
            .is_empty())
    }

    async fn candidates(
        &self,
        kind: EntityKind,
        principal: EntityRef,
        all: bool,
        depth: i64,
        cursor: &str,
    ) -> Result<Vec<String>> {
        self.candidates_limited(kind, principal, all, depth, cursor, CANDIDATE_BATCH)
            .await
    }

    /// Candidate ids after `cursor`, ascending.
    async fn candidates_limited(
        &self,
        kind: EntityKind,
        principal: EntityRef,
        all: bool,
        depth: i64,
        cursor: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        let pool = self.inner.db.pool();
        let anonymous = principal.kind == EntityKind::Anonymous;
        let me = principal
            .uuid()
            .map(|u| u.hyphenated().to_string())
            .unwrap_or_default();
        let table = match kind {
            EntityKind::User | EntityKind::CreditAccount => "users",
            EntityKind::Team => "teams",
            EntityKind::Project => "projects",
            EntityKind::Generation => "generations",
            EntityKind::MediaFile => "media_files",
            EntityKind::StyleStack => "style_stacks",
            EntityKind::ChatSession => "chat_sessions",
            EntityKind::Anonymous | EntityKind::Platform => return Ok(Vec::new()),
        };
        let rows = if all {
            let sql = match table {
                "users" => "SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2",
                "teams" => "SELECT id FROM teams WHERE id > $1 ORDER BY id LIMIT $2",
                "projects" => "SELECT id FROM projects WHERE id > $1 ORDER BY id LIMIT $2",
                "generations" => "SELECT id FROM generations WHERE id > $1 ORDER BY id LIMIT $2",
                "media_files" => "SELECT id FROM media_files WHERE id > $1 ORDER BY id LIMIT $2",
                "style_stacks" => "SELECT id FROM style_stacks WHERE id > $1 ORDER BY id LIMIT $2",
                _ => "SELECT id FROM chat_sessions WHERE id > $1 ORDER BY id LIMIT $2",
            };
            sqlx::query(sql).bind(cursor).bind(limit).fetch_all(pool).await
        } else if anonymous {
            let sql = match kind {
                EntityKind::Project => {
                    "SELECT id FROM projects WHERE visibility = 'public' AND id > $1 ORDER BY id LIMIT $2"
                }
                EntityKind::Generation => {
                    "SELECT g.id FROM generations g JOIN projects p ON p.id = g.project_id \
                     WHERE p.visibility = 'public' AND g.id > $1 ORDER BY g.id LIMIT $2"
                }
                EntityKind::StyleStack => {
                    "SELECT id FROM style_stacks WHERE (is_public = TRUE OR builtin = TRUE) \
                     AND id > $1 ORDER BY id LIMIT $2"
                }
                _ => return Ok(Vec::new()),
            };
            sqlx::query(sql).bind(cursor).bind(limit).fetch_all(pool).await
        } else {
            match kind {
                EntityKind::Project => {
                    let sql = const_format(TEAM_REACH, "SELECT id FROM projs WHERE id > $3 ORDER BY id LIMIT $4");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&me)
                        .bind(depth)
                        .bind(cursor)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
                EntityKind::Generation => {
                    let sql = const_format(
                        TEAM_REACH,
                        ",
                        lineage(id, depth) AS (
                          SELECT id, 0 FROM generations WHERE owner_id = $1
                          UNION ALL
                          SELECT g.id, l.depth + 1 FROM generations g
                            JOIN lineage l ON g.parent_generation_id = l.id WHERE l.depth < $2
                        ),
                        candidates(id) AS (
                          SELECT id FROM generations WHERE project_id IN (SELECT id FROM projs)
                          UNION SELECT id FROM lineage
                        )
                        SELECT id FROM candidates WHERE id > $3 ORDER BY id LIMIT $4",
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&me)
                        .bind(depth)
                        .bind(cursor)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
                EntityKind::Team => {
                    sqlx::query(
                        "SELECT team_id FROM team_members WHERE user_id = $1 AND team_id > $2 \
                         ORDER BY team_id LIMIT $3",
                    )
                    .bind(&me)
                    .bind(cursor)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                }
                EntityKind::StyleStack => {
                    sqlx::query(
                        "SELECT id FROM style_stacks \
                         WHERE (owner_id = $1 OR is_public = TRUE OR builtin = TRUE) AND id > $2 \
                         ORDER BY id LIMIT $3",
                    )
                    .bind(&me)
                    .bind(cursor)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                }
                EntityKind::ChatSession => {
                    sqlx::query(
                        "SELECT id FROM chat_sessions WHERE owner_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    )
                    .bind(&me)
                    .bind(cursor)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                }
                EntityKind::MediaFile => {
                    sqlx::query(
                        "SELECT id FROM media_files WHERE owner_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    )
                    .bind(&me)
                    .bind(cursor)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                }
                EntityKind::User | EntityKind::CreditAccount => {
                    sqlx::query("SELECT id FROM users WHERE id = $1 AND id > $2 ORDER BY id LIMIT $3")
                        .bind(&me)
                        .bind(cursor)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
                EntityKind::Anonymous | EntityKind::Platform => return Ok(Vec::new()),
            }
        }
        .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(db_error))
            .collect()
    }

    /// Decide a lookup candidate without auditing it (the lookup is audited as a whole). Returns
    /// (allowed, revision).
    async fn decide_quietly(&self, request: &CheckRequest, memo: &mut Memo) -> Result<(bool, i64)> {
        let store = self.store(request.store.as_deref())?;
        let id = self.identify(&store, request)?;
        let Some((principal, resource)) = id.refs else {
            return Ok((false, 0));
        };
        let prepared = self.complete(&store, request, &id)?;
        let (trust_caches, revision) = self.freshness(&store, &request.consistency).await?;
        let mut loader = super::slice::SliceLoader {
            cache: &self.inner.cache,
            read_seq: revision,
            trust_caches,
            depth: store.settings().entity_depth,
            memo,
        };
        let slice = loader
            .load(principal, resource, &prepared.context_entities)
            .await
            .map_err(super::unavailable)?;
        if !slice.principal_exists || !slice.resource_exists {
            return Ok((false, revision));
        }
        let entities =
            super::slice::request_entities(slice.entities, store.action_entity(&id.action))?;
        let evaluation = store.authorize(&prepared.request, &entities);
        Ok((evaluation.allowed, revision))
    }
}

/// `WITH RECURSIVE <ctes> <tail>` (both parts are constants of this module).
fn const_format(ctes: &str, tail: &str) -> String {
    format!("WITH RECURSIVE {ctes} {tail}")
}
