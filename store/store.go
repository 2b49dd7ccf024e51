// Package store is coderun's persistence: handles and their members, personal
// access tokens and code runtimes, kept in PostgreSQL or SQLite through one sqlx
// code path. Callers work inside a transaction (DB.InTx, DB.Read) and get
// *coderun.Error values for the outcomes they handle (not found, conflict);
// anything else is an unexpected failure, wrapped with what was being done.
// What differs between the engines lives in dialect.go; the schema lives in
// migrations/.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // registers "postgres"
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers "sqlite"

	"github.com/gharart/coderun/migrations"
)

// DefaultSQLitePath is the database Open uses for an empty URL.
const DefaultSQLitePath = "./data/coderun.db"

// DB is an open database.
type DB struct {
	// Now is the clock for the times a caller leaves zero (a new row's
	// created_at, a revocation without a time). Tests replace it.
	Now func() time.Time

	d dialect
	// rw runs read-write transactions. For SQLite it is one connection whose
	// transactions begin IMMEDIATE: writers of this process queue for it in Go,
	// writers of other processes wait in busy_timeout, and none fails with
	// "database is locked" on upgrading a read lock.
	rw *sqlx.DB
	// ro runs read-only transactions: for SQLite a pool of query_only
	// connections that read beside the writer (WAL); for PostgreSQL, rw itself.
	ro *sqlx.DB
}

// Open opens the database named by rawURL: "" or "sqlite://PATH" for SQLite (a
// relative PATH is relative to the working directory; its directory is created),
// "postgres://…" or "postgresql://…" for PostgreSQL. It checks the database is
// reachable; it does not migrate it (see Migrate).
func Open(ctx context.Context, rawURL string) (*DB, error) {
	switch {
	case rawURL == "":
		return openSQLite(ctx, DefaultSQLitePath)
	case strings.HasPrefix(rawURL, "sqlite://"):
		path := strings.TrimPrefix(rawURL, "sqlite://")
		// An in-memory database cannot work: the writer and the readers are
		// separate connections, and each would get a database of its own.
		if path == "" || path == ":memory:" || strings.ContainsRune(path, '?') {
			return nil, fmt.Errorf("database URL %q: want sqlite://PATH, with a file path and no query", rawURL)
		}
		return openSQLite(ctx, path)
	case IsPostgresURL(rawURL):
		return openPostgres(ctx, rawURL)
	}
	scheme, _, found := strings.Cut(rawURL, "://") // never echo the rest: it may hold a password
	if !found {
		return nil, errors.New("database URL has no scheme: use sqlite://PATH or postgres://…")
	}
	return nil, fmt.Errorf("database URL scheme %q is not supported: use sqlite://PATH or postgres://…", scheme)
}

// IsPostgresURL reports whether rawURL names a PostgreSQL database.
func IsPostgresURL(rawURL string) bool {
	return strings.HasPrefix(rawURL, "postgres://") || strings.HasPrefix(rawURL, "postgresql://")
}

func openPostgres(ctx context.Context, rawURL string) (*DB, error) {
	conn, err := sqlx.Open("postgres", rawURL)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL: %w", err)
	}
	// Bounded so that many API replicas and workers fit the server's
	// max_connections (100 by default).
	conn.SetMaxOpenConns(20)
	conn.SetMaxIdleConns(10)
	conn.SetConnMaxIdleTime(5 * time.Minute)
	db := &DB{Now: time.Now, d: postgresDialect, rw: conn, ro: conn}
	if err := db.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", redacted(rawURL), err)
	}
	return db, nil
}

