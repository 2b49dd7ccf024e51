-- A run's args apart from its runtime's command: with a runtime that names no
-- command, the args follow the image's own ENTRYPOINT and CMD, which only the
-- engine knows. Runs stored before carry their args in command already.

-- +goose Up
ALTER TABLE run_inputs ADD COLUMN args TEXT NOT NULL DEFAULT '[]'; -- JSON array of strings

-- +goose Down
ALTER TABLE run_inputs DROP COLUMN args;
