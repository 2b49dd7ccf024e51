// Package testenv is the test environment: the real services tests run against.
// `make test` starts them and names them in CODERUN_TEST_* variables; a test
// asks for what it needs and gets a fresh, private instance, removed when the
// test ends.
package testenv

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/oklog/ulid/v2"
)

// Environment variables that configure the test environment.
const (
	// PostgresURLEnv names a PostgreSQL server (as a URL) on which tests may
	// create and drop databases; scripts/postgres.sh start prints one.
	PostgresURLEnv = "CODERUN_TEST_POSTGRES_URL"
	// RequireServicesEnv=1 turns a missing service from a skip into a failure,
	// so that `make test` cannot pass without running every test.
	RequireServicesEnv = "CODERUN_TEST_REQUIRE_SERVICES"
)

// PostgresURL returns the URL of a new, empty database on the server named by
// CODERUN_TEST_POSTGRES_URL (PostgreSQL 15 or later, built with ICU, as
// Debian's is), dropped when t ends. Without that variable the
// test is skipped, or fails when CODERUN_TEST_REQUIRE_SERVICES=1.
func PostgresURL(t testing.TB) string {
	t.Helper()
	server := os.Getenv(PostgresURLEnv)
	if server == "" {
		if os.Getenv(RequireServicesEnv) == "1" {
			t.Fatalf("%s is not set, and %s=1 requires PostgreSQL: start one with `scripts/postgres.sh start DIR PORT` and set %s to the URL it prints",
				PostgresURLEnv, RequireServicesEnv, PostgresURLEnv)
		}
		t.Skip("PostgreSQL not configured: run make test, or set " + PostgresURLEnv)
	}
	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("%s: %v", PostgresURLEnv, err)
	}
	name := "coderun_test_" + strings.ToLower(ulid.Make().String())
	// A natural-language collation, as production databases often have, so
	// that a query relying on byte order in ORDER BY or > fails here first.
	admin(t, server, "CREATE DATABASE "+pq.QuoteIdentifier(name)+
		" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
	t.Cleanup(func() {
		// FORCE: a connection the test leaked must not keep its database alive.
		admin(t, server, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)")
	})
	u.Path = "/" + name
	return u.String()
}

// admin runs statement on the server's own database.
func admin(t testing.TB, server, statement string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("postgres", server)
	if err != nil {
		t.Fatalf("PostgreSQL at %s: %v", PostgresURLEnv, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, statement); err != nil {
		t.Fatalf("PostgreSQL at %s: %s: %v", PostgresURLEnv, statement, err)
	}
}
