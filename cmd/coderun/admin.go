package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
)

// openService opens and migrates the configured database and returns the
// service over it, for the operator's commands.
func openService(ctx context.Context, cfg *config) (*service.Service, func(), error) {
	db, err := openStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return service.New(db, service.Options{}), func() { db.Close() }, nil
}

func openStore(ctx context.Context, cfg *config) (*store.DB, error) {
	db, err := store.Open(ctx, cfg.databaseURL())
	if err != nil {
		return nil, fmt.Errorf("open the database: %w", err)
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate the database: %w", err)
	}
	return db, nil
}

func migrate(ctx context.Context, args []string, stderr io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	cfg.bindFlags(fs)
	if pos, err := parseFlags(fs, args, stderr); err != nil {
		return err
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: migrate takes no arguments", errUsage)
	}
	db, err := openStore(ctx, &cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	fmt.Fprintln(stderr, "coderun: database is up to date")
	return nil
}

func handleCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: handle needs a subcommand: create or add-member", errUsage)
	}
	var cfg config
	fs := flag.NewFlagSet("handle "+args[0], flag.ContinueOnError)
	cfg.bindFlags(fs)
	switch args[0] {
	case "create":
		owner := fs.String("owner", "", "the user who owns the handle (required)")
		maxActive := fs.Int("max-active-runs", coderun.DefaultMaxActiveRuns, "runs the handle may have queued or running at once")
		daily := fs.Int("daily-write-limit", coderun.DefaultDailyWriteLimit, "writes the handle may make per UTC day")
		pos, err := parseFlags(fs, args[1:], stderr)
		if err != nil {
			return err
		}
		if len(pos) != 1 || *owner == "" {
			return fmt.Errorf("%w: handle create HANDLE --owner USER", errUsage)
		}
		// The service reads 0 as "the default"; on the command line 0 is
		// a number someone typed, and no handle can work with it.
		if *maxActive < 1 || *daily < 1 {
			return fmt.Errorf("%w: --max-active-runs and --daily-write-limit must be at least 1", errUsage)
		}
		svc, done, err := openService(ctx, &cfg)
		if err != nil {
			return err
		}
		defer done()
		h, err := svc.CreateHandle(ctx, pos[0], *owner, *maxActive, *daily)
		if err != nil {
			return describe(err)
		}
		fmt.Fprintf(stdout, "created handle %s (owner %s, max active runs %d, daily write limit %d)\n",
			h.Name, *owner, h.MaxActiveRuns, h.DailyWriteLimit)
		return nil
	case "add-member":
		role := fs.String("role", "", "viewer, developer, admin or owner (required)")
		pos, err := parseFlags(fs, args[1:], stderr)
		if err != nil {
			return err
		}
		if len(pos) != 2 || *role == "" {
			return fmt.Errorf("%w: handle add-member HANDLE USER --role ROLE", errUsage)
		}
		r, err := coderun.ParseRole(*role)
		if err != nil {
			return describe(err)
		}
		svc, done, err := openService(ctx, &cfg)
		if err != nil {
			return err
		}
		defer done()
		if err := svc.AddMember(ctx, pos[0], pos[1], r); err != nil {
			return describe(err)
		}
		fmt.Fprintf(stdout, "%s is now %s in %s\n", pos[1], r, pos[0])
		return nil
	}
	return fmt.Errorf("%w: unknown handle subcommand %q", errUsage, args[0])
}

func tokenCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: token needs a subcommand: create, revoke or jwt", errUsage)
	}
	var cfg config
	fs := flag.NewFlagSet("token "+args[0], flag.ContinueOnError)
	cfg.bindFlags(fs)
	switch args[0] {
	case "create":
		user := fs.String("user", "", "the user the token acts as (required)")
		handle := fs.String("handle", "", "the one handle the token may act on (required)")
		scopes := fs.String("scopes", "", "comma-separated scopes, or 'all' (required)")
		expires := fs.Duration("expires", 720*time.Hour, "lifetime")
		pos, err := parseFlags(fs, args[1:], stderr)
		if err != nil {
			return err
		}
		if len(pos) != 0 || *user == "" || *handle == "" || *scopes == "" {
			return fmt.Errorf("%w: token create --user USER --handle HANDLE --scopes s1,s2", errUsage)
		}
		sc, err := parseScopes(*scopes)
		if err != nil {
			return err
		}
		svc, done, err := openService(ctx, &cfg)
		if err != nil {
			return err
		}
		defer done()
		secret, tok, err := svc.CreateToken(ctx, *user, *handle, sc, *expires)
		if err != nil {
			return describe(err)
		}
		fmt.Fprintf(stderr, "coderun: token %s (%s…) for %s in %s, scopes %s, expires %s\n",
			tok.ID, tok.Prefix, tok.UserID, tok.Handle, coderun.JoinScopes(tok.Scopes, ","), tok.ExpiresAt.Format(time.RFC3339))
		fmt.Fprintln(stdout, secret)
		return nil
	case "revoke":
		pos, err := parseFlags(fs, args[1:], stderr)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: token revoke TOKEN_PREFIX_OR_ID", errUsage)
		}
		svc, done, err := openService(ctx, &cfg)
		if err != nil {
			return err
		}
		defer done()
		tok, err := svc.RevokeToken(ctx, pos[0])
		if err != nil {
			return describe(err)
		}
		fmt.Fprintf(stdout, "revoked token %s (%s…) of %s in %s\n", tok.ID, tok.Prefix, tok.UserID, tok.Handle)
		return nil
	case "jwt":
		sub := fs.String("sub", "", "the user the token acts as (required)")
		scopes := fs.String("scopes", "", "comma-separated scopes (default: no scope claim, i.e. every scope)")
		expires := fs.Duration("expires", time.Hour, "lifetime")
		pos, err := parseFlags(fs, args[1:], stderr)
		if err != nil {
			return err
		}
		if len(pos) != 0 || *sub == "" {
			return fmt.Errorf("%w: token jwt --sub USER [--scopes s1,s2] [--expires 1h]", errUsage)
		}
		var sc []coderun.Scope
		if *scopes != "" {
			if sc, err = parseScopes(*scopes); err != nil {
				return err
			}
		}
		if !cfg.hs256() {
			return fmt.Errorf("%w: HS256 tokens are off when CODERUN_JWT_PUBLIC_KEYS is set without CODERUN_JWT_SECRET; mint tokens with your own key", errUsage)
		}
		secret, err := cfg.jwtSecret()
		if err != nil {
			return err
		}
		tok, err := auth.SignHS256(secret, cfg.JWTIssuer, cfg.JWTAudience, *sub, sc, *expires, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
	return fmt.Errorf("%w: unknown token subcommand %q", errUsage, args[0])
}

func parseScopes(s string) ([]coderun.Scope, error) {
	if s == "all" {
		return coderun.AllScopes, nil
	}
	sc, err := coderun.ParseScopes(s)
	if err != nil {
		return nil, describe(err)
	}
	return sc, nil
}

// describe turns a domain error into the message an operator should read.
func describe(err error) error {
	if e := coderun.AsError(err); e != nil {
		msg := e.Message
		for _, f := range e.Fields {
			if f.Message != msg {
				msg += "; " + f.Message
			}
		}
		return fmt.Errorf("%s", msg)
	}
	return err
}
