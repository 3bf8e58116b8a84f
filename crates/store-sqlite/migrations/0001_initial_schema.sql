-- pairgate schema v1: the whole domain, so later changes add columns rather than redesign.
-- Times are integer milliseconds since the Unix epoch, always passed in by the application's clock
-- (never SQLite's own 'now'), so tests control them. Scope sets are canonical JSON arrays of strings.

-- Key/value facts about this database: which pairgate last migrated it, the gateway secret's argon2id
-- hash when pairgate generated it, and similar single values.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

-- One row per device identity ever seen by an approval. device_id is the lowercase hex SHA-256 of the
-- raw 32-byte Ed25519 public key; public_key is that key, base64url without padding.
CREATE TABLE devices (
    device_id       TEXT PRIMARY KEY NOT NULL
                    CHECK (length(device_id) = 64 AND device_id NOT GLOB '*[^0-9a-f]*'),
    public_key      TEXT NOT NULL CHECK (length(public_key) = 43),
    client_id       TEXT,
    client_mode     TEXT,
    platform        TEXT,
    device_family   TEXT,
    display_name    TEXT,
    remote_ip       TEXT,
    approved_via    TEXT CHECK (approved_via IN ('silent', 'operator', 'import')),
    created_at_ms   INTEGER NOT NULL,
    approved_at_ms  INTEGER,
    last_seen_at_ms INTEGER,
    -- A removed device keeps its row (for the audit trail) but has no grants and no live tokens.
    removed_at_ms   INTEGER
) STRICT;

-- What an operator approved: per device and role, the set of scopes.
CREATE TABLE grants (
    device_id      TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    role           TEXT NOT NULL CHECK (role IN ('operator', 'node')),
    scopes         TEXT NOT NULL CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    approved_at_ms INTEGER NOT NULL,
    approved_by    TEXT NOT NULL,
    PRIMARY KEY (device_id, role)
) STRICT, WITHOUT ROWID;

-- Device tokens. Only the SHA-256 digest of the token is stored; the value is shown once, in hello-ok.
CREATE TABLE device_tokens (
    token_id        INTEGER PRIMARY KEY,
    device_id       TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('operator', 'node')),
    digest          BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
    scopes          TEXT NOT NULL CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    issued_at_ms    INTEGER NOT NULL,
    rotated_at_ms   INTEGER,
    revoked_at_ms   INTEGER,
    last_used_at_ms INTEGER
) STRICT;
-- At most one live token per device and role.
CREATE UNIQUE INDEX device_tokens_one_live ON device_tokens (device_id, role) WHERE revoked_at_ms IS NULL;

-- Pairing requests: asks that an operator has to decide. No foreign key to devices: the device of a
-- not-paired request has no row yet.
CREATE TABLE pairing_requests (
    request_id      TEXT PRIMARY KEY NOT NULL,
    device_id       TEXT NOT NULL CHECK (length(device_id) = 64),
    public_key      TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('operator', 'node')),
    roles           TEXT NOT NULL CHECK (json_valid(roles) AND json_type(roles) = 'array'),
    scopes          TEXT NOT NULL CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    reason          TEXT NOT NULL
                    CHECK (reason IN ('not-paired', 'role-upgrade', 'scope-upgrade', 'metadata-upgrade')),
    client_id       TEXT,
    client_mode     TEXT,
    platform        TEXT,
    device_family   TEXT,
    display_name    TEXT,
    remote_ip       TEXT,
    is_local        INTEGER NOT NULL CHECK (is_local IN (0, 1)),
    is_repair       INTEGER NOT NULL CHECK (is_repair IN (0, 1)),
    created_at_ms   INTEGER NOT NULL,
    refreshed_at_ms INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'superseded')),
    resolved_by     TEXT,
    resolved_at_ms  INTEGER,
    superseded_by   TEXT REFERENCES pairing_requests (request_id),
    CHECK ((status = 'pending') = (resolved_at_ms IS NULL))
) STRICT;
-- At most one pending request per device: a new ask supersedes the old one.
CREATE UNIQUE INDEX pairing_requests_one_pending ON pairing_requests (device_id) WHERE status = 'pending';
CREATE INDEX pairing_requests_by_status ON pairing_requests (status, created_at_ms);

