package rest_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/worker"
)

// runStack is a stack with a worker and a validated busybox runtime "sh" in
// handle acme, whose owner is alice.
type runStack struct {
	*stack
	tok    string
	engine *docker.Engine
	docker *client.Client
}

const demoImage = "coderun-demo/busybox:1"

func newRunStack(t *testing.T, dbURL string) *runStack {
	return newRunStackWith(t, dbURL, 4, coderun.DefaultMaxActiveRuns)
}

// newRunStackWith has a worker with slots slots (none when 0), and a limit of
// maxActive active runs on acme.
func newRunStackWith(t *testing.T, dbURL string, slots, maxActive int) *runStack {
	t.Helper()
	cli := testenv.Docker(t)
	id := testenv.BusyboxImage(t, demoImage)
	engine, err := docker.New(docker.WithInstance("test-"+strings.ToLower(ulid.Make().String())), docker.WithInit(testenv.Init(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.CloseEngine(engine) })
	s := &runStack{stack: newStack(t, dbURL, engine), engine: engine, docker: cli}
	if slots > 0 {
		s.startWorker(t, slots)
	}
	if _, err := s.svc.CreateHandle(context.Background(), "acme", "alice", maxActive, 0); err != nil {
		t.Fatal(err)
	}
	s.tok = s.userJWT("alice")
	s.runtime("sh", demoImage, id)
	return s
}

// startWorker runs a worker over the stack's database until the test ends.
func (s *runStack) startWorker(t *testing.T, slots int) {
	w := worker.New(s.db, s.engine, worker.Options{Slots: slots, Lease: 3 * time.Second, Poll: 50 * time.Millisecond, Events: s.events, Logger: quietLog})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// runtime registers and validates a busybox runtime that runs main.sh.
func (s *runStack) runtime(key, image, digest string) {
	s.t.Helper()
	path := "/v2/handles/acme/code-runtimes/" + key
	body := map[string]any{"image": image, "digest": digest, "command": []string{"sh", "main.sh"}, "entrypointFile": "main.sh",
		"limits": map[string]any{"timeoutSeconds": 20, "memoryMiB": 64, "pids": 32, "outputBytes": 65536}}
	if r := s.do("PUT", path, s.tok, body); r.status >= 300 {
		s.t.Fatalf("PUT runtime: %d %s", r.status, r.body)
	}
	if v := s.do("POST", path+"/validate-image", s.tok, nil).json(s.t)["validation"].(map[string]any); v["status"] != "validated" {
		s.t.Fatalf("runtime %s did not validate: %v", key, v)
	}
}

// submit posts a run and returns its id.
func (s *runStack) submit(body map[string]any) string {
	s.t.Helper()
	if body["runtimeKey"] == nil {
		body["runtimeKey"] = "sh"
	}
	r := s.do("POST", "/v2/handles/acme/code-runs", s.tok, body)
	if r.status != 202 {
		s.t.Fatalf("submit: %d %s", r.status, r.body)
	}
	run := r.json(s.t)
	if r.header.Get("Location") != "/v2/handles/acme/code-runs/"+run["runId"].(string) || run["status"] != "queued" {
		s.t.Fatalf("submit answered %v, Location %q", run, r.header.Get("Location"))
	}
	return run["runId"].(string)
}

// wait polls a run until it is terminal.
func (s *runStack) wait(id string) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		run := s.do("GET", "/v2/handles/acme/code-runs/"+id, s.tok, nil).json(s.t)
		if coderun.RunStatus(run["status"].(string)).Terminal() {
			s.noContainer(id)
			return run
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("run %s still %v after 60 s", id, run["status"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitStatus polls a run until it reaches status.
func (s *runStack) waitStatus(id string, status coderun.RunStatus) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.do("GET", "/v2/handles/acme/code-runs/"+id, s.tok, nil).json(s.t)["status"] != string(status) {
		if time.Now().After(deadline) {
			s.t.Fatalf("run %s never %s", id, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noContainer asserts the engine has no container of run id (soon: the
// worker removes it right after recording the end).
func (s *runStack) noContainer(id string) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := s.docker.ContainerList(context.Background(), client.ContainerListOptions{
			All: true, Filters: make(client.Filters).Add("label", "coderun.run-id="+id),
		})
		if err != nil {
			s.t.Fatal(err)
		}
		if len(list.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("run %s left %d containers", id, len(list.Items))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *runStack) output(id string) map[string]any {
	s.t.Helper()
	r := s.do("GET", "/v2/handles/acme/code-runs/"+id+"/output", s.tok, nil)
	if r.status != 200 {
		s.t.Fatalf("output: %d %s", r.status, r.body)
	}
	return r.json(s.t)
}

func transitions(run map[string]any) string {
	var ss []string
	for _, t := range run["transitions"].([]any) {
		ss = append(ss, t.(map[string]any)["status"].(string))
	}
	return strings.Join(ss, ",")
}

func TestRunsEndToEnd(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newRunStack(t, dbURL)

		t.Run("hello world succeeds with exact output and ordered transitions", func(t *testing.T) {
			id := s.submit(map[string]any{"code": "echo hello; echo oops >&2", "labels": map[string]string{"campaign": "spring"}})
			run := s.wait(id)
			if run["status"] != "succeeded" || run["exitCode"] != 0.0 || run["error"] != nil {
				t.Fatalf("run %v", run)
			}
			if got := transitions(run); got != "queued,starting,running,succeeded" {
				t.Fatalf("transitions %s", got)
			}
			if run["labels"].(map[string]any)["campaign"] != "spring" || run["startedAt"] == nil || run["durationMs"] == nil {
				t.Fatalf("run %v", run)
			}
			out := s.output(id)
			if out["stdout"] != "hello\n" || out["stderr"] != "oops\n" || out["complete"] != true || out["encoding"] != "utf8" {
				t.Fatalf("output %v", out)
			}
			o := run["output"].(map[string]any)
			if o["stdoutBytes"] != 6.0 || o["stderrBytes"] != 5.0 || o["truncated"] != false {
				t.Fatalf("output summary %v", o)
			}
			var at time.Time
			for _, tr := range run["transitions"].([]any) {
				next, _ := time.Parse(time.RFC3339Nano, tr.(map[string]any)["at"].(string))
				if next.Before(at) {
					t.Fatalf("transitions out of time order: %v", run["transitions"])
				}
				at = next
			}
		})

		t.Run("a non-zero exit fails with its code", func(t *testing.T) {
			run := s.wait(s.submit(map[string]any{"code": "exit 3"}))
			if run["status"] != "failed" || run["exitCode"] != 3.0 {
				t.Fatalf("run %v", run)
			}
		})

		t.Run("stdin, files and args reach the program", func(t *testing.T) {
			id := s.submit(map[string]any{
				"code":  `read line; echo "in=$line"; cat lib/util.txt; echo "args=$*"; echo "env=$GREETING"`,
				"stdin": "from stdin\n",
				"files": []map[string]any{{"path": "lib/util.txt", "content": base64.StdEncoding.EncodeToString([]byte("from a file\n")), "encoding": "base64"}},
				"args":  []string{"--x", "two words"},
				"env":   map[string]string{"GREETING": "hi"},
			})
			run := s.wait(id)
			if out := s.output(id); run["status"] != "succeeded" || out["stdout"] != "in=from stdin\nfrom a file\nargs=--x two words\nenv=hi\n" {
				t.Fatalf("run %v, output %v", run["status"], out)
			}
		})

		t.Run("non-UTF-8 output comes back as base64", func(t *testing.T) {
			id := s.submit(map[string]any{"code": `printf '\377\376ok'`})
			s.wait(id)
			out := s.output(id)
			if out["encoding"] != "base64" {
				t.Fatalf("output %v", out)
			}
			if b, _ := base64.StdEncoding.DecodeString(out["stdout"].(string)); string(b) != "\xff\xfeok" {
				t.Fatalf("stdout %q", b)
			}
		})

		t.Run("output chunks after a sequence number", func(t *testing.T) {
			id := s.submit(map[string]any{"code": `echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c`})
			s.wait(id)
			r := s.do("GET", "/v2/handles/acme/code-runs/"+id+"/output?afterSeq=0", s.tok, nil).json(t)
			chunks := r["chunks"].([]any)
			var text []string
			for i, c := range chunks {
				c := c.(map[string]any)
				if c["seq"] != float64(i+1) {
					t.Fatalf("chunk %d has seq %v", i, c["seq"])
				}
				text = append(text, c["stream"].(string)+":"+c["data"].(string))
			}
			if strings.Join(text, "") != "stdout:a\nstderr:b\nstdout:c\n" || r["complete"] != true || r["nextSeq"] != float64(len(chunks)) {
				t.Fatalf("page %v", r)
			}
			rest := s.do("GET", fmt.Sprintf("/v2/handles/acme/code-runs/%s/output?afterSeq=%d", id, len(chunks)-1), s.tok, nil).json(t)
			if n := len(rest["chunks"].([]any)); n != 1 {
				t.Fatalf("after seq %d: %d chunks", len(chunks)-1, n)
			}
		})

		t.Run("cancel a running run", func(t *testing.T) {
			id := s.submit(map[string]any{"code": "echo started; sleep 30"})
			s.waitStatus(id, coderun.RunRunning)
			cancel := func() response {
				t.Helper()
				r, err := s.send("POST", "/v2/handles/acme/code-runs/"+id+"/cancel", s.tok, nil, withKey("cancel-"+id))
				if err != nil || r.status != 202 {
					t.Fatalf("cancel: %v %d %s", err, r.status, r.body)
				}
				return r
			}
			first := cancel()
			// The answer waited for the run to stop.
			if run := first.json(t); run["status"] != "cancelled" || transitions(run) != "queued,starting,running,cancelled" {
				t.Fatalf("the cancel's answer: %v", run)
			}
			run := s.wait(id)
			if run["status"] != "cancelled" || transitions(run) != "queued,starting,running,cancelled" {
				t.Fatalf("run %v", run)
			}
			// A retry gets that answer again, not the run as the cancel's
			// transaction left it (running, with a cancel requested).
			if again := cancel(); again.header.Get("Idempotent-Replayed") != "true" || string(again.body) != string(first.body) {
				t.Fatalf("replayed cancel: %q %s, want %s", again.header.Get("Idempotent-Replayed"), again.body, first.body)
			}
			if r := s.do("POST", "/v2/handles/acme/code-runs/"+id+"/cancel", s.tok, nil); r.status != 202 {
				t.Fatalf("a repeated cancel: %d %s", r.status, r.body)
			}
			done := s.wait(s.submit(map[string]any{"code": "true"}))["runId"].(string)
			expectProblem(t, s.do("POST", "/v2/handles/acme/code-runs/"+done+"/cancel", s.tok, nil), 409, "run_already_finished")
		})
	})
}

func TestRunSandbox(t *testing.T) {
	s := newRunStack(t, testenv.SQLiteURL(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hostPort := ln.Addr().(*net.TCPAddr).Port

	for _, c := range []struct {
		name, code string
		status     coderun.RunStatus
		errCode    string
		check      func(t *testing.T, run, out map[string]any)
	}{
		{name: "not root", code: "id -u", status: coderun.RunSucceeded, check: func(t *testing.T, _, out map[string]any) {
			if out["stdout"] == "0\n" || out["stdout"] == "" {
				t.Fatalf("uid %q", out["stdout"])
			}
		}},
		{name: "the root filesystem is read-only; /tmp and /workspace are writable", status: coderun.RunSucceeded,
			code: "if touch /etc/x 2>/dev/null || touch /x 2>/dev/null; then echo WRITABLE; fi; echo a > /tmp/a && echo b > /workspace/b && cat /tmp/a /workspace/b",
			check: func(t *testing.T, _, out map[string]any) {
				if out["stdout"] != "a\nb\n" {
					t.Fatalf("stdout %q", out["stdout"])
				}
			}},
		{name: "no network", status: coderun.RunSucceeded,
			code: fmt.Sprintf("nc -w 2 127.0.0.1 %d </dev/null && echo CONNECTED; ls /sys/class/net", hostPort),
			check: func(t *testing.T, _, out map[string]any) {
				if out["stdout"] != "lo\n" {
					t.Fatalf("stdout %q", out["stdout"])
				}
			}},
		// The bomb runs out of pids and the run ends, whether or not the
		// shell itself could still fork the last sleep.
		{name: "a fork bomb is contained", code: "bomb() { bomb | bomb & }; bomb; sleep 1",
			check: func(t *testing.T, run, out map[string]any) {
				if st := run["status"]; st != "succeeded" && st != "failed" {
					t.Fatalf("status %v", st)
				}
				if !strings.Contains(out["stderr"].(string), "can't fork") {
					t.Fatalf("stderr %q", out["stderr"])
				}
			}},
		{name: "a memory bomb is killed", code: `x=a; while true; do x="$x$x"; done`, status: coderun.RunFailed, errCode: coderun.ErrOOMKilled},
		{name: "endless output stops at the cap", code: "yes", status: coderun.RunFailed, errCode: coderun.ErrOutputLimitExceeded,
			check: func(t *testing.T, run, out map[string]any) {
				if len(out["stdout"].(string)) != 65536 || out["truncated"] != true || run["output"].(map[string]any)["stdoutBytes"] != 65536.0 {
					t.Fatalf("kept %d bytes, truncated %v", len(out["stdout"].(string)), out["truncated"])
				}
			}},
		{name: "a sleep past the timeout", code: "sleep 30", status: coderun.RunTimedOut},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := map[string]any{"code": c.code}
			if c.status == coderun.RunTimedOut {
				body["timeoutSeconds"] = 1
			}
			id := s.submit(body)
			run := s.wait(id)
			if c.status != "" && run["status"] != string(c.status) {
				t.Fatalf("run %v", run)
			}
			if c.errCode != "" && (run["error"] == nil || run["error"].(map[string]any)["code"] != c.errCode) {
				t.Fatalf("error %v, want %s", run["error"], c.errCode)
			}
			if c.check != nil {
				c.check(t, run, s.output(id))
			}
		})
	}
	// And the machine is fine: the next run runs.
	if run := s.wait(s.submit(map[string]any{"code": "echo fine"})); run["status"] != "succeeded" {
		t.Fatalf("after the sandbox tests: %v", run)
	}
}

func TestRunCapacity(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		s := newRunStackWith(t, dbURL, 4, 2)
		var (
			mu       sync.Mutex
			accepted []string
			refused  []response
			wg       sync.WaitGroup
		)
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := s.do("POST", "/v2/handles/acme/code-runs", s.tok, map[string]any{"runtimeKey": "sh", "code": "sleep 30"})
				mu.Lock()
				defer mu.Unlock()
				if r.status == 202 {
					accepted = append(accepted, r.json(t)["runId"].(string))
				} else {
					refused = append(refused, r)
				}
			}()
		}
		wg.Wait()
		if len(accepted) != 2 || len(refused) != 3 {
			t.Fatalf("%d accepted, %d refused; want 2 and 3", len(accepted), len(refused))
		}
		for _, r := range refused {
			p := expectProblem(t, r, 429, "active_run_limit_reached")
			if p["activeRuns"] != 2.0 || p["limit"] != 2.0 || r.header.Get("Retry-After") == "" ||
				r.header.Get("RateLimit") != `"active-runs";r=0;t=`+r.header.Get("Retry-After") {
				t.Fatalf("429 without activeRuns, limit, Retry-After or the RateLimit of active runs: %s %v", r.body, r.header)
			}
		}
		list := s.do("GET", "/v2/handles/acme/code-runs?status=active", s.tok, nil).json(t)
		if list["activeRuns"] != 2.0 || list["activeRunLimit"] != 2.0 || len(list["items"].([]any)) != 2 {
			t.Fatalf("list %v", list)
		}
		for _, id := range accepted {
			s.do("POST", "/v2/handles/acme/code-runs/"+id+"/cancel", s.tok, nil)
			if run := s.wait(id); run["status"] != "cancelled" {
				t.Fatalf("run %v", run)
			}
		}
		// Capacity is free again.
		s.wait(s.submit(map[string]any{"code": "true"}))
	})
}

func TestCancelQueuedRun(t *testing.T) {
	s := newRunStackWith(t, testenv.SQLiteURL(t), 0, 4) // no worker: runs stay queued
	id := s.submit(map[string]any{"code": "echo never"})
	r := s.do("POST", "/v2/handles/acme/code-runs/"+id+"/cancel", s.tok, nil)
	if r.status != 202 {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	run := r.json(t)
	if run["status"] != "cancelled" || transitions(run) != "queued,cancelled" || run["startedAt"] != nil {
		t.Fatalf("run %v", run)
	}
	s.noContainer(id)
	out := s.output(id)
	if out["complete"] != true || out["stdout"] != "" {
		t.Fatalf("output %v", out)
	}
}

func TestImageRemovedAfterValidation(t *testing.T) {
	s := newRunStack(t, testenv.SQLiteURL(t))
	// An image of its own (a label makes its id unique), so removing it
	// removes nothing other tests use.
	tag := fmt.Sprintf("coderun-test/doomed:%d", time.Now().UnixNano())
	build := exec.Command("docker", "build", "-q", "-t", tag, "-")
	build.Stdin = strings.NewReader(fmt.Sprintf("FROM %s\nLABEL test.unique=%q\n", demoImage, tag))
	build.Env = append(build.Environ(), "DOCKER_BUILDKIT=0")
	idBytes, err := build.Output()
	if err != nil {
		t.Fatalf("docker build: %v", err)
	}
	s.runtime("doomed", tag, strings.TrimSpace(string(idBytes)))
	if out, err := exec.Command("docker", "rmi", "-f", tag).CombinedOutput(); err != nil {
		t.Fatalf("docker rmi: %v %s", err, out)
	}
	id := s.submit(map[string]any{"runtimeKey": "doomed", "code": "echo hi"})
	run := s.wait(id)
	if run["status"] != "errored" || run["error"].(map[string]any)["code"] != coderun.ErrImageUnavailable {
		t.Fatalf("run %v", run)
	}
	p := expectProblem(t, s.do("GET", "/v2/handles/acme/code-runs/"+id+"/output", s.tok, nil), 409, "output_unavailable")
	if !strings.Contains(p["detail"].(string), coderun.ErrImageUnavailable) {
		t.Fatalf("detail %v", p["detail"])
	}
}

func TestRunRoutesTenancy(t *testing.T) {
	s := newRunStackWith(t, testenv.SQLiteURL(t), 0, 4)
	s.handle("globex", "gary")
	s.member("acme", "victor", coderun.RoleViewer)
	id := s.submit(map[string]any{"code": "true"})
	gary, victor := s.userJWT("gary"), s.userJWT("victor")
	base := "/v2/handles/acme/code-runs"
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"POST", base, map[string]any{"runtimeKey": "sh", "code": "true"}},
		{"GET", base, nil},
		{"GET", base + "/" + id, nil},
		{"GET", base + "/" + id + "/output", nil},
		{"POST", base + "/" + id + "/cancel", nil},
	} {
		expectProblem(t, s.do(r.method, r.path, gary, r.body), 404, "handle_not_found")
		if r.method == "GET" {
			if res := s.do(r.method, r.path, victor, nil); res.status != 200 {
				t.Fatalf("viewer %s %s: %d %s", r.method, r.path, res.status, res.body)
			}
		} else {
			expectProblem(t, s.do(r.method, r.path, victor, r.body), 403, "forbidden")
		}
	}
	// globex's own routes do not find acme's run.
	for _, p := range []string{"/" + id, "/" + id + "/output"} {
		expectProblem(t, s.do("GET", "/v2/handles/globex/code-runs"+p, gary, nil), 404, "run_not_found")
	}
	expectProblem(t, s.do("POST", "/v2/handles/globex/code-runs/"+id+"/cancel", gary, nil), 404, "run_not_found")
	expectProblem(t, s.do("POST", "/v2/handles/globex/code-runs", gary, map[string]any{"runtimeKey": "sh", "code": "true"}), 404, "runtime_not_found")
}

func TestSubmitValidation(t *testing.T) {
	s := newRunStackWith(t, testenv.SQLiteURL(t), 0, 4)
	expectProblem(t, s.do("POST", "/v2/handles/acme/code-runs", s.tok, map[string]any{"runtimeKey": "sh"}), 400, "validation_failed")
	expectProblem(t, s.do("POST", "/v2/handles/acme/code-runs", s.tok, map[string]any{"runtimeKey": "sh", "code": "x", "timeoutSeconds": 21}), 400, "validation_failed")
	expectProblem(t, s.do("POST", "/v2/handles/acme/code-runs", s.tok, map[string]any{"runtimeKey": "sh", "code": "x",
		"files": []map[string]any{{"path": "../escape", "content": "x"}}}), 400, "validation_failed")
	expectProblem(t, s.do("POST", "/v2/handles/acme/code-runs", s.tok, map[string]any{"runtimeKey": "nope", "code": "x"}), 404, "runtime_not_found")
	// A runtime whose digest changed since validation is not runnable.
	s.do("PUT", "/v2/handles/acme/code-runtimes/sh", s.tok, map[string]any{"image": demoImage, "digest": aDigest})
	expectProblem(t, s.do("POST", "/v2/handles/acme/code-runs", s.tok, map[string]any{"runtimeKey": "sh", "code": "x"}), 409, "runtime_not_validated")
}
