package testenv

import (
	"context"
	"testing"

	"github.com/gharart/coderun/store"
)

// OpenDB opens and migrates the database at url, closing it when t ends.
func OpenDB(t testing.TB, url string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}
