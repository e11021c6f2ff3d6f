// Small DOM helpers shared by the views: element builder, readable API errors, state badges.

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
  const box = h("p", { class: "error", role: "alert", "data-status": err && err.status !== undefined ? err.status : "" }, errorText(err));
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
      h("span", {}, text),
      h("button", { type: "button", class: "link", onclick: () => area.replaceChildren() }, t("err.dismiss")),
    ),
  );
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
