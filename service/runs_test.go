package service_test

import (
	"context"
	"testing"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/service"
	"github.com/gharart/coderun/store"
)

// A submission is bounded by the server's policy when it is made, not when
// its runtime was put: a network the server no longer gives is refused, and
// limits above the server's maxima are lowered to them.
func TestSubmissionsFollowTheServersPolicyNow(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	before := service.New(db, service.Options{AllowNetwork: true})
	if _, err := before.CreateHandle(ctx, "acme", "alice", 0, 0); err != nil {
		t.Fatal(err)
	}
	alice := as("alice")
	digest := "sha256:" + "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"
	yes, timeout, memory, code := true, 600, 2048, "echo hi"
	for key, network := range map[string]*bool{"net": &yes, "big": nil} {
		in := coderun.RuntimeInput{Image: "example/x", Digest: digest, Network: network,
			Limits: &coderun.LimitsInput{TimeoutSeconds: &timeout, MemoryMiB: &memory}}
		if _, _, _, err := before.PutRuntime(alice, "acme", key, in, ""); err != nil {
			t.Fatal(err)
		}
		// Validated, as if the image had been checked.
		err := db.InTx(ctx, func(tx *store.Tx) error {
			rt, err := tx.GetRuntime(ctx, "acme", key)
			if err != nil {
				return err
			}
			rt.Validation = coderun.Validation{Status: coderun.ValidationValidated, ResolvedDigest: &digest}
			_, err = tx.PutRuntime(ctx, rt)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	after := service.New(db, service.Options{MaxLimits: coderun.Limits{TimeoutSeconds: 60, MemoryMiB: 512, CPUs: 1, Pids: 64, OutputBytes: 1 << 20}})
	_, _, err := after.SubmitRun(alice, "acme", coderun.RunInput{RuntimeKey: "net", Code: &code}, "")
	if coderun.ErrorCode(err) != coderun.EConflict {
		t.Fatalf("a runtime with a network, once the server gives none: %v", err)
	}
	run, _, err := after.SubmitRun(alice, "acme", coderun.RunInput{RuntimeKey: "big", Code: &code}, "")
	if err != nil {
		t.Fatal(err)
	}
	if run.Limits.TimeoutSeconds != 60 || run.Limits.MemoryMiB != 512 {
		t.Fatalf("limits %+v; want them lowered to the server's 60 s and 512 MiB", run.Limits)
	}
}
