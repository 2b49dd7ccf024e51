package events_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/events"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/store"
)

// These tests drive runs through the store as a worker does (claim, start,
// store chunks, finish, publishing after each commit) and follow them through
// a hub, on SQLite and PostgreSQL.

func forEachDatabase(t *testing.T, fn func(t *testing.T, dbURL string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, testenv.SQLiteURL(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, testenv.PostgresURL(t)) })
}

// fakeRun is a run that the test executes by hand, as worker "w1".
type fakeRun struct {
	t       *testing.T
	db      *store.DB
	publish events.RunPublisher
	id      string
	seq     int64
}

func newRun(t *testing.T, db *store.DB, publish events.RunPublisher) *fakeRun {
	t.Helper()
	ctx := context.Background()
	r := &fakeRun{t: t, db: db, publish: publish, id: "run_" + ulid.Make().String()}
	now := time.Now()
	err := db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.GetHandle(ctx, "acme"); coderun.ErrorCode(err) == coderun.EHandleNotFound {
			if err := tx.CreateHandle(ctx, coderun.Handle{Name: "acme", MaxActiveRuns: 1000, DailyWriteLimit: 1000}); err != nil {
				return err
			}
		}
		run := coderun.Run{ID: r.id, Handle: "acme", RuntimeKey: "sh", Image: "busybox@sha256:x", CreatedAt: now,
			Transitions: []coderun.Transition{{Status: coderun.RunQueued, At: now, Reason: "submitted"}}}
		return tx.CreateRun(ctx, run, coderun.RunJob{Command: []string{"sh"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	r.publish.RunChanged(r.id)
	return r
}

func (r *fakeRun) commit(fn func(ctx context.Context, tx *store.Tx) error) {
	r.t.Helper()
	ctx := context.Background()
	if err := r.db.InTx(ctx, func(tx *store.Tx) error { return fn(ctx, tx) }); err != nil {
		r.t.Fatal(err)
	}
	r.publish.RunChanged(r.id)
}

// start claims the run (it must be the only one queued) and starts it.
func (r *fakeRun) start() {
	r.commit(func(ctx context.Context, tx *store.Tx) error {
		job, ok, err := tx.ClaimRun(ctx, "w1", time.Now(), time.Now().Add(time.Minute))
		if err == nil && (!ok || job.RunID != r.id) {
			err = fmt.Errorf("claimed %q (ok %v), want %s", job.RunID, ok, r.id)
		}
		return err
	})
	r.commit(func(ctx context.Context, tx *store.Tx) error { return tx.MarkRunning(ctx, r.id, "w1", time.Now()) })
}

func (r *fakeRun) print(line string) {
	r.seq++
	c := coderun.OutputChunk{Seq: r.seq, Stream: coderun.Stdout, Data: []byte(line), At: time.Now()}
	r.commit(func(ctx context.Context, tx *store.Tx) error { return tx.AppendOutput(ctx, r.id, "w1", c) })
}

func (r *fakeRun) succeed() {
	zero := 0
	r.commit(func(ctx context.Context, tx *store.Tx) error {
		return tx.FinishRun(ctx, r.id, "w1", store.RunResult{Status: coderun.RunSucceeded, ExitCode: &zero, At: time.Now(), Reason: "exited with code 0"})
	})
}

func line(seq int64) string { return fmt.Sprintf("line %d\n", seq) }

// collect reads a subscription to its end.
func collect[T any](t *testing.T, sub *events.Subscription[T]) ([]T, error) {
	t.Helper()
	var got []T
	timeout := time.After(60 * time.Second)
	for {
		select {
		case v, ok := <-sub.C:
			if !ok {
				return got, sub.Err()
			}
			got = append(got, v)
		case <-timeout:
			t.Fatalf("the subscription did not end after 60 s (%d received)", len(got))
		}
	}
}

// checkChunks asserts chunks are exactly after+1 … last, each with its line.
func checkChunks(t *testing.T, chunks []coderun.OutputChunk, after, last int64) {
	t.Helper()
	if int64(len(chunks)) != last-after {
		t.Fatalf("after %d: got %d chunks, want %d", after, len(chunks), last-after)
	}
	for i, c := range chunks {
		if want := after + 1 + int64(i); c.Seq != want || string(c.Data) != line(want) {
			t.Fatalf("after %d: chunk %d is seq %d %q, want seq %d", after, i, c.Seq, c.Data, want)
		}
	}
}

func TestOutputReplayThenLiveHasNoGapsOrDuplicates(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		db := testenv.OpenDB(t, dbURL)
		hub := events.NewHub(db, events.Options{})
		run := newRun(t, db, hub)
		run.start()
		const total = 60
		type result struct {
			after  int64
			chunks []coderun.OutputChunk
			err    error
		}
		results := make(chan result, 100)
		var wg sync.WaitGroup
		subscribe := func(after int64) {
			sub, err := hub.FollowOutput(bounded(t), run.id, after)
			if err != nil {
				t.Error(err)
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				chunks, err := collect(t, sub)
				results <- result{after, chunks, err}
			}()
		}
		// Subscribers join while the run prints, from the start, from where
		// it is, a little behind and ahead of it.
		for run.seq < total {
			run.print(line(run.seq + 1))
			if run.seq%7 == 0 {
				for _, after := range []int64{0, run.seq, run.seq - 3, run.seq + 2} {
					subscribe(after)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		subscribe(total - 1)
		run.succeed()
		subscribe(0) // after the end: replay alone
		wg.Wait()
		close(results)
		n := 0
		for r := range results {
			if r.err != nil {
				t.Fatalf("after %d: %v", r.after, r.err)
			}
			checkChunks(t, r.chunks, r.after, total)
			n++
		}
		if n != 4*(total/7)+2 {
			t.Fatalf("%d subscriptions ended", n)
		}
	})
}

func TestStatusStreamsEveryTransitionThenEnds(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		db := testenv.OpenDB(t, dbURL)
		hub := events.NewHub(db, events.Options{})
		run := newRun(t, db, hub)
		sub, err := hub.FollowStatus(bounded(t), run.id)
		if err != nil {
			t.Fatal(err)
		}
		first := <-sub.C // the current status, before the run moves on
		done := make(chan []coderun.RunStatusEvent)
		go func() {
			evs, err := collect(t, sub)
			if err != nil {
				t.Error(err)
			}
			done <- evs
		}()
		run.start()
		run.print(line(1))
		run.succeed()
		evs := append([]coderun.RunStatusEvent{first}, <-done...)
		var statuses []string
		for _, e := range evs {
			if e.RunID != run.id || e.At.IsZero() || e.Reason == "" {
				t.Fatalf("event %+v", e)
			}
			statuses = append(statuses, string(e.Status))
		}
		if got := strings.Join(statuses, ","); got != "queued,starting,running,succeeded" {
			t.Fatalf("statuses %s", got)
		}
		if last := evs[len(evs)-1]; last.ExitCode == nil || *last.ExitCode != 0 || last.Error != nil {
			t.Fatalf("terminal event %+v", last)
		}

		// A subscriber of a finished run gets its status, and the end.
		late, err := hub.FollowStatus(bounded(t), run.id)
		if err != nil {
			t.Fatal(err)
		}
		if evs, err := collect(t, late); err != nil || len(evs) != 1 || evs[0].Status != coderun.RunSucceeded || *evs[0].ExitCode != 0 {
			t.Fatalf("late subscriber got %+v, %v", evs, err)
		}
	})
}

func TestUnknownRunIsNotFound(t *testing.T) {
	hub := events.NewHub(testenv.OpenDB(t, testenv.SQLiteURL(t)), events.Options{})
	if _, err := hub.FollowOutput(bounded(t), "run_nope", 0); coderun.ErrorCode(err) != coderun.ERunNotFound {
		t.Fatalf("got %v", err)
	}
}

func TestManySubscribersGetTheSameStreamAndLeaveNothingBehind(t *testing.T) {
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	hub := events.NewHub(db, events.Options{Poll: 20 * time.Millisecond})
	run := newRun(t, db, hub)
	run.start()
	run.print(line(1))
	baseline := runtime.NumGoroutine()

	const subscribers, total = 200, 30
	var wg sync.WaitGroup
	got := make([][]coderun.OutputChunk, subscribers)
	for i := range subscribers {
		sub, err := hub.FollowOutput(bounded(t), run.id, 0)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if got[i], err = collect(t, sub); err != nil {
				t.Error(err)
			}
		}()
	}
	// Some leave early: their goroutines must go too.
	for range 50 {
		ctx, cancel := context.WithCancel(bounded(t))
		if _, err := hub.FollowStatus(ctx, run.id); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	for run.seq < total {
		run.print(line(run.seq + 1))
	}
	run.succeed()
	wg.Wait()
	for i := range got {
		checkChunks(t, got[i], 0, total)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the subscribers:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countingStore counts the reads of a store.
type countingStore struct {
	events.Store
	reads atomic.Int64
}

func (s *countingStore) RunChanges(ctx context.Context, runID string, afterTransition, afterSeq int64, maxChunks int) (store.RunChanges, error) {
	s.reads.Add(1)
	return s.Store.RunChanges(ctx, runID, afterTransition, afterSeq, maxChunks)
}

func TestOneStoreReadPerChangeWhateverTheSubscribers(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, dbURL string) {
		db := testenv.OpenDB(t, dbURL)
		counted := &countingStore{Store: db}
		hub := events.NewHub(counted, events.Options{Poll: time.Hour})
		run := newRun(t, db, hub)
		run.start()

		const subscribers, changes = 1000, 20
		var received sync.WaitGroup
		var cancels []context.CancelFunc
		subs := make([]*events.Subscription[coderun.OutputChunk], subscribers)
		for i := range subs {
			ctx, cancel := context.WithCancel(bounded(t))
			cancels = append(cancels, cancel)
			var err error
			if subs[i], err = hub.FollowOutput(ctx, run.id, 0); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			for _, cancel := range cancels {
				cancel()
			}
		}()
		// The feed's first read, and a replay each.
		for deadline := time.Now().Add(30 * time.Second); counted.reads.Load() < 1+subscribers; {
			if time.Now().After(deadline) {
				t.Fatalf("%d reads to subscribe", counted.reads.Load())
			}
			time.Sleep(time.Millisecond)
		}
		subscribed := counted.reads.Load()
		for _, sub := range subs {
			received.Add(1)
			go func() {
				defer received.Done()
				for i := int64(1); i <= changes; i++ {
					if c := <-sub.C; c.Seq != i {
						t.Errorf("got seq %d, want %d", c.Seq, i)
						return
					}
				}
			}()
		}
		start := time.Now()
		for range changes {
			run.print(line(run.seq + 1))
			time.Sleep(10 * time.Millisecond) // a change at a time, as a chatty run makes them
		}
		received.Wait()
		reads := counted.reads.Load() - subscribed
		t.Logf("%d subscribers, %d changes: %d store reads (%.2f per change) for the live part; %d to subscribe; all delivered in %v",
			subscribers, changes, reads, float64(reads)/changes, subscribed, time.Since(start))
		if reads > changes {
			t.Fatalf("%d reads for %d changes", reads, changes)
		}
	})
}

// publishTimer measures how long publishing takes the run.
type publishTimer struct {
	events.RunPublisher
	mu    sync.Mutex
	worst time.Duration
}

func (p *publishTimer) RunChanged(runID string) {
	start := time.Now()
	p.RunPublisher.RunChanged(runID)
	p.mu.Lock()
	p.worst = max(p.worst, time.Since(start))
	p.mu.Unlock()
}

func TestSlowSubscriberIsClosedWithoutHoldingAnythingBack(t *testing.T) {
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	const buffer, total = 16, 100
	hub := events.NewHub(db, events.Options{Buffer: buffer})
	timer := &publishTimer{RunPublisher: hub}
	run := newRun(t, db, timer)
	run.start()
	run.print(line(1))

	slow, err := hub.FollowOutput(bounded(t), run.id, 0) // never read until the end
	if err != nil {
		t.Fatal(err)
	}
	normal, err := hub.FollowOutput(bounded(t), run.id, 0)
	if err != nil {
		t.Fatal(err)
	}
	normalDone := make(chan []coderun.OutputChunk)
	go func() {
		chunks, err := collect(t, normal)
		if err != nil {
			t.Error(err)
		}
		normalDone <- chunks
	}()
	start := time.Now()
	for run.seq < total {
		run.print(line(run.seq + 1))
		time.Sleep(time.Millisecond)
	}
	run.succeed()
	took := time.Since(start)
	checkChunks(t, <-normalDone, 0, total)

	chunks, err := collect(t, slow)
	e := coderun.AsError(err)
	if e == nil || e.Code != coderun.ESubscriberTooSlow || !strings.Contains(e.Message, fmt.Sprintf("resume with afterSeq=%d", len(chunks))) {
		t.Fatalf("slow subscriber got %d chunks and %v", len(chunks), err)
	}
	t.Logf("run of %d chunks stored in %v; slowest publish %v; slow subscriber closed after %d chunks: %v", total, took, timer.worst, len(chunks), err)
	// Generous for a loaded machine: a publish that waited on the slow
	// subscriber would never return, since nothing reads it until the end.
	if timer.worst > time.Second {
		t.Fatalf("a publish took %v", timer.worst)
	}
	// It resumes where it was told to, and gets the rest.
	resumed, err := hub.FollowOutput(bounded(t), run.id, int64(len(chunks)))
	if err != nil {
		t.Fatal(err)
	}
	rest, err := collect(t, resumed)
	if err != nil {
		t.Fatal(err)
	}
	checkChunks(t, append(chunks, rest...), 0, total)
}

// bounded is a context that ends a minute into the test, so that a stream
// that never ends fails its test instead of hanging the package.
func bounded(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
