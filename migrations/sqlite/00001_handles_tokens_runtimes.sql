-- Handles, their members, personal access tokens and code runtimes.
-- STRICT tables, so a value of the wrong type is an error rather than a surprise.
-- Times are TEXT in one fixed-width form, 2006-01-02T15:04:05.000000Z (UTC,
-- microseconds), so that they sort as they read; store/dialect.go writes them.
-- Booleans are INTEGER 0 or 1.

-- +goose Up
CREATE TABLE handles (
    name              TEXT PRIMARY KEY,
    max_active_runs   INTEGER NOT NULL CHECK (max_active_runs >= 0),
    daily_write_limit INTEGER NOT NULL CHECK (daily_write_limit >= 0),
    created_at        TEXT NOT NULL
) STRICT;

CREATE TABLE members (
    handle  TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    role    TEXT NOT NULL CHECK (role IN ('viewer', 'developer', 'admin', 'owner')),
    PRIMARY KEY (handle, user_id)
) STRICT;
CREATE INDEX members_user_id_idx ON members (user_id);

CREATE TABLE access_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    handle       TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    scopes       TEXT NOT NULL, -- space-separated
    prefix       TEXT NOT NULL CHECK (prefix <> ''),
    hash         BLOB NOT NULL UNIQUE, -- SHA-256 of the secret
    expires_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT,
    created_at   TEXT NOT NULL
) STRICT;
-- Not unique: prefixes are short, so a clash is possible and revoking by prefix
-- reports it as ambiguous.
CREATE INDEX access_tokens_prefix_idx ON access_tokens (prefix);
CREATE INDEX access_tokens_handle_user_idx ON access_tokens (handle, user_id);

CREATE TABLE runtimes (
    handle                     TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    runtime_key                TEXT NOT NULL,
    image                      TEXT NOT NULL,
    digest                     TEXT NOT NULL,
    command                    TEXT NOT NULL, -- JSON array of strings
    entrypoint_file            TEXT NOT NULL,
    timeout_seconds            INTEGER NOT NULL,
    memory_mib                 INTEGER NOT NULL,
    cpus                       REAL NOT NULL,
    pids                       INTEGER NOT NULL,
    output_bytes               INTEGER NOT NULL,
    network                    INTEGER NOT NULL CHECK (network IN (0, 1)),
    description                TEXT NOT NULL,
    validation_status          TEXT NOT NULL CHECK (validation_status IN ('pending', 'validated', 'failed')),
    validation_checked_at      TEXT,
    validation_resolved_digest TEXT,
    validation_error_code      TEXT,
    validation_error_message   TEXT,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    PRIMARY KEY (handle, runtime_key),
    CHECK ((validation_error_code IS NULL) = (validation_error_message IS NULL))
) STRICT;

-- +goose Down
DROP TABLE runtimes;
DROP TABLE access_tokens;
DROP TABLE members;
DROP TABLE handles;
