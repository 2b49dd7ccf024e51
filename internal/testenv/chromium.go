package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// ChromiumEnv names the browser binary for browser tests when it is not
// Debian's chromium on PATH.
const ChromiumEnv = "CODERUN_TEST_CHROMIUM"

// Chromium returns the path of the Chromium (or Chrome) binary browser tests
// drive headless: CODERUN_TEST_CHROMIUM, or chromium on PATH. Without one the
// test is skipped, or fails when CODERUN_TEST_REQUIRE_SERVICES=1.
func Chromium(t testing.TB) string {
	t.Helper()
	if path := os.Getenv(ChromiumEnv); path != "" {
		if _, err := exec.LookPath(path); err != nil {
			t.Fatalf("%s=%s: %v", ChromiumEnv, path, err)
		}
		return path
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		missingDockerService(t, "chromium not found",
			"run make test, or scripts/chromium.sh to install Debian's chromium, or set "+ChromiumEnv)
	}
	return path
}
