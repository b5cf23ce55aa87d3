-- The authorization change log (DESIGN §6.1). Every write that can change a decision appends a row
-- in the same transaction, by trigger, so no writer can forget it. Each PDP tails this table, evicts
-- the named entities from its caches and bumps their versions; `rev` is the data revision that
-- consistency tokens carry. Inserts are logged too: a new id must evict a cached "missing".
-- A NOTIFY on channel `velro_authz_changes` wakes tailing PDPs at once (LISTEN).

CREATE TABLE authz_changes (
    rev          BIGSERIAL PRIMARY KEY,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    changed_at   BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
);

-- Log a change of entity type TG_ARGV[0] whose id is in column TG_ARGV[1] of the changed row; with
-- TG_ARGV[2] = 'both', an update logs the old row's id as well (for rows that move between entities).
CREATE FUNCTION velro_log_authz_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO authz_changes (entity_type, entity_id) VALUES (TG_ARGV[0], to_jsonb(NEW) ->> TG_ARGV[1]);
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND TG_ARGV[2] = 'both') THEN
        INSERT INTO authz_changes (entity_type, entity_id) VALUES (TG_ARGV[0], to_jsonb(OLD) ->> TG_ARGV[1]);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION velro_notify_authz_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('velro_authz_changes', NEW.rev::TEXT);
    RETURN NULL;
END;
$$;

CREATE TRIGGER authz_changes_notify AFTER INSERT ON authz_changes
    FOR EACH ROW EXECUTE FUNCTION velro_notify_authz_change();

CREATE TRIGGER users_authz_insert AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('user', 'id', 'new');

CREATE TRIGGER users_authz_update AFTER UPDATE OF suspended, break_glass, platform_admin ON users
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('user', 'id', 'new');

CREATE TRIGGER users_authz_delete AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('user', 'id', 'new');

CREATE TRIGGER teams_authz_insert AFTER INSERT ON teams
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('team', 'id', 'new');

CREATE TRIGGER teams_authz_delete AFTER DELETE ON teams
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('team', 'id', 'new');

CREATE TRIGGER projects_authz_insert AFTER INSERT ON projects
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('project', 'id', 'new');

CREATE TRIGGER projects_authz_update AFTER UPDATE OF owner_id, visibility, home_team_id, parent_id, inherit_access ON projects
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('project', 'id', 'new');

CREATE TRIGGER projects_authz_delete AFTER DELETE ON projects
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('project', 'id', 'new');

CREATE TRIGGER project_teams_authz_insert AFTER INSERT ON project_teams
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('project', 'project_id', 'new');

CREATE TRIGGER project_teams_authz_update AFTER UPDATE OF access, project_id, team_id ON project_teams
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('project', 'project_id', 'both');

CREATE TRIGGER project_teams_authz_delete AFTER DELETE ON project_teams
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('project', 'project_id', 'new');

CREATE TRIGGER generations_authz_insert AFTER INSERT ON generations
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('generation', 'id', 'new');

CREATE TRIGGER generations_authz_update AFTER UPDATE OF owner_id, project_id, parent_generation_id, status ON generations
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('generation', 'id', 'new');

CREATE TRIGGER generations_authz_delete AFTER DELETE ON generations
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('generation', 'id', 'new');

CREATE TRIGGER media_files_authz_insert AFTER INSERT ON media_files
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('media_file', 'id', 'new');

CREATE TRIGGER media_files_authz_update AFTER UPDATE OF owner_id, generation_id ON media_files
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('media_file', 'id', 'new');

CREATE TRIGGER media_files_authz_delete AFTER DELETE ON media_files
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('media_file', 'id', 'new');

CREATE TRIGGER style_stacks_authz_insert AFTER INSERT ON style_stacks
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('style_stack', 'id', 'new');

CREATE TRIGGER style_stacks_authz_update AFTER UPDATE OF owner_id, is_public, builtin ON style_stacks
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('style_stack', 'id', 'new');

CREATE TRIGGER style_stacks_authz_delete AFTER DELETE ON style_stacks
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('style_stack', 'id', 'new');

CREATE TRIGGER chat_sessions_authz_insert AFTER INSERT ON chat_sessions
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('chat_session', 'id', 'new');

CREATE TRIGGER chat_sessions_authz_update AFTER UPDATE OF owner_id ON chat_sessions
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('chat_session', 'id', 'new');

CREATE TRIGGER chat_sessions_authz_delete AFTER DELETE ON chat_sessions
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('chat_session', 'id', 'new');

-- Team membership changes both the member (their roles) and the team (its owner count).

CREATE TRIGGER team_members_user_authz_insert AFTER INSERT ON team_members
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('user', 'user_id', 'new');

CREATE TRIGGER team_members_user_authz_update AFTER UPDATE OF role, user_id, team_id ON team_members
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('user', 'user_id', 'both');

CREATE TRIGGER team_members_user_authz_delete AFTER DELETE ON team_members
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('user', 'user_id', 'new');

CREATE TRIGGER team_members_team_authz_insert AFTER INSERT ON team_members
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('team', 'team_id', 'new');

CREATE TRIGGER team_members_team_authz_update AFTER UPDATE OF role, user_id, team_id ON team_members
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('team', 'team_id', 'both');

CREATE TRIGGER team_members_team_authz_delete AFTER DELETE ON team_members
    FOR EACH ROW EXECUTE FUNCTION velro_log_authz_change('team', 'team_id', 'new');

-- The audit table is append-only: a hash chain protects its content, this protects its rows.
CREATE FUNCTION velro_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only';
END;
$$;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION velro_audit_append_only();
