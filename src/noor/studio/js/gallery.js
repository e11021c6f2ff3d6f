// Gallery: the tenant's generations, newest first, filtered by state and prompt text, 12 a page.
// While any shown generation is queued or dreaming the page is polled and changed tiles are redrawn.

import { api } from "./api.js";
import { num, t, when } from "./i18n.js";
import { fail } from "./session.js";
import { clearError, field, h, kindBadge, progressBar, select, stateBadge, title, updateProgress } from "./ui.js";

const PAGE_SIZE = 12;
const POLL_MS = 1500;
const STATES = ["", "queued", "dreaming", "completed", "failed"];

function thumb(g) {
  const assets = g.assets || {};
  if (g.state === "completed" && assets.image) return h("img", { src: assets.image, alt: "", loading: "lazy" });
  if (g.state === "dreaming" && assets.progress_video) {
    return h("video", { src: assets.progress_video, muted: true, autoplay: true, loop: true, playsInline: true, "aria-hidden": "true" });
  }
  return h("span", { "aria-hidden": "true" }, g.state === "failed" ? "✕" : "…");
}

function tile(g) {
  return h(
    "li",
    { class: "tile", "data-id": g.id, "data-state": g.state },
    h(
      "a",
      { class: "open", href: `#/g/${encodeURIComponent(g.id)}` },
      h("div", { class: "thumb" }, kindBadge(g), thumb(g)),
      h(
        "div",
        { class: "meta" },
        stateBadge(g.state),
        title("p", g, { class: "prompt" }),
        g.state === "queued" || g.state === "dreaming" ? progressBar(g) : null,
        h("small", { class: "muted" }, when(g.created_at)),
      ),
    ),
  );
}

// What makes a tile look different: redraw only when this changes (a redrawn preview restarts);
// progress moves in place.
const signature = (g) => `${g.state}|${g.assets?.progress_video ? 1 : 0}`;

export function render(main, { params }) {
  // The filter and page live in the URL (bookmarkable) but change in place: typing keeps its focus.
  let state = STATES.includes(params.get("state")) ? params.get("state") : "";
  let query = params.get("q") || "";
  let page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  let timer = null;
  let stopped = false;
  const go = (changes) => {
    if ("state" in changes) state = changes.state;
    if ("query" in changes) query = changes.query;
    if ("page" in changes) page = changes.page;
    const p = new URLSearchParams();
    if (state) p.set("state", state);
    if (query) p.set("q", query);
    if (page > 1) p.set("page", String(page));
    history.replaceState(null, "", `#/gallery${p.size ? `?${p}` : ""}`);
    clearTimeout(timer);
    load();
  };

  const stateSelect = select("state", STATES, state, (s) => (s ? t(`state.${s}`) : t("gallery.state.all")));
  stateSelect.addEventListener("change", () => go({ state: stateSelect.value, page: 1 }));
  const search = h("input", { type: "search", name: "q", dir: "auto", value: query });
  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": t("gallery.filter") },
    field("gallery-state", t("gallery.state"), stateSelect),
    field("gallery-q", t("gallery.search"), search),
  );
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    go({ query: search.value.trim(), page: 1 });
  });
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => go({ query: search.value.trim(), page: 1 }), 400);
  });

  const list = h("ul", { class: "gallery" });
  const summary = h("p", { class: "muted", role: "status" }, t("loading"));
  const prev = h("button", { type: "button", disabled: true, onclick: () => go({ page: page - 1 }) }, t("gallery.prev"));
  const next = h("button", { type: "button", disabled: true, onclick: () => go({ page: page + 1 }) }, t("gallery.next"));
  const pager = h("nav", { class: "pager", "aria-label": t("gallery.paging") }, prev, summary, next);
  const errors = h("div");
  main.replaceChildren(h("h1", {}, t("gallery.title")), filters, errors, list, pager);

  const load = async () => {
    const asked = { state, query, page };
    try {
      const res = await api.gallery({ limit: PAGE_SIZE, offset: (page - 1) * PAGE_SIZE, ...(state && { state }), ...(query && { q: query }) });
      if (stopped || asked.state !== state || asked.query !== query || asked.page !== page) return; // superseded
      clearError(errors);
      const pages = Math.max(1, Math.ceil(res.total / PAGE_SIZE));
      summary.textContent = t("gallery.count", { total: num(res.total, 0), page: num(page, 0), pages: num(pages, 0) });
      if (!res.scanned_all) summary.textContent += ` ${t("gallery.partial", { n: num(5000, 0) })}`;
      prev.disabled = page <= 1;
      next.disabled = !res.has_more;
      const old = new Map([...list.children].map((li) => [li.dataset.id, li]));
      const tiles = res.generations.map((g) => {
        const seen = old.get(g.id);
        if (seen && seen.dataset.sig === signature(g)) {
          updateProgress(seen, g);
          return seen;
        }
        const fresh = tile(g);
        fresh.dataset.sig = signature(g);
        return fresh;
      });
      list.replaceChildren(...tiles);
      if (!tiles.length) list.append(h("li", { class: "muted" }, t("gallery.empty")));
      if (res.generations.some((g) => g.state === "queued" || g.state === "dreaming")) timer = setTimeout(load, POLL_MS);
    } catch (err) {
      if (stopped) return;
      fail(errors, err);
      timer = setTimeout(load, POLL_MS * 4); // keep trying: a 429 or a restart passes
    }
  };
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(searchTimer);
  };
}
