package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	initOnce sync.Once
	initPath string
	initErr  error
)

// Init returns the path of a coderun-init binary, built once per test
// process (static, as sandboxes need it): what docker.WithInit takes. Every
// test process builds into the same place, each replacing the last one's
// binary at once (a rename), so runs leave one binary behind, not one each.
func Init(t testing.TB) string {
	t.Helper()
	initOnce.Do(func() { initPath, initErr = buildInit() })
	if initErr != nil {
		t.Fatalf("build coderun-init: %v", initErr)
	}
	return initPath
}

func buildInit() (string, error) {
	dir := filepath.Join(os.TempDir(), "coderun-test-init")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".build-")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // a failed build's leftovers
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp.Name(), "github.com/gharart/coderun/cmd/coderun-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &buildError{err: err, out: string(out)}
	}
	path := filepath.Join(dir, "coderun-init")
	return path, os.Rename(tmp.Name(), path)
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }
