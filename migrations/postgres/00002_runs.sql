-- Code runs: the run itself (with the runtime as it was at submission, so later
-- edits of the runtime do not change a queued run), its status history, the
-- caller's input (deleted once the run is finished), and its output in chunks.

-- +goose Up
-- The one row naming this installation: its sandboxes carry the name, so that
-- installations sharing a container engine leave each other's alone.
CREATE TABLE installation (
    id text PRIMARY KEY
);
INSERT INTO installation (id) VALUES ('inst_' || replace(gen_random_uuid()::text, '-', ''));

CREATE TABLE runs (
    id                  text COLLATE "C" PRIMARY KEY, -- run_<ULID>: sorts by submission time
    handle              text COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    runtime_key         text COLLATE "C" NOT NULL,
    image               text NOT NULL,
    command             text NOT NULL, -- JSON array of strings
    network             boolean NOT NULL,
    timeout_seconds     integer NOT NULL,
    memory_mib          integer NOT NULL,
    cpus                double precision NOT NULL,
    pids                integer NOT NULL,
    output_bytes        bigint NOT NULL,
    labels              text NOT NULL, -- JSON object
    status              text NOT NULL CHECK (status IN ('queued', 'starting', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'errored')),
    exit_code           integer,
    error_code          text,
    error_message       text,
    created_at          timestamptz NOT NULL,
    started_at          timestamptz,
    finished_at         timestamptz,
    stdout_bytes        bigint NOT NULL DEFAULT 0,
    stderr_bytes        bigint NOT NULL DEFAULT 0,
    truncated           boolean NOT NULL DEFAULT false,
    last_seq            bigint NOT NULL DEFAULT 0,
    worker_id           text,
    lease_expires_at    timestamptz,
    claims              integer NOT NULL DEFAULT 0,
    cancel_requested_at timestamptz
);
CREATE INDEX runs_handle_id_idx ON runs (handle, id);
CREATE INDEX runs_handle_status_idx ON runs (handle, status, id);
CREATE INDEX runs_queued_idx ON runs (id) WHERE status = 'queued';
CREATE INDEX runs_leased_idx ON runs (lease_expires_at) WHERE status IN ('starting', 'running');

CREATE TABLE run_transitions (
    run_id text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    integer NOT NULL,
    status text NOT NULL,
    at     timestamptz NOT NULL,
    reason text NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE run_inputs (
    run_id text COLLATE "C" PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    files  text NOT NULL, -- JSON array of {path, data (base64)}
    stdin  bytea NOT NULL,
    env    text NOT NULL  -- JSON object
);

CREATE TABLE run_output (
    run_id text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    bigint NOT NULL,
    stream text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    data   bytea NOT NULL,
    at     timestamptz NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- +goose Down
DROP TABLE run_output;
DROP TABLE run_inputs;
DROP TABLE run_transitions;
DROP TABLE runs;
DROP TABLE installation;
