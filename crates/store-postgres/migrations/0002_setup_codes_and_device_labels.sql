-- Setup codes (issue 18; OpenClaw's bootstrap tokens): an operator mints a short-lived, single-use credential
-- that pairs the device redeeming it with the access it carries. Only digests are stored: of the bootstrap
-- token, and of a join code's short code when the code has one. A code is redeemed once (device_id and
-- redeemed_at_ms set together) or revoked, never both; expiry is a time, not a state.
CREATE TABLE setup_codes (
    setup_id           TEXT PRIMARY KEY NOT NULL,
    token_digest       BYTEA NOT NULL UNIQUE CHECK (length(token_digest) = 32),
    join_digest        BYTEA UNIQUE CHECK (join_digest IS NULL OR length(join_digest) = 32),
    access             TEXT NOT NULL CHECK (access IN ('full', 'limited', 'node', 'voice-node')),
    gateway_url        TEXT NOT NULL,
    issued_at_ms       BIGINT NOT NULL,
    expires_at_ms      BIGINT NOT NULL,
    issued_by          TEXT NOT NULL,
    join_fetched_at_ms BIGINT,
    redeemed_at_ms     BIGINT,
    device_id          TEXT,
    revoked_at_ms      BIGINT,
    revoked_by         TEXT,
    CHECK ((redeemed_at_ms IS NULL) = (device_id IS NULL)),
    CHECK (redeemed_at_ms IS NULL OR revoked_at_ms IS NULL)
);
CREATE INDEX setup_codes_by_expiry ON setup_codes (expires_at_ms);

-- An operator's name for a device (`device.pair.rename`). Apart from `devices`, whose row a removal and a
-- re-pairing rewrite, so that the name survives both.
CREATE TABLE device_labels (
    device_id TEXT PRIMARY KEY NOT NULL CHECK (length(device_id) = 64),
    label     TEXT NOT NULL CHECK (char_length(label) BETWEEN 1 AND 64),
    set_at_ms BIGINT NOT NULL,
    set_by    TEXT NOT NULL
);

-- The device view gains the label (a new column goes last: CREATE OR REPLACE VIEW keeps the others).
CREATE OR REPLACE VIEW device_records AS
SELECT d.device_id, d.public_key, d.client_id, d.client_mode, d.platform, d.device_family, d.display_name,
       d.remote_ip, d.approved_via, d.created_at_ms, d.approved_at_ms, d.last_seen_at_ms, d.removed_at_ms,
       (SELECT COALESCE(jsonb_agg(jsonb_build_object('role', g.role, 'scopes', g.scopes,
                                                     'approvedAtMs', g.approved_at_ms) ORDER BY g.role), '[]'::jsonb)
          FROM grants g WHERE g.device_id = d.device_id) AS grants,
       (SELECT COALESCE(jsonb_agg(jsonb_build_object('role', t.role, 'digest', upper(encode(t.digest, 'hex')),
                                                     'scopes', t.scopes, 'issuedAtMs', t.issued_at_ms,
                                                     'rotatedAtMs', t.rotated_at_ms, 'revokedAtMs', t.revoked_at_ms,
                                                     'lastUsedAtMs', t.last_used_at_ms) ORDER BY t.role), '[]'::jsonb)
          FROM (SELECT DISTINCT ON (role) * FROM device_tokens
                 WHERE device_id = d.device_id ORDER BY role, token_id DESC) t) AS tokens,
       (SELECT l.label FROM device_labels l WHERE l.device_id = d.device_id) AS label
  FROM devices d;
