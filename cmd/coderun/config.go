package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gharart/coderun/auth"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/worker"
)

// config is the service's configuration: flags win over CODERUN_* variables,
// which win over the defaults (CONTRACT.md "Command line and configuration").
type config struct {
	Addr          string
	DatabaseURL   string
	DataDir       string
	JWTSecret     string
	JWTPublicKeys string
	JWTIssuer     string
	JWTAudience   string
	WorkerSlots   int
	WorkerLease   time.Duration
	MaxBodyBytes  int64
	AllowNetwork  bool
	ReleaseImages bool
	ImagePrefixes string
	InitBinary    string
	Introspection bool
	Throttles     rest.Throttles
	// TrustedProxies are the addresses whose X-Forwarded-For names the client.
	TrustedProxies prefixesFlag
	LogFormat      string
	LogLevel       string
}

// bindFlags registers the configuration flags on fs, defaulting each to its
// environment variable.
func (c *config) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", env("CODERUN_ADDR", "127.0.0.1:8080"), "listen address (CODERUN_ADDR)")
	fs.StringVar(&c.DatabaseURL, "database-url", env("CODERUN_DATABASE_URL", ""), "postgres://… or sqlite://PATH (CODERUN_DATABASE_URL; default sqlite://DATA_DIR/coderun.db)")
	fs.StringVar(&c.DataDir, "data-dir", env("CODERUN_DATA_DIR", "./data"), "directory for the embedded database and generated secrets (CODERUN_DATA_DIR)")
	fs.StringVar(&c.JWTSecret, "jwt-secret", env("CODERUN_JWT_SECRET", ""), "HS256 secret (CODERUN_JWT_SECRET; generated into the data dir when unset)")
	fs.StringVar(&c.JWTPublicKeys, "jwt-public-keys", env("CODERUN_JWT_PUBLIC_KEYS", ""), "file of PEM public keys for RS256/EdDSA (CODERUN_JWT_PUBLIC_KEYS)")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", env("CODERUN_JWT_ISSUER", "coderun"), "required JWT iss (CODERUN_JWT_ISSUER)")
	fs.StringVar(&c.JWTAudience, "jwt-audience", env("CODERUN_JWT_AUDIENCE", "coderun"), "required JWT aud (CODERUN_JWT_AUDIENCE)")
	fs.IntVar(&c.WorkerSlots, "worker-slots", envInt("CODERUN_WORKER_SLOTS", runtime.NumCPU()), "runs executed at once by this process; 0 = no in-process worker (CODERUN_WORKER_SLOTS)")
	fs.DurationVar(&c.WorkerLease, "worker-lease", envDuration("CODERUN_WORKER_LEASE", 15*time.Second), "how long a worker's claim on a run lasts without renewal; a crashed worker's runs are recovered after it (CODERUN_WORKER_LEASE)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", int64(envInt("CODERUN_MAX_BODY_BYTES", 1<<20)), "largest request body accepted (CODERUN_MAX_BODY_BYTES)")
	fs.BoolVar(&c.AllowNetwork, "allow-network", envBool("CODERUN_ALLOW_NETWORK", false), "let runtimes ask for a network (CODERUN_ALLOW_NETWORK)")
	fs.BoolVar(&c.ReleaseImages, "release-images", envBool("CODERUN_RELEASE_IMAGES", true), "at start and hourly, remove the images validation pulled that no runtime or unfinished run uses any more (CODERUN_RELEASE_IMAGES)")
	fs.StringVar(&c.ImagePrefixes, "image-prefixes", env("CODERUN_IMAGE_PREFIXES", ""), "repositories runtimes may use, comma-separated, {handle} standing for the handle, e.g. registry.example.com/{handle}/ (CODERUN_IMAGE_PREFIXES; default any)")
	fs.StringVar(&c.InitBinary, "init", env("CODERUN_INIT", ""), "the coderun-init binary every sandbox starts with (CODERUN_INIT; default: coderun-init beside this binary)")
	fs.BoolVar(&c.Introspection, "graphql-introspection", envBool("CODERUN_GRAPHQL_INTROSPECTION", true), "serve GraphQL introspection (CODERUN_GRAPHQL_INTROSPECTION)")
	c.Throttles = rest.DefaultThrottles
	for _, t := range []struct {
		name string
		rate *rest.Rate
		what string
	}{
		{"read", &c.Throttles.Read, "GET requests"},
		{"write", &c.Throttles.Write, "PUT and POST requests"},
		{"graphql", &c.Throttles.GraphQL, "GraphQL requests"},
		{"auth-failure", &c.Throttles.AuthFailure, "failed authentications per client address"},
	} {
		env := "CODERUN_RATE_" + strings.ToUpper(strings.ReplaceAll(t.name, "-", "_"))
		if v := os.Getenv(env); v != "" {
			if err := (*rateFlag)(t.rate).Set(v); err != nil {
				envErrors = append(envErrors, fmt.Errorf("%s=%q: %v", env, v, err))
			}
		}
		fs.Var((*rateFlag)(t.rate), "rate-"+t.name, fmt.Sprintf("per-caller limit on %s, PER_SECOND:BURST (%s)", t.what, env))
	}
	if v := os.Getenv("CODERUN_TRUSTED_PROXIES"); v != "" {
		if err := c.TrustedProxies.Set(v); err != nil {
			envErrors = append(envErrors, fmt.Errorf("CODERUN_TRUSTED_PROXIES=%q: %v", v, err))
		}
	}
	fs.Var(&c.TrustedProxies, "trusted-proxies", "addresses or CIDRs of load balancers whose X-Forwarded-For names the client, comma-separated (CODERUN_TRUSTED_PROXIES)")
	fs.StringVar(&c.LogFormat, "log-format", env("CODERUN_LOG_FORMAT", "text"), "text or json (CODERUN_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", env("CODERUN_LOG_LEVEL", "info"), "debug, info, warn or error (CODERUN_LOG_LEVEL)")
}

