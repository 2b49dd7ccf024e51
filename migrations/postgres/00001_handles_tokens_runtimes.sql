-- Handles, their members, personal access tokens and code runtimes.
-- Keys and names use COLLATE "C" so that keyset pagination (key > cursor ORDER BY
-- key) orders bytes exactly as SQLite does, whatever the database's locale.

-- +goose Up
CREATE TABLE handles (
    name              text COLLATE "C" PRIMARY KEY,
    max_active_runs   integer NOT NULL CHECK (max_active_runs >= 0),
    daily_write_limit integer NOT NULL CHECK (daily_write_limit >= 0),
    created_at        timestamptz NOT NULL
);

CREATE TABLE members (
    handle  text COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    user_id text NOT NULL,
    role    text NOT NULL CHECK (role IN ('viewer', 'developer', 'admin', 'owner')),
    PRIMARY KEY (handle, user_id)
);
CREATE INDEX members_user_id_idx ON members (user_id);

CREATE TABLE access_tokens (
    id           text PRIMARY KEY,
    user_id      text NOT NULL,
    handle       text COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    scopes       text NOT NULL, -- space-separated
    prefix       text NOT NULL CHECK (prefix <> ''),
    hash         bytea NOT NULL UNIQUE, -- SHA-256 of the secret
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL
);
-- Not unique: prefixes are short, so a clash is possible and revoking by prefix
-- reports it as ambiguous.
CREATE INDEX access_tokens_prefix_idx ON access_tokens (prefix);
CREATE INDEX access_tokens_handle_user_idx ON access_tokens (handle, user_id);

CREATE TABLE runtimes (
    handle                     text COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    runtime_key                text COLLATE "C" NOT NULL,
    image                      text NOT NULL,
    digest                     text NOT NULL,
    command                    text NOT NULL, -- JSON array of strings
    entrypoint_file            text NOT NULL,
    timeout_seconds            integer NOT NULL,
    memory_mib                 integer NOT NULL,
    cpus                       double precision NOT NULL,
    pids                       integer NOT NULL,
    output_bytes               bigint NOT NULL,
    network                    boolean NOT NULL,
    description                text NOT NULL,
    validation_status          text NOT NULL CHECK (validation_status IN ('pending', 'validated', 'failed')),
    validation_checked_at      timestamptz,
    validation_resolved_digest text,
    validation_error_code      text,
    validation_error_message   text,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL,
    PRIMARY KEY (handle, runtime_key),
    CHECK ((validation_error_code IS NULL) = (validation_error_message IS NULL))
);

-- +goose Down
DROP TABLE runtimes;
DROP TABLE access_tokens;
DROP TABLE members;
DROP TABLE handles;
