package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// RegistryEnv names the loopback registry (host:port) tests push to;
// scripts/registry.sh start runs one on 127.0.0.1:5000.
const RegistryEnv = "CODERUN_TEST_REGISTRY"

// Docker returns a client for the Docker engine the tests run against (the one
// DOCKER_HOST names, or the local socket), closed at the end of the test.
func Docker(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		missingDockerService(t, fmt.Sprintf("Docker engine not reachable (%v)", err),
			"run make test, or start one with scripts/docker.sh start")
	}
	return cli
}

// Registry returns the address (host:port) of the loopback registry the tests
// push to, from CODERUN_TEST_REGISTRY (e.g. 127.0.0.1:5000), after checking that
// it answers. It needs the engine too, which pushes and pulls. Without that
// variable the test is skipped, or fails when CODERUN_TEST_REQUIRE_SERVICES=1.
func Registry(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(RegistryEnv)
	if addr == "" {
		missingDockerService(t, "registry not configured",
			"run make test, or scripts/registry.sh start and set "+RegistryEnv+"=127.0.0.1:5000")
	}
	Docker(t)
	if err := registryAnswers(addr); err != nil {
		t.Fatalf("%s=%s does not answer: %v (start it with scripts/registry.sh start %s)", RegistryEnv, addr, err, addr)
	}
	return addr
}

// StartRegistry starts a registry of the test's own on a free loopback port and
// returns its address and a function that stops it (also called at cleanup), for
// tests that need a registry to go away.
func StartRegistry(t testing.TB) (addr string, stop func()) {
	t.Helper()
	Docker(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr = l.Addr().String()
	l.Close()
	state := t.TempDir()
	script(t, []string{"CODERUN_STATE_DIR=" + state}, "registry.sh", "start", addr)
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			script(t, []string{"CODERUN_STATE_DIR=" + state}, "registry.sh", "stop", addr)
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

// BusyboxImage tags the demo busybox image (scripts/demo-image.sh) as ref and
// returns its image ID. The image is built under the script's own tag, which
// tests never remove, so the build cache stays warm however tests clean up.
func BusyboxImage(t testing.TB, ref string) string {
	t.Helper()
	cli := Docker(t)
	id := script(t, nil, "demo-image.sh")
	if _, err := cli.ImageTag(context.Background(), client.ImageTagOptions{Source: id, Target: ref}); err != nil {
		t.Fatalf("tag %s as %s: %v", id, ref, err)
	}
	return id
}

// PushImage pushes the local image ref to its (loopback) registry and returns
// the digest of the manifest the registry now serves for it.
func PushImage(t testing.TB, ref string) (digest string) {
	t.Helper()
	cli := Docker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Engines before API 1.42 refuse a push without X-Registry-Auth; the test
	// registries take anyone, so send empty credentials ("{}").
	resp, err := cli.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: "e30="})
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	// The engine tells the pushed manifest's digest in an aux message.
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		if msg.Error != nil {
			t.Fatalf("push %s: %s", ref, msg.Error.Message)
		}
		if msg.Aux != nil {
			var pushed struct{ Digest string }
			if err := json.Unmarshal(*msg.Aux, &pushed); err == nil && pushed.Digest != "" {
				digest = pushed.Digest
			}
		}
	}
	if digest == "" {
		t.Fatalf("push %s: the engine reported no manifest digest", ref)
	}
	return digest
}

// script runs one of the repository's scripts/ with extra environment and
// returns its trimmed stdout; its stderr (what it does) goes to the test log.
func script(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "scripts", name)
	cmd := exec.Command("bash", append([]string{path}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	t.Logf("%s %s:\n%s", name, strings.Join(args, " "), stderr.String())
	return strings.TrimSpace(string(out))
}

func registryAnswers(addr string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/v2/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v2/: %s", resp.Status)
	}
	return nil
}

// missingDockerService ends a test that needs a service that is not there:
// it fails when CODERUN_TEST_REQUIRE_SERVICES=1 (make test, CI), where a missing
// service is a broken setup, and is skipped otherwise, saying how to provide it.
func missingDockerService(t testing.TB, what, how string) {
	t.Helper()
	if os.Getenv(RequireServicesEnv) == "1" {
		t.Fatalf("%s, and %s=1: %s", what, RequireServicesEnv, how)
	}
	t.Skipf("%s: %s", what, how)
}

// PushedImage builds an image of its own (the demo busybox with a label no
// other image has), pushes it to the test registry and removes the engine's
// copy. It returns the image as a runtime names it (name:tag), the digest
// the registry serves for it, and the pin validation pulls (name@digest).
func PushedImage(t testing.TB) (image, digest, pin string) {
	t.Helper()
	script(t, nil, "demo-image.sh")
	tag := fmt.Sprintf("t%d", time.Now().UnixNano())
	name := Registry(t) + "/coderun-test/held"
	image = name + ":" + tag
	build := exec.Command("docker", "build", "--quiet", "--tag", image, "-")
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	build.Stdin = strings.NewReader("FROM coderun-demo/busybox:1\nLABEL coderun.test=" + tag + "\n")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	digest = PushImage(t, image)
	cli := Docker(t)
	img, err := cli.ImageInspect(context.Background(), image)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ImageRemove(context.Background(), image, client.ImageRemoveOptions{PruneChildren: true}); err != nil {
		t.Fatal(err)
	}
	// Whatever pulled it again and held it, the image is the test's alone.
	t.Cleanup(func() {
		cli.ImageRemove(context.Background(), img.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
	return image, digest, name + "@" + digest
}

// holdingEngine is an engine that holds the images it pulls (docker.Engine).
type holdingEngine interface {
	ReleaseImages(ctx context.Context, keep func(digest string) bool) ([]string, error)
	Close() error
}

// CloseEngine lets go of every image e holds, so that test engines leave no
// hold tags behind (an image is removed only when nothing else names it),
// and closes e.
func CloseEngine(e holdingEngine) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.ReleaseImages(ctx, func(string) bool { return false })
	e.Close()
}
