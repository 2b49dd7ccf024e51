package store_test

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/store"
)

// TestQueue specifies the run queue: claims, leases, output and recovery.
func TestQueue(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, db *store.DB)
	}{
		{"concurrent workers claim every run exactly once", testClaimOnce},
		{"a lease belongs to its worker until it lapses", testLease},
		{"output is numbered without gaps and counted", testAppendOutput},
		{"a finished run keeps its history and is final", testFinishRun},
		{"the images in use are the runtimes' and the unfinished runs'", testImageDigestsInUse},
	}
	for _, engine := range engines {
		t.Run(engine.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, openDB(t, engine.url(t)))
				})
			}
		})
	}
}

// queueRun inserts a queued run of handle acme and returns its id.
func queueRun(t testing.TB, db *store.DB, n int) string {
	t.Helper()
	id := fmt.Sprintf("run_%04d", n)
	run := coderun.Run{
		ID: id, Handle: "acme", RuntimeKey: "sh", Image: "img@" + "sha256:x", Status: coderun.RunQueued,
		Limits: coderun.DefaultLimits, CreatedAt: at,
		Transitions: []coderun.Transition{{Status: coderun.RunQueued, At: at, Reason: "submitted"}},
	}
	job := coderun.RunJob{Command: []string{"sh", "main.sh"}, Files: []coderun.RunFile{{Path: "main.sh", Data: []byte("echo hi")}},
		Stdin: []byte("in"), Env: map[string]string{"A": "b"}}
	inTx(t, db, func(tx *store.Tx) error { return tx.CreateRun(t.Context(), run, job) })
	return id
}

func claim(t testing.TB, db *store.DB, worker string) (coderun.RunJob, bool) {
	t.Helper()
	var job coderun.RunJob
	var ok bool
	inTx(t, db, func(tx *store.Tx) (err error) {
		job, ok, err = tx.ClaimRun(t.Context(), worker, at, at.Add(time.Minute))
		return err
	})
	return job, ok
}

