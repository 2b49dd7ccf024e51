package service_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/events"
	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
	"github.com/gharart/coderun/worker"
)

func as(user string) context.Context {
	return coderun.NewContextWithPrincipal(context.Background(), &coderun.Principal{UserID: user, Scopes: coderun.AllScopes})
}

// A real run on the real engine, printing a line every 50 ms, followed from
// several points while it runs.
func TestFollowARunningRun(t *testing.T) {
	testenv.Docker(t)
	digest := testenv.BusyboxImage(t, "coderun-demo/busybox:1")
	for name, dbURL := range map[string]string{"sqlite": testenv.SQLiteURL(t), "postgres": testenv.PostgresURL(t)} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := store.Open(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			engine, err := docker.New(docker.WithInstance("test-"+strings.ToLower(ulid.Make().String())), docker.WithInit(testenv.Init(t)))
			if err != nil {
				t.Fatal(err)
			}
			defer testenv.CloseEngine(engine)
			hub := events.NewHub(db, events.Options{})
			svc := service.New(db, service.Options{Images: engine, Events: hub})
			w := worker.New(db, engine, worker.Options{Slots: 2, Poll: 50 * time.Millisecond, Events: hub})
			wctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); _ = w.Run(wctx) }()
			defer func() { stop(); <-done }()

			alice := as("alice")
			if _, err := svc.CreateHandle(ctx, "acme", "alice", 4, 0); err != nil {
				t.Fatal(err)
			}
			entry := "main.sh"
			if _, _, _, err := svc.PutRuntime(alice, "acme", "sh", coderun.RuntimeInput{Image: "coderun-demo/busybox:1", Digest: digest, Command: []string{"sh", "main.sh"}, EntrypointFile: &entry}, ""); err != nil {
				t.Fatal(err)
			}
			if rt, _, err := svc.ValidateRuntimeImage(alice, "acme", "sh", ""); err != nil || !rt.Validated() {
				t.Fatalf("validate: %+v %v", rt.Validation, err)
			}
			code := "for i in $(seq 1 40); do echo line $i; sleep 0.05; done"
			run, _, err := svc.SubmitRun(alice, "acme", coderun.RunInput{RuntimeKey: "sh", Code: &code}, "")
			if err != nil {
				t.Fatal(err)
			}
			status, err := svc.FollowRunStatus(alice, "acme", run.ID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.FollowRunOutput(as("mallory"), "acme", run.ID, 0); coderun.ErrorCode(err) != coderun.EHandleNotFound {
				t.Fatalf("a stranger following: %v", err)
			}
			if _, err := svc.FollowRunOutput(alice, "acme", "run_"+ulid.Make().String(), 0); coderun.ErrorCode(err) != coderun.ERunNotFound {
				t.Fatalf("following an unknown run: %v", err)
			}

			type result struct {
				after int64
				text  string
				err   error
			}
			results := make(chan result, 10)
			follow := func(after int64) {
				s, err := svc.FollowRunOutput(alice, "acme", run.ID, after)
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					var b strings.Builder
					next := after + 1
					for c := range s.C {
						if c.Seq != next {
							results <- result{after, b.String(), fmt.Errorf("seq %d after %d", c.Seq, next-1)}
							return
						}
						next++
						b.Write(c.Data)
					}
					results <- result{after, b.String(), s.Err()}
				}()
			}
			follow(0)
			var statuses []string
			seen := int64(0)
			for e := range status.C {
				statuses = append(statuses, string(e.Status))
				if e.Status == coderun.RunRunning {
					time.Sleep(700 * time.Millisecond)
					out, err := svc.Output(alice, "acme", run.ID, 0, 0)
					if err != nil {
						t.Fatal(err)
					}
					seen = out.LastSeq
					for _, after := range []int64{0, seen / 2, seen} {
						follow(after)
					}
				}
			}
			if err := status.Err(); err != nil {
				t.Fatal(err)
			}
			full, err := svc.Output(alice, "acme", run.ID, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			// The first event is the status when the subscription began: the
			// worker may have claimed the run already.
			if got := strings.Join(statuses, ","); !strings.HasSuffix("queued,starting,running,succeeded", got) || !strings.HasPrefix(got, "queued") && !strings.HasPrefix(got, "starting") {
				t.Fatalf("statuses %s; run %+v %+v, output %d chunks", got, full.Run.Error, full.Run.Transitions, len(full.Chunks))
			}
			if seen == 0 || seen >= full.LastSeq {
				t.Fatalf("subscribed mid-run at seq %d of %d", seen, full.LastSeq)
			}
			var want strings.Builder
			for i := 1; i <= 40; i++ {
				fmt.Fprintf(&want, "line %d\n", i)
			}
			for range 4 {
				r := <-results
				if r.err != nil {
					t.Fatalf("after %d: %v", r.after, r.err)
				}
				var before strings.Builder
				for _, c := range full.Chunks[:r.after] {
					before.Write(c.Data)
				}
				if before.String()+r.text != want.String() {
					t.Fatalf("after %d: %q + %q", r.after, before.String(), r.text)
				}
			}
			t.Logf("run of %d chunks followed from seq 0, %d, %d mid-run", full.LastSeq, seen/2, seen)
		})
	}
}
