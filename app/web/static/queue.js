// The queue page: restore a filtered item (reviewers), and bulk actions over the whole filter query (admins):
// the action is counted first (a dry run) and only runs once the admin confirms the count.
"use strict";

(() => {
  const root = document.getElementById("queue");
  const datasetId = root.dataset.datasetId;
  const filters = JSON.parse(root.dataset.filters || "{}");

  for (const button of document.querySelectorAll("button.restore")) {
    button.addEventListener("click", async () => {
      const row = button.closest("tr");
      try {
        await Sprout.api("POST", `/v1/items/${row.dataset.itemId}/restore`, { version: Number(row.dataset.version) });
        const status = row.querySelector(".status");
        Sprout.setText(status, "pending");
        status.className = "status pending";
        button.remove();
      } catch (error) {
        window.alert(error.message);
      }
    });
  }

  const form = document.getElementById("bulk-form");
  if (!form) return;
  const result = document.getElementById("bulk-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const action = data.get("action");
    const body = {
      action,
      filters,
      reason: action === "reject" ? data.get("reason") : null,
      note: data.get("note") || null,
    };
    try {
      const dry = await Sprout.api("POST", `/v1/datasets/${datasetId}/review/bulk`, { ...body, dry_run: true });
      if (!dry.matched) {
        Sprout.setText(result, "No item matches: nothing to do.");
        return;
      }
      if (!window.confirm(`${action} ${dry.matched.toLocaleString()} item(s) matching these filters?`)) return;
      Sprout.setText(result, "Working…");
      const done = await Sprout.api("POST", `/v1/datasets/${datasetId}/review/bulk`, body);
      Sprout.setText(result, `${action}: ${done.changed.toLocaleString()} of ${done.matched.toLocaleString()} item(s) changed.`);
    } catch (error) {
      Sprout.setText(result, error.message);
    }
  });
})();
