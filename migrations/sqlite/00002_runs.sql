-- Code runs: the run itself (with the runtime as it was at submission, so later
-- edits of the runtime do not change a queued run), its status history, the
-- caller's input (deleted once the run is finished), and its output in chunks.

-- +goose Up
-- The one row naming this installation: its sandboxes carry the name, so that
-- installations sharing a container engine leave each other's alone.
CREATE TABLE installation (
    id TEXT PRIMARY KEY
) STRICT;
INSERT INTO installation (id) VALUES ('inst_' || lower(hex(randomblob(16))));

CREATE TABLE runs (
    id                  TEXT PRIMARY KEY, -- run_<ULID>: sorts by submission time
    handle              TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    runtime_key         TEXT NOT NULL,
    image               TEXT NOT NULL,
    command             TEXT NOT NULL, -- JSON array of strings
    network             INTEGER NOT NULL CHECK (network IN (0, 1)),
    timeout_seconds     INTEGER NOT NULL,
    memory_mib          INTEGER NOT NULL,
    cpus                REAL NOT NULL,
    pids                INTEGER NOT NULL,
    output_bytes        INTEGER NOT NULL,
    labels              TEXT NOT NULL, -- JSON object
    status              TEXT NOT NULL CHECK (status IN ('queued', 'starting', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'errored')),
    exit_code           INTEGER,
    error_code          TEXT,
    error_message       TEXT,
    created_at          TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    stdout_bytes        INTEGER NOT NULL DEFAULT 0,
    stderr_bytes        INTEGER NOT NULL DEFAULT 0,
    truncated           INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1)),
    last_seq            INTEGER NOT NULL DEFAULT 0,
    worker_id           TEXT,
    lease_expires_at    TEXT,
    claims              INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at TEXT
) STRICT;
CREATE INDEX runs_handle_id_idx ON runs (handle, id);
CREATE INDEX runs_handle_status_idx ON runs (handle, status, id);
CREATE INDEX runs_queued_idx ON runs (id) WHERE status = 'queued';
CREATE INDEX runs_leased_idx ON runs (lease_expires_at) WHERE status IN ('starting', 'running');

CREATE TABLE run_transitions (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    status TEXT NOT NULL,
    at     TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT;

CREATE TABLE run_inputs (
    run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    files  TEXT NOT NULL, -- JSON array of {path, data (base64)}
    stdin  BLOB NOT NULL,
    env    TEXT NOT NULL  -- JSON object
) STRICT;

CREATE TABLE run_output (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    data   BLOB NOT NULL,
    at     TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT;

-- +goose Down
DROP TABLE run_output;
DROP TABLE run_inputs;
DROP TABLE run_transitions;
DROP TABLE runs;
DROP TABLE installation;
