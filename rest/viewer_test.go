package rest_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/gharart/coderun/internal/testenv"
)

// liveScript prints liveLines lines, one every ~200 ms for ~8 s, then one
// line on stderr.
const liveLines = 40

var liveScript = fmt.Sprintf(`for i in $(seq 1 %d); do echo line $i; sleep 0.2; done; echo done >&2`, liveLines)

// TestViewer drives the live viewer page in a real headless Chromium against
// the whole stack: a real worker running busybox in the real engine.
func TestViewer(t *testing.T) {
	chromium := testenv.Chromium(t)
	s := newRunStack(t, testenv.SQLiteURL(t))
	proxy := newCuttableProxy(t, s.url)
	browser := newBrowser(t, chromium)
	artifacts := artifactDir(t)

	t.Run("follows a run live and resumes after the connection drops", func(t *testing.T) {
		id := s.submit(map[string]any{"code": liveScript})
		tab := newTab(t, browser)
		tab.do(chromedp.Navigate(proxy.url+"/viewer?handle=acme&run="+id),
			chromedp.WaitVisible(chromedp.ID("in-token")),
			chromedp.SendKeys(chromedp.ID("in-token"), s.tok),
			chromedp.Click(chromedp.CSS(`#setup-form button[type="submit"]`)))

		// Lines show while the program is still writing them.
		tab.poll(`document.querySelectorAll("#term .line").length >= 5`, 30*time.Second)
		if status := s.do("GET", "/v2/handles/acme/code-runs/"+id, s.tok, nil).json(t)["status"]; status != "running" {
			t.Fatalf("the page showed 5 lines while the run was %v, want running", status)
		}
		if badge := eval[string](tab, `document.getElementById("badge").dataset.status`); badge != "RUNNING" {
			t.Fatalf("badge %q while running", badge)
		}
		if url := eval[string](tab, `location.href`); strings.Contains(url, s.tok) {
			t.Fatalf("the token leaked into the address: %s", url)
		}
		if stored := eval[string](tab, `sessionStorage.getItem("coderun.viewer.token") + "|" + localStorage.length`); stored != s.tok+"|0" {
			t.Fatalf("token storage %q: want it in sessionStorage only", stored)
		}
		tab.screenshot(filepath.Join(artifacts, "viewer-running.png"))

		// A network failure mid-run: the page notices, reconnects by itself
		// and resumes the output where it stopped.
		if n := proxy.cut(); n == 0 {
			t.Fatal("no connection to cut")
		}
		tab.poll(`document.getElementById("conn").dataset.state !== "live"`, 15*time.Second)
		// What the page had when the connection dropped (or more, if it is
		// back already): the rest can only come by resuming.
		if shown := eval[int](tab, `document.querySelectorAll("#term .line").length`); shown >= liveLines {
			t.Fatalf("the page had all %d lines when the connection dropped; the test needs it mid-output", shown)
		}
		tab.poll(`document.getElementById("conn").dataset.state === "closed"`, 60*time.Second)

		run := s.wait(id)
		if run["status"] != "succeeded" {
			t.Fatalf("run %v", run)
		}
		var want []string
		for i := 1; i <= liveLines; i++ {
			want = append(want, fmt.Sprintf("line %d", i))
		}
		want = append(want, "done")
		lines := eval[[]string](tab, `[...document.querySelectorAll("#term .line")].map(l => l.textContent)`)
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Fatalf("the page shows %d lines:\n%s\nwant every line once, in order:\n%s", len(lines), strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		marked := eval[[]bool](tab, `[...document.querySelectorAll("#term .line")].map(l => l.classList.contains("has-err") && !!l.querySelector(".seg-err"))`)
		for i, m := range marked {
			if m != (i == len(marked)-1) {
				t.Fatalf("line %d (%q) stderr mark %v: only the stderr line is marked", i+1, lines[i], m)
			}
		}
		out := run["output"].(map[string]any)
		facts := eval[map[string]string](tab, `({
			badge: document.getElementById("badge").textContent,
			exit: document.getElementById("f-exit").textContent,
			stdout: document.getElementById("f-stdout").textContent,
			stderr: document.getElementById("f-stderr").textContent,
			runtime: document.getElementById("f-runtime").textContent,
			image: document.getElementById("f-image").title,
			timeline: [...document.querySelectorAll("#timeline li")].map(li => li.dataset.status).join(","),
			truncated: String(!document.getElementById("truncated").hidden),
		})`)
		wantFacts := map[string]string{
			"badge": "SUCCEEDED", "exit": "0", "runtime": "sh", "image": run["image"].(string),
			"stdout": fmt.Sprintf("%.0f B", out["stdoutBytes"]), "stderr": fmt.Sprintf("%.0f B", out["stderrBytes"]),
			"timeline": "QUEUED,STARTING,RUNNING,SUCCEEDED", "truncated": "false",
		}
		for k, v := range wantFacts {
			if facts[k] != v {
				t.Errorf("%s shows %q, want %q", k, facts[k], v)
			}
		}
		tab.screenshot(filepath.Join(artifacts, "viewer-desktop.png"))

		// Scrolled up, the pane stops following and offers a way back.
		tab.do(chromedp.EmulateViewport(1280, 500))
		eval[any](tab, `document.getElementById("term").scrollTop = 0`)
		tab.poll(`!document.getElementById("jump").hidden`, 15*time.Second)
		tab.do(chromedp.Click(chromedp.ID("jump")))
		tab.poll(`(t => t.scrollHeight - t.scrollTop - t.clientHeight < 2)(document.getElementById("term")) && document.getElementById("jump").hidden`, 15*time.Second)

		// On a phone (in dark mode) the page fits the width; only the output
		// pane may scroll sideways.
		tab.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
			chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
				})
				return err
			}),
			chromedp.Reload())
		tab.poll(`document.getElementById("conn").dataset.state === "closed"`, 30*time.Second)
		if over := eval[int](tab, `document.documentElement.scrollWidth - window.innerWidth`); over > 0 {
			t.Errorf("the page scrolls sideways by %d px at phone width", over)
		}
		tab.screenshot(filepath.Join(artifacts, "viewer-phone.png"))
		tab.noProblems()
	})

	t.Run("a rejected token asks for another", func(t *testing.T) {
		tab := newTab(t, browser)
		tab.do(chromedp.Navigate(proxy.url+"/viewer?handle=acme&run=run_01J00000000000000000000000"),
			chromedp.WaitVisible(chromedp.ID("in-token")),
			chromedp.SendKeys(chromedp.ID("in-token"), "crp_notavalidtokenatall"),
			chromedp.Click(chromedp.CSS(`#setup-form button[type="submit"]`)))
		tab.poll(`!document.getElementById("setup-error").hidden`, 15*time.Second)
		if msg := eval[string](tab, `document.getElementById("setup-error").textContent`); !strings.Contains(msg, "Token rejected") {
			t.Fatalf("error %q, want it to say the token was rejected", msg)
		}
		if eval[bool](tab, `document.getElementById("setup").hidden || sessionStorage.getItem("coderun.viewer.token") !== null`) {
			t.Fatal("after a rejected token the form must show again and the token be forgotten")
		}
		tab.noProblems()
	})

	t.Run("a run that is not there says so", func(t *testing.T) {
		tab := newTab(t, browser)
		tab.do(chromedp.Navigate(proxy.url + "/viewer"))
		eval[any](tab, fmt.Sprintf(`sessionStorage.setItem("coderun.viewer.token", %q)`, s.tok))
		tab.do(chromedp.Navigate(proxy.url + "/viewer?handle=acme&run=run_01J00000000000000000000000"))
		tab.poll(`!document.getElementById("fatal").hidden`, 15*time.Second)
		if title := eval[string](tab, `document.getElementById("fatal-title").textContent`); title != "Run not found" {
			t.Fatalf("title %q, want Run not found", title)
		}
		tab.noProblems()
	})
}

