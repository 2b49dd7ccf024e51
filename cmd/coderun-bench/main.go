// Command coderun-bench measures how long coderun takes to run a hello-world
// program, from submission to the run's terminal status as a client sees it,
// against the baseline of the same program in the same image through a bare
// `docker run --rm`, measured in the same run on the same machine. It starts
// a real `coderun serve` (SQLite in a temp dir, the local Docker engine) and
// talks to it like a live client: it submits over REST and follows each run's
// status over the GraphQL websocket (codeRunStatus), so that it hears of the
// end the moment the service does, without loading the service with polls.
//
//	go build -o bin/coderun ./cmd/coderun && go run ./cmd/coderun-bench [-n 30] [-concurrency 4]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	binary := flag.String("coderun", "bin/coderun", "the coderun binary to measure")
	n := flag.Int("n", 30, "runs per measurement")
	concurrency := flag.Int("concurrency", 4, "runs at once in the concurrent measurement")
	image := flag.String("image", "coderun-demo/busybox:1", "the image to run (built by scripts/demo-image.sh)")
	flag.Parse()
	if err := bench(*binary, *image, *n, *concurrency); err != nil {
		fmt.Fprintln(os.Stderr, "coderun-bench:", err)
		os.Exit(1)
	}
}

func bench(binary, image string, n, concurrency int) error {
	idOut, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", image).Output()
	if err != nil {
		return fmt.Errorf("image %s: run scripts/demo-image.sh first: %w", image, err)
	}
	digest := strings.TrimSpace(string(idOut))
	srv, err := start(binary)
	if err != nil {
		return err
	}
	defer srv.stop()
	if err := srv.setup(image, digest); err != nil {
		return err
	}
	// Each client holds a websocket; a run borrows one to follow itself.
	followers := make(chan *follower, concurrency)
	for range concurrency {
		f, err := srv.follower()
		if err != nil {
			return err
		}
		defer f.conn.Close()
		followers <- f
	}
	hello := func() error {
		f := <-followers
		defer func() { followers <- f }()
		return srv.run(f, "echo hello")
	}
	docker := func() error {
		out, err := exec.Command("docker", "run", "--rm", "--network", "none", image, "sh", "-c", "echo hello").CombinedOutput()
		if err != nil || string(out) != "hello\n" {
			return fmt.Errorf("docker run: %v %q", err, out)
		}
		return nil
	}
	// Warm both paths once: the first container start pays for caches.
	if err := hello(); err != nil {
		return err
	}
	if err := docker(); err != nil {
		return err
	}
	fmt.Printf("hello world, %d runs each, on %s\n\n", n, image)
	fmt.Printf("%-34s %9s %9s %9s\n", "", "p50", "p95", "max")
	rows := []struct {
		name string
		fn   func() error
		at   int
	}{
		{"docker run --rm (baseline)", docker, 1},
		{"coderun submit→terminal", hello, 1},
		{fmt.Sprintf("docker run --rm, %d at once", concurrency), docker, concurrency},
		{fmt.Sprintf("coderun submit→terminal, %d at once", concurrency), hello, concurrency},
	}
	medians := make([]time.Duration, len(rows))
	for i, r := range rows {
		ds, err := measure(r.fn, n, r.at)
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		medians[i] = pct(ds, 50)
		fmt.Printf("%-34s %9s %9s %9s\n", r.name, ms(pct(ds, 50)), ms(pct(ds, 95)), ms(ds[len(ds)-1]))
	}
	fmt.Printf("\nratio of medians, coderun / docker run: %.2f sequential, %.2f with %d at once\n",
		float64(medians[1])/float64(medians[0]), float64(medians[3])/float64(medians[2]), concurrency)
	return nil
}

// measure times n calls of fn, at a time, and returns the sorted durations.
func measure(fn func() error, n, at int) ([]time.Duration, error) {
	var (
		mu   sync.Mutex
		ds   []time.Duration
		errs []error
		wg   sync.WaitGroup
		next = make(chan struct{}, n)
	)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range at {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				start := time.Now()
				err := fn()
				mu.Lock()
				ds = append(ds, time.Since(start))
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(ds)
	return ds, errors.Join(errs...)
}

func pct(ds []time.Duration, p int) time.Duration { return ds[(len(ds)-1)*p/100] }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

// server is a coderun serve process with a handle "bench" and a token for it.
type server struct {
	cmd   *exec.Cmd
	dir   string
	env   []string
	base  string
	token string
}

func start(binary string) (*server, error) {
	dir, err := os.MkdirTemp("", "coderun-bench-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &server{dir: dir, base: "http://" + addr, env: append(os.Environ(),
		"CODERUN_DATA_DIR="+dir, "CODERUN_DATABASE_URL=sqlite://"+filepath.Join(dir, "coderun.db"),
		"CODERUN_ADDR="+addr, "CODERUN_WORKER_SLOTS=4", "CODERUN_LOG_LEVEL=warn",
		// Submissions come far faster than a person's.
		"CODERUN_RATE_WRITE=10000:10000")}
	for _, args := range [][]string{{"handle", "create", "bench", "--owner", "bench", "--max-active-runs", "16"}} {
		if out, err := s.command(binary, args...); err != nil {
			return nil, fmt.Errorf("coderun %s: %v %s", args[0], err, out)
		}
	}
	tok, err := s.command(binary, "token", "create", "--user", "bench", "--handle", "bench", "--scopes", "all")
	if err != nil {
		return nil, fmt.Errorf("coderun token create: %v", err)
	}
	s.token = strings.TrimSpace(tok)
	s.cmd = exec.Command(binary, "serve")
	s.cmd.Env, s.cmd.Stderr = s.env, os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		if res, err := http.Get(s.base + "/readyz"); err == nil && res.StatusCode == 200 {
			res.Body.Close()
			return s, nil
		}
		if i > 300 {
			s.stop()
			return nil, errors.New("coderun serve did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) command(binary string, args ...string) (string, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = s.env
	out, err := cmd.Output()
	return string(out), err
}

func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(os.Interrupt)
		s.cmd.Wait()
	}
	os.RemoveAll(s.dir)
}

