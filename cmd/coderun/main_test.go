package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/moby/moby/client"

	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/store"
)

// binary is the coderun binary built for these tests: they run it the way an
// operator does.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "coderun-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "coderun")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		panic("building coderun: " + err.Error())
	}
	// coderun finds coderun-init beside itself, as `make build` lays them out.
	init := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "coderun-init"), "../coderun-init")
	init.Env = append(os.Environ(), "CGO_ENABLED=0")
	init.Stdout, init.Stderr = os.Stderr, os.Stderr
	if err := init.Run(); err != nil {
		panic("building coderun-init: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// instance is one installation: a database and a data dir, shared by the
// commands and servers a test runs.
type instance struct {
	t    *testing.T
	env  []string
	addr string
}

func newInstance(t *testing.T, dbURL string) *instance {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Registered first, so it runs after the instance's processes have
	// stopped: the holds its servers put on images (the ones they pulled, and
	// local copies other tests' engines held meanwhile) go with it.
	t.Cleanup(func() { releaseHolds(t, dbURL) })
	return &instance{t: t, addr: addr, env: append(os.Environ(),
		"CODERUN_DATABASE_URL="+dbURL,
		"CODERUN_DATA_DIR="+t.TempDir(),
		"CODERUN_ADDR="+addr,
		"CODERUN_WORKER_LEASE=2s",
		"CODERUN_LOG_LEVEL=warn",
	)}
}

// releaseHolds lets go of every image the installation on dbURL holds, as a
// serve whose runtimes were all gone would.
func releaseHolds(t *testing.T, dbURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Errorf("release the installation's holds: %v", err)
		return
	}
	defer db.Close()
	id, err := db.InstallationID(ctx)
	if err != nil {
		return // never migrated: nothing ran, nothing is held
	}
	engine, err := docker.New(docker.WithInstance(id))
	if err != nil {
		t.Errorf("release the installation's holds: %v", err)
		return
	}
	testenv.CloseEngine(engine)
}

// cli runs a coderun command and returns its stdout; it fails the test if the
// command fails.
func (in *instance) cli(args ...string) string {
	in.t.Helper()
	out, errOut, err := in.run(args...)
	if err != nil {
		in.t.Fatalf("coderun %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return strings.TrimSpace(out)
}

func (in *instance) run(args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = in.env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// serve starts `coderun serve` and waits until it is ready.
func (in *instance) serve() *exec.Cmd {
	in.t.Helper()
	cmd := exec.Command(binary, "serve")
	cmd.Env = in.env
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	in.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + in.addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("coderun serve not ready after 30 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call sends a request with the token and decodes the JSON answer.
func (in *instance) call(method, path, token string, body any) (int, map[string]any) {
	in.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+in.addr+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

func containersOf(t *testing.T, cli *client.Client, runID string) int {
	list, err := cli.ContainerList(context.Background(), client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", "coderun.run-id="+runID),
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// A run survives its server's crash as a record: after SIGKILL and a restart
// the run is terminal and its container is gone.
func TestCrashRecovery(t *testing.T) {
	cli := testenv.Docker(t)
	digest := testenv.BusyboxImage(t, "coderun-demo/busybox:1")
	for name, url := range map[string]func(testing.TB) string{"sqlite": testenv.SQLiteURL, "postgres": testenv.PostgresURL} {
		t.Run(name, func(t *testing.T) {
			in := newInstance(t, url(t))
			in.cli("handle", "create", "acme", "--owner", "alice")
			token := in.cli("token", "create", "--user", "alice", "--handle", "acme", "--scopes", "all")
			server := in.serve()

			in.call("PUT", "/v2/handles/acme/code-runtimes/sh", token, map[string]any{
				"image": "coderun-demo/busybox:1", "digest": digest, "command": []string{"sh", "main.sh"}, "entrypointFile": "main.sh"})
			if _, rt := in.call("POST", "/v2/handles/acme/code-runtimes/sh/validate-image", token, nil); rt["validation"].(map[string]any)["status"] != "validated" {
				t.Fatalf("runtime %v", rt)
			}
			status, run := in.call("POST", "/v2/handles/acme/code-runs", token, map[string]any{"runtimeKey": "sh", "code": "echo started; sleep 120"})
			if status != 202 {
				t.Fatalf("submit: %d %v", status, run)
			}
			id := run["runId"].(string)
			path := "/v2/handles/acme/code-runs/" + id
			waitFor(t, 30*time.Second, "the run to start", func() bool {
				_, run := in.call("GET", path, token, nil)
				return run["status"] == "running"
			})

			if err := server.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			server.Wait()
			if n := containersOf(t, cli, id); n != 1 {
				t.Fatalf("after the crash the run has %d containers; the test needs the one left behind", n)
			}

			in.serve()
			waitFor(t, 60*time.Second, "the run to be recovered", func() bool {
				_, run = in.call("GET", path, token, nil)
				return run["status"] != "running"
			})
			if run["status"] != "errored" || run["error"].(map[string]any)["code"] != "worker_lost" {
				t.Fatalf("after recovery: %v", run)
			}
			waitFor(t, 30*time.Second, "the container to be removed", func() bool { return containersOf(t, cli, id) == 0 })
			// The recovered service runs new work.
			_, next := in.call("POST", "/v2/handles/acme/code-runs", token, map[string]any{"runtimeKey": "sh", "code": "echo ok"})
			waitFor(t, 30*time.Second, "a new run to succeed", func() bool {
				_, r := in.call("GET", "/v2/handles/acme/code-runs/"+next["runId"].(string), token, nil)
				return r["status"] == "succeeded"
			})
		})
	}
}

// Images validation pulled go once no runtime uses them: a server started
// after a runtime moved to another image removes the image it used before
// and runs from the new one.
func TestServeReleasesImagesNoRuntimeUses(t *testing.T) {
	cli := testenv.Docker(t)
	oldImage, oldDigest, oldPin := testenv.PushedImage(t)
	newImage, newDigest, newPin := testenv.PushedImage(t)
	in := newInstance(t, testenv.SQLiteURL(t))
	in.cli("handle", "create", "acme", "--owner", "alice")
	token := in.cli("token", "create", "--user", "alice", "--handle", "acme", "--scopes", "all")
	server := in.serve()
	use := func(image, digest string) {
		t.Helper()
		in.call("PUT", "/v2/handles/acme/code-runtimes/sh", token, map[string]any{
			"image": image, "digest": digest, "command": []string{"sh", "main.sh"}, "entrypointFile": "main.sh"})
		if _, rt := in.call("POST", "/v2/handles/acme/code-runtimes/sh/validate-image", token, nil); rt["validation"].(map[string]any)["status"] != "validated" {
			t.Fatalf("runtime %v", rt)
		}
	}
	use(oldImage, oldDigest)
	old, err := cli.ImageInspect(context.Background(), oldPin)
	if err != nil {
		t.Fatal(err)
	}
	use(newImage, newDigest)

	server.Process.Signal(syscall.SIGTERM)
	server.Wait()
	in.serve()
	waitFor(t, 30*time.Second, "the image no runtime uses to be removed", func() bool {
		_, err := cli.ImageInspect(context.Background(), old.ID)
		return err != nil
	})
	if _, err := cli.ImageInspect(context.Background(), newPin); err != nil {
		t.Fatalf("the image the runtime uses: %v", err)
	}
	_, run := in.call("POST", "/v2/handles/acme/code-runs", token, map[string]any{"runtimeKey": "sh", "code": "echo ok"})
	waitFor(t, 30*time.Second, "a run of the new image to succeed", func() bool {
		_, r := in.call("GET", "/v2/handles/acme/code-runs/"+run["runId"].(string), token, nil)
		return r["status"] == "succeeded"
	})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Each command refuses bad input with a clear message and a non-zero exit.
func TestCommandsRefuseBadInput(t *testing.T) {
	in := newInstance(t, testenv.SQLiteURL(t))
	in.cli("handle", "create", "acme", "--owner", "alice")
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"handle", "create", "acme", "--owner", "bob"}, "already exists"},
		{[]string{"handle", "create", "Bad Name", "--owner", "bob"}, "handle must match"},
		{[]string{"handle", "create", "x"}, "handle create HANDLE --owner USER"},
		{[]string{"handle", "create", "zero", "--owner", "bob", "--max-active-runs", "0"}, "must be at least 1"},
		{[]string{"handle", "add-member", "acme", "bob", "--role", "emperor"}, `unknown role "emperor"`},
		{[]string{"handle", "add-member", "nope", "bob", "--role", "viewer"}, `handle "nope" not found`},
		{[]string{"token", "create", "--user", "alice", "--handle", "acme", "--scopes", "runs:fly"}, `unknown scope "runs:fly"`},
		{[]string{"token", "create", "--user", "mallory", "--handle", "acme", "--scopes", "all"}, "not a member"},
		{[]string{"token", "revoke", "crp_nothing"}, "no access token"},
		{[]string{"token", "jwt"}, "token jwt --sub USER"},
		{[]string{"serve", "--worker-slots", "many"}, "invalid value"},
		{[]string{"serve", "--trusted-proxies", "10.0.0.0/8,lb"}, `"lb" is not an address or CIDR`},
		{[]string{"worker"}, "only through PostgreSQL"},
	} {
		stdout, stderr, err := in.run(c.args...)
		if err == nil {
			t.Errorf("coderun %v succeeded: %s", c.args, stdout)
			continue
		}
		if !strings.Contains(stderr, c.want) {
			t.Errorf("coderun %v said %q; want it to say %q", c.args, stderr, c.want)
		}
	}
	// A worker refused for its database opens none: none is left behind.
	dataDir := t.TempDir()
	worker := exec.Command(binary, "worker")
	worker.Env = append(os.Environ(), "CODERUN_DATABASE_URL=", "CODERUN_DATA_DIR="+dataDir)
	if out, err := worker.CombinedOutput(); err == nil || !strings.Contains(string(out), "only through PostgreSQL") {
		t.Errorf("coderun worker on the default database: %v %s", err, out)
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) > 0 {
		t.Errorf("a refused worker left %s in its data dir", entries[0].Name())
	}
	// A good token works, then a revoked one does not.
	token := in.cli("token", "create", "--user", "alice", "--handle", "acme", "--scopes", "runtimes:read")
	in.serve()
	if status, _ := in.call("GET", "/v2/handles/acme/code-runtimes", token, nil); status != 200 {
		t.Fatalf("fresh token: %d", status)
	}
	in.cli("token", "revoke", token[:12])
	if status, p := in.call("GET", "/v2/handles/acme/code-runtimes", token, nil); status != 401 {
		t.Fatalf("revoked token: %d %v", status, p)
	}
	jwt := in.cli("token", "jwt", "--sub", "alice")
	if status, _ := in.call("GET", "/v2/handles/acme/code-runtimes", jwt, nil); status != 200 {
		t.Fatalf("JWT from token jwt: %d", status)
	}
	if out := in.cli("version"); !strings.HasPrefix(out, "coderun ") {
		t.Fatalf("version: %q", out)
	}
}

// start starts a coderun command that runs until the test ends.
func (in *instance) start(env []string, args ...string) *exec.Cmd {
	in.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append([]string{}, in.env...), env...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	in.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	return cmd
}

// An API process without a worker and a worker process share PostgreSQL: a
// subscriber on the API process sees the worker's output as it is written.
func TestSubscriberSeesAnotherProcesssWorker(t *testing.T) {
	testenv.Docker(t)
	digest := testenv.BusyboxImage(t, "coderun-demo/busybox:1")
	in := newInstance(t, testenv.PostgresURL(t))
	in.cli("handle", "create", "acme", "--owner", "alice")
	token := in.cli("token", "create", "--user", "alice", "--handle", "acme", "--scopes", "all")
	in.start([]string{"CODERUN_WORKER_SLOTS=0"}, "serve")
	waitFor(t, 30*time.Second, "the API to be ready", func() bool {
		res, err := http.Get("http://" + in.addr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	in.start([]string{"CODERUN_WORKER_SLOTS=2"}, "worker")

	in.call("PUT", "/v2/handles/acme/code-runtimes/sh", token, map[string]any{
		"image": "coderun-demo/busybox:1", "digest": digest, "command": []string{"sh", "main.sh"}, "entrypointFile": "main.sh"})
	in.call("POST", "/v2/handles/acme/code-runtimes/sh/validate-image", token, nil)
	_, run := in.call("POST", "/v2/handles/acme/code-runs", token, map[string]any{
		"runtimeKey": "sh", "code": `for i in $(seq 1 20); do echo "line $i"; sleep 0.1; done`})
	id, _ := run["runId"].(string)
	if id == "" {
		t.Fatalf("submit: %v", run)
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+in.addr+"/graphql", http.Header{"Sec-WebSocket-Protocol": {"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	send := func(v any) {
		if err := ws.WriteJSON(v); err != nil {
			t.Fatal(err)
		}
	}
	send(map[string]any{"type": "connection_init", "payload": map[string]string{"Authorization": "Bearer " + token}})
	send(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{
		"query":     `subscription($id: String!) { codeRunOutput(handle: "acme", runId: $id, afterSeq: 0) { seq data } }`,
		"variables": map[string]any{"id": id}}})
	var lines strings.Builder
	liveBeforeEnd := false
	ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		var m struct {
			ID      string          `json:"id"`
			Type    string          `json:"type"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("reading the subscription: %v (so far %q)", err, lines.String())
		}
		if m.Type == "complete" {
			break
		}
		if m.Type != "next" {
			continue
		}
		var p struct {
			Data struct {
				CodeRunOutput struct{ Data string } `json:"codeRunOutput"`
			} `json:"data"`
			Errors []json.RawMessage `json:"errors"`
		}
		json.Unmarshal(m.Payload, &p)
		if len(p.Errors) > 0 {
			t.Fatalf("subscription error: %s", p.Errors[0])
		}
		lines.WriteString(p.Data.CodeRunOutput.Data)
		if !liveBeforeEnd && strings.Contains(lines.String(), "line 3\n") {
			_, r := in.call("GET", "/v2/handles/acme/code-runs/"+id, token, nil)
			liveBeforeEnd = r["status"] == "running"
		}
	}
	var want strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if lines.String() != want.String() {
		t.Fatalf("the subscriber got %q", lines.String())
	}
	if !liveBeforeEnd {
		t.Fatal("the output did not arrive while the run was running")
	}
}

// With public keys configured and no secret, HS256 is off: the generated
// development secret can mint nothing the server accepts.
func TestPublicKeysWithoutASecretTurnHS256Off(t *testing.T) {
	in := newInstance(t, testenv.SQLiteURL(t))
	in.cli("handle", "create", "acme", "--owner", "alice")
	devJWT := in.cli("token", "jwt", "--sub", "alice") // the data dir's secret, before keys
	keys, _ := testenv.Ed25519Keys(t)
	in.env = append(in.env, "CODERUN_JWT_PUBLIC_KEYS="+keys)
	if _, stderr, err := in.run("token", "jwt", "--sub", "alice"); err == nil || !strings.Contains(stderr, "HS256 tokens are off") {
		t.Fatalf("token jwt with public keys and no secret: %v %q", err, stderr)
	}
	in.serve()
	if status, _ := in.call("GET", "/v2/handles/acme/code-runtimes", devJWT, nil); status != 401 {
		t.Fatalf("an HS256 token with only public keys configured: %d, want 401", status)
	}
}