// newBrowser starts headless Chromium for the test with a private profile.
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// tab is one browser tab, with what went wrong in its page.
type tab struct {
	t        *testing.T
	ctx      context.Context
	mu       sync.Mutex
	problems []string
}

func newTab(t *testing.T, browser context.Context) *tab {
	tb := &tab{t: t}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithListener(tb.listen))
	t.Cleanup(cancel)
	// The tab lives as long as the context of its first action: open it on
	// one without a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	tb.ctx = ctx
	return tb
}

// listen records uncaught script errors and Content-Security-Policy refusals:
// a page that works by luck around them is not working.
func (tb *tab) listen(ev any) {
	var problem string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		problem = "uncaught: " + ev.ExceptionDetails.Text
		if ex := ev.ExceptionDetails.Exception; ex != nil {
			problem += " " + ex.Description
		}
	case *log.EventEntryAdded:
		if strings.Contains(ev.Entry.Text, "Content Security Policy") {
			problem = "CSP: " + ev.Entry.Text
		}
	}
	if problem != "" {
		tb.mu.Lock()
		tb.problems = append(tb.problems, problem)
		tb.mu.Unlock()
	}
}

func (tb *tab) noProblems() {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, p := range tb.problems {
		tb.t.Error(p)
	}
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatal(err)
	}
}

// poll waits until the JavaScript expression is true in the page.
func (tb *tab) poll(expression string, timeout time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expression,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		tb.t.Fatalf("waiting for %s: %v\npage state: %s", expression, err, tb.state())
	}
}

// state describes what the page shows, for failure messages.
func (tb *tab) state() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 15*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText.slice(0, 2000)`))
	if err != nil {
		return err.Error()
	}
	return s
}

func (tb *tab) screenshot(path string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot: %s", path)
}

func eval[T any](tb *tab, expression string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expression, err)
	}
	return v
}

// artifactDir is where screenshots go: CODERUN_TEST_ARTIFACTS, to keep them,
// or the test's temporary directory.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("CODERUN_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cuttableProxy forwards TCP connections to the stack and can cut them all at
// once, as a network failure would.
type cuttableProxy struct {
	url   string
	mu    sync.Mutex
	conns []net.Conn
}

func newCuttableProxy(t *testing.T, target string) *cuttableProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttableProxy{url: "http://" + l.Addr().String()}
	backend := strings.TrimPrefix(target, "http://")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.forward(c, backend)
		}
	}()
	t.Cleanup(func() { l.Close(); p.cut() })
	return p
}

func (p *cuttableProxy) forward(client net.Conn, backend string) {
	server, err := net.Dial("tcp", backend)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, client, server)
	p.mu.Unlock()
	go func() { io.Copy(server, client); server.Close() }()
	io.Copy(client, server)
	client.Close()
}

// cut closes every connection open now and says how many there were.
func (p *cuttableProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	n := len(p.conns)
	p.conns = nil
	return n
}
