// Command coderun is the code-runtime service: its API server, its database
// migrations, and the operator's commands for handles and tokens.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gharart/coderun"
)

const usage = `coderun — run code in locked-down containers, pinned by digest.

Usage:
  coderun serve                 API server and an in-process worker (migrates the database first)
  coderun worker                a worker alone, sharing runs with serve through PostgreSQL
  coderun migrate               apply database migrations and exit
  coderun handle create HANDLE --owner USER [--max-active-runs N] [--daily-write-limit N]
  coderun handle add-member HANDLE USER --role viewer|developer|admin|owner
  coderun token create --user USER --handle HANDLE --scopes s1,s2 [--expires 720h]
  coderun token revoke TOKEN_PREFIX_OR_ID
  coderun token jwt --sub USER [--scopes s1,s2] [--expires 1h]
  coderun version

Every command takes the configuration flags (run 'coderun serve -h' to list
them); each flag defaults to its CODERUN_* environment variable.
`

// errUsage marks an error whose message is about how the command was called.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "coderun: %v\n", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, "\n"+usage)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command given", errUsage)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, stderr)
	case "worker":
		return work(ctx, rest, stderr)
	case "migrate":
		return migrate(ctx, rest, stderr)
	case "handle":
		return handleCommand(ctx, rest, stdout, stderr)
	case "token":
		return tokenCommand(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "coderun", coderun.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

// parseFlags parses args with the configuration flags and the command's own,
// allowing flags before and after positional arguments.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	fs.SetOutput(stderr)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if len(envErrors) > 0 {
		return nil, errors.Join(envErrors...)
	}
	return positional, nil
}
