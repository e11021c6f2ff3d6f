// Small DOM helpers shared by the views: element builder, readable API errors, state badges.

import { api } from "./api.js";
import { t, num } from "./i18n.js";

// h("a", {href: "#/"}, "text", child): an element; attributes starting with "on" become listeners.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Text with `code` in backticks (a command in an interface string or a server message) as nodes: each pair of
// backticks becomes a <code> (left to right, isolated, also inside Arabic); a lone backtick stays as it is.
export function rich(text) {
  const parts = String(text).split(/`([^`]+)`/);
  return parts.map((part, i) => (i % 2 ? h("code", {}, part) : part)).filter((part) => part !== "");
}

// An API failure as one sentence a person can act on: what kind of failure, then the server's own words.
export function errorText(err) {
  if (typeof err === "string") return err;
  if (!err || err.status === undefined) return t("err.unknown", { detail: String(err && err.message ? err.message : err) });
  const { status, detail } = err;
  if (status === 0) return t("err.network");
  if (status === 429) return t("err.429", { detail: detail.replace(/\.$/, ""), s: err.retryAfter || "?" });
  let prefix = t("err.prefix.refused");
  if (status === 401) prefix = t("err.prefix.401");
  else if (status === 402) prefix = t("err.prefix.402");
  else if (status === 404) prefix = t("err.prefix.404");
  else if (status >= 500) prefix = t("err.prefix.server");
  return `${prefix} (${status}): ${detail}`;
}

// An error box in `where` (role=alert: screen readers announce it); replaces the previous one.
export function showError(where, err) {
  clearError(where);
  const box = h("p", { class: "error", role: "alert", "data-status": err && err.status !== undefined ? err.status : "" }, rich(errorText(err)));
  where.append(box);
  return box;
}

export function clearError(where) {
  for (const old of where.querySelectorAll(":scope > .error")) old.remove();
}

// The page-wide notice under the header (errors from anywhere; polite messages too).
// `keep`: survives the next page change (e.g. "queued" shown on the page the user is sent to).
export function notice(message, kind = "error", keep = false) {
  const area = document.getElementById("notice");
  area.replaceChildren();
  if (keep) area.dataset.keep = "true";
  else delete area.dataset.keep;
  if (!message) return;
  const text = typeof message === "string" ? message : errorText(message);
  area.append(
    h(
      "div",
      { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
      h("span", {}, rich(text)),
      h("button", { type: "button", class: "link", onclick: () => area.replaceChildren() }, t("err.dismiss")),
    ),
  );
}

// What a generation is, in words (the thumbnails of a clip and a picture look alike).
export function kindBadge(g) {
  return h("span", { class: "kind", "data-kind": g.generation_type }, t(`kind.${g.generation_type}`));
}

// A generation's title: its prompt; an upscale (which has none) is named after its source, "Upscale to 720p of:
// <the source's prompt>", looked up once per source (an upscale of an upscale goes back to the first prompt).
const sourcePrompts = new Map(); // id -> Promise of the prompt, or null (deleted, or no prompt)
function promptOf(id) {
  if (!sourcePrompts.has(id)) {
    const found = api
      .get(id)
      .then((g) => g.request.prompt || (g.request.generation_id ? promptOf(g.request.generation_id) : null))
      .catch(() => null);
    sourcePrompts.set(id, found);
  }
  return sourcePrompts.get(id);
}

export function title(tag, g, attrs = {}) {
  const req = g.request || {};
  const node = h(tag, { dir: "auto", ...attrs });
  if (req.prompt || !req.generation_id) {
    node.textContent = req.prompt || t(`kind.${g.generation_type}`);
    return node;
  }
  // the label in the interface's language, the prompt in its own direction (<bdi>)
  node.removeAttribute("dir");
  node.dataset.upscaleOf = req.generation_id;
  const vars = { resolution: req.resolution || "" };
  node.textContent = t("title.upscale.busy", vars);
  promptOf(req.generation_id).then((prompt) => {
    if (prompt) node.replaceChildren(`${t("title.upscale", vars)} `, h("bdi", {}, prompt));
    else node.replaceChildren(t("title.upscale.gone", { ...vars, id: req.generation_id.slice(0, 8) }));
  });
  return node;
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, "data-state": state }, t(`state.${state}`));
}

export function progressBar(g) {
  const bar = h("div", { class: "progress" }, h("progress", { max: 100 }), h("span", { class: "muted" }));
  updateProgress(bar, g);
  return bar;
}

// Move a progress bar in place (a redraw would restart the preview clip next to it).
export function updateProgress(root, g) {
  const pct = Math.round((g.progress || 0) * 100);
  const text = t("progress", { pct: `${num(pct, 0)}%` });
  for (const bar of root.querySelectorAll("progress")) {
    bar.value = pct;
    bar.setAttribute("aria-label", text);
  }
  for (const label of root.querySelectorAll(".progress span")) label.textContent = text;
}

export function field(id, label, control, hint) {
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  control.id = id;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("small", { id: hintId, class: "muted" }, hint) : null,
  );
}

export function select(name, values, current, labelOf = (v) => v) {
  return h(
    "select",
    { name },
    values.map((v) => h("option", { value: v, selected: v === current }, labelOf(v))),
  );
}

export function focusHeading(root) {
  const heading = root.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
}

// Replace what follows `keep` in its parent, leaving `keep` in place (re-inserting a node drops its focus).
export function replaceAfter(keep, ...nodes) {
  while (keep.nextSibling) keep.nextSibling.remove();
  keep.after(...nodes);
}
