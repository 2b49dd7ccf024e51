package store

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// This file is the one place where PostgreSQL and SQLite differ for the store.
// Every query is written once, with ? placeholders and syntax both engines
// accept (INSERT … ON CONFLICT works in both); the dialect supplies the rest.

// dialect is what the store needs to know about one database engine.
type dialect struct {
	name  string
	bind  int // sqlx placeholder style that rebind turns ? into
	goose goose.Dialect
	// forUpdate locks the rows a SELECT reads until the transaction ends. SQLite
	// needs none: a write transaction there holds the whole database (BEGIN
	// IMMEDIATE).
	forUpdate string
	// skipLocked locks the row a SELECT picks and passes over rows other
	// transactions hold, so that concurrent workers claim different runs.
	skipLocked string
	// readIsolation gives a read transaction one snapshot for all its queries.
	readIsolation sql.IsolationLevel
	// byteLength is the SQL for the length in bytes of a text column (%s).
	byteLength string
	// lockName, when set, is a statement that holds a lock named by its one
	// argument until the transaction ends. SQLite needs none (BEGIN
	// IMMEDIATE holds the whole database).
	lockName string
}

var (
	postgresDialect = dialect{name: "postgres", bind: sqlx.DOLLAR, goose: goose.DialectPostgres, forUpdate: " FOR UPDATE", skipLocked: " FOR UPDATE SKIP LOCKED",
		readIsolation: sql.LevelRepeatableRead, lockName: `SELECT pg_advisory_xact_lock(hashtextextended(?, 0))`,
		byteLength: "octet_length(%s)"}
	sqliteDialect = dialect{name: "sqlite", bind: sqlx.QUESTION, goose: goose.DialectSQLite3,
		byteLength: "length(CAST(%s AS BLOB))"}
)

func (d dialect) rebind(query string) string { return sqlx.Rebind(d.bind, query) }

// migrationOptions configure goose. PostgreSQL may be migrated by several
// processes starting at once, so they take turns on an advisory lock; SQLite's
// single writer connection serialises them already.
func (d dialect) migrationOptions() ([]goose.ProviderOption, error) {
	if d.name != postgresDialect.name {
		return nil, nil
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	return []goose.ProviderOption{goose.WithSessionLocker(locker)}, nil
}

// constraint is the kind of integrity constraint a statement violated.
type constraint int

const (
	noViolation constraint = iota
	uniqueViolation
	foreignKeyViolation
)

// violation classifies err from either driver.
func violation(err error) constraint {
	if err == nil {
		return noViolation
	}
	if pe := pq.As(err, pqerror.UniqueViolation); pe != nil {
		return uniqueViolation
	}
	if pe := pq.As(err, pqerror.ForeignKeyViolation); pe != nil {
		return foreignKeyViolation
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return uniqueViolation
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return foreignKeyViolation
		}
	}
	return noViolation
}

// timeLayout is how times travel to the database: fixed-width UTC text with
// microseconds. SQLite keeps it as TEXT that sorts in time order; PostgreSQL
// casts it to timestamptz, whose precision is exactly microseconds.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// dbTime is a possibly NULL time column. It writes timeLayout text and reads
// either a time.Time (lib/pq) or that text (SQLite), always in UTC.
type dbTime struct {
	Time  time.Time
	Valid bool
}

func someTime(t time.Time) dbTime { return dbTime{Time: t, Valid: true} }

func optionalTime(t *time.Time) dbTime {
	if t == nil {
		return dbTime{}
	}
	return someTime(*t)
}

// ptr returns the stored time, or nil for NULL.
func (t dbTime) ptr() *time.Time {
	if !t.Valid {
		return nil
	}
	return &t.Time
}

// stored returns t as it comes back from the database.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Value implements driver.Valuer.
func (t dbTime) Value() (driver.Value, error) {
	if !t.Valid {
		return nil, nil
	}
	return stored(t.Time).Format(timeLayout), nil
}

// Scan implements sql.Scanner.
func (t *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*t = dbTime{}
		return nil
	case time.Time:
		*t = someTime(stored(v))
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	}
	return fmt.Errorf("cannot read %T as a time", src)
}

func (t *dbTime) parse(s string) error {
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("cannot read %q as a time: %w", s, err)
	}
	*t = someTime(stored(v))
	return nil
}
