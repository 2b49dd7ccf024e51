package service_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
)

// Requests recorded from many goroutines all reach the database, in a few
// batches, and a flush asked for by a caller who has gone (a cancelled
// context) still writes them.
func TestRequestLogWritesEveryRecord(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	svc := service.New(db, service.Options{})
	const n = 2000 // several batches' worth
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = "req_" + ulid.Make().String()
		wg.Go(func() {
			svc.RecordRequest(coderun.RequestRecord{ID: ids[i], UserID: "alice", Method: "GET", Route: "GET /healthz", Status: 200, At: time.Now()})
		})
	}
	wg.Wait()
	gone, cancel := context.WithCancel(ctx)
	cancel()
	svc.FlushRequests(gone)
	err := db.Read(ctx, func(tx *store.Tx) error {
		for _, id := range ids {
			if r, err := tx.Request(ctx, id); err != nil || r.UserID != "alice" {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
