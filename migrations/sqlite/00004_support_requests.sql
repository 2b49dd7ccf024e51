-- Support reports; the record of which caller made each request, so that a
-- report cites only requests its reporter may see; and idempotency keys that
-- mark a write while it is in flight and may belong to no handle (a support
-- report about nothing in particular).

-- +goose Up
CREATE TABLE requests (
    id       TEXT PRIMARY KEY, -- req_<ULID>, as in X-Request-Id
    user_id  TEXT NOT NULL,
    token_id TEXT NOT NULL, -- '' for a JWT
    handle   TEXT NOT NULL, -- the handle the caller was authorized in, '' for none
    method   TEXT NOT NULL,
    route    TEXT NOT NULL, -- the route pattern, e.g. POST /v2/handles/{handle}/code-runs
    status   INTEGER NOT NULL,
    at       TEXT NOT NULL
) STRICT;
CREATE INDEX requests_at_idx ON requests (at);

CREATE TABLE support_reports (
    id             TEXT PRIMARY KEY, -- rpt_<ULID>: sorts by creation time
    user_id        TEXT NOT NULL,
    handle         TEXT REFERENCES handles (name) ON DELETE SET NULL,
    session_id     TEXT,
    request_id     TEXT,
    summary        TEXT NOT NULL,
    details        TEXT NOT NULL,
    repro_artifact TEXT,
    status         TEXT NOT NULL CHECK (status IN ('received')),
    created_at     TEXT NOT NULL
) STRICT;
CREATE INDEX support_reports_user_idx ON support_reports (user_id, id);

CREATE TABLE idempotency_claims (
    handle      TEXT NOT NULL, -- '' for a write outside any handle
    user_id     TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL, -- SHA-256 of the operation and its canonical input
    claim       TEXT NOT NULL, -- the attempt that holds the key while it is in flight
    status      INTEGER NOT NULL, -- the HTTP status the answer had; 0 while in flight
    result      TEXT, -- the answer's domain object as JSON; NULL while in flight
    created_at  TEXT NOT NULL, -- kept for 24 hours from here
    claimed_at  TEXT NOT NULL, -- an in-flight claim this old was abandoned
    PRIMARY KEY (handle, user_id, idem_key)
) STRICT;
INSERT INTO idempotency_claims (handle, user_id, idem_key, fingerprint, claim, status, result, created_at, claimed_at)
    SELECT handle, user_id, idem_key, fingerprint, '', status, result, created_at, created_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_claims RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (handle, created_at);

-- +goose Down
DELETE FROM idempotency_keys WHERE status = 0 OR handle NOT IN (SELECT name FROM handles);
CREATE TABLE idempotency_answers (
    handle      TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER NOT NULL,
    result      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (handle, user_id, idem_key)
) STRICT;
INSERT INTO idempotency_answers SELECT handle, user_id, idem_key, fingerprint, status, result, created_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_answers RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (handle, created_at);
DROP TABLE support_reports;
DROP TABLE requests;