-- Sub-agent sessions: a tree through parent_key (OpenClaw's spawnedBy).
CREATE TABLE sessions (
    session_key            TEXT PRIMARY KEY NOT NULL,
    agent_id               TEXT NOT NULL,
    parent_key             TEXT REFERENCES sessions (session_key),
    spawn_depth            INTEGER NOT NULL DEFAULT 0 CHECK (spawn_depth >= 0),
    subagent_role          TEXT CHECK (subagent_role IN ('orchestrator', 'leaf')),
    subagent_control_scope TEXT CHECK (subagent_control_scope IN ('children', 'none')),
    label                  TEXT,
    model                  TEXT,
    thinking_level         TEXT,
    created_at_ms          INTEGER NOT NULL,
    updated_at_ms          INTEGER NOT NULL,
    archived_at_ms         INTEGER,
    deleted_at_ms          INTEGER
) STRICT;
CREATE INDEX sessions_by_parent ON sessions (parent_key);

-- Sub-agent runs: one spawn of a child session on behalf of a requester session.
CREATE TABLE runs (
    run_id                 TEXT PRIMARY KEY NOT NULL,
    child_session_key      TEXT NOT NULL REFERENCES sessions (session_key) ON DELETE CASCADE,
    requester_session_key  TEXT NOT NULL,
    controller_session_key TEXT,
    task                   TEXT NOT NULL,
    label                  TEXT,
    model                  TEXT,
    cleanup                TEXT NOT NULL DEFAULT 'keep' CHECK (cleanup IN ('keep', 'delete')),
    spawn_mode             TEXT NOT NULL DEFAULT 'run' CHECK (spawn_mode IN ('run', 'session')),
    run_timeout_seconds    INTEGER CHECK (run_timeout_seconds >= 0),
    state                  TEXT NOT NULL DEFAULT 'pending'
                           CHECK (state IN ('pending', 'running', 'done', 'failed', 'timeout', 'killed',
                                            'interrupted')),
    created_at_ms          INTEGER NOT NULL,
    started_at_ms          INTEGER,
    ended_at_ms            INTEGER,
    ended_reason           TEXT,
    outcome_status         TEXT CHECK (outcome_status IN ('ok', 'error', 'timeout')),
    outcome_error          TEXT,
    archive_at_ms          INTEGER
) STRICT;
CREATE INDEX runs_by_requester_state ON runs (requester_session_key, state);
CREATE INDEX runs_by_state ON runs (state);
CREATE INDEX runs_by_child ON runs (child_session_key);

-- The audit trail: every state change writes one row in the same transaction.
CREATE TABLE audit_events (
    event_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT,
    remote_addr TEXT,
    details     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
) STRICT;
CREATE INDEX audit_events_by_time ON audit_events (at_ms);
CREATE INDEX audit_events_by_subject ON audit_events (subject, at_ms);

-- A device with its grants and its newest token per role (live unless revoked_at_ms is set) as JSON
-- arrays, so that the connect path reads everything it needs about a device in one statement.
CREATE VIEW device_records AS
SELECT d.device_id, d.public_key, d.client_id, d.client_mode, d.platform, d.device_family, d.display_name,
       d.remote_ip, d.approved_via, d.created_at_ms, d.approved_at_ms, d.last_seen_at_ms, d.removed_at_ms,
       (SELECT json_group_array(json_object('role', g.role, 'scopes', json(g.scopes),
                                            'approvedAtMs', g.approved_at_ms))
          FROM grants g WHERE g.device_id = d.device_id) AS grants,
       (SELECT json_group_array(json_object('role', t.role, 'digest', hex(t.digest), 'scopes', json(t.scopes),
                                            'issuedAtMs', t.issued_at_ms, 'rotatedAtMs', t.rotated_at_ms,
                                            'revokedAtMs', t.revoked_at_ms, 'lastUsedAtMs', t.last_used_at_ms))
          FROM device_tokens t
         WHERE t.token_id IN (SELECT MAX(token_id) FROM device_tokens
                               WHERE device_id = d.device_id GROUP BY role)) AS tokens
  FROM devices d;
