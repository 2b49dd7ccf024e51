package testenv

import (
	"path/filepath"
	"testing"
)

// SQLiteURL returns the URL of a new SQLite database file in a directory that
// is removed when t ends.
func SQLiteURL(t testing.TB) string {
	t.Helper()
	return "sqlite://" + filepath.Join(t.TempDir(), "coderun.db")
}
