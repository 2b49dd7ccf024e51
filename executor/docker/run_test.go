package docker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/gharart/coderun"
	"github.com/gharart/coderun/executor"
	"github.com/gharart/coderun/executor/docker"
	"github.com/gharart/coderun/internal/testenv"
	"github.com/moby/moby/client"
	"github.com/oklog/ulid/v2"
)

// demoImage is the tag scripts/demo-image.sh builds under and tests never remove.
const demoImage = "coderun-demo/busybox:1"

// busybox returns the demo image's ID: how a local-only runtime's runs name it.
func busybox(t testing.TB) string {
	t.Helper()
	return testenv.BusyboxImage(t, demoImage)
}

// recording is a Sink that keeps everything it is given, in order.
type recording struct {
	events         []string // "started", then the stream of each chunk
	startedAt      time.Time
	stdout, stderr bytes.Buffer
	// onStart, if set, is called when the program has started.
	onStart func()
}

func (r *recording) Started(at time.Time) {
	r.events = append(r.events, "started")
	r.startedAt = at
	if r.onStart != nil {
		r.onStart()
	}
}

func (r *recording) Output(c executor.Chunk) {
	r.events = append(r.events, string(c.Stream))
	if c.Stream == coderun.Stderr {
		r.stderr.Write(c.Data)
	} else {
		r.stdout.Write(c.Data)
	}
}

// run runs spec end to end as a worker would (Prepare, Run, Cleanup) and
// checks that nothing of it is left on the engine. Spec fields left empty get
// a fresh run id and the demo image.
func run(t *testing.T, e *docker.Engine, spec executor.Spec) (executor.Outcome, *recording) {
	t.Helper()
	return runWith(t, e, spec, context.Background(), &recording{})
}

func runWith(t *testing.T, e *docker.Engine, spec executor.Spec, ctx context.Context, rec *recording) (executor.Outcome, *recording) {
	t.Helper()
	if spec.RunID == "" {
		spec.RunID = newRunID()
	}
	if spec.Image == "" {
		spec.Image = busybox(t)
	}
	sb, err := e.Prepare(context.Background(), spec)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	t.Cleanup(func() { e.Cleanup(context.Background(), spec.RunID) }) // if the test fails before its own
	checkMounts(t, spec.RunID)

	outcome, err := sb.Run(ctx, rec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := e.Cleanup(context.Background(), spec.RunID); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	wantGone(t, spec.RunID)
	t.Logf("outcome %+v\nstdout %q\nstderr %q", outcome, truncate(rec.stdout.String()), truncate(rec.stderr.String()))
	return outcome, rec
}

func newRunID() string { return "test-" + strings.ToLower(ulid.Make().String()) }

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// checkMounts checks a prepared run's mounts: its workspace is a tmpfs, and
// the one volume it sees is coderun-init's, read-only. Nothing it writes
// lands on the engine's disk.
func checkMounts(t *testing.T, runID string) {
	t.Helper()
	info, err := testenv.Docker(t).ContainerInspect(context.Background(), "coderun-"+runID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect the sandbox of %s: %v", runID, err)
	}
	if opts, ok := info.Container.HostConfig.Tmpfs[executor.WorkDir]; !ok || !strings.Contains(opts, "size=") {
		t.Fatalf("the workspace of %s is not a size-limited tmpfs: %v", runID, info.Container.HostConfig.Tmpfs)
	}
	for _, m := range info.Container.Mounts {
		if m.Destination != "/.coderun" || m.RW || m.Type != "volume" {
			t.Fatalf("the sandbox of %s mounts %s %q at %s (rw %v); want only coderun-init's volume, read-only", runID, m.Type, m.Name, m.Destination, m.RW)
		}
	}
}

// wantGone checks that no container of runID is left on the engine.
func wantGone(t *testing.T, runID string) {
	t.Helper()
	cli := testenv.Docker(t)
	list, err := cli.ContainerList(context.Background(), client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", docker.LabelRunID+"="+runID),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("after Cleanup the engine still has %d containers of run %s", len(list.Items), runID)
	}
}

func wantExit(t *testing.T, o executor.Outcome, end executor.End, code int) {
	t.Helper()
	if o.End != end || o.ExitCode != code {
		t.Errorf("ended %s with code %d, want %s with code %d", o.End, o.ExitCode, end, code)
	}
}

func wantOutput(t *testing.T, rec *recording, stdout, stderr string) {
	t.Helper()
	if got := rec.stdout.String(); got != stdout {
		t.Errorf("stdout %q, want %q", got, stdout)
	}
	if got := rec.stderr.String(); got != stderr {
		t.Errorf("stderr %q, want %q", got, stderr)
	}
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func TestRunHelloWorld(t *testing.T) {
	e := newEngine(t)

	t.Run("output on both streams", func(t *testing.T) {
		before := time.Now()
		o, rec := run(t, e, executor.Spec{Command: sh("echo out; echo err >&2")})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "out\n", "err\n")
		if o.StdoutBytes != 4 || o.StderrBytes != 4 || o.Truncated {
			t.Errorf("counted %d + %d bytes, truncated %v; want 4 + 4, not truncated", o.StdoutBytes, o.StderrBytes, o.Truncated)
		}
		if len(rec.events) == 0 || rec.events[0] != "started" || slices.Index(rec.events[1:], "started") >= 0 {
			t.Errorf("events %v, want one started first", rec.events)
		}
		if !rec.startedAt.Equal(o.StartedAt) || o.StartedAt.Before(before) || !o.FinishedAt.After(o.StartedAt) {
			t.Errorf("started %v (sink %v), finished %v; want started after %v and before finished",
				o.StartedAt, rec.startedAt, o.FinishedAt, before)
		}
	})

	t.Run("an exit code", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: sh("exit 3")})
		wantExit(t, o, executor.Exited, 3)
		wantOutput(t, rec, "", "")
	})

	t.Run("the image's own command when the spec has none", func(t *testing.T) {
		// The demo image's command is sh, which runs its input.
		o, rec := run(t, e, executor.Spec{Stdin: []byte("echo from stdin; exit 4\n")})
		wantExit(t, o, executor.Exited, 4)
		wantOutput(t, rec, "from stdin\n", "")
	})

	t.Run("args follow the spec's command", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: sh(`echo "[$0] [$1]"`), Args: []string{"zero", "one two"}})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "[zero] [one two]\n", "")
	})

	t.Run("args follow the image's own command when the spec has none", func(t *testing.T) {
		// The demo image's command is sh: sh -c script zero.
		o, rec := run(t, e, executor.Spec{Args: []string{"-c", `echo "[$0]"`, "zero"}})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "[zero]\n", "")
	})

	t.Run("a command that does not exist", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: []string{"/no/such/program"}})
		wantExit(t, o, executor.Exited, 127)
		if !strings.Contains(rec.stderr.String(), "/no/such/program") {
			t.Errorf("stderr %q does not name the program", rec.stderr.String())
		}
	})
}

