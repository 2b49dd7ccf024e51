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
// process (static, as sandboxes need it): what docker.WithInit takes.
func Init(t testing.TB) string {
	t.Helper()
	initOnce.Do(func() {
		dir, err := os.MkdirTemp("", "coderun-init-")
		if err != nil {
			initErr = err
			return
		}
		initPath = filepath.Join(dir, "coderun-init")
		cmd := exec.Command("go", "build", "-trimpath", "-o", initPath, "github.com/gharart/coderun/cmd/coderun-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initErr = &buildError{err: err, out: string(out)}
		}
	})
	if initErr != nil {
		t.Fatalf("build coderun-init: %v", initErr)
	}
	return initPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }
