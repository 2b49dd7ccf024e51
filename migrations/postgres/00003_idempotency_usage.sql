-- What a handle has written today (its daily write limit), and the answers of
-- writes made with an Idempotency-Key, kept so that a retry gets them again.

-- +goose Up
CREATE TABLE daily_writes (
    handle text COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    day    text NOT NULL, -- the UTC date, YYYY-MM-DD
    writes integer NOT NULL CHECK (writes >= 0),
    PRIMARY KEY (handle, day)
);

CREATE TABLE idempotency_keys (
    handle      text COLLATE "C" NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    user_id     text NOT NULL,
    idem_key    text NOT NULL,
    fingerprint text NOT NULL, -- SHA-256 of the operation and its canonical input
    status      integer NOT NULL, -- the HTTP status the first answer had
    result      text NOT NULL, -- the answer's domain object as JSON
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (handle, user_id, idem_key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (handle, created_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE daily_writes;
