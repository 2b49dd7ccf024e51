package resolvers_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/events"
	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/resolvers"
	"github.com/gharart/coderun/rest"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/worker"
)

const demoImage = "coderun-demo/busybox:1"

// newRunEnv is the whole service as `coderun serve` assembles it — REST and
// GraphQL behind the real HTTP edge and authenticator, a worker on the real
// Docker engine, the events hub between them — over a fresh SQLite database,
// with a validated busybox runtime "sh" in acme that runs main.sh. opts
// configure the GraphQL handler (its Authenticate and Logger are set here).
func newRunEnv(t testing.TB, opts resolvers.Options) *env {
	return newRunEnvWith(t, opts, events.Options{})
}

// newRunEnvWith is newRunEnv with the events hub configured by hubOpts.
func newRunEnvWith(t testing.TB, opts resolvers.Options, hubOpts events.Options) *env {
	t.Helper()
	image := testenv.BusyboxImage(t, demoImage)
	db := openDB(t)
	engine, err := docker.New(docker.WithInit(testenv.Init(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.CloseEngine(engine) })
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))

	hubOpts.Logger = log
	hub := events.NewHub(db, hubOpts)
	w := worker.New(db, engine, worker.Options{Slots: 2, Lease: 3 * time.Second, Poll: 50 * time.Millisecond, Events: hub, Logger: log})
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = w.Run(ctx) }()
	t.Cleanup(func() { stop(); <-stopped })

	svc := service.New(db, service.Options{Images: engine, Runs: w, Events: hub, Logger: log})
	// The requests served are written before the database closes.
	t.Cleanup(func() { svc.FlushRequests(context.Background()) })
	authn := newAuthenticator(svc)
	opts.Authenticate, opts.Logger = authn.Authenticate, log
	// Subscribers open many websockets in a burst; the per-caller GraphQL
	// throttle is not what these tests are about.
	throttles := rest.DefaultThrottles
	throttles.GraphQL = rest.Rate{PerSecond: 10000, Burst: 10000}
	srv := httptest.NewServer(rest.New(rest.Options{
		Service:       svc,
		Authenticator: authn,
		GraphQL:       resolvers.NewHandler(svc, opts),
		Throttles:     &throttles,
		Logger:        log,
	}))
	t.Cleanup(srv.Close)
	e := &env{t: t, db: db, srv: srv, endpoint: srv.URL + "/graphql", logs: logs}
	e.validatedRuntime("sh", demoImage, image)
	return e
}

// validatedRuntime registers a busybox runtime that runs main.sh and checks its image.
func (e *env) validatedRuntime(key, image, digest string) {
	e.t.Helper()
	e.put("alice", key, map[string]any{"image": image, "digest": digest, "command": []string{"sh", "main.sh"}, "entrypointFile": "main.sh",
		"limits": map[string]any{"timeoutSeconds": 20, "memoryMiB": 64, "pids": 32, "outputBytes": 65536}})
	var got struct {
		ValidateCodeRuntimeImage runtimeData `json:"validateCodeRuntimeImage"`
	}
	e.data("alice", `mutation($key: String!) { validateCodeRuntimeImage(handle: "acme", key: $key) {
	  validation { status error { code message } } } }`, map[string]any{"key": key}, &got)
	if v := got.ValidateCodeRuntimeImage.Validation; v.Status != "VALIDATED" {
		e.t.Fatalf("runtime %s did not validate: %+v", key, v)
	}
}

// runFields selects every field of a CodeRun but its output.
const runFields = `fragment Run on CodeRun {
  id runId runtimeKey image status exitCode error { code message }
  limits { timeoutSeconds memoryMiB cpus pids outputBytes }
  labels { key value } createdAt startedAt finishedAt durationMs
  outputSummary { stdoutBytes stderrBytes truncated }
  transitions { status at reason }
  runtime { key } handle { handle }
}`

