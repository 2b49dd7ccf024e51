-- Support reports; the record of which caller made each request, so that a
-- report cites only requests its reporter may see; and idempotency keys that
-- mark a write while it is in flight and may belong to no handle (a support
-- report about nothing in particular).

-- +goose Up
CREATE TABLE requests (
    id       text COLLATE "C" PRIMARY KEY, -- req_<ULID>, as in X-Request-Id
    user_id  text NOT NULL,
    token_id text NOT NULL, -- '' for a JWT
    handle   text NOT NULL, -- the handle the caller was authorized in, '' for none
    method   text NOT NULL,
    route    text NOT NULL, -- the route pattern, e.g. POST /v2/handles/{handle}/code-runs
    status   integer NOT NULL,
    at       timestamptz NOT NULL
);
CREATE INDEX requests_at_idx ON requests (at);

CREATE TABLE support_reports (
    id             text COLLATE "C" PRIMARY KEY, -- rpt_<ULID>: sorts by creation time
    user_id        text NOT NULL,
    handle         text COLLATE "C" REFERENCES handles (name) ON DELETE SET NULL,
    session_id     text,
    request_id     text,
    summary        text NOT NULL,
    details        text NOT NULL,
    repro_artifact text,
    status         text NOT NULL CHECK (status IN ('received')),
    created_at     timestamptz NOT NULL
);
CREATE INDEX support_reports_user_idx ON support_reports (user_id, id);

CREATE TABLE idempotency_claims (
    handle      text COLLATE "C" NOT NULL, -- '' for a write outside any handle
    user_id     text NOT NULL,
    idem_key    text NOT NULL,
    fingerprint text NOT NULL, -- SHA-256 of the operation and its canonical input
    claim       text NOT NULL, -- the attempt that holds the key while it is in flight
    status      integer NOT NULL, -- the HTTP status the answer had; 0 while in flight
    result      text, -- the answer's domain object as JSON; NULL while in flight
    created_at  timestamptz NOT NULL, -- kept for 24 hours from here
    claimed_at  timestamptz NOT NULL, -- an in-flight claim this old was abandoned
    PRIMARY KEY (handle, user_id, idem_key)
);
INSERT INTO idempotency_claims (handle, user_id, idem_key, fingerprint, claim, status, result, created_at, claimed_at)
    SELECT handle, user_id, idem_key, fingerprint, '', status, result, created_at, created_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_claims RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (handle, created_at);

-- +goose Down
DELETE FROM idempotency_keys WHERE status = 0 OR handle NOT IN (SELECT name FROM handles);
CREATE TABLE idempotency_answers (
    handle      text COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    user_id     text NOT NULL,
    idem_key    text NOT NULL,
    fingerprint text NOT NULL,
    status      integer NOT NULL,
    result      text NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (handle, user_id, idem_key)
);
INSERT INTO idempotency_answers SELECT handle, user_id, idem_key, fingerprint, status, result, created_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_answers RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (handle, created_at);
DROP TABLE support_reports;
DROP TABLE requests;
