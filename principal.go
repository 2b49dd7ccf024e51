package coderun

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Scope is a right a token may carry (CONTRACT.md "Authentication").
type Scope string

const (
	ScopeRuntimesRead  Scope = "runtimes:read"
	ScopeRuntimesWrite Scope = "runtimes:write"
	ScopeRunsRead      Scope = "runs:read"
	ScopeRunsWrite     Scope = "runs:write"
	ScopeSupportWrite  Scope = "support:write"
)

// AllScopes lists every scope, in a stable order.
var AllScopes = []Scope{ScopeRuntimesRead, ScopeRuntimesWrite, ScopeRunsRead, ScopeRunsWrite, ScopeSupportWrite}

// ParseScopes parses a list of scopes separated by commas or spaces. An unknown
// scope is an error; duplicates are dropped; the result is sorted.
func ParseScopes(s string) ([]Scope, error) {
	var out []Scope
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		sc := Scope(f)
		if !slices.Contains(AllScopes, sc) {
			return nil, Errorf(EInvalidRequest, "unknown scope %q (known: %s)", f, JoinScopes(AllScopes, ", "))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	slices.Sort(out)
	return out, nil
}

// JoinScopes joins scopes with sep.
func JoinScopes(scopes []Scope, sep string) string {
	ss := make([]string, len(scopes))
	for i, s := range scopes {
		ss[i] = string(s)
	}
	return strings.Join(ss, sep)
}

// Role is a user's standing in a handle; roles are ordered.
type Role int

const (
	RoleNone Role = iota
	RoleViewer
	RoleDeveloper
	RoleAdmin
	RoleOwner
)

var roleNames = []string{"none", "viewer", "developer", "admin", "owner"}

func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return fmt.Sprintf("role(%d)", int(r))
	}
	return roleNames[r]
}

// ParseRole parses viewer, developer, admin or owner.
func ParseRole(s string) (Role, error) {
	for i, n := range roleNames {
		if i > 0 && n == s {
			return Role(i), nil
		}
	}
	return RoleNone, Errorf(EInvalidRequest, "unknown role %q (known: viewer, developer, admin, owner)", s)
}

// TokenKind says how a principal authenticated.
type TokenKind string

const (
	TokenJWT TokenKind = "jwt"
	TokenPAT TokenKind = "pat"
)

// Principal is an authenticated caller: a user, acting through one token.
type Principal struct {
	UserID string
	Kind   TokenKind
	// TokenID identifies the token (a PAT's id, a JWT's jti), for logs and scoping
	// idempotency keys; never the secret.
	TokenID string
	// Scopes the token carries. A JWT without a scope claim carries all of them.
	Scopes []Scope
	// Handle, when set, is the only handle the token may act on (a PAT's handle).
	Handle string
}

// HasScope reports whether the token carries s.
func (p *Principal) HasScope(s Scope) bool {
	return p != nil && slices.Contains(p.Scopes, s)
}

// Handle is a tenant: it owns runtimes and runs, and has members with roles.
type Handle struct {
	Name            string    `json:"handle" db:"name"`
	MaxActiveRuns   int       `json:"maxActiveRuns" db:"max_active_runs"`
	DailyWriteLimit int       `json:"dailyWriteLimit" db:"daily_write_limit"`
	CreatedAt       time.Time `json:"createdAt" db:"created_at"`
}

// Defaults for a new handle (CONTRACT.md).
const (
	DefaultMaxActiveRuns   = 4
	DefaultDailyWriteLimit = 1000
)

// Member is a user's role in a handle.
type Member struct {
	Handle string `db:"handle"`
	UserID string `db:"user_id"`
	Role   Role   `db:"role"`
}

// AccessToken is a stored personal access token. Only the SHA-256 of the secret
// is kept; Prefix (the first characters of the secret) lets people name it.
type AccessToken struct {
	ID         string     `db:"id"`
	UserID     string     `db:"user_id"`
	Handle     string     `db:"handle"`
	Scopes     []Scope    `db:"-"`
	Prefix     string     `db:"prefix"`
	Hash       []byte     `db:"hash"`
	ExpiresAt  time.Time  `db:"expires_at"`
	RevokedAt  *time.Time `db:"revoked_at"`
	LastUsedAt *time.Time `db:"last_used_at"`
	CreatedAt  time.Time  `db:"created_at"`
}

// HandleUsage is what a handle is using of its limits now.
type HandleUsage struct {
	ActiveRuns         int       `json:"activeRuns"`
	DailyWritesUsed    int       `json:"dailyWritesUsed"`
	DailyWritesResetAt time.Time `json:"dailyWritesResetAt"`
}