func TestRunDeliversInput(t *testing.T) {
	e := newEngine(t)

	t.Run("stdin, then EOF", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: []string{"cat"}, Stdin: []byte("line 1\nline 2 without newline")})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "line 1\nline 2 without newline", "")
	})

	t.Run("stdin larger than the pipes between", func(t *testing.T) {
		input := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
		o, rec := run(t, e, executor.Spec{Command: sh("wc -c"), Stdin: input})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, fmt.Sprintf("%d\n", len(input)), "")
	})

	t.Run("bytes that are not UTF-8 come back as they were", func(t *testing.T) {
		input := []byte{0xff, 0xfe, 0x00, 0x80, 'a', 0xc3, '\n', 0x1b, '[', '0', 'm'}
		o, rec := run(t, e, executor.Spec{Command: sh("cat; cat >&2 /workspace/bin"), Stdin: input,
			Files: []executor.File{{Path: "bin", Data: input}}})
		wantExit(t, o, executor.Exited, 0)
		if !bytes.Equal(rec.stdout.Bytes(), input) || !bytes.Equal(rec.stderr.Bytes(), input) {
			t.Errorf("stdout %x, stderr %x, want %x on both", rec.stdout.Bytes(), rec.stderr.Bytes(), input)
		}
	})

	t.Run("files, args and env", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{
			Command: []string{"sh", "main.sh", "first arg", "--x"},
			Env:     map[string]string{"CAMPAIGN": "spring", "EMPTY": ""},
			Files: []executor.File{
				{Path: "main.sh", Data: []byte(`. ./lib/util.sh
greet "$1" "$2"
echo "CAMPAIGN=$CAMPAIGN EMPTY=[$EMPTY] pwd=$(pwd)"
echo written >new.txt && cat new.txt
echo changed >>lib/util.sh && tail -n 1 lib/util.sh
mkdir made && echo in-dir >made/f && cat made/f
echo scratch >/tmp/scratch && cat /tmp/scratch
./tool.sh
`)},
				{Path: "lib/util.sh", Data: []byte("greet() { echo \"hello [$1] [$2]\"; }\n")},
				{Path: "./tool.sh", Data: []byte("#!/bin/sh\necho tool runs\n"), Mode: 0o755},
			},
		})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, `hello [first arg] [--x]
CAMPAIGN=spring EMPTY=[] pwd=/workspace
written
changed
in-dir
scratch
tool runs
`, "")
	})

	t.Run("a local image named by its ID as the digest", func(t *testing.T) {
		id := busybox(t)
		o, rec := run(t, e, executor.Spec{Image: "coderun-demo/busybox@" + id, Command: sh("echo ok")})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "ok\n", "")
	})
}