// databaseURL is the configured database, or the embedded default.
func (c *config) databaseURL() string {
	if c.DatabaseURL != "" {
		return c.DatabaseURL
	}
	return "sqlite://" + filepath.Join(c.DataDir, "coderun.db")
}

// jwtConfig returns the JWT verification settings. Without a configured secret
// a random one is generated once and kept in the data dir, so that tokens
// minted by `coderun token jwt` keep working across restarts: the development
// setup. An installation that configures public keys and no secret verifies
// RS256/EdDSA only, so that whoever reads the data dir cannot mint tokens.
func (c *config) jwtConfig() (auth.JWTConfig, error) {
	cfg := auth.JWTConfig{Issuer: c.JWTIssuer, Audience: c.JWTAudience}
	var err error
	if c.hs256() {
		if cfg.HS256Secret, err = c.jwtSecret(); err != nil {
			return cfg, err
		}
	}
	if c.JWTPublicKeys != "" {
		if cfg.PublicKeys, err = auth.LoadPublicKeys(c.JWTPublicKeys); err != nil {
			return cfg, err
		}
	}
	return cfg, cfg.Validate()
}

// hs256 reports whether HS256 tokens are verified: with a configured secret,
// or with no public keys (the generated development secret).
func (c *config) hs256() bool { return c.JWTSecret != "" || c.JWTPublicKeys == "" }

func (c *config) jwtSecret() ([]byte, error) {
	if c.JWTSecret != "" {
		return []byte(c.JWTSecret), nil
	}
	path := filepath.Join(c.DataDir, "jwt-secret")
	b, err := os.ReadFile(path)
	if err == nil {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read the JWT secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	secret := hex.EncodeToString(raw)
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the data dir: %w", err)
	}
	// O_EXCL: if another process wrote one meanwhile, use theirs.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return c.jwtSecret()
	}
	if err != nil {
		return nil, fmt.Errorf("store the JWT secret: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(secret + "\n"); err != nil {
		return nil, fmt.Errorf("store the JWT secret: %w", err)
	}
	return []byte(secret), nil
}

func (c *config) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("bad log level %q: want debug, info, warn or error", c.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("bad log format %q: want text or json", c.LogFormat)
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// envErrors collects environment variables that hold no valid value; commands
// refuse to start while there are any.
var envErrors []error

func envInt(name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		envErrors = append(envErrors, fmt.Errorf("%s=%q is not a whole number", name, v))
		return def
	}
	return n
}

func envDuration(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		envErrors = append(envErrors, fmt.Errorf("%s=%q is not a positive duration (e.g. 15s)", name, v))
		return def
	}
	return d
}

func envBool(name string, def bool) bool {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		envErrors = append(envErrors, fmt.Errorf("%s=%q is not true or false", name, v))
		return def
	}
	return b
}

func (c *config) workerOptions(log *slog.Logger) worker.Options {
	return worker.Options{Slots: c.WorkerSlots, Lease: c.WorkerLease, Logger: log}
}

// initBinary is the coderun-init to give the engine: the configured one, or
// the one beside this binary (`make build` puts them together).
func (c *config) initBinary() (string, error) {
	if c.InitBinary != "" {
		return c.InitBinary, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find coderun-init: %w", err)
	}
	path := filepath.Join(filepath.Dir(self), "coderun-init")
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("coderun-init is not beside %s: build it with make build, or name it with CODERUN_INIT", self)
	}
	return path, nil
}

// imagePrefixes is CODERUN_IMAGE_PREFIXES as a list.
func (c *config) imagePrefixes() []string {
	var out []string
	for _, p := range strings.Split(c.ImagePrefixes, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// prefixesFlag reads addresses and CIDRs separated by commas, e.g.
// 10.0.0.0/8,192.0.2.7.
type prefixesFlag []netip.Prefix

func (p *prefixesFlag) String() string {
	var parts []string
	for _, x := range *p {
		parts = append(parts, x.String())
	}
	return strings.Join(parts, ",")
}

func (p *prefixesFlag) Set(v string) error {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return fmt.Errorf("%q is not an address or CIDR", f)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		pr, err := netip.ParsePrefix(f)
		if err != nil {
			return fmt.Errorf("%q is not an address or CIDR", f)
		}
		out = append(out, pr.Masked())
	}
	*p = out
	return nil
}

// rateFlag reads a rest.Rate written PER_SECOND:BURST, e.g. 20:100.
type rateFlag rest.Rate

func (r *rateFlag) String() string {
	return fmt.Sprintf("%g:%d", r.PerSecond, r.Burst)
}

func (r *rateFlag) Set(v string) error {
	per, burst, ok := strings.Cut(v, ":")
	p, err1 := strconv.ParseFloat(per, 64)
	b, err2 := strconv.Atoi(burst)
	if !ok || err1 != nil || err2 != nil || p <= 0 || b < 1 {
		return fmt.Errorf("want PER_SECOND:BURST with both positive, e.g. 20:100")
	}
	*r = rateFlag{PerSecond: p, Burst: b}
	return nil
}
