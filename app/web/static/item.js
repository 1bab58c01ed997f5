// The item page: restore (reviewers), reopen and settle a dispute (admins).
"use strict";

(() => {
  const root = document.getElementById("item-page");
  const itemId = root.dataset.itemId;
  const version = Number(root.dataset.version);
  const result = document.getElementById("item-result");

  async function post(path, body) {
    try {
      await Sprout.api("POST", path, body);
      window.location.reload();
    } catch (error) {
      Sprout.setText(result, error.message);
    }
  }

  const on = (id, handler) => {
    const element = document.getElementById(id);
    if (element) element.addEventListener("click", handler);
  };
  on("restore", () => post(`/v1/items/${itemId}/restore`, { version }));
  on("reopen", () => post(`/v1/items/${itemId}/reopen`, { version }));
  on("settle-approve", () => post(`/v1/items/${itemId}/review`, { decision: "approve", version }));
  on("settle-reject", () =>
    post(`/v1/items/${itemId}/review`, {
      decision: "reject",
      version,
      reason: document.getElementById("settle-reason").value,
    }),
  );
})();