func testClaimOnce(t *testing.T, db *store.DB) {
	createHandle(t, db, "acme")
	const runs, workers = 40, 8
	for i := range runs {
		queueRun(t, db, i)
	}
	url, _ := urls.Load(db)
	var (
		mu      sync.Mutex
		claimed = map[string]string{}
		wg      sync.WaitGroup
	)
	for w := range workers {
		// Each worker on a database handle of its own, as separate processes.
		conn := openDB(t, url.(string))
		worker := fmt.Sprintf("w%d", w)
		wg.Go(func() {
			for {
				var job coderun.RunJob
				var ok bool
				err := conn.InTx(t.Context(), func(tx *store.Tx) (err error) {
					job, ok, err = tx.ClaimRun(t.Context(), worker, at, at.Add(time.Minute))
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				if prev, dup := claimed[job.RunID]; dup {
					t.Errorf("run %s claimed by %s and %s", job.RunID, prev, worker)
				}
				claimed[job.RunID] = worker
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimed) != runs {
		t.Fatalf("%d runs claimed, want %d", len(claimed), runs)
	}
	read(t, db, func(tx *store.Tx) error {
		n, err := tx.CountActiveRuns(t.Context(), "acme")
		if n != runs {
			t.Errorf("%d active runs, want %d", n, runs)
		}
		return err
	})
}

func testLease(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	id := queueRun(t, db, 1)
	job, ok := claim(t, db, "w1")
	if !ok || job.RunID != id || string(job.Files[0].Data) != "echo hi" || string(job.Stdin) != "in" || job.Env["A"] != "b" {
		t.Fatalf("claimed %+v, %v", job, ok)
	}
	if _, ok := claim(t, db, "w2"); ok {
		t.Fatal("a second claim found a run")
	}
	err := db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.RenewLease(ctx, id, "w2", at.Add(time.Hour))
		return err
	})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("another worker renewed the lease: %v", err)
	}
	inTx(t, db, func(tx *store.Tx) error {
		cancel, err := tx.RenewLease(ctx, id, "w1", at.Add(time.Minute))
		if cancel {
			t.Error("a cancel was reported that nobody asked for")
		}
		return err
	})
	inTx(t, db, func(tx *store.Tx) error { return tx.RequestCancel(ctx, id, at) })
	inTx(t, db, func(tx *store.Tx) error {
		cancel, err := tx.RenewLease(ctx, id, "w1", at.Add(time.Minute))
		if !cancel {
			t.Error("the cancel request was not reported")
		}
		return err
	})
	// Before the lease runs out the run is live; after, it has lapsed.
	read(t, db, func(tx *store.Tx) error {
		live, err := tx.LiveRuns(ctx, []string{id, "run_unknown"}, at)
		if !live[id] || live["run_unknown"] {
			t.Errorf("live %v", live)
		}
		lapsed, err2 := tx.LapsedRuns(ctx, at)
		if len(lapsed) != 0 {
			t.Errorf("lapsed too early: %v", lapsed)
		}
		return errors.Join(err, err2)
	})
	later := at.Add(2 * time.Minute)
	inTx(t, db, func(tx *store.Tx) error {
		lapsed, err := tx.LapsedRuns(ctx, later)
		if err != nil {
			return err
		}
		if len(lapsed) != 1 || lapsed[0].ID != id || lapsed[0].Status != "starting" || lapsed[0].Claims != 1 {
			t.Fatalf("lapsed %+v", lapsed)
		}
		return tx.RequeueRun(ctx, id, later, "requeued")
	})
	if job, ok := claim(t, db, "w2"); !ok || job.RunID != id {
		t.Fatal("the requeued run was not claimed again")
	}
	// The first worker's lease is gone for good.
	err = db.InTx(ctx, func(tx *store.Tx) error { return tx.MarkRunning(ctx, id, "w1", later) })
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("the old worker marked the run running: %v", err)
	}
	var run coderun.Run
	read(t, db, func(tx *store.Tx) (err error) { run, err = tx.GetRun(ctx, "acme", id); return err })
	want := []coderun.RunStatus{coderun.RunQueued, coderun.RunStarting, coderun.RunQueued, coderun.RunStarting}
	if len(run.Transitions) != len(want) {
		t.Fatalf("transitions %+v", run.Transitions)
	}
	for i, s := range want {
		if run.Transitions[i].Status != s {
			t.Fatalf("transitions %+v", run.Transitions)
		}
	}
}

func testAppendOutput(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	id := queueRun(t, db, 1)
	claim(t, db, "w1")
	inTx(t, db, func(tx *store.Tx) error { return tx.MarkRunning(ctx, id, "w1", at) })
	chunks := []coderun.OutputChunk{
		{Seq: 1, Stream: coderun.Stdout, Data: []byte("hello\n"), At: at},
		{Seq: 2, Stream: coderun.Stderr, Data: []byte{0xff, 0x00}, At: at},
		{Seq: 3, Stream: coderun.Stdout, Data: []byte("bye\n"), At: at},
	}
	for _, c := range chunks {
		inTx(t, db, func(tx *store.Tx) error { return tx.AppendOutput(ctx, id, "w1", c) })
	}
	for _, bad := range []coderun.OutputChunk{{Seq: 5, Stream: coderun.Stdout, Data: []byte("gap")}, {Seq: 3, Stream: coderun.Stdout, Data: []byte("again")}} {
		err := db.InTx(ctx, func(tx *store.Tx) error { return tx.AppendOutput(ctx, id, "w1", bad) })
		if !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("seq %d was stored: %v", bad.Seq, err)
		}
	}
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.Output(ctx, id, 1, 0)
		if err != nil {
			return err
		}
		if len(got) != 2 || got[0].Seq != 2 || string(got[0].Data) != "\xff\x00" || got[1].Seq != 3 || got[0].Stream != coderun.Stderr {
			t.Fatalf("after seq 1: %+v", got)
		}
		run, err := tx.GetRun(ctx, "acme", id)
		if run.Output.StdoutBytes != 10 || run.Output.StderrBytes != 2 {
			t.Fatalf("counts %+v", run.Output)
		}
		return err
	})
}

