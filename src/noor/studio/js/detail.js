// One generation: the player (or its preview while dreaming), download, extend, upscale, delete,
// the request that made it and, if it failed, why. Polled until it is completed or failed.

import { api } from "./api.js";
import { dollars, seconds, t, when } from "./i18n.js";
import { fail, refreshCredits } from "./session.js";
import { clearError, h, kindBadge, notice, progressBar, select, stateBadge, title, updateProgress } from "./ui.js";

const POLL_MS = 1000;
const PREVIEW_RELOAD_MS = 4000;
const UPSCALE_TO = ["720p", "1080p", "4k"];

// When it will be done as the queue stands (updated each poll); once done, what it took (noor.jobs.eta).
const doneLabel = (g) => (g.state === "queued" || g.state === "dreaming" ? t("detail.done_in") : t("detail.took"));
const doneIn = (g) => seconds(g.state === "queued" || g.state === "dreaming" ? g.done_in_s : g.run_s);

function info(g) {
  const rows = [
    [t("detail.id"), h("code", {}, g.id)],
    [t("detail.kind"), kindBadge(g)],
    [t("detail.state"), stateBadge(g.state)],
    [t("detail.model"), h("span", { class: "ltr" }, g.model)],
    [t("detail.created"), when(g.created_at)],
    [t("detail.eta"), h("span", { "data-testid": "eta" }, seconds(g.eta_s))],
    [doneLabel(g), h("span", { "data-testid": "done-in" }, doneIn(g))],
    [t("detail.price"), h("span", { "data-testid": "price" }, dollars(g.price_cents))],
  ];
  if (g.request.negative_prompt) rows.push([t("detail.negative"), h("span", { dir: "auto" }, g.request.negative_prompt)]);
  return h("dl", { class: "info" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function media(g) {
  const assets = g.assets || {};
  if (g.state === "completed" && assets.video) {
    return h("video", { class: "player", src: assets.video, controls: true, playsInline: true, preload: "metadata", poster: assets.image || null, "aria-label": t("detail.player") });
  }
  if (g.state === "completed" && assets.image) return h("img", { class: "player", src: assets.image, alt: t("detail.image") });
  if (g.state === "dreaming" && assets.progress_video) {
    return h(
      "figure",
      { style: "margin: 0" },
      h("video", { class: "player preview", src: assets.progress_video, muted: true, autoplay: true, loop: true, playsInline: true, "aria-label": t("detail.preview") }),
      h("figcaption", { class: "muted" }, t("detail.preview")),
    );
  }
  return null;
}

export function render(main, { id }) {
  let timer = null;
  let stopped = false;
  let shown = null; // what the page shows now, to redraw only on change
  let previewAt = 0;
  const errors = h("div");
  delete main.dataset.state;
  main.dataset.id = id;
  main.replaceChildren(h("h1", {}, id), h("p", { class: "muted" }, t("loading")));

  const dialog = h(
    "dialog",
    { "aria-labelledby": "delete-q" },
    h("p", { id: "delete-q" }, t("detail.delete.confirm")),
    h(
      "form",
      { method: "dialog", class: "actions" },
      h("button", { value: "cancel" }, t("detail.cancel")),
      h("button", { value: "delete", class: "danger" }, t("detail.delete.yes")),
    ),
  );
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "delete") return;
    try {
      await api.remove(id);
      refreshCredits();
      notice(t("detail.deleted", { id }), "info", true);
      location.hash = "#/gallery";
    } catch (err) {
      fail(errors, err);
    }
  });

  const draw = (g) => {
    // Redraw on a new state or the first preview; otherwise move the progress bar and, every few
    // seconds, reload the preview clip (the worker rewrites it every 2 s; its signed link changes each poll).
    const sig = `${g.state}|${g.assets?.progress_video ? 1 : 0}`;
    if (sig === shown) {
      updateProgress(main, g);
      const done = main.querySelector("[data-testid=done-in]");
      if (done) done.textContent = doneIn(g);
      const preview = main.querySelector("video.preview");
      if (preview && g.assets.progress_video && Date.now() - previewAt > PREVIEW_RELOAD_MS) {
        preview.src = g.assets.progress_video;
        previewAt = Date.now();
      }
      return;
    }
    previewAt = Date.now();
    const first = shown === null;
    shown = sig;
    main.dataset.state = g.state;
    const actions = h("div", { class: "actions" });
    const video = g.assets?.video;
    if (g.state === "completed" && (video || g.assets?.image)) {
      actions.append(h("a", { class: "button", href: video || g.assets.image, download: `${g.id}.${video ? "mp4" : "jpg"}` }, t("detail.download")));
    }
    if (g.state === "completed" && video) {
      actions.append(h("a", { class: "button", href: `#/create?extend=${encodeURIComponent(g.id)}` }, t("detail.extend")));
      const to = select("upscale-to", UPSCALE_TO, "1080p");
      to.id = "upscale-to";
      const go = h("button", { type: "button" }, t("detail.upscale"));
      go.addEventListener("click", async () => {
        clearError(errors);
        go.disabled = true;
        try {
          const up = await api.upscale(g.id, to.value);
          notice(t("detail.upscaled", { id: up.id }), "info", true);
          location.hash = `#/g/${encodeURIComponent(up.id)}`;
        } catch (err) {
          fail(errors, err);
        } finally {
          go.disabled = false;
        }
      });
      actions.append(h("span", { class: "actions" }, h("label", { for: "upscale-to" }, t("detail.upscale.to")), to, go));
    }
    actions.append(h("button", { type: "button", class: "danger", onclick: () => dialog.showModal() }, t("detail.delete")));
    const hadFocus = main.contains(document.activeElement); // a redraw must not drop the keyboard focus
    const running = g.state === "queued" || g.state === "dreaming";
    main.replaceChildren(
      h("p", {}, h("a", { href: "#/gallery" }, t("detail.back"))),
      title("h1", g),
      h(
        "div",
        { class: "grid-2" },
        h(
          "div",
          {},
          media(g),
          running ? progressBar(g) : null,
          g.state === "failed"
            ? h("div", { class: "error", role: "alert" }, h("strong", {}, `${t("detail.failure")}: `), g.failure_reason || "—")
            : null,
          h("div", { class: "actions", style: "margin-block: 1rem" }, actions),
          errors,
        ),
        h(
          "div",
          { class: "card" },
          h("h2", { style: "margin-block-start: 0" }, t("detail.info")),
          info(g),
          h("h2", {}, t("detail.request")),
          h("pre", { "data-testid": "request" }, JSON.stringify(g.request, null, 2)),
        ),
      ),
      dialog,
    );
    if (!first && !hadFocus) return;
    main.querySelector("h1").setAttribute("tabindex", "-1");
    main.querySelector("h1").focus();
  };

  const load = async () => {
    try {
      const g = await api.get(id);
      if (stopped) return;
      draw(g);
      if (g.state === "queued" || g.state === "dreaming") timer = setTimeout(load, POLL_MS);
    } catch (err) {
      if (stopped) return;
      if (err.status === 404) {
        main.replaceChildren(h("p", {}, h("a", { href: "#/gallery" }, t("detail.back"))), h("h1", {}, t("detail.notfound")));
        return;
      }
      if (shown === null) main.replaceChildren(h("h1", {}, id), errors);
      fail(errors, err);
      timer = setTimeout(load, POLL_MS * 4);
    }
  };
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (dialog.open) dialog.close();
  };
}