func TestRunSandbox(t *testing.T) {
	e := newEngine(t)

	t.Run("not root", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: sh("id -u; id -g")})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "65534\n65534\n", "")

		o, rec = run(t, e, executor.Spec{Command: sh("id -u; id -g"), User: "1234:5678"})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "1234\n5678\n", "")
	})

	t.Run("root is refused", func(t *testing.T) {
		for _, user := range []string{"0:0", "0:65534", "65534:0", "root", "root:root", "nobody", "-1:2"} {
			_, err := e.Prepare(context.Background(), executor.Spec{RunID: newRunID(), Image: busybox(t), User: user})
			if err == nil {
				t.Errorf("Prepare with user %q succeeded", user)
			}
		}
	})

	t.Run("the root filesystem is read-only", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: sh("touch /x; touch /etc/passwd; echo >/bin/x; echo done")})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "done\n", "touch: /x: Read-only file system\n"+
			"touch: /etc/passwd: Read-only file system\n"+
			"sh: can't create /bin/x: Read-only file system\n")
	})

	t.Run("/tmp is small and runs nothing", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: sh(`cp /bin/busybox /tmp/b && /tmp/b true || echo "exec refused";` +
			` head -c 70m /dev/zero >/tmp/big; echo "wrote $(wc -c </tmp/big)"`)})
		wantExit(t, o, executor.Exited, 0)
		if want := "exec refused\nwrote " + strconv.Itoa(docker.DefaultTmpfsBytes-busyboxSize(t)) + "\n"; rec.stdout.String() != want {
			t.Errorf("stdout %q, want %q", rec.stdout.String(), want)
		}
	})

	t.Run("a file in the workspace is bounded", func(t *testing.T) {
		// The workspace is on the engine's disk: one file stops at 64 MiB, its
		// writer killed by SIGXFSZ (exit 128+25).
		o, rec := run(t, e, executor.Spec{Command: sh(`head -c 70m /dev/zero >big; echo "head=$?"; wc -c <big`)})
		wantExit(t, o, executor.Exited, 0)
		if want := fmt.Sprintf("head=153\n%d\n", 64<<20); rec.stdout.String() != want {
			t.Errorf("stdout %q, want %q", rec.stdout.String(), want)
		}
	})

	t.Run("no network", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan struct{})
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
				close(accepted)
			}
		}()
		port := l.Addr().(*net.TCPAddr).Port
		o, rec := run(t, e, executor.Spec{Command: sh(fmt.Sprintf("nc -w 2 127.0.0.1 %d </dev/null; echo nc=$?; ls /sys/class/net", port))})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "nc=1\nlo\n", "nc: can't connect to remote host (127.0.0.1): Connection refused\n")
		select {
		case <-accepted:
			t.Error("the host's listener accepted a connection from the sandbox")
		default:
		}
	})

	t.Run("the workspace as a whole is bounded, off the engine's disk", func(t *testing.T) {
		// 64 MiB of memory: a 32 MiB workspace holds four 8 MiB files, not a fifth.
		o, rec := run(t, e, executor.Spec{Limits: coderun.Limits{MemoryMiB: 64},
			Command: sh("df -m . | tail -1 | awk '{print $2}'; for i in 0 1 2 3 4 5 6 7 8 9; do dd if=/dev/zero of=f$i bs=1M count=8 2>/dev/null || { echo full at $i; break; }; done")})
		wantExit(t, o, executor.Exited, 0)
		if got := rec.stdout.String(); got != "32\nfull at 4\n" {
			t.Errorf("stdout %q, want a 32 MiB workspace full at the fifth file", got)
		}
	})

	t.Run("the kernel's limits: OOM-killed first, CPU time bounded", func(t *testing.T) {
		// 30 s at 2 CPUs: each process may use 60 s of CPU and a margin, so
		// the wall-time limit, not this, ends a run.
		o, rec := run(t, e, executor.Spec{Command: sh("cat /proc/self/oom_score_adj; ulimit -t"),
			Limits: coderun.Limits{TimeoutSeconds: 30, CPUs: 2}})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "1000\n65\n", "")
	})

	t.Run("a spec asking for a network gets none unless the engine allows it", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Network: true, Command: sh("ls /sys/class/net")})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "lo\n", "")
	})

	t.Run("a fork bomb is held to the pids limit", func(t *testing.T) {
		const pids = 32
		runID := newRunID()
		var (
			mu                sync.Mutex
			most, limitHits   int
			watching          = make(chan struct{})
			stopWatch, cancel = context.WithCancel(context.Background())
		)
		defer cancel()
		rec := &recording{onStart: func() {
			// The engine's pids cgroup of the container (cgroup v1, cgroupfs driver).
			go func() {
				defer close(watching)
				dir := "/sys/fs/cgroup/pids/docker/" + containerID(t, runID)
				for stopWatch.Err() == nil {
					current, err1 := os.ReadFile(dir + "/pids.current")
					events, err2 := os.ReadFile(dir + "/pids.events")
					if err1 != nil || err2 != nil {
						return // the container is gone
					}
					n, _ := strconv.Atoi(strings.TrimSpace(string(current)))
					hits, _ := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(events)), "max "))
					mu.Lock()
					most, limitHits = max(most, n), max(limitHits, hits)
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}}
		start := time.Now()
		o, _ := runWith(t, e, executor.Spec{
			RunID: runID,
			// The shell stays (a builtin loop needs no fork) until the
			// timeout, so the watcher sees the cgroup however busy the CPU.
			Command: sh("f() { f | f & }; f; while :; do :; done"),
			Limits:  coderun.Limits{Pids: pids, TimeoutSeconds: 2},
		}, context.Background(), rec)
		took := time.Since(start)
		cancel()
		<-watching

		if o.End != executor.TimedOut && o.End != executor.Exited {
			t.Errorf("ended %s, want timed out or exited", o.End)
		}
		// Generous for a loaded machine: a run the timeout missed would go
		// on forever.
		if took > 20*time.Second {
			t.Errorf("the run took %s, want its 2 s timeout and the cleanup", took)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Logf("most pids seen %d; forks refused at the limit: %d", most, limitHits)
		if most == 0 || most > pids {
			t.Errorf("saw at most %d pids in the sandbox, want 1 to %d", most, pids)
		}
		if limitHits == 0 {
			t.Error("the pids cgroup never refused a fork")
		}
		// The host goes on running programs.
		o, rec2 := run(t, e, executor.Spec{Command: sh("echo fine")})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec2, "fine\n", "")
	})

	t.Run("a memory bomb is OOM killed", func(t *testing.T) {
		// Doubling a shell string allocates for real, a page at a time.
		o, _ := run(t, e, executor.Spec{Command: sh("x=a; while :; do x=$x$x; done"), Limits: coderun.Limits{MemoryMiB: 32}})
		wantExit(t, o, executor.OOMKilled, 137)
	})

	t.Run("endless output is cut at the limit", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: sh("yes; echo never"), Limits: coderun.Limits{OutputBytes: 4096}})
		wantExit(t, o, executor.OutputLimitReached, 137)
		if want := strings.Repeat("y\n", 2048); rec.stdout.String() != want || rec.stderr.Len() != 0 {
			t.Errorf("delivered %d bytes of stdout and %d of stderr, want exactly 4096 of y\\n and none", rec.stdout.Len(), rec.stderr.Len())
		}
		if o.StdoutBytes != 4096 || o.StderrBytes != 0 || !o.Truncated {
			t.Errorf("counted %d + %d bytes, truncated %v; want 4096 + 0, truncated", o.StdoutBytes, o.StderrBytes, o.Truncated)
		}
	})

	t.Run("output up to the limit exactly is whole", func(t *testing.T) {
		o, rec := run(t, e, executor.Spec{Command: sh("head -c 1000 /dev/zero; head -c 24 /dev/zero >&2"), Limits: coderun.Limits{OutputBytes: 1024}})
		wantExit(t, o, executor.Exited, 0)
		if rec.stdout.Len() != 1000 || rec.stderr.Len() != 24 || o.Truncated {
			t.Errorf("delivered %d + %d bytes, truncated %v; want 1000 + 24, not truncated", rec.stdout.Len(), rec.stderr.Len(), o.Truncated)
		}
	})

	t.Run("the wall-time limit", func(t *testing.T) {
		start := time.Now()
		o, rec := run(t, e, executor.Spec{Command: sh("echo going; sleep 30"), Limits: coderun.Limits{TimeoutSeconds: 1}})
		wantExit(t, o, executor.TimedOut, 137)
		wantOutput(t, rec, "going\n", "")
		// The upper bounds are generous for a loaded machine; the program
		// would run 30 s without the limit.
		if ran := o.FinishedAt.Sub(o.StartedAt); ran < time.Second || ran > 10*time.Second {
			t.Errorf("the program ran %s, want about its 1 s limit", ran)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("the whole run took %s", took)
		}
	})

	t.Run("cancelling the run", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var cancelledAt time.Time
		rec := &recording{onStart: func() {
			time.AfterFunc(300*time.Millisecond, func() { cancelledAt = time.Now(); cancel() })
		}}
		o, _ := runWith(t, e, executor.Spec{Command: sh("sleep 30")}, ctx, rec)
		wantExit(t, o, executor.Cancelled, 137)
		// Generous for a loaded machine; uncancelled, it would sleep 30 s.
		if late := o.FinishedAt.Sub(cancelledAt); late > 10*time.Second {
			t.Errorf("the program ended %s after the cancel", late)
		}
	})
}

