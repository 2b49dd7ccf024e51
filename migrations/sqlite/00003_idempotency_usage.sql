-- What a handle has written today (its daily write limit), and the answers of
-- writes made with an Idempotency-Key, kept so that a retry gets them again.

-- +goose Up
CREATE TABLE daily_writes (
    handle TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    day    TEXT NOT NULL, -- the UTC date, YYYY-MM-DD
    writes INTEGER NOT NULL CHECK (writes >= 0),
    PRIMARY KEY (handle, day)
) STRICT;

CREATE TABLE idempotency_keys (
    handle      TEXT NOT NULL REFERENCES handles (name) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL, -- SHA-256 of the operation and its canonical input
    status      INTEGER NOT NULL, -- the HTTP status the first answer had
    result      TEXT NOT NULL, -- the answer's domain object as JSON
    created_at  TEXT NOT NULL,
    PRIMARY KEY (handle, user_id, idem_key)
) STRICT;
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (handle, created_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE daily_writes;
