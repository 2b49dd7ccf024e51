package service_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/gharart/coderun/service"
)

// heldImages stands in for the engine: it holds every digest it checks and
// lets go of those keep does not want. A check waits on pulling, when set.
type heldImages struct {
	mu      sync.Mutex
	held    []string
	pulling chan struct{}
	started chan struct{}
}

func (h *heldImages) CheckImage(ctx context.Context, image, digest string) (string, *coderun.ErrorDetail, error) {
	if h.pulling != nil {
		h.started <- struct{}{}
		<-h.pulling
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.Contains(h.held, digest) {
		h.held = append(h.held, digest)
	}
	return digest, nil, nil
}

func (h *heldImages) ReleaseImages(ctx context.Context, keep func(string) bool) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var released []string
	h.held = slices.DeleteFunc(h.held, func(d string) bool {
		if keep(d) {
			return false
		}
		released = append(released, d)
		return true
	})
	return released, nil
}

func (h *heldImages) holding() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(slices.Values(h.held))
}

// The images released are those no runtime of any handle declares; none is
// released while an image check runs, nor when the server keeps images.
func TestReleaseImagesKeepsWhatRuntimesDeclare(t *testing.T) {
	ctx := context.Background()
	db := testenv.OpenDB(t, testenv.SQLiteURL(t))
	engine := &heldImages{}
	svc := service.New(db, service.Options{Images: engine, ReleaseImages: true})
	alice := as("alice")
	d := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	for _, h := range []string{"acme", "globex"} {
		if _, err := svc.CreateHandle(ctx, h, "alice", 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	put := func(handle, digest string) {
		t.Helper()
		if _, _, _, err := svc.PutRuntime(alice, handle, "rt", coderun.RuntimeInput{Image: "example/x:1", Digest: digest}, ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := svc.ValidateRuntimeImage(alice, handle, "rt", ""); err != nil {
			t.Fatal(err)
		}
	}
	put("acme", d("a"))
	put("globex", d("b"))
	put("acme", d("c")) // acme's runtime moves on from a

	svc.ReleaseImages(ctx)
	if got, want := engine.holding(), []string{d("b"), d("c")}; !slices.Equal(got, want) {
		t.Fatalf("holding %v, want %v", got, want)
	}

	// While a check pulls, nothing is released.
	put("globex", d("e"))
	engine.pulling, engine.started = make(chan struct{}), make(chan struct{})
	checked := make(chan error)
	go func() {
		_, _, err := svc.ValidateRuntimeImage(alice, "acme", "rt", "")
		checked <- err
	}()
	<-engine.started
	svc.ReleaseImages(ctx)
	if got := engine.holding(); !slices.Contains(got, d("b")) {
		t.Fatalf("released %s while a check ran: holding %v", d("b"), got)
	}
	close(engine.pulling)
	if err := <-checked; err != nil {
		t.Fatal(err)
	}
	engine.pulling = nil
	svc.ReleaseImages(ctx)
	if got, want := engine.holding(), []string{d("c"), d("e")}; !slices.Equal(got, want) {
		t.Fatalf("holding %v, want %v", got, want)
	}

	// A server told to keep images releases none.
	put("globex", d("f"))
	keeping := service.New(db, service.Options{Images: engine})
	keeping.ReleaseImages(ctx)
	if got := engine.holding(); !slices.Contains(got, d("e")) {
		t.Fatalf("released images although told to keep them: holding %v", got)
	}
}