// busyboxSize is how much of /tmp a copy of busybox takes.
func busyboxSize(t *testing.T) int {
	t.Helper()
	fi, err := os.Stat("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	// tmpfs rounds each file up to whole pages.
	page := os.Getpagesize()
	return int(fi.Size()+int64(page)-1) / page * page
}

func containerID(t *testing.T, runID string) string {
	t.Helper()
	info, err := testenv.Docker(t).ContainerInspect(context.Background(), "coderun-"+runID, client.ContainerInspectOptions{})
	if err != nil {
		t.Errorf("inspect the sandbox of %s: %v", runID, err)
	}
	return info.Container.ID
}

func TestSandboxLifecycle(t *testing.T) {
	e := newEngine(t)
	runID := newRunID()
	if _, err := e.Prepare(context.Background(), executor.Spec{RunID: runID, Image: busybox(t), Command: sh("true")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Cleanup(context.Background(), runID) })
	checkMounts(t, runID)

	listed, err := e.Sandboxes(context.Background())
	if err != nil || !slices.Contains(listed, runID) {
		t.Fatalf("Sandboxes() = %v, %v; want it to list the prepared %s", listed, err, runID)
	}
	if _, err := e.Prepare(context.Background(), executor.Spec{RunID: runID, Image: busybox(t)}); err == nil || errors.Is(err, executor.ErrUnavailable) {
		t.Errorf("preparing run %s twice: %v, want a refusal that is not the engine being unavailable", runID, err)
	}

	// The caller's context is gone; the cleanup happens anyway.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Cleanup(cancelled, runID); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	wantGone(t, runID)
	if err := e.Cleanup(context.Background(), runID); err != nil {
		t.Errorf("a second Cleanup: %v", err)
	}
	if err := e.Cleanup(context.Background(), newRunID()); err != nil {
		t.Errorf("Cleanup of a run never prepared: %v", err)
	}
	listed, err = e.Sandboxes(context.Background())
	if err != nil || slices.Contains(listed, runID) {
		t.Errorf("Sandboxes() = %v, %v after Cleanup; want %s gone", listed, err, runID)
	}
}

func TestCleanupWhileAnotherCleanupRuns(t *testing.T) {
	e := newEngine(t)
	runID := newRunID()
	sb, err := e.Prepare(context.Background(), executor.Spec{RunID: runID, Image: busybox(t), Command: sh("sleep 30")})
	if err != nil {
		t.Fatal(err)
	}
	checkMounts(t, runID)
	started := make(chan struct{})
	ran := make(chan error, 1)
	go func() {
		_, err := sb.Run(context.Background(), &recording{onStart: func() { close(started) }})
		ran <- err
	}()
	<-started

	// An orphan sweep and the run's own worker remove the running sandbox at once.
	cleaned := make(chan error, 2)
	for range 2 {
		go func() { cleaned <- e.Cleanup(context.Background(), runID) }()
	}
	for range 2 {
		if err := <-cleaned; err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	}
	wantGone(t, runID)
	select {
	case err := <-ran:
		t.Logf("Run of the removed sandbox returned %v", err)
	case <-time.After(10 * time.Second):
		t.Error("Run did not return after its sandbox was removed")
	}
}

func TestSandboxesOfOneInstance(t *testing.T) {
	blue, green, unnamed := newEngine(t, docker.WithInstance("blue")), newEngine(t, docker.WithInstance("green")), newEngine(t)
	runID := newRunID()
	_, err := blue.Prepare(context.Background(), executor.Spec{
		RunID: runID, Image: busybox(t),
		// A spec cannot claim another instance's or run's labels.
		Labels: map[string]string{"team": "qa", docker.LabelInstance: "green", docker.LabelRunID: "someone-else"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blue.Cleanup(context.Background(), runID) })

	info, err := testenv.Docker(t).ContainerInspect(context.Background(), "coderun-"+runID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labels := info.Container.Config.Labels
	if labels["team"] != "qa" || labels[docker.LabelInstance] != "blue" || labels[docker.LabelRunID] != runID || labels[docker.LabelManaged] != "true" {
		t.Errorf("labels %v, want team=qa, the blue instance, run %s, managed", labels, runID)
	}
	for _, c := range []struct {
		name   string
		e      *docker.Engine
		listed bool
	}{{"blue", blue, true}, {"green", green, false}, {"unnamed", unnamed, false}} {
		ids, err := c.e.Sandboxes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(ids, runID) != c.listed {
			t.Errorf("%s lists %v; want run %s listed: %v", c.name, ids, runID, c.listed)
		}
	}
}

func TestPrepareRefuses(t *testing.T) {
	e := newEngine(t)
	image := busybox(t)
	for name, spec := range map[string]executor.Spec{
		"an image the engine does not have, by digest": {Image: "127.0.0.1:9/coderun-test/none@" + wrongDigest},
		"an image the engine does not have, by ID":     {Image: wrongDigest},
		"an image the engine does not have, by tag":    {Image: "coderun-test/never-built:" + uniqueTag()},
	} {
		t.Run(name, func(t *testing.T) {
			spec.RunID = newRunID()
			_, err := e.Prepare(context.Background(), spec)
			if !errors.Is(err, executor.ErrImageUnavailable) {
				t.Fatalf("Prepare: %v, want ErrImageUnavailable", err)
			}
			wantNoContainer(t, spec.RunID)
		})
	}
	for name, files := range map[string][]executor.File{
		"a file outside the workspace":  {{Path: "../escape", Data: []byte("x")}},
		"an absolute path":              {{Path: "/etc/passwd", Data: []byte("x")}},
		"the workspace itself":          {{Path: ".", Data: []byte("x")}},
		"a file twice":                  {{Path: "a", Data: []byte("1")}, {Path: "./a", Data: []byte("2")}},
		"a file inside another file":    {{Path: "a", Data: []byte("1")}, {Path: "a/b", Data: []byte("2")}},
		"a file where a directory goes": {{Path: "a/b", Data: []byte("1")}, {Path: "a", Data: []byte("2")}},
	} {
		t.Run(name, func(t *testing.T) {
			runID := newRunID()
			_, err := e.Prepare(context.Background(), executor.Spec{RunID: runID, Image: image, Files: files})
			if err == nil || errors.Is(err, executor.ErrUnavailable) {
				t.Fatalf("Prepare: %v, want a refusal of the files", err)
			}
			wantNoContainer(t, runID)
		})
	}
}

func wantNoContainer(t *testing.T, runID string) {
	t.Helper()
	_, err := testenv.Docker(t).ContainerInspect(context.Background(), "coderun-"+runID, client.ContainerInspectOptions{})
	if !cerrdefs.IsNotFound(err) {
		t.Errorf("inspecting the sandbox of a refused run: %v, want not found", err)
	}
}

func TestEngineDownIsUnavailable(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	e, err := docker.New()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Prepare(context.Background(), executor.Spec{RunID: newRunID(), Image: wrongDigest}); !errors.Is(err, executor.ErrUnavailable) {
		t.Errorf("Prepare: %v, want ErrUnavailable", err)
	}
	if _, err := e.Sandboxes(context.Background()); !errors.Is(err, executor.ErrUnavailable) {
		t.Errorf("Sandboxes: %v, want ErrUnavailable", err)
	}
	if err := e.Cleanup(context.Background(), newRunID()); !errors.Is(err, executor.ErrUnavailable) {
		t.Errorf("Cleanup: %v, want ErrUnavailable", err)
	}
}

// BenchmarkHelloWorld measures a cold run end to end: Prepare, Run, Cleanup.
// It reports the median beside the mean.
func BenchmarkHelloWorld(b *testing.B) {
	testenv.Docker(b)
	e, err := docker.New(docker.WithInit(testenv.Init(b)))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	image := busybox(b)
	var took []time.Duration
	for b.Loop() {
		start := time.Now()
		runID := newRunID()
		sb, err := e.Prepare(context.Background(), executor.Spec{RunID: runID, Image: image, Command: sh("echo hello")})
		if err != nil {
			b.Fatal(err)
		}
		rec := &recording{}
		if o, err := sb.Run(context.Background(), rec); err != nil || o.End != executor.Exited || rec.stdout.String() != "hello\n" {
			b.Fatalf("run: %+v, %v, stdout %q", o, err, rec.stdout.String())
		}
		if err := e.Cleanup(context.Background(), runID); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "median-ms")
}

// A runtime without a command runs its image's own (ENTRYPOINT then CMD),
// still behind coderun-init; a volume the image declares is a tmpfs, never a
// directory on the engine's disk; the image's health check never runs.
func TestImageDefaultsInTheSandbox(t *testing.T) {
	e := newEngine(t)
	base := busybox(t)
	const tag = "coderun-test/volume:1"
	build := exec.Command("docker", "build", "--quiet", "--tag", tag, "-")
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	build.Stdin = strings.NewReader("FROM " + base + "\nVOLUME /data\nENTRYPOINT [\"sh\", \"-c\"]\n" +
		"HEALTHCHECK --interval=100ms CMD [\"touch\", \"/tmp/probed\"]\n" +
		"CMD [\"echo from the image; stat -f -c %T /data; sleep 1; ls /tmp\"]\n")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	o, rec := run(t, e, executor.Spec{Image: tag})
	wantExit(t, o, executor.Exited, 0)
	wantOutput(t, rec, "from the image\ntmpfs\n", "")
}

// A volume declared by a relative path would be a directory on the engine's
// disk whatever the sandbox mounts (the engine takes no tmpfs for it), and one
// at / cannot start: such images are refused before any sandbox is made of
// them.
func TestImagesWithVolumesSandboxesCannotCoverAreRefused(t *testing.T) {
	e := newEngine(t)
	for _, c := range []struct{ volumes, tag, want string }{
		{"/data rel", "coderun-test/relative-volume:1", `volume "rel" by a relative path`},
		{"/", "coderun-test/root-volume:1", "a volume at /"},
	} {
		build := exec.Command("docker", "build", "--quiet", "--tag", c.tag, "-")
		build.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
		build.Stdin = strings.NewReader("FROM " + busybox(t) + "\nVOLUME " + c.volumes + "\n")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("docker build: %v\n%s", err, out)
		}
		runID := newRunID()
		_, err := e.Prepare(context.Background(), executor.Spec{RunID: runID, Image: c.tag, Command: sh("true")})
		if !errors.Is(err, executor.ErrImageUnsupported) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("VOLUME %s: Prepare: %v, want ErrImageUnsupported saying %q", c.volumes, err, c.want)
		}
		if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+docker.LabelRunID+"="+runID).Output(); len(out) > 0 {
			t.Fatalf("VOLUME %s: a sandbox was made of it: %s", c.volumes, out)
		}
	}
}

