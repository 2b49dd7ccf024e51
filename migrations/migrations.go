// Package migrations holds coderun's database schema as goose SQL migrations, one
// directory per dialect (postgres/, sqlite/), embedded so the binary carries it.
// The two directories describe the same tables and move in step: a migration
// added to one is added, with the same version, to the other.
package migrations

import "embed"

// FS holds postgres/*.sql and sqlite/*.sql.
//
//go:embed postgres/*.sql sqlite/*.sql
var FS embed.FS
