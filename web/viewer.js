// The coderun live viewer: follows one run over graphql-transport-ws.
"use strict";
(() => {
  const TOKEN_KEY = "coderun.viewer.token";
  const PROTOCOL = "graphql-transport-ws";
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  // The server pings every 30 s; a socket silent for longer than two pings
  // and a margin is dead even if the browser has not noticed.
  const SILENCE_LIMIT_MS = 75000;
  // Beyond this many lines the oldest leave the page, so a chatty run cannot
  // exhaust the tab; the REST output route has them all.
  const MAX_LINES = 20000;
  const TERMINAL = new Set(["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "ERRORED"]);
  // Errors after which retrying cannot help.
  const FATAL_CODES = new Set(["forbidden", "insufficient_scope", "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"]);

  const RUN_QUERY = `query ViewerRun($handle: String!, $runId: String!) {
  handle(handle: $handle) {
    run(runId: $runId) {
      runId runtimeKey image status exitCode durationMs
      error { code message }
      limits { timeoutSeconds outputBytes }
      outputSummary { stdoutBytes stderrBytes truncated }
      transitions { status at reason }
    }
  }
}`;
  const STATUS_SUBSCRIPTION = `subscription ViewerStatus($handle: String!, $runId: String!) {
  codeRunStatus(handle: $handle, runId: $runId) { runId status at reason exitCode error { code message } }
}`;
  const OUTPUT_SUBSCRIPTION = `subscription ViewerOutput($handle: String!, $runId: String!, $afterSeq: Int) {
  codeRunOutput(handle: $handle, runId: $runId, afterSeq: $afterSeq) { seq stream data encoding at }
}`;

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ---- token, kept for this tab only ----
  const tokens = {
    get: () => sessionStorage.getItem(TOKEN_KEY) || "",
    set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
    forget: () => sessionStorage.removeItem(TOKEN_KEY),
  };

  // ---- formatting ----
  const formatBytes = (n) => {
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB"];
    let v = n / 1024, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
  };
  const formatTime = (iso) => {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }) +
      "." + String(d.getMilliseconds()).padStart(3, "0");
  };
  const formatDuration = (ms) => ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const statusLabel = (s) => s.replace("_", " ");
  // A pinned image "name@sha256:<64 hex>" is shown with its digest shortened;
  // the full reference stays in the tooltip.
  const shortImage = (image) => image.replace(/@sha256:([0-9a-f]{12})[0-9a-f]{52}$/, "@sha256:$1…");
  const errorCode = (e) => (e && e.extensions && e.extensions.code) || "";

  // ---- the output pane ----
  class Terminal {
    constructor(pane, jump) {
      this.pane = pane;
      this.jump = jump;
      this.follow = true;
      this.lines = 0;
      this.elided = 0;
      this.current = null;
      this.decoders = {};
      this.encoder = new TextEncoder();
      this.bytes = { STDOUT: 0, STDERR: 0 };
      pane.addEventListener("scroll", () => {
        this.follow = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 24;
        jump.hidden = this.follow;
      }, { passive: true });
      jump.addEventListener("click", () => { this.follow = true; jump.hidden = true; this.scrollToEnd(); });
    }

    // write appends one chunk's data, decoded as UTF-8 with replacement, on
    // one stream's decoder so a character split across chunks survives.
    write(stream, data, encoding) {
      const bytes = encoding === "BASE64"
        ? Uint8Array.from(atob(data), (c) => c.charCodeAt(0))
        : this.encoder.encode(data);
      this.bytes[stream] = (this.bytes[stream] || 0) + bytes.length;
      const decoder = this.decoders[stream] || (this.decoders[stream] = new TextDecoder("utf-8"));
      this.append(stream, decoder.decode(bytes, { stream: true }));
    }

    append(stream, text) {
      if (!text) return;
      $("term-empty").hidden = true;
      const parts = text.split("\n");
      parts.forEach((part, i) => {
        if (i > 0) this.current = null;
        if (part === "" && i === parts.length - 1) return;
        const line = this.current || this.newLine();
        const seg = el("span", stream === "STDERR" ? "seg-err" : "seg-out", part.endsWith("\r") ? part.slice(0, -1) : part);
        if (stream === "STDERR") line.classList.add("has-err");
        line.append(seg);
        this.current = line;
      });
      this.trim();
      if (this.follow) this.scrollToEnd();
    }

    // flush shows what a stream's decoder still holds: the incomplete
    // character the output ended with, as a replacement character.
    flush() {
      for (const [stream, decoder] of Object.entries(this.decoders)) this.append(stream, decoder.decode());
    }

    newLine() {
      const line = el("div", "line");
      this.pane.append(line);
      this.lines++;
      return line;
    }

    trim() {
      if (this.lines <= MAX_LINES) return;
      let notice = this.pane.querySelector(".elided");
      if (!notice) {
        notice = el("div", "line elided");
        this.pane.insertBefore(notice, $("term-empty").nextSibling);
      }
      while (this.lines > MAX_LINES) {
        notice.nextSibling.remove();
        this.lines--;
        this.elided++;
      }
      notice.textContent = `… ${this.elided.toLocaleString()} earlier lines not shown here (the REST output route has them)`;
    }

    scrollToEnd() { this.pane.scrollTop = this.pane.scrollHeight; }
  }

  // ---- one graphql-transport-ws connection ----
  // Connection opens a socket, authenticates, and multiplexes operations.
  class Connection {
    constructor(token, events) {
      this.events = events;
      this.ops = new Map();
      this.nextId = 1;
      this.acked = false;
      this.closing = false;
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      this.ws = new WebSocket(`${scheme}//${location.host}/graphql`, PROTOCOL);
      this.ws.onopen = () => this.send({ type: "connection_init", payload: { Authorization: `Bearer ${token}` } });
      this.ws.onmessage = (ev) => this.receive(ev.data);
      this.ws.onclose = (ev) => this.closed(ev);
      this.watch();
    }

    send(msg) {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
    }

    // watch closes a socket that has gone silent so the reconnect can begin.
    watch() {
      clearTimeout(this.silence);
      this.silence = setTimeout(() => this.ws.close(4000, "silent"), SILENCE_LIMIT_MS);
    }

    receive(raw) {
      this.watch();
      let msg;
      try { msg = JSON.parse(raw); } catch { return; }
      const op = msg.id ? this.ops.get(msg.id) : null;
      switch (msg.type) {
        case "connection_ack":
          this.acked = true;
          this.events.ready();
          break;
        case "ping":
          this.send({ type: "pong" });
          break;
        case "next":
          if (!op) break;
          if (msg.payload.errors && msg.payload.errors.length) {
            this.ops.delete(msg.id);
            this.send({ id: msg.id, type: "complete" });
            op.error(msg.payload.errors);
          } else {
            op.next(msg.payload.data);
          }
          break;
        case "error":
          if (!op) break;
          this.ops.delete(msg.id);
          op.error(Array.isArray(msg.payload) ? msg.payload : [msg.payload]);
          break;
        case "complete":
          if (!op) break;
          this.ops.delete(msg.id);
          op.complete();
          break;
      }
    }

    // start runs one operation; it returns a function that stops it.
    start(query, variables, handlers) {
      const id = String(this.nextId++);
      this.ops.set(id, handlers);
      this.send({ id, type: "subscribe", payload: { query, variables } });
      return () => {
        if (this.ops.delete(id)) this.send({ id, type: "complete" });
      };
    }

    open() { return this.acked && !this.closing && this.ws.readyState === WebSocket.OPEN; }

    close() {
      this.closing = true;
      clearTimeout(this.silence);
      this.ws.close(1000, "done");
    }

    closed(ev) {
      clearTimeout(this.silence);
      this.ops.clear();
      if (this.closing) return;
      // connection_init refused: the close reason starts with the error code.
      if (!this.acked && ev.code >= 4400 && ev.code < 4500 && /^unauthenticated\b/.test(ev.reason)) {
        this.events.rejected(ev.reason);
        return;
      }
      this.events.lost(ev);
    }
  }

  // ---- the page ----
  const ui = {
    conn(state, text) {
      $("conn").dataset.state = state;
      $("conn-text").textContent = text;
    },
    showOnly(section) {
      for (const id of ["setup", "fatal", "run"]) $(id).hidden = id !== section;
    },
    setup(params, message) {
      this.showOnly("setup");
      $("forget").hidden = true;
      $("field-handle").hidden = !!params.handle;
      $("field-run").hidden = !!params.run;
      $("in-handle").value = params.handle || "";
      $("in-run").value = params.run || "";
      $("in-token").value = "";
      $("setup-hint").textContent = params.handle && params.run
        ? `Enter a token to follow ${params.run} of ${params.handle}.`
        : "Follow a run's status and output as it happens.";
      $("setup-error").hidden = !message;
      $("setup-error").textContent = message || "";
      const first = [$("in-handle"), $("in-run"), $("in-token")].find((i) => !i.closest(".field").hidden && !i.value);
      (first || $("in-token")).focus();
    },
    fatal(title, text) {
      this.showOnly("fatal");
      $("fatal-title").textContent = title;
      $("fatal-text").textContent = text;
      $("fatal-change").focus();
    },
  };

  // Viewer follows one run: it keeps what arrived across reconnects, so a
  // resumed output subscription continues at the last seq it showed.
  class Viewer {
    constructor(handle, runId, token) {
      this.handle = handle;
      this.runId = runId;
      this.token = token;
      this.lastSeq = 0;
      this.status = "";
      this.transitions = [];
      this.statusDone = false;
      this.outputDone = false;
      this.finalDetails = false;
      this.stopped = false;
      this.attempt = 0;
      this.retryTimers = new Set();
      resetRunView();
      this.terminal = new Terminal($("term"), $("jump"));
      document.title = `${runId} · coderun`;
      $("run-handle").textContent = handle;
      $("run-id").textContent = runId;
      ui.showOnly("run");
      $("forget").hidden = false;
      this.connect();
    }

    connect() {
      ui.conn("connecting", this.attempt ? "reconnecting…" : "connecting…");
      this.conn = new Connection(this.token, {
        ready: () => this.ready(),
        rejected: () => this.stop(() => showSetup("Token rejected: it is invalid, expired or revoked. Enter another.", true)),
        lost: () => this.reconnectLater(),
      });
    }

    backoff() {
      const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt++);
      return ms / 2 + Math.random() * ms / 2;
    }

    later(fn, ms) {
      const t = setTimeout(() => { this.retryTimers.delete(t); if (!this.stopped) fn(); }, ms);
      this.retryTimers.add(t);
    }

    reconnectLater() {
      if (this.stopped) return;
      const ms = this.backoff();
      ui.conn("reconnecting", `connection lost; retrying in ${Math.ceil(ms / 1000)} s`);
      this.later(() => this.connect(), ms);
    }

    ready() {
      this.attempt = 0;
      ui.conn("live", "live");
      this.loadDetails();
      if (!this.statusDone) this.followStatus();
      if (!this.outputDone) this.followOutput();
    }

    variables(extra) { return { handle: this.handle, runId: this.runId, ...extra }; }

    loadDetails() {
      this.conn.start(RUN_QUERY, this.variables(), {
        next: (data) => {
          const run = data && data.handle && data.handle.run;
          if (!run) {
            const why = data && data.handle
              ? `There is no run ${this.runId} in ${this.handle}.`
              : `The handle ${this.handle} does not exist, or this token has no access to it.`;
            this.stop(() => ui.fatal("Run not found", why));
            return;
          }
          this.showDetails(run);
        },
        error: (errors) => this.failed(errors, () => this.loadDetails()),
        complete: () => {},
      });
    }

    followStatus() {
      this.conn.start(STATUS_SUBSCRIPTION, this.variables(), {
        next: (data) => this.statusEvent(data.codeRunStatus),
        error: (errors) => this.failed(errors, () => this.followStatus()),
        complete: () => { this.statusDone = true; this.maybeFinished(); },
      });
    }

    followOutput() {
      const stop = this.conn.start(OUTPUT_SUBSCRIPTION, this.variables({ afterSeq: this.lastSeq }), {
        next: (data) => {
          const c = data.codeRunOutput;
          if (c.seq <= this.lastSeq) return; // already shown before a reconnect
          if (c.seq !== this.lastSeq + 1) {
            // A gap: resume from what the page has rather than show holes.
            stop();
            this.followOutput();
            return;
          }
          this.lastSeq = c.seq;
          this.terminal.write(c.stream, c.data, c.encoding);
          this.showBytes();
        },
        error: (errors) => this.failed(errors, () => this.followOutput()),
        complete: () => {
          this.outputDone = true;
          this.terminal.flush();
          this.maybeFinished();
        },
      });
    }

    // failed handles an operation's errors: fatal ones end the viewer, the
    // rest (subscriber_too_slow, a restarting server) retry after a backoff.
    failed(errors, retry) {
      const code = errorCode(errors[0]);
      const message = (errors[0] && errors[0].message) || "unknown error";
      if (code === "unauthenticated") {
        this.stop(() => showSetup("Token rejected: it is invalid, expired or revoked. Enter another.", true));
      } else if (code === "run_not_found" || code === "handle_not_found") {
        this.stop(() => ui.fatal("Run not found", `There is no run ${this.runId} in ${this.handle} that this token can see.`));
      } else if (FATAL_CODES.has(code)) {
        this.stop(() => ui.fatal("Cannot follow this run", `${message} (${code})`));
      } else {
        // Only on the same, still open socket: a new one subscribes afresh.
        const conn = this.conn;
        const ms = this.backoff();
        ui.conn("reconnecting", code === "subscriber_too_slow" ? "catching up…" : `retrying in ${Math.ceil(ms / 1000)} s`);
        this.later(() => {
          if (conn !== this.conn || !conn.open()) return;
          ui.conn("live", "live");
          retry();
        }, ms);
      }
    }

    statusEvent(ev) {
      this.addTransition(ev);
      this.setStatus(ev.status);
      if (ev.exitCode !== null && ev.exitCode !== undefined) $("f-exit").textContent = String(ev.exitCode);
      this.showError(ev.error);
      // The summary (byte counts, truncation, duration) is final only now.
      if (TERMINAL.has(ev.status)) this.loadDetails();
    }

    showDetails(run) {
      $("f-runtime").textContent = run.runtimeKey;
      $("f-image").textContent = shortImage(run.image);
      $("f-image").title = run.image;
      if (run.exitCode !== null) $("f-exit").textContent = String(run.exitCode);
      if (run.durationMs !== null) $("f-duration").textContent = formatDuration(run.durationMs);
      for (const t of run.transitions) this.addTransition(t);
      this.setStatus(run.status);
      this.showError(run.error);
      if (TERMINAL.has(run.status)) {
        this.finalDetails = true;
        $("f-stdout").textContent = formatBytes(run.outputSummary.stdoutBytes);
        $("f-stderr").textContent = formatBytes(run.outputSummary.stderrBytes);
      }
      const limited = run.outputSummary.truncated || (run.error && run.error.code === "output_limit_exceeded");
      $("truncated").hidden = !limited;
      if (limited) {
        $("truncated").textContent = `Output was truncated at the run's limit of ${formatBytes(run.limits.outputBytes)}; what follows it was not kept.`;
      }
      this.maybeFinished();
    }

    // showBytes counts what arrived until the run's own summary is final.
    showBytes() {
      if (this.finalDetails) return;
      $("f-stdout").textContent = formatBytes(this.terminal.bytes.STDOUT);
      $("f-stderr").textContent = formatBytes(this.terminal.bytes.STDERR);
    }

    showError(error) {
      if (!error) return;
      $("run-error").hidden = false;
      $("run-error").textContent = `${error.code}: ${error.message}`;
      if (error.code === "output_limit_exceeded") $("truncated").hidden = false;
    }

    setStatus(status) {
      // Statuses only move forward: a late answer must not undo a newer one.
      if (TERMINAL.has(this.status) || status === this.status) return;
      this.status = status;
      const badge = $("badge");
      badge.dataset.status = status;
      badge.textContent = statusLabel(status);
      $("status-live").textContent = `Run ${statusLabel(status).toLowerCase()}`;
    }

    // addTransition keeps the timeline in order, once per transition, whether
    // it came from the details query or the status subscription.
    // The status subscription starts with the current status, which repeats
    // the latest transition.
    addTransition(t) {
      const latest = this.transitions[this.transitions.length - 1];
      if ((latest && latest.status === t.status) || this.transitions.some((x) => x.status === t.status && x.at === t.at)) return;
      this.transitions.push(t);
      this.transitions.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
      const list = $("timeline");
      list.replaceChildren(...this.transitions.map((x) => {
        const li = el("li");
        li.dataset.status = x.status;
        const head = el("div");
        head.append(el("span", "tl-status", statusLabel(x.status)), el("time", "tl-time", formatTime(x.at)));
        head.lastChild.dateTime = x.at;
        li.append(head);
        if (x.reason) li.append(el("div", "tl-reason", x.reason));
        return li;
      }));
    }

    maybeFinished() {
      if (!this.statusDone || !this.outputDone || !this.finalDetails || this.stopped) return;
      this.stopped = true;
      this.conn.close();
      ui.conn("closed", "finished");
    }

    // stop ends the viewer for good, then shows what replaces it.
    stop(then) {
      this.stopped = true;
      for (const t of this.retryTimers) clearTimeout(t);
      if (this.conn) this.conn.close();
      ui.conn("idle", "not connected");
      then();
    }
  }

  // resetRunView clears what an earlier run left on the page; fresh copies
  // of the pane and its button shed the earlier Terminal's listeners.
  function resetRunView() {
    for (const id of ["term", "jump"]) {
      const fresh = $(id).cloneNode(id === "jump");
      $(id).replaceWith(fresh);
    }
    $("term").append(el("div", "term-empty", "Waiting for output…"));
    $("term").lastChild.id = "term-empty";
    $("jump").hidden = true;
    $("timeline").replaceChildren();
    for (const id of ["f-runtime", "f-image", "f-exit", "f-duration"]) $(id).textContent = "–";
    for (const id of ["f-stdout", "f-stderr"]) $(id).textContent = "0 B";
    $("f-image").title = "";
    $("truncated").hidden = true;
    $("run-error").hidden = true;
    $("badge").dataset.status = "";
    $("badge").textContent = "…";
  }

  let viewer = null;

  function params() {
    const q = new URLSearchParams(location.search);
    return { handle: (q.get("handle") || "").trim(), run: (q.get("run") || "").trim() };
  }

  function showSetup(message, forgetToken) {
    if (forgetToken) tokens.forget();
    ui.setup(params(), message);
  }

  function start() {
    const p = params();
    const token = tokens.get();
    if (!p.handle || !p.run || !token) {
      showSetup("");
      return;
    }
    viewer = new Viewer(p.handle, p.run, token);
  }

  $("setup-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const handle = $("in-handle").value.trim();
    const run = $("in-run").value.trim();
    const token = $("in-token").value.trim().replace(/^Bearer\s+/i, "");
    if (!handle || !run || !token) return;
    // The token goes to session storage, never into the address.
    tokens.set(token);
    const q = new URLSearchParams({ handle, run });
    history.replaceState(null, "", `${location.pathname}?${q}`);
    start();
  });

  $("forget").addEventListener("click", () => {
    if (viewer) viewer.stop(() => {});
    viewer = null;
    showSetup("Token forgotten.", true);
  });

  $("fatal-change").addEventListener("click", () => {
    viewer = null;
    history.replaceState(null, "", location.pathname);
    showSetup("");
  });

  start();
})();