// An image cannot supply coderun-init: one that carries a file where the init
// is mounted still runs behind the service's own, and so do the runs after
// it. A binary that cannot run in a sandbox is refused before any does.
func TestTheInitIsTheServicesOwn(t *testing.T) {
	e := newEngine(t)
	const tag = "coderun-test/fake-init:1"
	build := exec.Command("docker", "build", "--quiet", "--tag", tag, "-")
	build.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	build.Stdin = strings.NewReader("FROM " + busybox(t) + "\nUSER 0\n" +
		"RUN mkdir /.coderun && printf '#!/bin/sh\\necho pwned\\n' > /.coderun/coderun-init && chmod 755 /.coderun/coderun-init\n" +
		"VOLUME /.coderun\nUSER 65534\n")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	for _, image := range []string{tag, busybox(t)} {
		o, rec := run(t, e, executor.Spec{Image: image, Command: sh("echo ours")})
		wantExit(t, o, executor.Exited, 0)
		wantOutput(t, rec, "ours\n", "")
	}

	dynamic := newEngine(t, docker.WithInit("/bin/ls"))
	_, err := dynamic.Prepare(context.Background(), executor.Spec{RunID: newRunID(), Image: busybox(t), Command: sh("true")})
	if err == nil || !strings.Contains(err.Error(), "not static") {
		t.Fatalf("a dynamically linked init: %v, want it refused as not static", err)
	}
}

