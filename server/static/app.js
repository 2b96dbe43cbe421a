// agentrag web chat: plain JavaScript, no build step, no framework, nothing fetched from
// outside this server. /v1/chat answers with Server-Sent Events to a POST, which EventSource
// cannot send, so the stream is read from fetch()'s body and parsed here.
"use strict";

(() => {
  const KEY_STORAGE = "agentrag.apiKey";
  const EFFORT_STORAGE = "agentrag.effort";

  const $ = (id) => document.getElementById(id);
  const ui = {
    banner: $("banner"),
    messages: $("messages"),
    empty: $("empty-state"),
    composer: $("composer"),
    message: $("message"),
    effort: $("effort"),
    send: $("send"),
    stop: $("stop"),
    threads: $("threads"),
    threadsStatus: $("threads-status"),
    newThread: $("new-thread"),
    apiKey: $("api-key"),
  };

  const state = {
    threadId: null,
    /** The turn in flight: {runId, controller, view, stopping}. */
    running: null,
    answers: 0,
  };

  // -- small DOM helpers -----------------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmt = (x, digits = 2) => (typeof x === "number" ? x.toFixed(digits) : "–");
  const ms = (x) => (typeof x === "number" ? (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${Math.round(x)} ms`) : "–");
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function nearBottom() {
    const m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function showBanner(text) {
    ui.banner.textContent = text;
    ui.banner.hidden = !text;
  }

  // -- HTTP ------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function authHeaders(extra = {}) {
    const headers = { ...extra };
    const key = localStorage.getItem(KEY_STORAGE);
    if (key) headers.Authorization = `Bearer ${key}`;
    return headers;
  }

  /** Every 4xx/5xx of the API is {"error": {"code", "message"}}; anything else (a proxy's HTML
   * page, a dropped connection) still becomes a readable error. */
  async function errorFrom(response) {
    let code = `http_${response.status}`;
    let message = `${response.status} ${response.statusText || "request failed"}`;
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch {
      // not JSON: keep the status line
    }
    return new ApiError(response.status, code, message);
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
    } catch (err) {
      throw new ApiError(0, "network_error", `The server could not be reached (${err.message}).`);
    }
    if (!response.ok) throw await errorFrom(response);
    return response.status === 204 ? null : response.json();
  }

  /** Yields the events of an SSE body: `event:` names the type, `data:` lines carry JSON. */
  async function* sseEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let name = null;
    let data = [];
    const flush = () => {
      const text = data.join("\n");
      const event = JSON.parse(text);
      if (name && !event.type) event.type = name;
      name = null;
      data = [];
      return event;
    };
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) yield flush();
          else name = null;
          continue;
        }
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") name = val;
        else if (field === "data") data.push(val);
      }
      if (done) {
        if (data.length) yield flush();
        return;
      }
    }
  }

  // -- one message ----------------------------------------------------------------------------
  function addUserMessage(text) {
    ui.empty.hidden = true;
    const node = el("article", { className: "message user", "aria-label": "Your question" },
      el("div", { className: "bubble", text }));
    ui.messages.append(node);
    ui.messages.scrollTop = ui.messages.scrollHeight;
    return node;
  }

  /** Chunks keep their source's hard line breaks; paragraphs, list items and headings stay on
   * their own lines, wrapped prose flows. */
  const unwrap = (text) => text.replace(/([^\n])\n(?![\n\s]|[-*+#>|]|\d+[.)]\s)/g, "$1 ");

  const CITE = /\[(\d+(?:\s*[,;]\s*\d+)*)\]/g;

  /** An assistant answer: the streamed text, its sources, and the steps the agent took. */
  class AnswerView {
    constructor({ live = true } = {}) {
      ui.empty.hidden = true;
      this.seq = ++state.answers;
      this.text = "";
      this.citations = new Map();
      this.flagsSeen = new Set();
      this.answerEl = el("div", { className: "answer", "data-state": live ? "waiting" : "done" });
      this.statusEl = el("p", { className: "status", role: "status" });
      this.flagsEl = el("ul", { className: "flags", hidden: true, "aria-label": "Flags" });
      this.errorEl = el("div", { className: "error", role: "alert", hidden: true });
      this.sourcesList = el("ol", { className: "source-list" });
      this.sourcesEl = el("section", { className: "sources", hidden: true },
        el("h3", { text: "Sources" }), this.sourcesList);
      this.stepsList = el("ol", { className: "step-list" });
      this.stepsSummary = el("summary", { text: "Agent steps" });
      this.stepsEl = el("details", { className: "steps", hidden: !live }, this.stepsSummary, this.stepsList);
      this.node = el("article", { className: "message assistant", "aria-label": "Answer", "aria-busy": live ? "true" : "false" },
        el("div", { className: "bubble" },
          this.answerEl, this.statusEl, this.flagsEl, this.errorEl, this.sourcesEl, this.stepsEl));
      ui.messages.append(this.node);
      if (live) this.setStatus("Thinking…");
    }

    setStatus(text) {
      this.statusEl.textContent = text;
      this.statusEl.hidden = !text;
    }

    appendToken(text) {
      const stick = nearBottom();
      if (this.answerEl.dataset.state !== "streaming") {
        this.answerEl.dataset.state = "streaming";
        this.setStatus("Writing…");
      }
      this.text += text;
      this.answerEl.append(document.createTextNode(text));
      keepScrolled(stick);
    }

    /** `regenerate`: what streamed so far failed the grounding check; the next tokens replace it. */
    restartAnswer() {
      this.text = "";
      this.answerEl.replaceChildren();
      this.answerEl.dataset.state = "waiting";
      this.setStatus("Rewriting the answer to stay with the sources…");
    }

    sourceId(n) {
      return `answer-${this.seq}-source-${n}`;
    }

    addCitation(c) {
      this.citations.set(Number(c.n), c);
      this.renderSources();
    }

    renderSources() {
      const items = [...this.citations.values()].sort((a, b) => a.n - b.n).map((c) =>
        el("li", { id: this.sourceId(c.n), className: "source", "data-n": c.n },
          el("details", {},
            el("summary", {},
              el("span", { className: "source-n", text: `[${c.n}]` }), " ",
              el("span", { className: "source-title", text: c.title || "Untitled" }),
              el("span", { className: "source-meta" },
                el("span", { className: "source-path", title: c.source, text: c.source }),
                ` · chunk ${c.chunk_index}`,
                c.collection ? ` · ${c.collection}` : "")),
            c.text
              ? el("blockquote", { className: "chunk-text", text: unwrap(c.text) })
              : el("p", { className: "muted", text: "The chunk text was not sent." }))));
      this.sourcesList.replaceChildren(...items);
      this.sourcesEl.hidden = items.length === 0;
    }

    /** The answer with every `[n]` that names a source turned into a link to it. */
    renderAnswer(text) {
      const parts = [];
      let last = 0;
      for (const match of text.matchAll(CITE)) {
        const numbers = match[1].split(/\s*[,;]\s*/).map(Number);
        if (!numbers.every((n) => this.citations.has(n))) continue;
        parts.push(text.slice(last, match.index), "[");
        numbers.forEach((n, i) => {
          if (i) parts.push(", ");
          const c = this.citations.get(n);
          parts.push(el("a", {
            className: "cite",
            href: `#${this.sourceId(n)}`,
            "data-n": n,
            title: c.title,
            "aria-label": `Source ${n}: ${c.title}`,
            text: String(n),
          }));
        });
        parts.push("]");
        last = match.index + match[0].length;
      }
      parts.push(text.slice(last));
      this.text = text;
      this.answerEl.replaceChildren(...parts.filter((p) => p !== ""));
    }

    addFlag(flag, reason) {
      const key = `${flag}\u0000${reason}`;
      if (this.flagsSeen.has(key)) return;
      this.flagsSeen.add(key);
      this.flagsEl.append(el("li", { className: `flag flag-${flag}`, title: reason },
        el("strong", { text: flag }), reason ? `: ${reason}` : ""));
      this.flagsEl.hidden = false;
      this.addStep("flag", `Flag ${flag}`, reason);
    }

    addStep(kind, title, detail, children = []) {
      const item = el("li", { className: `step step-${kind}`, "data-kind": kind },
        el("span", { className: "step-title", text: title }),
        detail ? el("span", { className: "step-detail", text: ` ${detail}` }) : null,
        children.length ? el("ul", { className: "step-items" }, children) : null);
      this.stepsList.append(item);
      this.stepsSummary.textContent = `Agent steps (${this.stepsList.children.length})`;
      return item;
    }

    fail(code, message) {
      this.errorEl.replaceChildren(
        el("strong", { text: code === "cancelled" ? "Stopped" : "Error" }),
        ` (${code}): ${message}`);
      this.errorEl.hidden = false;
      this.errorEl.dataset.code = code;
      if (this.text) this.renderAnswer(this.text);
      this.answerEl.dataset.state = "error";
      this.node.setAttribute("aria-busy", "false");
      this.setStatus("");
      this.addStep("error", `Error ${code}`, message);
    }

    finish(done) {
      for (const c of done.citations || []) this.citations.set(Number(c.n), c);
      this.renderSources();
      this.renderAnswer(done.answer || "");
      for (const f of done.flags || []) this.addFlag(f.flag, f.reason);
      if (done.error) {
        this.errorEl.replaceChildren(el("strong", { text: "Partial answer" }),
          ` (${done.error.code || "agent_error"}): ${done.error.message || ""}`);
        this.errorEl.hidden = false;
      }
      const usage = done.usage || {};
      const timings = done.timings || {};
      this.addStep("usage", "Usage",
        `${plural(usage.llm_calls ?? 0, "LLM call")}, ${usage.input_tokens ?? 0} input and ` +
        `${usage.output_tokens ?? 0} output tokens, model time ${ms(usage.model_ms)}`);
      this.addStep("timings", "Timings",
        `total ${ms(timings.total_ms)}, first token ${ms(timings.first_token_ms)}`);
      const nodes = (done.steps || []).map((s) => el("li", {},
        el("code", { text: s.node }), ` ${ms(s.ms)}`, s.note ? ` · ${s.note}` : ""));
      if (nodes.length) this.addStep("nodes", "Nodes", `${nodes.length} steps`, nodes);
      this.answerEl.dataset.state = "done";
      this.node.setAttribute("aria-busy", "false");
      this.setStatus(`${ms(timings.total_ms)} · ${plural(usage.llm_calls ?? 0, "LLM call")}`);
      if (done.trace_id) this.addTraceBar(done.trace_id, done.trace_url);
    }

    /** A traced answer: a link to its Langfuse trace and thumbs that post a feedback score. */
    addTraceBar(traceId, traceUrl) {
      const note = el("span", { className: "feedback-note", role: "status" });
      const thumb = (value, label, symbol) => el("button", {
        type: "button", className: "thumb button-secondary", "data-thumbs": value,
        "aria-label": label, title: label, text: symbol,
      });
      const up = thumb("up", "Good answer: post a thumbs-up score on its trace", "Good");
      const down = thumb("down", "Bad answer: post a thumbs-down score on its trace", "Bad");
      const send = async (button) => {
        up.disabled = down.disabled = true;
        try {
          await api("/v1/feedback", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ trace_id: traceId, thumbs: button.dataset.thumbs }),
          });
          button.setAttribute("aria-pressed", "true");
          note.textContent = "Thanks: recorded on the trace.";
        } catch (err) {
          up.disabled = down.disabled = false;
          note.textContent = `Feedback not recorded: ${err.message}`;
        }
      };
      up.addEventListener("click", () => send(up));
      down.addEventListener("click", () => send(down));
      const link = traceUrl
        ? el("a", { className: "trace-link", href: traceUrl, target: "_blank", rel: "noopener", text: "Trace in Langfuse" })
        : el("span", { className: "trace-link", title: "Langfuse trace id", text: `Trace ${traceId}` });
      this.node.querySelector(".bubble").append(
        el("div", { className: "feedback", "data-trace-id": traceId }, link, up, down, note));
    }

    /** Progress events become lines of the steps panel. */
    handle(event) {
      switch (event.type) {
        case "queued":
          this.setStatus(event.position === 1
            ? "Waiting for a free slot: next in line…"
            : `Waiting for a free slot: ${event.position - 1} ahead…`);
          break;
        case "route": {
          const scores = Object.entries(event.scores || {})
            .map(([name, s]) => `${name} ${fmt(s)}`).join(" · ");
          const where = (event.collections || []).join(", ");
          this.addStep("route", `Route: ${event.kind}`,
            [where && `→ ${where}`, event.reason && `(${event.reason})`, scores && `scores: ${scores}`]
              .filter(Boolean).join(" "));
          this.setStatus(event.kind === "direct" ? "Answering…" : "Searching…");
          break;
        }
        case "plan":
          this.addStep("plan", `Plan: ${event.mode}`, event.source ? `(from ${event.source})` : "",
            (event.subqueries || []).map((q) => el("li", {},
              `#${q.index + 1} ${q.query}`,
              q.depends_on !== null && q.depends_on !== undefined ? ` (after #${q.depends_on + 1})` : "")));
          break;
        case "retrieval":
          this.addStep("retrieval", `Retrieval #${event.index + 1}:`, `“${event.query}” → ${plural((event.chunks || []).length, "chunk")}`,
            (event.chunks || []).map((c) => el("li", { className: "retrieved" },
              el("span", { className: "chunk-title", text: c.title || "Untitled" }),
              el("span", { className: "muted", text: ` ${c.collection} · relevance ${fmt(c.relevance)} · retrieval ${fmt(c.retrieval_score, 3)}` }))));
          this.setStatus("Reading the evidence…");
          break;
        case "grade":
          this.addStep("grade", `Grade #${event.index + 1}: ${event.grade}`, `kept ${event.kept}, dropped ${event.dropped}`);
          break;
        case "rewrite":
          this.addStep("rewrite", `Rewrite #${event.index + 1}${event.how ? ` (${event.how})` : ""}:`, `“${event.query}”`);
          this.setStatus("Searching again with a rewritten query…");
          break;
        case "verdict": {
          const yes = (b) => (b ? "yes" : "no");
          this.addStep("verdict", `Verdict: ${event.action}`,
            `grounded ${yes(event.grounded)}, answers the question ${yes(event.answers_question)}` +
            (event.method ? ` (${event.method})` : ""),
            (event.sentences || []).map((s) => el("li", { className: s.supported ? "supported" : "unsupported" },
              `${s.supported ? "✓" : "✗"} support ${fmt(s.support)}: ${s.sentence}`)));
          if (event.action === "regenerate") this.restartAnswer();
          break;
        }
        case "flag":
          this.addFlag(event.flag, event.reason);
          break;
        case "citation":
          this.addCitation(event);
          break;
        default:
          this.addStep(event.type || "event", event.type || "event", JSON.stringify(event));
      }
    }
  }

  // -- a turn -----------------------------------------------------------------------------------
  function setRunning(running) {
    ui.send.disabled = running;
    ui.stop.disabled = !running;
    ui.composer.setAttribute("aria-busy", running ? "true" : "false");
  }

  async function ask(message) {
    addUserMessage(message);
    const view = new AnswerView();
    const controller = new AbortController();
    const turn = { runId: null, controller, view, stopping: false };
    state.running = turn;
    setRunning(true);
    let ended = false;
    try {
      let response;
      try {
        response = await fetch("/v1/chat", {
          method: "POST",
          headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
          body: JSON.stringify({ message, thread_id: state.threadId, effort: ui.effort.value, stream: true }),
          signal: controller.signal,
        });
      } catch (err) {
        if (err.name === "AbortError") throw err;
        throw new ApiError(0, "network_error", `The server could not be reached (${err.message}).`);
      }
      if (!response.ok) {
        const error = await errorFrom(response);
        if (!ui.message.value) ui.message.value = message; // let the question be edited and resent
        throw error;
      }
      for await (const event of sseEvents(response.body)) {
        if (event.type === "run") {
          turn.runId = event.run_id;
          state.threadId = event.thread_id;
          refreshThreads();
        } else if (event.type === "token") {
          view.appendToken(event.text);
        } else if (event.type === "done") {
          ended = true;
          state.threadId = event.thread_id || state.threadId;
          view.finish(event);
        } else if (event.type === "error") {
          ended = true;
          view.fail(event.code, event.message);
        } else {
          view.handle(event);
        }
      }
      if (!ended) view.fail("stream_ended", "The connection closed before the answer was finished.");
    } catch (err) {
      if (err.name === "AbortError") view.fail("cancelled", "Stopped before the server started the run.");
      else view.fail(err.code || "client_error", err.message);
    } finally {
      if (state.running === turn) state.running = null;
      setRunning(false);
      refreshThreads();
    }
  }

  async function stop() {
    const turn = state.running;
    if (!turn || turn.stopping) return;
    turn.stopping = true;
    ui.stop.disabled = true;
    turn.view.setStatus("Stopping…");
    if (!turn.runId) {
      turn.controller.abort();
      return;
    }
    try {
      // The stream then ends with an `error` event whose code is `cancelled`.
      await api(`/v1/runs/${encodeURIComponent(turn.runId)}/cancel`, { method: "POST" });
    } catch (err) {
      showBanner(`Could not stop the run (${err.code}): ${err.message}`);
      turn.controller.abort();
    }
  }

  // -- threads ---------------------------------------------------------------------------------
  let refreshing = null;

  function refreshThreads() {
    refreshing = (refreshing || Promise.resolve()).then(loadThreads, loadThreads);
    return refreshing;
  }

  async function loadThreads() {
    let threads;
    try {
      threads = (await api("/v1/threads")).threads || [];
    } catch (err) {
      ui.threadsStatus.textContent = "";
      const hint = err.status === 401 ? " Enter an API key under Settings." : "";
      showBanner(`Could not load the threads (${err.code}): ${err.message}${hint}`);
      return;
    }
    if (ui.banner.textContent.startsWith("Could not load the threads")) showBanner("");
    ui.threads.replaceChildren(...threads.map((t) => {
      const when = new Date((t.updated_at || t.created_at) * 1000);
      return el("li", {},
        el("button", {
          type: "button",
          className: "thread",
          "data-thread-id": t.thread_id,
          "aria-current": t.thread_id === state.threadId ? "true" : null,
        },
        el("span", { className: "thread-title", text: t.title || "Untitled thread" }),
        el("time", { datetime: when.toISOString(), text: when.toLocaleString() })));
    }));
    ui.threadsStatus.textContent = threads.length ? "" : "No threads yet.";
  }

  function clearConversation() {
    for (const node of ui.messages.querySelectorAll(".message")) node.remove();
    ui.empty.hidden = false;
  }

  async function openThread(threadId) {
    if (state.running) {
      showBanner("Wait for the answer, or stop it, before switching threads.");
      return;
    }
    let history;
    try {
      history = await api(`/v1/threads/${encodeURIComponent(threadId)}`);
    } catch (err) {
      showBanner(`Could not open the thread (${err.code}): ${err.message}`);
      refreshThreads();
      return;
    }
    showBanner("");
    state.threadId = threadId;
    clearConversation();
    for (const m of history.messages || []) {
      if (m.role === "user") {
        addUserMessage(m.content);
      } else {
        const view = new AnswerView({ live: false });
        for (const c of m.citations || []) view.citations.set(Number(c.n), c);
        view.renderSources();
        view.renderAnswer(m.content);
      }
    }
    ui.messages.scrollTop = ui.messages.scrollHeight;
    refreshThreads();
    ui.message.focus();
  }

  function newThread() {
    if (state.running) {
      showBanner("Wait for the answer, or stop it, before starting a new thread.");
      return;
    }
    showBanner("");
    state.threadId = null;
    clearConversation();
    refreshThreads();
    ui.message.focus();
  }

  // -- wiring ------------------------------------------------------------------------------------
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = ui.message.value;
    if (state.running || !message.trim()) return;
    ui.message.value = "";
    showBanner("");
    ask(message);
  });

  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    } else if (event.key === "Escape" && state.running) {
      stop();
    }
  });

  ui.stop.addEventListener("click", stop);
  ui.newThread.addEventListener("click", newThread);

  ui.threads.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-thread-id]");
    if (button) openThread(button.dataset.threadId);
  });

  ui.messages.addEventListener("click", (event) => {
    const link = event.target.closest("a.cite");
    if (!link) return;
    const target = document.getElementById(link.getAttribute("href").slice(1));
    if (!target) return;
    event.preventDefault();
    const details = target.querySelector("details");
    if (details) details.open = true;
    target.scrollIntoView({ block: "nearest", behavior: "smooth" });
    target.classList.remove("highlight");
    void target.offsetWidth; // restart the highlight animation
    target.classList.add("highlight");
    target.querySelector("summary")?.focus({ preventScroll: true });
  });

  ui.apiKey.value = localStorage.getItem(KEY_STORAGE) || "";
  ui.apiKey.addEventListener("change", () => {
    const key = ui.apiKey.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    refreshThreads();
  });

  const savedEffort = localStorage.getItem(EFFORT_STORAGE);
  if (["low", "medium", "high"].includes(savedEffort)) ui.effort.value = savedEffort;
  ui.effort.addEventListener("change", () => localStorage.setItem(EFFORT_STORAGE, ui.effort.value));

  refreshThreads();
  ui.message.focus();
})();