func (s *server) call(method, path string, body any, out any) (int, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, s.base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+s.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	return res.StatusCode, json.NewDecoder(res.Body).Decode(out)
}

func (s *server) setup(image, digest string) error {
	var rt map[string]any
	body := map[string]any{"image": image, "digest": digest, "command": []string{"sh", "main.sh"}, "entrypointFile": "main.sh"}
	if _, err := s.call("PUT", "/v2/handles/bench/code-runtimes/sh", body, &rt); err != nil {
		return err
	}
	if _, err := s.call("POST", "/v2/handles/bench/code-runtimes/sh/validate-image", nil, &rt); err != nil {
		return err
	}
	if v, _ := rt["validation"].(map[string]any); v["status"] != "validated" {
		return fmt.Errorf("the runtime did not validate: %v", rt["validation"])
	}
	return nil
}

// run submits code and follows the run over f until it is terminal.
func (s *server) run(f *follower, code string) error {
	var run struct {
		RunID  string `json:"runId"`
		Status string `json:"status"`
	}
	if status, err := s.call("POST", "/v2/handles/bench/code-runs", map[string]any{"runtimeKey": "sh", "code": code}, &run); err != nil || status != 202 {
		return fmt.Errorf("submit: %d %v", status, err)
	}
	status, err := f.terminal(run.RunID)
	if err == nil && status != "SUCCEEDED" {
		err = fmt.Errorf("run %s ended %s", run.RunID, status)
	}
	return err
}

// follower is a client's GraphQL websocket (graphql-transport-ws).
type follower struct {
	conn *websocket.Conn
	next int // the id of the next subscription
}

// wsMessage is a graphql-transport-ws message.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (s *server) follower() (*follower, error) {
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(s.base, "http")+"/graphql", nil)
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	auth, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + s.token})
	if err := conn.WriteJSON(wsMessage{Type: "connection_init", Payload: auth}); err != nil {
		conn.Close()
		return nil, err
	}
	var ack wsMessage
	if err := conn.ReadJSON(&ack); err != nil || ack.Type != "connection_ack" {
		conn.Close()
		return nil, fmt.Errorf("websocket: no connection_ack (%s, %v)", ack.Type, err)
	}
	return &follower{conn: conn}, nil
}

const statusSubscription = `subscription($h: String!, $id: String!) { codeRunStatus(handle: $h, runId: $id) { status } }`

// terminal subscribes to the run's status and returns the first terminal
// one: the subscription sends the current status first, so a run that ended
// before it began is seen at once.
func (f *follower) terminal(runID string) (string, error) {
	f.next++
	id := fmt.Sprint(f.next)
	sub, _ := json.Marshal(map[string]any{"query": statusSubscription, "variables": map[string]string{"h": "bench", "id": runID}})
	if err := f.conn.WriteJSON(wsMessage{ID: id, Type: "subscribe", Payload: sub}); err != nil {
		return "", err
	}
	f.conn.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		var m wsMessage
		if err := f.conn.ReadJSON(&m); err != nil {
			return "", fmt.Errorf("follow run %s: %w", runID, err)
		}
		switch {
		case m.Type == "ping":
			f.conn.WriteJSON(wsMessage{Type: "pong"})
		case m.ID != id: // the end of an earlier subscription
		case m.Type == "next":
			var p struct {
				Data struct {
					CodeRunStatus struct{ Status string } `json:"codeRunStatus"`
				} `json:"data"`
				Errors []struct{ Message string } `json:"errors"`
			}
			if err := json.Unmarshal(m.Payload, &p); err != nil || len(p.Errors) > 0 {
				return "", fmt.Errorf("follow run %s: %s %v", runID, m.Payload, err)
			}
			switch st := p.Data.CodeRunStatus.Status; st {
			case "QUEUED", "STARTING", "RUNNING":
			default:
				return st, nil
			}
		default:
			return "", fmt.Errorf("follow run %s: %s %s", runID, m.Type, m.Payload)
		}
	}
}
