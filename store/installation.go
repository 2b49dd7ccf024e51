package store

import (
	"context"
	"fmt"
)

// InstallationID names this installation of coderun: every process on the
// same database reads the same name, made once by the migrations.
func (db *DB) InstallationID(ctx context.Context) (string, error) {
	var id string
	err := db.Read(ctx, func(tx *Tx) error {
		return tx.get(ctx, &id, `SELECT id FROM installation`)
	})
	if err != nil {
		return "", fmt.Errorf("installation id: %w", err)
	}
	return id, nil
}
