package events_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/events"
	"github.com/gharart/coderun/internal/testenv"
)

// Two "processes" share one PostgreSQL database, each with its own handle:
// one executes the run and notifies; the other follows it through its hub and
// listener alone (its feeds do not poll), and sees every chunk as it comes.
func TestChangesCrossProcessesThroughPostgres(t *testing.T) {
	dbURL := testenv.PostgresURL(t)
	workerDB, followerDB := testenv.OpenDB(t, dbURL), testenv.OpenDB(t, dbURL)
	ctx, cancel := context.WithCancel(bounded(t))
	defer cancel()

	notifier := events.NewNotifier(workerDB, nil, slog.Default())
	notified := make(chan struct{})
	go func() { defer close(notified); notifier.Run(ctx) }()
	defer func() { cancel(); <-notified }()

	hub := events.NewHub(followerDB, events.Options{Poll: time.Hour})
	go events.Listen(ctx, dbURL, hub, slog.Default())

	run := newRun(t, workerDB, notifier)
	run.start()
	sub, err := hub.FollowOutput(ctx, run.id, 0)
	if err != nil {
		t.Fatal(err)
	}
	const total = 20
	printed := make(chan time.Time, total)
	go func() {
		for run.seq < total {
			time.Sleep(50 * time.Millisecond)
			run.print(line(run.seq + 1))
			printed <- time.Now()
		}
		run.succeed()
	}()
	var worst time.Duration
	var chunks []coderun.OutputChunk
	for c := range sub.C {
		chunks = append(chunks, c)
		worst = max(worst, time.Since(<-printed))
	}
	if err := sub.Err(); err != nil {
		t.Fatal(err)
	}
	checkChunks(t, chunks, 0, total)
	t.Logf("%d chunks crossed processes; worst delay from commit to subscriber %v", total, worst)
	// Generous for a loaded machine. Without NOTIFY a chunk would wait for
	// the hour's poll, or a reconnection's reread at the earliest.
	if worst > 5*time.Second {
		t.Fatalf("a chunk took %v to cross: not live", worst)
	}
}
