// The jobs page: every active job (queued or running) and the most recent finished ones, polled from
// GET /v1/jobs every 2 s while the tab is visible, each row updated in place (progress bar, status, attempt,
// worker, tokens). Cancel posts to the job's own cancel route with the session's CSRF token (common.js).
// Everything the API returns is written with textContent; no style is set from here (the CSP allows none inline).
"use strict";

(() => {
  const root = document.getElementById("jobs");
  const form = document.getElementById("job-filters");
  const body = document.getElementById("job-rows");
  const state = document.getElementById("jobs-state");
  const errorLine = document.getElementById("jobs-error");
  const emptyRow = body.querySelector("tr.empty");
  const canCancel = new Set((root.dataset.canCancel || "").split(" ").filter(Boolean));
  const POLL_MS = 2000;
  const ACTIVE_LIMIT = 200;
  const FINISHED_LIMIT = 20;
  const ACTIVE = new Set(["queued", "running"]);
  const KIND_RANK = { fine_tune: 0, generation: 1 };

  const rows = new Map(); // "kind:id" -> { tr, cells, job }
  let timer = null;
  let inFlight = false;
  let again = false; // asked for while a poll was in flight: poll once more as soon as it ends
  let epoch = 0; // bumped when the filters change: a poll sent before shows nothing
  let ended = false; // the session ended: no more polling until the page is loaded again
  let polls = 0;

  // --- the API ---------------------------------------------------------------------------------------------

  function filters() {
    const data = new FormData(form);
    return { kind: data.get("kind") || "", status: data.get("status") || "", datasetId: data.get("dataset_id") || "" };
  }

  function listUrl(f, active, limit) {
    const query = new URLSearchParams({ active: String(active), limit: String(limit) });
    if (f.kind) query.set("kind", f.kind);
    if (f.datasetId) query.set("dataset_id", f.datasetId);
    if (f.status && f.status !== "active") query.set("status", f.status);
    return `/v1/jobs?${query}`;
  }

  async function fetchJobs() {
    const f = filters();
    const wantActive = !f.status || f.status === "active" || ACTIVE.has(f.status);
    const wantFinished = !f.status || (f.status !== "active" && !ACTIVE.has(f.status));
    const [active, finished] = await Promise.all([
      wantActive ? Sprout.api("GET", listUrl(f, true, ACTIVE_LIMIT)) : { data: [], next_cursor: null },
      wantFinished ? Sprout.api("GET", listUrl(f, false, FINISHED_LIMIT)) : { data: [], next_cursor: null },
    ]);
    // A job that finished between the two requests is in both: its finished row is the newer news.
    const merged = new Map();
    for (const job of [...active.data, ...finished.data]) merged.set(keyOf(job), job);
    const jobs = [...merged.values()].sort(newestFirst);
    return { jobs, activeCount: active.data.length, moreActive: active.next_cursor !== null };
  }

  function keyOf(job) {
    return `${job.kind}:${job.id}`;
  }

  function newestFirst(a, b) {
    const byTime = Date.parse(b.created_at) - Date.parse(a.created_at);
    if (byTime !== 0) return byTime;
    const byKind = KIND_RANK[b.kind] - KIND_RANK[a.kind];
    return byKind !== 0 ? byKind : b.id - a.id;
  }

  function apiMessage(error) {
    const openai = error.body && error.body.error; // the fine-tuning routes answer in OpenAI's shape
    return openai && typeof openai.message === "string" ? openai.message : error.message;
  }

  // --- rendering ---------------------------------------------------------------------------------------------

  function el(tag, className, parent) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (parent) parent.appendChild(node);
    return node;
  }

  function buildRow(job) {
    const tr = el("tr", "job");
    tr.dataset.key = keyOf(job);
    tr.dataset.kind = job.kind;
    tr.dataset.id = String(job.id);
    const cells = {};
    const jobCell = el("td", "job-name", tr);
    cells.link = el("a", "", jobCell);
    cells.kind = el("small", "muted kind", jobCell);
    const datasetCell = el("td", "dataset", tr);
    cells.dataset = el("a", "", datasetCell);
    const statusCell = el("td", "job-status", tr);
    cells.status = el("span", "status", statusCell);
    cells.stage = el("small", "muted stage", statusCell);
    cells.note = el("div", "note text", statusCell);
    const progressCell = el("td", "job-progress", tr);
    cells.bar = el("progress", "", progressCell);
    cells.figures = el("span", "figures", progressCell);
    cells.counters = el("div", "muted counters", progressCell);
    cells.attempt = el("td", "num attempt", tr);
    cells.worker = el("td", "worker", tr);
    cells.tokens = el("td", "num tokens", tr);
    cells.busy = el("td", "num busy", tr);
    cells.times = el("td", "times", tr);
    const actions = el("td", "job-actions", tr);
    cells.cancel = el("button", "cancel", actions);
    cells.cancel.type = "button";
    cells.cancel.textContent = "Cancel";
    cells.cancel.hidden = true;
    cells.cancel.addEventListener("click", () => cancel(tr.dataset.key));
    return { tr, cells, job };
  }

  function jobName(job) {
    return job.kind === "fine_tune" ? job.public_id : `#${job.id}`;
  }

  function number(n) {
    return Number(n).toLocaleString();
  }

  function duration(seconds) {
    if (seconds == null) return "";
    const s = Math.round(seconds);
    if (s < 60) return `${seconds < 10 ? seconds.toFixed(1) : s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} m ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
  }

  function clock(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    const sameDay = when.toDateString() === new Date().toDateString();
    return sameDay ? when.toLocaleTimeString() : when.toLocaleString();
  }

  function update(entry, job) {
    const { tr, cells } = entry;
    entry.job = job;
    tr.dataset.status = job.status;
    Sprout.setText(cells.link, jobName(job));
    cells.link.href = job.url;
    Sprout.setText(cells.kind, job.kind === "fine_tune" ? " fine-tune" : " generation");

    if (job.dataset) {
      Sprout.setText(cells.dataset, job.dataset.name);
      cells.dataset.href = `/ui/datasets/${encodeURIComponent(job.dataset.id)}`;
    } else {
      Sprout.setText(cells.dataset, "");
      cells.dataset.removeAttribute("href");
    }

    Sprout.setText(cells.status, job.status);
    cells.status.className = `status ${job.status}`;
    const stage = job.stage && job.stage !== job.status ? ` ${job.stage}` : "";
    Sprout.setText(cells.stage, `${stage}${job.cancel_requested && ACTIVE.has(job.status) ? " · cancel requested" : ""}`);
    const note = job.error || job.message || "";
    Sprout.setText(cells.note, note);
    cells.note.classList.toggle("error", Boolean(job.error));
    Sprout.show(cells.note, Boolean(note));

    const progress = job.progress;
    if (progress) {
      cells.bar.max = progress.total;
      cells.bar.value = progress.done;
      Sprout.setText(cells.figures, ` ${number(progress.done)} / ${number(progress.total)} (${Math.floor(progress.fraction * 100)}%)`);
      cells.bar.hidden = false;
    } else {
      cells.bar.removeAttribute("value"); // indeterminate while it runs
      cells.bar.hidden = job.status !== "running";
      Sprout.setText(cells.figures, job.kind === "fine_tune" && job.status === "running" ? " steps not reported yet" : "");
    }
    cells.bar.dataset.fraction = progress ? String(progress.fraction) : "";
    const c = job.counters;
    Sprout.setText(
      cells.counters,
      c ? `${number(c.requests)} requests · ${number(c.parsed)} parsed · ${number(c.duplicates)} duplicates · ${number(c.filtered)} filtered · ${number(c.errors)} errors` : job.model || "",
    );

    Sprout.setText(cells.attempt, job.attempt);
    Sprout.setText(cells.worker, job.worker_id || "");
    const t = job.tokens;
    Sprout.setText(cells.tokens, t.total ? number(t.total) : "");
    if (t.prompt != null) cells.tokens.title = `${number(t.prompt)} prompt + ${number(t.completion)} completion`;
    else if (t.trained != null) cells.tokens.title = `${number(t.trained)} trained`;
    Sprout.setText(cells.busy, duration(job.busy_seconds));

    const times = [`created ${clock(job.created_at)}`];
    if (job.started_at) times.push(`started ${clock(job.started_at)}`);
    if (job.finished_at) times.push(`finished ${clock(job.finished_at)}`);
    if (job.not_before && job.status === "queued") times.push(`retry after ${clock(job.not_before)}`);
    Sprout.setText(cells.times, times.join(" · "));

    const cancellable = Boolean(job.cancel_url) && canCancel.has(job.kind) && !job.cancel_requested;
    Sprout.show(cells.cancel, cancellable || cells.cancel.disabled); // a cancel being sent stays in view
  }

  function render(jobs) {
    const seen = new Set();
    let previous = null;
    for (const job of jobs) {
      const key = keyOf(job);
      seen.add(key);
      let entry = rows.get(key);
      if (!entry) {
        entry = buildRow(job);
        rows.set(key, entry);
      }
      update(entry, job);
      // In the listing's order without rebuilding rows (a row being clicked stays the same element).
      const expected = previous ? previous.nextSibling : body.firstChild;
      if (expected !== entry.tr) body.insertBefore(entry.tr, expected);
      previous = entry.tr;
    }
    for (const [key, entry] of rows) {
      if (!seen.has(key)) {
        entry.tr.remove();
        rows.delete(key);
      }
    }
    Sprout.show(emptyRow, jobs.length === 0);
    body.appendChild(emptyRow);
  }

  // --- polling -----------------------------------------------------------------------------------------------

  function schedule() {
    if (timer === null && !ended && !document.hidden) timer = window.setTimeout(poll, POLL_MS);
  }

  function unschedule() {
    if (timer !== null) window.clearTimeout(timer);
    timer = null;
  }

  async function poll() {
    unschedule();
    if (inFlight) {
      again = true;
      return;
    }
    if (ended || document.hidden) return;
    inFlight = true;
    again = false;
    const sent = epoch;
    try {
      const { jobs, activeCount, moreActive } = await fetchJobs();
      if (sent !== epoch) return; // the filters changed meanwhile (finally polls again)
      render(jobs);
      polls += 1;
      root.dataset.polls = String(polls);
      const more = moreActive ? ` (the newest ${ACTIVE_LIMIT} shown)` : "";
      Sprout.setText(state, `${number(activeCount)} active${more} · updated ${new Date().toLocaleTimeString()}`);
      Sprout.show(errorLine, false);
    } catch (error) {
      if (error.status === 401) {
        ended = true;
        Sprout.setText(errorLine, "Your session ended: reload the page to log in again.");
      } else {
        Sprout.setText(errorLine, `Could not update the jobs: ${apiMessage(error)}`);
      }
      Sprout.show(errorLine, true);
    } finally {
      inFlight = false;
      if (again || sent !== epoch) poll();
      else schedule();
    }
  }

  async function cancel(key) {
    const entry = rows.get(key);
    if (!entry || !entry.job.cancel_url) return;
    const job = entry.job;
    const label = `${job.kind === "fine_tune" ? "fine-tuning" : "generation"} job ${jobName(job)}`;
    if (!window.confirm(`Cancel ${label}? A running job stops within moments; what it made so far is kept.`)) return;
    const button = entry.cells.cancel;
    button.disabled = true;
    Sprout.setText(button, "Cancelling…");
    try {
      await Sprout.api("POST", job.cancel_url);
      Sprout.show(button, false);
      Sprout.show(errorLine, false);
    } catch (error) {
      Sprout.setText(errorLine, `Could not cancel ${label}: ${apiMessage(error)}`);
      Sprout.show(errorLine, true);
    } finally {
      button.disabled = false;
      Sprout.setText(button, "Cancel");
    }
    poll();
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      unschedule();
      root.dataset.polling = "paused";
    } else {
      root.dataset.polling = "on";
      poll();
    }
  });

  // Filters apply at once, without reloading; the address keeps them (a reload or a shared link shows the same).
  form.addEventListener("change", () => {
    const f = filters();
    const query = new URLSearchParams();
    if (f.kind) query.set("kind", f.kind);
    if (f.status) query.set("status", f.status);
    if (f.datasetId) query.set("dataset_id", f.datasetId);
    const search = query.toString();
    window.history.replaceState(null, "", `${window.location.pathname}${search ? `?${search}` : ""}`);
    epoch += 1;
    for (const entry of rows.values()) entry.tr.remove();
    rows.clear();
    Sprout.setText(state, "Loading…");
    poll();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    poll();
  });

  root.dataset.polling = document.hidden ? "paused" : "on";
  poll();
})();
