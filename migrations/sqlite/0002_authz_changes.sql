-- The authorization change log (DESIGN §6.1). Every write that can change a decision appends a row
-- in the same transaction, by trigger, so no writer can forget it. Each PDP tails this table, evicts
-- the named entities from its caches and bumps their versions; `rev` is the data revision that
-- consistency tokens carry. Inserts are logged too: a new id must evict a cached "missing".

CREATE TABLE authz_changes (
    rev          INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    changed_at   INTEGER NOT NULL
);

CREATE TRIGGER users_authz_insert AFTER INSERT ON users BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('user', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER users_authz_update AFTER UPDATE OF suspended, break_glass, platform_admin ON users BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('user', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER users_authz_delete AFTER DELETE ON users BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('user', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER teams_authz_insert AFTER INSERT ON teams BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('team', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER teams_authz_delete AFTER DELETE ON teams BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('team', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER projects_authz_insert AFTER INSERT ON projects BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('project', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER projects_authz_update AFTER UPDATE OF owner_id, visibility, home_team_id, parent_id, inherit_access ON projects BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('project', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER projects_authz_delete AFTER DELETE ON projects BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('project', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER project_teams_authz_insert AFTER INSERT ON project_teams BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('project', NEW.project_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER project_teams_authz_update AFTER UPDATE OF access, project_id, team_id ON project_teams BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('project', NEW.project_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('project', OLD.project_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER project_teams_authz_delete AFTER DELETE ON project_teams BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('project', OLD.project_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER generations_authz_insert AFTER INSERT ON generations BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('generation', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER generations_authz_update AFTER UPDATE OF owner_id, project_id, parent_generation_id, status ON generations BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('generation', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER generations_authz_delete AFTER DELETE ON generations BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('generation', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER media_files_authz_insert AFTER INSERT ON media_files BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('media_file', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER media_files_authz_update AFTER UPDATE OF owner_id, generation_id ON media_files BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('media_file', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER media_files_authz_delete AFTER DELETE ON media_files BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('media_file', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER style_stacks_authz_insert AFTER INSERT ON style_stacks BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('style_stack', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER style_stacks_authz_update AFTER UPDATE OF owner_id, is_public, builtin ON style_stacks BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('style_stack', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER style_stacks_authz_delete AFTER DELETE ON style_stacks BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('style_stack', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER chat_sessions_authz_insert AFTER INSERT ON chat_sessions BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('chat_session', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER chat_sessions_authz_update AFTER UPDATE OF owner_id ON chat_sessions BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('chat_session', NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER chat_sessions_authz_delete AFTER DELETE ON chat_sessions BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('chat_session', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER team_members_authz_insert AFTER INSERT ON team_members BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('user', NEW.user_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('team', NEW.team_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER team_members_authz_delete AFTER DELETE ON team_members BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('user', OLD.user_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('team', OLD.team_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER team_members_authz_update AFTER UPDATE OF role, user_id, team_id ON team_members BEGIN
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('user', NEW.user_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('team', NEW.team_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('user', OLD.user_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
    INSERT INTO authz_changes (entity_type, entity_id, changed_at) VALUES ('team', OLD.team_id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

-- The audit table is append-only: a hash chain protects its content, this protects its rows.
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
