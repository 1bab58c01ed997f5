// Shared by the pages: JSON calls to the API with the session's CSRF token, and safe text rendering.
// Model output is untrusted: it only ever reaches the page through textContent, never as HTML.
"use strict";

const Sprout = (() => {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

  class ApiError extends Error {
    constructor(status, body) {
      super(ApiError.describe(status, body));
      this.status = status;
      this.body = body;
    }
    static describe(status, body) {
      const detail = body && body.detail;
      if (typeof detail === "string") return detail;
      if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
      return `HTTP ${status}`;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { "X-CSRF-Token": csrf, Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // Set an element's text; segments of a diff become <span>/<del>/<ins> elements holding text only.
  function setText(element, text) {
    element.textContent = text == null ? "" : String(text);
  }

  function renderDiff(element, segments) {
    element.replaceChildren();
    for (const segment of segments || []) {
      const tag = segment.op === "delete" ? "del" : segment.op === "insert" ? "ins" : "span";
      const node = document.createElement(tag);
      node.textContent = segment.text;
      element.appendChild(node);
    }
  }

  function show(element, visible) {
    element.hidden = !visible;
  }

  return { api, ApiError, setText, renderDiff, show };
})();