type runData struct {
	ID         string          `json:"id"`
	RunID      string          `json:"runId"`
	RuntimeKey string          `json:"runtimeKey"`
	Image      string          `json:"image"`
	Status     string          `json:"status"`
	ExitCode   *int            `json:"exitCode"`
	Error      json.RawMessage `json:"error"`
	Limits     json.RawMessage `json:"limits"`
	Labels     []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"labels"`
	CreatedAt     string          `json:"createdAt"`
	StartedAt     *string         `json:"startedAt"`
	FinishedAt    *string         `json:"finishedAt"`
	DurationMs    *int64          `json:"durationMs"`
	OutputSummary json.RawMessage `json:"outputSummary"`
	Transitions   []struct {
		Status string `json:"status"`
		At     string `json:"at"`
		Reason string `json:"reason"`
	} `json:"transitions"`
	Runtime *struct {
		Key string `json:"key"`
	} `json:"runtime"`
	Handle struct {
		Handle string `json:"handle"`
	} `json:"handle"`
}

func (r runData) statuses() []string {
	var out []string
	for _, t := range r.Transitions {
		out = append(out, t.Status)
	}
	return out
}

type outputData struct {
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Encoding  string `json:"encoding"`
	Truncated bool   `json:"truncated"`
	Complete  bool   `json:"complete"`
	NextSeq   int64  `json:"nextSeq"`
	Chunks    []struct {
		Seq      int64  `json:"seq"`
		Stream   string `json:"stream"`
		Data     string `json:"data"`
		Encoding string `json:"encoding"`
		At       string `json:"at"`
	} `json:"chunks"`
}

const submitRun = `mutation($input: CodeRunInput!) { submitCodeRun(handle: "acme", input: $input) { ...Run } }` + runFields

// submit submits a run as alice to runtime sh unless input names another.
func (e *env) submit(input map[string]any) runData {
	e.t.Helper()
	if input["runtimeKey"] == nil {
		input["runtimeKey"] = "sh"
	}
	var got struct {
		SubmitCodeRun runData `json:"submitCodeRun"`
	}
	e.data("alice", submitRun, map[string]any{"input": input}, &got)
	if got.SubmitCodeRun.Status != "QUEUED" {
		e.t.Fatalf("a submitted run is %s", got.SubmitCodeRun.Status)
	}
	return got.SubmitCodeRun
}

// run reads a run through Handle.run as user; nil when it is null.
func (e *env) run(user, handle, runID string) *runData {
	e.t.Helper()
	var got struct {
		Handle struct {
			Run *runData `json:"run"`
		} `json:"handle"`
	}
	e.data(user, `query($h: String!, $id: String!) { handle(handle: $h) { run(runId: $id) { ...Run } } }`+runFields,
		map[string]any{"h": handle, "id": runID}, &got)
	return got.Handle.Run
}

// waitFor polls a run until done says it is where the test wants it.
func (e *env) waitFor(runID string, done func(status coderun.RunStatus) bool) runData {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		run := e.run("alice", "acme", runID)
		if run == nil {
			e.t.Fatalf("run %s is null", runID)
		}
		if done(coderun.RunStatus(strings.ToLower(run.Status))) {
			return *run
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("run %s still %s after 60 s", runID, run.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) finished(runID string) runData { return e.waitFor(runID, coderun.RunStatus.Terminal) }

// output reads a page of a run's output.
func (e *env) output(runID string, args string) outputData {
	e.t.Helper()
	var got struct {
		Handle struct {
			Run struct {
				Output outputData `json:"output"`
			} `json:"run"`
		} `json:"handle"`
	}
	e.data("alice", `query($id: String!) { handle(handle: "acme") { run(runId: $id) {
	  output`+args+` { stdout stderr encoding truncated complete nextSeq chunks { seq stream data encoding at } }
	} } }`, map[string]any{"id": runID}, &got)
	return got.Handle.Run.Output
}

// rest GETs a REST route as alice and decodes its JSON object.
func (e *env) rest(path string) map[string]any {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	req.Header.Set("Authorization", e.jwt("alice"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var m map[string]any
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &m) != nil {
		e.t.Fatalf("GET %s: %d %s", path, res.StatusCode, body)
	}
	return m
}

func TestCodeRuns(t *testing.T) {
	e := newRunEnv(t, resolvers.Options{})
	var hello runData

	t.Run("hello world succeeds with its transitions and exact output", func(t *testing.T) {
		submitted := e.submit(map[string]any{
			"code":   `echo "hello $GREETING"; echo oops >&2`,
			"env":    []map[string]any{{"key": "GREETING", "value": "world"}},
			"labels": []map[string]any{{"key": "campaign", "value": "spring"}, {"key": "a", "value": "first"}},
		})
		if !strings.HasPrefix(submitted.RunID, "run_") || slices.Compare(submitted.statuses(), []string{"QUEUED"}) != 0 || submitted.StartedAt != nil {
			t.Fatalf("submitted run = %+v", submitted)
		}
		if id, _ := base64.RawURLEncoding.DecodeString(submitted.ID); string(id) != "CodeRun:acme/"+submitted.RunID {
			t.Fatalf("id %q decodes to %q", submitted.ID, id)
		}

		hello = e.finished(submitted.RunID)
		if hello.Status != "SUCCEEDED" || hello.ExitCode == nil || *hello.ExitCode != 0 || string(hello.Error) != "null" {
			t.Fatalf("run = %+v", hello)
		}
		if got := hello.statuses(); !slices.Equal(got, []string{"QUEUED", "STARTING", "RUNNING", "SUCCEEDED"}) {
			t.Fatalf("transitions = %v", got)
		}
		if hello.StartedAt == nil || hello.FinishedAt == nil || hello.DurationMs == nil || hello.Runtime == nil || hello.Runtime.Key != "sh" ||
			hello.Handle.Handle != "acme" || !strings.HasPrefix(hello.Image, "coderun-demo/busybox@sha256:") {
			t.Fatalf("run = %+v", hello)
		}
		if fmt.Sprint(hello.Labels) != "[{a first} {campaign spring}]" {
			t.Errorf("labels = %v, want both in key order", hello.Labels)
		}
		if string(hello.OutputSummary) != `{"stdoutBytes":12,"stderrBytes":5,"truncated":false}` {
			t.Errorf("outputSummary = %s", hello.OutputSummary)
		}

		out := e.output(hello.RunID, "")
		if out.Stdout != "hello world\n" || out.Stderr != "oops\n" || !out.Complete || out.Truncated || out.Encoding != "UTF8" {
			t.Fatalf("output = %+v", out)
		}
		// The streams are read apart, so their chunks may come in either order.
		var chunks []string
		for i, c := range out.Chunks {
			if c.Seq != int64(i+1) || c.Encoding != "UTF8" {
				t.Fatalf("chunk %d = %+v", i, c)
			}
			chunks = append(chunks, c.Stream+":"+c.Data)
		}
		slices.Sort(chunks)
		if out.NextSeq != int64(len(out.Chunks)) || !slices.Equal(chunks, []string{"STDERR:oops\n", "STDOUT:hello world\n"}) {
			t.Fatalf("chunks %q, nextSeq %d", chunks, out.NextSeq)
		}
	})

	t.Run("output is paged by afterSeq and first", func(t *testing.T) {
		first := e.output(hello.RunID, "(first: 1)")
		if len(first.Chunks) != 1 || first.Chunks[0].Seq != 1 || first.Complete || first.NextSeq != 1 ||
			first.Stdout+first.Stderr != first.Chunks[0].Data {
			t.Fatalf("first page = %+v", first)
		}
		second := e.output(hello.RunID, "(afterSeq: 1, first: 100)")
		if len(second.Chunks) != 1 || second.Chunks[0].Seq != 2 || !second.Complete || second.NextSeq != 2 ||
			second.Stdout+second.Stderr != second.Chunks[0].Data || second.Chunks[0].Stream == first.Chunks[0].Stream {
			t.Fatalf("second page = %+v", second)
		}
		for _, args := range []string{"(first: 0)", "(first: 101)", "(afterSeq: -1)"} {
			r := e.do("alice", `query($id: String!) { handle(handle: "acme") { run(runId: $id) { output`+args+` { complete } } } }`,
				map[string]any{"id": hello.RunID})
			onlyError(t, r, "validation_failed")
		}
	})

	t.Run("REST and GraphQL tell the same run", func(t *testing.T) {
		rr := e.rest("/v2/handles/acme/code-runs/" + hello.RunID)
		labels := map[string]any{}
		for _, l := range hello.Labels {
			labels[l.Key] = l.Value
		}
		var transitions []any
		for _, tr := range hello.Transitions {
			transitions = append(transitions, map[string]any{"status": strings.ToLower(tr.Status), "at": tr.At, "reason": tr.Reason})
		}
		fromGraph := map[string]any{
			"runId": hello.RunID, "handle": hello.Handle.Handle, "runtimeKey": hello.RuntimeKey, "image": hello.Image,
			"status": strings.ToLower(hello.Status), "exitCode": *hello.ExitCode, "error": hello.Error, "limits": hello.Limits,
			"labels": labels, "createdAt": hello.CreatedAt, "startedAt": *hello.StartedAt, "finishedAt": *hello.FinishedAt,
			"durationMs": *hello.DurationMs, "output": hello.OutputSummary, "transitions": transitions,
		}
		if got, want := normalize(t, fromGraph), normalize(t, rr); got != want {
			t.Fatalf("GraphQL and REST differ:\ngraphql %s\nrest    %s", got, want)
		}

		ro := e.rest("/v2/handles/acme/code-runs/" + hello.RunID + "/output")
		out := e.output(hello.RunID, "")
		fromGraph = map[string]any{"stdout": out.Stdout, "stderr": out.Stderr, "encoding": strings.ToLower(out.Encoding),
			"complete": out.Complete, "truncated": out.Truncated, "nextSeq": out.NextSeq}
		for _, k := range []string{"runId", "status", "exitCode"} {
			delete(ro, k) // the run's own fields, compared above
		}
		if got, want := normalize(t, fromGraph), normalize(t, ro); got != want {
			t.Fatalf("GraphQL and REST output differ:\ngraphql %s\nrest    %s", got, want)
		}
	})

	t.Run("non-UTF-8 output comes back as base64", func(t *testing.T) {
		run := e.finished(e.submit(map[string]any{"code": `printf '\377\376ok'`}).RunID)
		out := e.output(run.RunID, "")
		stdout, err := base64.StdEncoding.DecodeString(out.Stdout)
		if out.Encoding != "BASE64" || err != nil || string(stdout) != "\xff\xfeok" || out.Chunks[0].Encoding != "BASE64" {
			t.Fatalf("output = %+v (stdout %q)", out, stdout)
		}
	})

	t.Run("runs are listed newest first and filtered by status", func(t *testing.T) {
		failed := e.finished(e.submit(map[string]any{"code": "exit 3"}).RunID)
		if failed.Status != "FAILED" || *failed.ExitCode != 3 {
			t.Fatalf("run = %+v", failed)
		}
		list := func(args string) []string {
			var got struct {
				Handle struct {
					Runs struct {
						Edges []struct {
							Node struct {
								RunID  string `json:"runId"`
								Status string `json:"status"`
							} `json:"node"`
						} `json:"edges"`
					} `json:"runs"`
				} `json:"handle"`
			}
			e.data("vera", `{ handle(handle: "acme") { runs`+args+` { edges { node { runId status } } } } }`, nil, &got)
			var ids []string
			for _, edge := range got.Handle.Runs.Edges {
				ids = append(ids, edge.Node.RunID)
			}
			return ids
		}
		all := list("(first: 100)")
		if len(all) != 3 || all[0] != failed.RunID || all[2] != hello.RunID {
			t.Fatalf("runs = %v, want 3, the failed one first and hello world last", all)
		}
		if got := list(`(status: [SUCCEEDED])`); len(got) != 2 || got[1] != hello.RunID {
			t.Errorf("succeeded runs = %v", got)
		}
		if got := list(`(status: [FAILED, CANCELLED])`); !slices.Equal(got, []string{failed.RunID}) {
			t.Errorf("failed or cancelled runs = %v", got)
		}
		if got := list(`(status: [QUEUED, STARTING, RUNNING])`); len(got) != 0 {
			t.Errorf("active runs = %v", got)
		}
	})

	t.Run("cancelling a running run", func(t *testing.T) {
		id := e.submit(map[string]any{"code": "echo started; sleep 30"}).RunID
		e.waitFor(id, func(s coderun.RunStatus) bool { return s == coderun.RunRunning })
		var got struct {
			CancelCodeRun runData `json:"cancelCodeRun"`
		}
		const cancel = `mutation($id: String!) { cancelCodeRun(handle: "acme", runId: $id) { ...Run } }` + runFields
		e.data("alice", cancel, map[string]any{"id": id}, &got)
		run := e.finished(id)
		if run.Status != "CANCELLED" || !slices.Equal(run.statuses(), []string{"QUEUED", "STARTING", "RUNNING", "CANCELLED"}) {
			t.Fatalf("run = %+v", run)
		}
		if got.CancelCodeRun.RunID != id {
			t.Fatalf("cancelCodeRun answered %+v", got.CancelCodeRun)
		}
		e.data("alice", cancel, map[string]any{"id": id}, &got) // again: harmless
		onlyError(t, e.do("alice", cancel, map[string]any{"id": hello.RunID}), "run_already_finished")
		onlyError(t, e.do("alice", cancel, map[string]any{"id": "run_nope"}), "run_not_found")
	})

	t.Run("a handle at its active-run limit refuses another run", func(t *testing.T) {
		var active []string
		for range 4 {
			active = append(active, e.submit(map[string]any{"code": "sleep 30"}).RunID)
		}
		r := e.do("alice", submitRun, map[string]any{"input": map[string]any{"runtimeKey": "sh", "code": "true"}})
		got := onlyError(t, r, "active_run_limit_reached")
		if got.Extensions["activeRuns"] != 4.0 || got.Extensions["limit"] != 4.0 || got.Extensions["retryAfter"] == nil {
			t.Errorf("extensions = %v, want activeRuns 4, limit 4 and retryAfter", got.Extensions)
		}
		var usage struct {
			Handle struct {
				Usage struct {
					ActiveRuns int `json:"activeRuns"`
				} `json:"usage"`
			} `json:"handle"`
		}
		e.data("vera", `{ handle(handle: "acme") { usage { activeRuns } } }`, nil, &usage)
		if usage.Handle.Usage.ActiveRuns != 4 {
			t.Errorf("usage.activeRuns = %d", usage.Handle.Usage.ActiveRuns)
		}
		for _, id := range active {
			e.data("alice", `mutation($id: String!) { cancelCodeRun(handle: "acme", runId: $id) { status } }`, map[string]any{"id": id}, &struct{}{})
			if run := e.finished(id); run.Status != "CANCELLED" {
				t.Errorf("run %s = %s", id, run.Status)
			}
		}
	})

	t.Run("submissions the service refuses", func(t *testing.T) {
		e.put("alice", "pending", map[string]any{"image": demoImage, "digest": digestA})
		for input, code := range map[string]string{
			`{runtimeKey: "pending", code: "true"}`: "runtime_not_validated",
			`{runtimeKey: "nope", code: "true"}`:    "runtime_not_found",
			`{runtimeKey: "sh"}`:                    "validation_failed",
		} {
			onlyError(t, e.do("alice", `mutation { submitCodeRun(handle: "acme", input: `+input+`) { runId } }`, nil), code)
		}
		r := e.do("alice", `mutation { submitCodeRun(handle: "acme", input: {runtimeKey: "sh", code: "true",
		  labels: [{key: "a", value: "1"}, {key: "a", value: "2"}]}) { runId } }`, nil)
		fields := onlyError(t, r, "validation_failed").Extensions["fields"].([]any)
		if f := fields[0].(map[string]any); len(fields) != 1 || f["field"] != "labels[1].key" || f["code"] != "duplicate" {
			t.Errorf("fields = %v", fields)
		}
		onlyError(t, e.do("vera", submitRun, map[string]any{"input": map[string]any{"runtimeKey": "sh", "code": "true"}}), "forbidden")
		onlyError(t, e.do("mallory", submitRun, map[string]any{"input": map[string]any{"runtimeKey": "sh", "code": "true"}}), "handle_not_found")
	})

	t.Run("another tenant's run is not there", func(t *testing.T) {
		if run := e.run("mallory", "globex", hello.RunID); run != nil {
			t.Errorf("globex's run(%s) = %+v, want null", hello.RunID, run)
		}
		const node = `query($id: ID!) { node(id: $id) { __typename ... on CodeRun { runId status } } }`
		for user, want := range map[string]string{
			"alice":   `{"node":{"__typename":"CodeRun","runId":"` + hello.RunID + `","status":"SUCCEEDED"}}`,
			"mallory": `{"node":null}`,
		} {
			r := e.do(user, node, map[string]any{"id": hello.ID})
			if len(r.Errors) != 0 || string(r.Data) != want {
				t.Errorf("node(%s) as %s: data %s, errors %+v; want %s", hello.ID, user, r.Data, r.Errors, want)
			}
		}
		r := e.do("mallory", `query($id: String!) { handle(handle: "acme") { run(runId: $id) { runId } } }`, map[string]any{"id": hello.RunID})
		if len(r.Errors) != 0 || string(r.Data) != `{"handle":null}` {
			t.Errorf("acme's run as mallory: data %s, errors %+v", r.Data, r.Errors)
		}
	})

	t.Run("an errored run without output has none to give", func(t *testing.T) {
		// An image of its own (a label makes its id unique), validated and
		// then removed, so the worker cannot start the run.
		tag := fmt.Sprintf("coderun-test/doomed:%d", time.Now().UnixNano())
		build := exec.Command("docker", "build", "-q", "-t", tag, "-")
		build.Stdin = strings.NewReader(fmt.Sprintf("FROM %s\nLABEL test.unique=%q\n", demoImage, tag))
		build.Env = append(build.Environ(), "DOCKER_BUILDKIT=0")
		imageID, err := build.Output()
		if err != nil {
			t.Fatalf("docker build: %v", err)
		}
		e.validatedRuntime("doomed", tag, strings.TrimSpace(string(imageID)))
		if out, err := exec.Command("docker", "rmi", "-f", tag).CombinedOutput(); err != nil {
			t.Fatalf("docker rmi: %v %s", err, out)
		}
		run := e.finished(e.submit(map[string]any{"runtimeKey": "doomed", "code": "echo hi"}).RunID)
		if run.Status != "ERRORED" || !strings.Contains(string(run.Error), coderun.ErrImageUnavailable) {
			t.Fatalf("run = %+v", run)
		}
		r := e.do("alice", `query($id: String!) { handle(handle: "acme") { run(runId: $id) { status output { stdout } } } }`,
			map[string]any{"id": run.RunID})
		got := onlyError(t, r, "output_unavailable")
		if !slices.Equal(got.Path, []any{"handle", "run", "output"}) || !strings.Contains(got.Message, coderun.ErrImageUnavailable) {
			t.Errorf("error = %+v", got)
		}
		// The error takes the run with it (output is non-null), not the handle.
		if string(r.Data) != `{"handle":{"run":null}}` {
			t.Errorf("data = %s", r.Data)
		}
	})
}

// normalize renders v as canonical JSON, so values decoded from different
// documents compare as text.
func normalize(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var canonical any
	if err := json.Unmarshal(b, &canonical); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(canonical)
	return string(b)
}

func TestComplexityPricesRunsAndTheirOutput(t *testing.T) {
	e := newEnv(t, resolvers.Options{})
	var page struct{ Handle map[string]any }
	e.data("vera", `{ handle(handle: "acme") { runs(first: 100) { edges { cursor node { ...Run } } pageInfo { hasNextPage endCursor } } } }`+runFields, nil, &page)

	// Output is priced by the chunks it may return, times the runs asked for.
	for query, admitted := range map[string]bool{
		`runs(first: 10) { edges { node { output(first: 10) { stdout } } } }`:  true,
		`runs(first: 1) { edges { node { output(first: 100) { stdout } } } }`:  true,
		`runs(first: 40) { edges { node { output(first: 100) { stdout } } } }`: true,
		`runs { edges { node { output { stdout } } } }`:                        false, // 50 runs × 100 chunks
		`runs(first: 60) { edges { node { output(first: 100) { stdout } } } }`: false,
	} {
		r := e.do("vera", `{ handle(handle: "acme") { `+query+` } }`, nil)
		if admitted && (len(r.Errors) != 0 || r.status != http.StatusOK) {
			t.Errorf("%s: status %d, errors %+v; want it admitted", query, r.status, r.Errors)
		}
		if !admitted {
			rejectedBeforeExecution(t, r, "COMPLEXITY_LIMIT_EXCEEDED")
		}
	}
}
