// The review page: one claimed item at a time, one decision per keystroke.
// It claims batches by itself, renews its leases while the page is open, and never loses a decision: one that
// meets an expired session is kept in sessionStorage and sent after the reviewer logs in again.
"use strict";

(() => {
  const root = document.getElementById("review");
  const datasetId = root.dataset.datasetId;
  const sort = root.dataset.sort || "doubtful";
  const outboxKey = `sprout-review-outbox-${datasetId}`;
  const BATCH = 10;
  const REFILL_BELOW = 3;
  const $ = (id) => document.getElementById(id);
  const FIELDS = ["instruction", "input", "output"];

  const state = {
    entries: [], // {item, state: "open" | "approved" | "rejected" | "answered" | "disputed" | "lost"}
    pos: 0,
    mode: "view", // view | reject | edit | help
    reasons: [],
    reasonIndex: -1,
    leaseSeconds: 600,
    renewTimer: null,
    claiming: null,
    decided: 0,
    busy: false,
  };

  function current() {
    return state.entries[state.pos] || null;
  }

  function openCount() {
    return state.entries.filter((e) => e.state === "open").length;
  }

  function message(text, kind) {
    const el = $("message");
    el.className = `message ${kind || "info"}`;
    Sprout.setText(el, text);
    Sprout.show(el, Boolean(text));
  }

  function loginLink() {
    const next = encodeURIComponent(window.location.pathname + window.location.search);
    return `/login?next=${next}`;
  }

  // --- rendering -------------------------------------------------------------------------------------------

  function render() {
    const entry = current();
    Sprout.show($("card"), Boolean(entry));
    const open = openCount();
    Sprout.setText(
      $("status-line"),
      entry
        ? `Item ${state.pos + 1} of ${state.entries.length} · ${open} still to decide · ${state.decided} decided on this page`
        : "Nothing left to review here for now.",
    );
    if (!entry) return;
    const item = entry.item;
    Sprout.setText($("item-id"), `#${item.id} · v${item.version}`);
    const label = entry.state === "open" ? "pending" : entry.state;
    Sprout.setText($("item-state"), label);
    $("item-state").className = `status ${label}`;
    const why = [];
    if (item.filter_reason) why.push(`was filtered: ${item.filter_reason}`);
    if (item.original) why.push("edited");
    if (entry.state === "lost") why.push("taken by another reviewer after your lease lapsed");
    Sprout.setText($("item-why"), why.join(" · "));
    for (const field of FIELDS) {
      Sprout.setText($(`f-${field}`), item[field]);
      Sprout.show($(`f-${field}`), state.mode !== "edit");
      Sprout.show($(`e-${field}`), state.mode === "edit");
    }
    Sprout.show($("edit-help"), state.mode === "edit");
    const neighbour = item.neighbour;
    Sprout.show($("neighbour"), Boolean(neighbour));
    if (neighbour) {
      Sprout.setText($("n-kind"), `${neighbour.kind} #${neighbour.id}`);
      Sprout.setText($("n-score"), neighbour.rouge_l == null ? "n/a" : neighbour.rouge_l.toFixed(3));
      Sprout.renderDiff($("n-diff"), neighbour.diff);
    }
    Sprout.show($("reject-panel"), state.mode === "reject");
    Sprout.show($("help"), state.mode === "help");
  }

  function renderReasons() {
    const list = $("reasons");
    list.replaceChildren();
    state.reasons.forEach((reason, index) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = reason;
      button.className = index === state.reasonIndex ? "chosen" : "";
      button.addEventListener("click", () => {
        state.reasonIndex = index;
        renderReasons();
        submitReject();
      });
      li.appendChild(button);
      list.appendChild(li);
    });
  }

  // --- claiming and leases -----------------------------------------------------------------------------

  function merge(items) {
    for (const item of items) {
      const known = state.entries.find((e) => e.item.id === item.id);
      if (known) {
        if (known.state === "open" || known.state === "lost") {
          known.item = item;
          known.state = "open";
        }
      } else {
        state.entries.push({ item, state: "open" });
      }
    }
  }

  async function claim() {
    if (state.claiming) return state.claiming;
    const startedAt = state.pos;
    state.claiming = (async () => {
      try {
        const result = await Sprout.api("POST", `/v1/datasets/${datasetId}/review/claim`, { n: BATCH, sort });
        state.reasons = result.reject_reasons;
        state.leaseSeconds = result.lease_seconds;
        merge(result.items);
        scheduleRenewal();
        // Move on to an open item only if the reviewer stayed put while the batch came: a refill in the
        // background must not pull them away from an item they went back to (k) to look at or undo.
        if (state.pos === startedAt && current() && current().state !== "open") moveToOpen(1);
        render();
      } catch (error) {
        handleError(error);
      } finally {
        state.claiming = null;
      }
    })();
    return state.claiming;
  }

  function scheduleRenewal() {
    if (state.renewTimer) return;
    // A third of the lease: two renewals can fail (a network blip) before anything lapses.
    const every = Math.max(1000, (state.leaseSeconds * 1000) / 3);
    state.renewTimer = window.setInterval(renew, every);
  }

  async function renew() {
    try {
      const result = await Sprout.api("POST", `/v1/datasets/${datasetId}/review/renew`, {});
      const held = new Set(result.item_ids);
      for (const entry of state.entries) {
        if (entry.state === "open" && !held.has(entry.item.id)) entry.state = "lost";
      }
      root.dataset.renewals = String(Number(root.dataset.renewals || "0") + 1);
      root.dataset.leaseUntil = result.lease_until || "";
      render();
    } catch (error) {
      handleError(error);
    }
  }

  // --- decisions ---------------------------------------------------------------------------------------

  function moveToOpen(direction) {
    const n = state.entries.length;
    for (let step = 0; step < n; step += 1) {
      const index = state.pos + direction * step;
      if (index >= 0 && index < n && state.entries[index].state === "open") {
        state.pos = index;
        return true;
      }
    }
    for (let index = 0; index < n; index += 1) {
      if (state.entries[index].state === "open") {
        state.pos = index;
        return true;
      }
    }
    return false;
  }

  function outbox() {
    try {
      return JSON.parse(window.sessionStorage.getItem(outboxKey) || "[]");
    } catch (e) {
      return [];
    }
  }

  function saveOutbox(list) {
    window.sessionStorage.setItem(outboxKey, JSON.stringify(list));
  }

  async function send(itemId, body) {
    return Sprout.api("POST", `/v1/items/${itemId}/review`, body);
  }

  async function decide(body) {
    const entry = current();
    if (!entry || state.busy) return;
    if (entry.state !== "open") {
      message(`This item is ${entry.state}; press u to undo your last decision, or j for the next item.`, "info");
      return;
    }
    state.busy = true;
    const request = { version: entry.item.version, ...body };
    try {
      const result = await send(entry.item.id, request);
      entry.item = result.item;
      entry.state = result.decided ? result.item.status : "answered";
      state.decided += 1;
      state.mode = "view";
      message("");
      moveToOpen(1);
      render();
      if (openCount() < REFILL_BELOW) claim();
    } catch (error) {
      if (error.status === 401) {
        saveOutbox([...outbox(), { itemId: entry.item.id, body: request }]);
        entry.state = "answered";
        state.mode = "view";
        render();
        sessionEnded();
      } else if (error.status === 409 && error.body && error.body.item) {
        entry.item = error.body.item;
        entry.state = error.body.item.status === "pending" ? "open" : "lost";
        state.mode = "view";
        message(`${error.message}`, "warn");
        render();
      } else {
        handleError(error);
      }
    } finally {
      state.busy = false;
    }
  }

  async function flushOutbox() {
    const queued = outbox();
    if (!queued.length) return;
    const kept = [];
    let sent = 0;
    for (const entry of queued) {
      try {
        await send(entry.itemId, entry.body);
        sent += 1;
      } catch (error) {
        if (error.status === 401) kept.push(entry);
        else message(`A kept decision on item ${entry.itemId} could not be sent: ${error.message}`, "warn");
      }
    }
    saveOutbox(kept);
    state.decided += sent;
    if (sent) message(`Sent ${sent} decision(s) kept while you were logged out.`, "info");
  }

  function showLogin() {
    const el = $("message");
    const link = document.createElement("a");
    link.href = loginLink();
    link.textContent = " Log in";
    el.appendChild(link);
  }

  async function undo() {
    if (state.busy) return;
    state.busy = true;
    try {
      const result = await Sprout.api("POST", `/v1/datasets/${datasetId}/review/undo`);
      const index = state.entries.findIndex((e) => e.item.id === result.item.id);
      const entry = { item: result.item, state: result.item.status === "pending" ? "open" : result.item.status };
      if (index >= 0) {
        state.entries[index] = entry;
        state.pos = index;
      } else {
        state.entries.splice(state.pos, 0, entry);
      }
      state.decided = Math.max(0, state.decided - 1);
      state.mode = "view";
      message(`Undone: item #${result.item.id} is back.`, "info");
      render();
    } catch (error) {
      handleError(error);
    } finally {
      state.busy = false;
    }
  }

  // Says so, with a login link; a later failure (a lease renewal) must not hide that decisions are kept.
  function sessionEnded() {
    const kept = outbox().length;
    let text = "Your session ended.";
    if (kept === 1) text += " Your decision is kept: log in again and it will be sent.";
    else if (kept > 1) text += ` Your ${kept} decisions are kept: log in again and they will be sent.`;
    message(text, "warn");
    showLogin();
  }

  function handleError(error) {
    if (error && error.status === 401) {
      sessionEnded();
    } else {
      message(error && error.message ? error.message : String(error), "error");
    }
  }

  // --- modes -------------------------------------------------------------------------------------------

  function startReject() {
    const entry = current();
    if (!entry || entry.state !== "open") {
      message("Nothing to reject here: press j for the next item, or u to undo your last decision.", "info");
      return;
    }
    state.mode = "reject";
    state.reasonIndex = -1;
    $("reject-note").value = "";
    renderReasons();
    render();
  }

  function submitReject() {
    if (state.reasonIndex < 0) {
      message("Pick a reason first (its number).", "info");
      return;
    }
    const note = $("reject-note").value.trim();
    decide({ decision: "reject", reason: state.reasons[state.reasonIndex], note: note || null });
  }

  function startEdit() {
    const entry = current();
    if (!entry || entry.state !== "open") return;
    for (const field of FIELDS) $(`e-${field}`).value = entry.item[field];
    state.mode = "edit";
    render();
    $("e-instruction").focus();
  }

  function submitEdit() {
    const entry = current();
    const edits = {};
    for (const field of FIELDS) {
      const value = $(`e-${field}`).value;
      if (value !== entry.item[field]) edits[field] = value;
    }
    decide({ decision: "approve", edits: Object.keys(edits).length ? edits : null });
  }

  function cancel() {
    state.mode = "view";
    message("");
    document.activeElement && document.activeElement.blur();
    render();
  }

  async function next() {
    if (state.pos < state.entries.length - 1) state.pos += 1;
    else {
      const last = state.pos;
      await claim();
      // The claim may have moved to a new open item already (the last one here was decided): not one further.
      if (state.pos === last && state.pos < state.entries.length - 1) state.pos += 1;
    }
    render();
  }

  function previous() {
    if (state.pos > 0) state.pos -= 1;
    render();
  }

  // --- keys ---------------------------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.metaKey) return;
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);
    if (event.key === "Escape") {
      event.preventDefault();
      cancel();
      return;
    }
    if (state.mode === "edit") {
      if (event.key === "Enter" && event.ctrlKey) {
        event.preventDefault();
        submitEdit();
      }
      return;
    }
    if (state.mode === "reject") {
      if (event.key === "Enter") {
        event.preventDefault();
        submitReject();
      } else if (!typing && /^[1-9]$/.test(event.key)) {
        const index = Number(event.key) - 1;
        if (index < state.reasons.length) {
          state.reasonIndex = index;
          renderReasons();
        }
      }
      return;
    }
    if (typing || event.ctrlKey) return;
    const actions = {
      a: () => decide({ decision: "approve" }),
      r: startReject,
      e: startEdit,
      j: next,
      k: previous,
      u: undo,
      "?": () => {
        state.mode = state.mode === "help" ? "view" : "help";
        render();
      },
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });

  (async () => {
    await flushOutbox();
    await claim();
  })();
})();
