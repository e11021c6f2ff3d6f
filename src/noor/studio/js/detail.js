// One generation: the player (or its preview while dreaming), download, extend, upscale, edit, add sound, reframe,
// delete, the request that made it and, if it failed, why. Polled until it is completed or failed.

import { api } from "./api.js";
import { dollars, seconds, t, when } from "./i18n.js";
import { fail, refreshCredits } from "./session.js";
import { clearError, h, kindBadge, notice, progressBar, select, stateBadge, title, updateProgress } from "./ui.js";

const POLL_MS = 1000;
const PREVIEW_RELOAD_MS = 4000;
const UPSCALE_TO = ["720p", "1080p", "4k"];
// Modify Video's modes, closest to the source first (docs/api.md: the noise level each one starts from)
const EDIT_MODES = ["adhere_1", "adhere_2", "adhere_3", "flex_1", "flex_2", "flex_3", "reimagine_1", "reimagine_2", "reimagine_3"];
const ASPECTS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"];

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

// A form of `fields` and a button `label` that runs `work` (an API call making a new generation), then opens what
// it made, saying `queued(id)`, or says why not.
function queueing(label, fields, errors, work, queued, name = null) {
  const go = h("button", { type: "submit" }, label);
  const form = h("form", { class: "actions", "aria-label": name }, fields, go);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearError(errors);
    go.disabled = true;
    try {
      const made = await work();
      refreshCredits();
      notice(queued(made.id), "info", true);
      location.hash = `#/g/${encodeURIComponent(made.id)}`;
    } catch (err) {
      fail(errors, err);
    } finally {
      go.disabled = false;
    }
  });
  return form;
}

// Edit (a video) under a new prompt, as close to the source as the mode says; Add sound (a video: the installed
// audio model's track, under the clip's own prompt unless another is given); Reframe (a video or an image) onto
// another aspect ratio, the new area drawn under the source's prompt.
function editAndReframe(g, errors) {
  const source = g.assets.video || g.assets.image;
  const kind = g.assets.video ? "video" : "image";
  const forms = [];
  if (kind === "video") {
    const prompt = h("input", { id: "edit-prompt", name: "edit-prompt", dir: "auto", required: true, minlength: 3, value: g.request.prompt || "" });
    const mode = select("edit-mode", EDIT_MODES, "adhere_2", (m) => t(`mode.${m}`));
    mode.id = "edit-mode";
    const fields = [h("label", { for: "edit-prompt" }, t("detail.edit.prompt")), prompt, h("label", { for: "edit-mode" }, t("detail.edit.mode")), mode];
    const edit = () => api.modify(source, mode.value, prompt.value, g.model);
    forms.push(queueing(t("detail.edit"), fields, errors, edit, (id) => t("detail.edited", { id }), t("detail.edit")));
    const sound = h("input", { id: "sound-prompt", name: "sound-prompt", dir: "auto", placeholder: g.request.prompt || "" });
    const soundFields = [h("label", { for: "sound-prompt" }, t("detail.sound.prompt")), sound];
    const addSound = () => api.addAudio(g.id, sound.value.trim());
    forms.push(queueing(t("detail.sound"), soundFields, errors, addSound, (id) => t("detail.sounded", { id }), t("detail.sound")));
  }
  const wide = g.request.aspect_ratio ? g.request.aspect_ratio.split(":").map(Number) : [16, 9];
  const to = select("reframe-to", ASPECTS, wide[0] >= wide[1] ? "9:16" : "16:9");
  to.id = "reframe-to";
  const reframe = () => api.reframe(kind, source, to.value, g.request.prompt, g.model);
  const fields = [h("label", { for: "reframe-to" }, t("detail.reframe.to")), to];
  forms.push(queueing(t("detail.reframe"), fields, errors, reframe, (id) => t("detail.reframed", { id }), t("detail.reframe")));
  return forms;
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
      const fields = [h("label", { for: "upscale-to" }, t("detail.upscale.to")), to];
      actions.append(queueing(t("detail.upscale"), fields, errors, () => api.upscale(g.id, to.value), (id) => t("detail.upscaled", { id })));
    }
    const makes = g.state === "completed" && (video || g.assets?.image) ? editAndReframe(g, errors) : [];
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
          makes,
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