func testFinishRun(t *testing.T, db *store.DB) {
	ctx := t.Context()
	createHandle(t, db, "acme")
	id := queueRun(t, db, 1)
	claim(t, db, "w1")
	inTx(t, db, func(tx *store.Tx) error { return tx.MarkRunning(ctx, id, "w1", at) })
	code := 3
	end := at.Add(1500 * time.Millisecond)
	err := db.InTx(ctx, func(tx *store.Tx) error {
		return tx.FinishRun(ctx, id, "w2", store.RunResult{Status: coderun.RunFailed, ExitCode: &code, At: end, Reason: "x"})
	})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("another worker finished the run: %v", err)
	}
	inTx(t, db, func(tx *store.Tx) error {
		return tx.FinishRun(ctx, id, "w1", store.RunResult{Status: coderun.RunFailed, ExitCode: &code, At: end, Reason: "exited with code 3"})
	})
	var run coderun.Run
	read(t, db, func(tx *store.Tx) (err error) { run, err = tx.GetRun(ctx, "acme", id); return err })
	if run.Status != coderun.RunFailed || *run.ExitCode != 3 || *run.DurationMs != 1500 || run.FinishedAt == nil || len(run.Transitions) != 4 {
		t.Fatalf("run %+v", run)
	}
	// A finished run is neither claimed nor finished again.
	if _, ok := claim(t, db, "w1"); ok {
		t.Fatal("a finished run was claimed")
	}
	err = db.InTx(ctx, func(tx *store.Tx) error {
		return tx.FinishRun(ctx, id, "", store.RunResult{Status: coderun.RunErrored, At: end})
	})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("a finished run was finished again: %v", err)
	}
}

func testImageDigestsInUse(t *testing.T, db *store.DB) {
	digest := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	createHandle(t, db, "acme")
	createHandle(t, db, "globex")
	for handle, d := range map[string]string{"acme": digest("a"), "globex": digest("b")} {
		rt := newRuntime(handle, "sh")
		rt.Digest = d
		putRuntime(t, db, rt)
	}
	submit := func(n int, image string) string {
		id := fmt.Sprintf("run_%04d", n)
		run := coderun.Run{
			ID: id, Handle: "acme", RuntimeKey: "sh", Image: image, Status: coderun.RunQueued,
			Limits: coderun.DefaultLimits, CreatedAt: at,
			Transitions: []coderun.Transition{{Status: coderun.RunQueued, At: at, Reason: "submitted"}},
		}
		inTx(t, db, func(tx *store.Tx) error { return tx.CreateRun(t.Context(), run, coderun.RunJob{}) })
		return id
	}
	// One run starting, one running, one queued, one over.
	submit(0, "img@"+digest("c"))
	if _, ok := claim(t, db, "w"); !ok {
		t.Fatal("no run to claim")
	}
	running := submit(1, "img@"+digest("d"))
	if _, ok := claim(t, db, "w"); !ok {
		t.Fatal("no run to claim")
	}
	inTx(t, db, func(tx *store.Tx) error { return tx.MarkRunning(t.Context(), running, "w", at) })
	submit(2, "img@"+digest("e"))
	over := submit(3, "img@"+digest("f"))
	inTx(t, db, func(tx *store.Tx) error {
		return tx.FinishQueuedRun(t.Context(), over, coderun.RunCancelled, at, "cancelled")
	})
	var inUse map[string]bool
	inTx(t, db, func(tx *store.Tx) (err error) { inUse, err = tx.ImageDigestsInUse(t.Context()); return err })
	want := map[string]bool{digest("a"): true, digest("b"): true, digest("c"): true, digest("d"): true, digest("e"): true}
	if !maps.Equal(inUse, want) {
		t.Fatalf("in use: %v, want %v", inUse, want)
	}
}