// redacted is rawURL without its password, for messages.
func redacted(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func openSQLite(ctx context.Context, path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create the SQLite database directory: %w", err)
	}
	// WAL lets readers work beside the one writer; synchronous=NORMAL is durable
	// in WAL mode except for the last commits on power loss.
	pragmas := url.Values{"_pragma": {"busy_timeout(10000)", "foreign_keys(1)"}}
	writer := url.Values{"_pragma": append(pragmas["_pragma"], "journal_mode(WAL)", "synchronous(NORMAL)"), "_txlock": {"immediate"}}
	reader := url.Values{"_pragma": append(pragmas["_pragma"], "query_only(1)")}

	rw, err := sqlx.Open("sqlite", path+"?"+writer.Encode())
	if err != nil {
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	rw.SetMaxOpenConns(1)
	rw.SetConnMaxIdleTime(0)
	rw.SetConnMaxLifetime(0)
	// The writer connects first: it turns WAL on, which the readers rely on.
	if err := rw.PingContext(ctx); err != nil {
		rw.Close()
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	ro, err := sqlx.Open("sqlite", path+"?"+reader.Encode())
	if err != nil {
		rw.Close()
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	ro.SetMaxOpenConns(max(4, runtime.NumCPU()))
	db := &DB{Now: time.Now, d: sqliteDialect, rw: rw, ro: ro}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	return db, nil
}

// Dialect names the engine: "sqlite" or "postgres".
func (db *DB) Dialect() string { return db.d.name }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.rw.PingContext(ctx); err != nil {
		return err
	}
	if db.ro != db.rw {
		return db.ro.PingContext(ctx)
	}
	return nil
}

// Close closes the database.
func (db *DB) Close() error {
	err := db.rw.Close()
	if db.ro != db.rw {
		err = errors.Join(err, db.ro.Close())
	}
	return err
}

// Migrate applies the embedded migrations of the database's dialect that it
// has not applied yet. Several processes may migrate one PostgreSQL database at
// once: an advisory lock makes them take turns.
func (db *DB) Migrate(ctx context.Context) error {
	files, err := fs.Sub(migrations.FS, db.d.name)
	if err != nil {
		return fmt.Errorf("migrations for %s: %w", db.d.name, err)
	}
	opts, err := db.d.migrationOptions()
	if err != nil {
		return err
	}
	provider, err := goose.NewProvider(db.d.goose, db.rw.DB, files, opts...)
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// InTx runs fn in one read-write transaction: it commits when fn returns nil
// and rolls back when fn returns an error or panics. fn must not start another
// transaction on db (on SQLite it would wait for itself).
func (db *DB) InTx(ctx context.Context, fn func(*Tx) error) error {
	return db.inTx(ctx, db.rw, nil, fn)
}

// Read runs fn in a read-only transaction, which takes no write lock; a write
// inside it fails. Every query in it sees the same snapshot of the database:
// SQLite's transactions always do, and PostgreSQL's do at repeatable read,
// where at read committed each statement would see the commits made since the
// one before (a run's transitions before its end, its status after it).
func (db *DB) Read(ctx context.Context, fn func(*Tx) error) error {
	return db.inTx(ctx, db.ro, &sql.TxOptions{ReadOnly: true, Isolation: db.d.readIsolation}, fn)
}

func (db *DB) inTx(ctx context.Context, conn *sqlx.DB, opts *sql.TxOptions, fn func(*Tx) error) error {
	tx, err := conn.BeginTxx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback() // fn's error or panic is the one to report
		}
	}()
	if err := fn(&Tx{tx: tx, db: db}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	return nil
}

// Tx is a transaction; its methods are the store's queries.
type Tx struct {
	tx *sqlx.Tx
	db *DB
}

// now is the database clock, in UTC.
func (tx *Tx) now() time.Time { return tx.db.Now().UTC() }

// orNow returns t, or the clock's time when t is zero.
func (tx *Tx) orNow(t time.Time) time.Time {
	if t.IsZero() {
		return tx.now()
	}
	return t
}

func (tx *Tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return tx.tx.ExecContext(ctx, tx.db.d.rebind(query), args...)
}

func (tx *Tx) queryRow(ctx context.Context, query string, args ...any) *sqlx.Row {
	return tx.tx.QueryRowxContext(ctx, tx.db.d.rebind(query), args...)
}

// get scans the one row query returns into dest; sql.ErrNoRows when none.
func (tx *Tx) get(ctx context.Context, dest any, query string, args ...any) error {
	return tx.tx.GetContext(ctx, dest, tx.db.d.rebind(query), args...)
}

func (tx *Tx) selectAll(ctx context.Context, dest any, query string, args ...any) error {
	return tx.tx.SelectContext(ctx, dest, tx.db.d.rebind(query), args...)
}

// execNamed runs a query with :name parameters taken from arg's db tags.
func (tx *Tx) execNamed(ctx context.Context, query string, arg any) (sql.Result, error) {
	q, args, err := sqlx.Named(query, arg)
	if err != nil {
		return nil, err
	}
	return tx.exec(ctx, q, args...)
}

// affected returns the number of rows a statement changed.
func affected(res sql.Result, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// LockName holds a lock on name until the transaction ends, so that writes
// checked against a limit that no row carries (a user's reports of the day,
// say) take turns instead of overshooting it.
func (tx *Tx) LockName(ctx context.Context, name string) error {
	if tx.db.d.lockName == "" {
		return nil
	}
	if _, err := tx.exec(ctx, tx.db.d.lockName, name); err != nil {
		return fmt.Errorf("lock %q: %w", name, err)
	}
	return nil
}