// A Prepare whose context ends while it works (installing coderun-init, or
// creating the sandbox) leaves nothing on the engine once the run is cleaned
// up, even where the engine carries out a request its client gave up on.
// Attempts cut Prepares at fractions of the time a whole one takes: first a
// new Engine's first Prepare, which installs the init, then Prepares on an
// Engine whose init is in place, which only create the sandbox.
func TestPrepareCutShortLeavesNothing(t *testing.T) {
	cli := testenv.Docker(t)
	image := busybox(t)
	leftovers := func(instance string) (containers, volumes int) {
		t.Helper()
		mine := make(client.Filters).Add("label", docker.LabelInstance+"="+instance)
		cs, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: mine})
		if err != nil {
			t.Fatal(err)
		}
		vs, err := cli.VolumeList(context.Background(), client.VolumeListOptions{Filters: mine})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs.Items {
			cli.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true})
		}
		for _, v := range vs.Items {
			cli.VolumeRemove(context.Background(), v.Name, client.VolumeRemoveOptions{Force: true})
		}
		return len(cs.Items), len(vs.Items)
	}
	newInstance := func() (*docker.Engine, string) {
		t.Helper()
		instance := "test-" + strings.ToLower(ulid.Make().String())
		e, err := docker.New(docker.WithInit(testenv.Init(t)), docker.WithInstance(instance))
		if err != nil {
			t.Fatal(err)
		}
		return e, instance
	}
	// prepare runs one Prepare cut after d and cleans up after it as the
	// worker does, however it ended.
	prepare := func(e *docker.Engine, d time.Duration) (cut bool, took time.Duration, err error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		runID := newRunID()
		began := time.Now()
		_, err = e.Prepare(ctx, executor.Spec{RunID: runID, Image: image, Command: sh("true")})
		took, cut = time.Since(began), ctx.Err() != nil
		if err != nil && !cut {
			t.Fatalf("Prepare: %v", err)
		}
		if cerr := e.Cleanup(context.Background(), runID); cerr != nil {
			t.Fatalf("Cleanup: %v", cerr)
		}
		return cut, took, err
	}
	// quickest is the quickest of three whole runs of attempt: a first can
	// be slow, and fractions of a slow one would cut few of the rest.
	quickest := func(attempt func(time.Duration) (bool, time.Duration)) time.Duration {
		whole := time.Duration(math.MaxInt64)
		for range 3 {
			cut, took := attempt(time.Minute)
			if cut {
				t.Fatal("a Prepare given a minute did not finish in it")
			}
			whole = min(whole, took)
		}
		return whole
	}
	cutAtFractions := func(what string, attempt func(time.Duration) (bool, time.Duration)) {
		t.Helper()
		whole := quickest(attempt)
		cuts := 0
		for i := 1; i < 20; i++ {
			if cut, _ := attempt(whole * time.Duration(i) / 20); cut {
				cuts++
			}
		}
		// Prepares vary in speed; enough must still be cut.
		if cuts < 8 {
			t.Fatalf("%s: only %d of 19 Prepares were cut short (a whole one took %s): the test checked too little", what, cuts, whole)
		}
		t.Logf("%s: %d of 19 Prepares cut short; a whole one took %s", what, cuts, whole)
	}

	cutAtFractions("installing the init", func(d time.Duration) (bool, time.Duration) {
		e, instance := newInstance()
		cut, took, err := prepare(e, d)
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if c, v := leftovers(instance); c != 0 || v != 0 {
			t.Fatalf("a first Prepare cut after %s (%v) left %d containers and %d volumes", d, err, c, v)
		}
		return cut, took
	})

	warm, instance := newInstance()
	t.Cleanup(func() {
		warm.Close()
		leftovers(instance)
	})
	if _, _, err := prepare(warm, time.Minute); err != nil {
		t.Fatal(err)
	}
	cutAtFractions("creating the sandbox", func(d time.Duration) (bool, time.Duration) {
		cut, took, perr := prepare(warm, d)
		runs, err := warm.Sandboxes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != 0 {
			t.Fatalf("a Prepare cut after %s (%v) left the sandboxes of runs %v", d, perr, runs)
		}
		return cut, took
	})
}
