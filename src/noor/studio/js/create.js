// Create: prompt, negative prompt, model and shape, keyframes (upload or an earlier generation = extend),
// trained concepts (noor concepts add; each acts on one model); the ETA and price are quoted as the form changes and
// shown again once it is queued.

import { api } from "./api.js";
import { dollars, seconds, t } from "./i18n.js";
import { fail, refreshCredits } from "./session.js";
import { clearError, field, h, notice, replaceAfter, rich, select } from "./ui.js";

const blankFrame = () => ({ kind: "none", url: null, name: null, id: "" });
// What the user typed survives a language switch or a visit to another page (not a reload).
const draft = {
  prompt: "",
  negative_prompt: "",
  model: null,
  aspect_ratio: "16:9",
  resolution: "540p",
  duration: "5s",
  loop: false,
  concepts: [], // the chosen concept keys, sent as Dream Machine's concepts: [{key}]
  frame0: blankFrame(),
  frame1: blankFrame(),
};
let options = null;

function keyframe(frame) {
  if (frame.kind === "upload" && frame.url) return { type: "image", url: frame.url };
  if (frame.kind === "generation" && frame.id) return { type: "generation", id: frame.id };
  return null;
}

// The POST /generations/video body the form describes.
export function requestBody() {
  const body = {
    model: draft.model,
    prompt: draft.prompt,
    aspect_ratio: draft.aspect_ratio,
    resolution: draft.resolution,
    duration: draft.duration,
    loop: draft.loop,
  };
  if (draft.negative_prompt.trim()) body.negative_prompt = draft.negative_prompt;
  const frame0 = keyframe(draft.frame0);
  const frame1 = keyframe(draft.frame1);
  if (frame0 || frame1) body.keyframes = { ...(frame0 && { frame0 }), ...(frame1 && { frame1 }) };
  if (draft.concepts.length) body.concepts = draft.concepts.map((key) => ({ key }));
  return body;
}

function frameChooser(which, completed) {
  const frame = draft[which];
  const legend = which === "frame0" ? t("create.start") : t("create.end");
  const box = h("fieldset", { class: "keyframe", "data-frame": which }, h("legend", {}, legend));
  const status = h("p", { class: "muted", role: "status" });
  const file = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp" });
  const pick = select(`${which}-generation`, ["", ...completed.map((g) => g.id)], frame.id, (id) => {
    if (!id) return "—";
    const g = completed.find((x) => x.id === id);
    const prompt = (g.request.prompt || "").slice(0, 60);
    return `${prompt} (${id.slice(0, 8)})`;
  });
  const uploadField = field(`${which}-file`, t("create.kf.file"), file);
  const pickField = completed.length
    ? field(`${which}-pick`, t("create.kf.pick"), pick)
    : h("p", { class: "muted" }, t("create.kf.nogens"));
  const show = () => {
    uploadField.hidden = frame.kind !== "upload";
    pickField.hidden = frame.kind !== "generation";
  };
  const radios = h(
    "div",
    { class: "radios" },
    ["none", "upload", "generation"].map((kind) => {
      const radio = h("input", { type: "radio", name: `${which}-kind`, value: kind, checked: frame.kind === kind });
      radio.addEventListener("change", () => {
        frame.kind = kind;
        show();
        changed();
      });
      return h("label", {}, radio, t(`create.kf.${kind}`));
    }),
  );
  file.addEventListener("change", async () => {
    clearError(box);
    frame.url = null;
    frame.name = null;
    if (!file.files.length) return changed();
    const chosen = file.files[0];
    status.textContent = t("create.kf.uploading");
    try {
      const uploaded = await api.upload(chosen);
      frame.url = uploaded.url;
      frame.name = chosen.name;
      status.textContent = t("create.kf.uploaded", { name: chosen.name });
    } catch (err) {
      status.textContent = "";
      fail(box, err);
    }
    changed();
  });
  pick.addEventListener("change", () => {
    frame.id = pick.value;
    changed();
  });
  if (frame.kind === "upload" && frame.name) status.textContent = t("create.kf.uploaded", { name: frame.name });
  show();
  box.append(radios, uploadField, pickField, status);
  return box;
}

// The model a name in the form runs on (an alias such as ray-2, or a Noor model id).
function modelOf(opts, name) {
  const found = opts.models.find((m) => m.name === name);
  return found ? found.model : name;
}

// A checkbox per installed concept (key, the model it acts on, what it teaches); a concept of another model than
// the form's is disabled and says which model it needs. With none installed: a note naming `noor concepts add`.
function conceptPicker(opts) {
  const box = h("fieldset", { class: "concepts", "data-testid": "concepts" }, h("legend", {}, t("create.concepts")));
  if (!opts.concept_details.length) {
    box.append(h("p", { class: "muted", "data-testid": "concepts-none" }, rich(t("create.concepts.none"))));
    return { box, update: () => {} };
  }
  const rows = opts.concept_details.map((c) => {
    const input = h("input", { type: "checkbox", name: "concept", value: c.key, checked: draft.concepts.includes(c.key) });
    // each language's words isolated (<bdi>), so Arabic words keep their order inside an English line and back
    const words = Object.entries(c.words).flatMap(([lang, ws], i) => [i ? "; " : "", `${lang}: `, h("bdi", {}, ws.join(" "))]);
    const note = h("small", { class: "muted" });
    input.addEventListener("change", () => {
      draft.concepts = input.checked ? [...draft.concepts, c.key] : draft.concepts.filter((k) => k !== c.key);
      changed();
    });
    const label = h(
      "div",
      { class: "check concept", "data-key": c.key },
      input,
      h(
        "label",
        {},
        h("bdi", { dir: "ltr" }, c.key.replaceAll("_", " ")),
        " ",
        h("span", { class: "muted" }, t("create.concepts.model", { model: c.model })),
        c.description ? [" — ", h("bdi", { dir: "auto" }, c.description)] : null,
        words.length ? h("small", { class: "muted" }, " (", t("create.concepts.words"), " ", words, ")") : null,
        note,
      ),
    );
    input.id = `concept-${c.key}`;
    label.querySelector("label").htmlFor = input.id;
    return { c, input, note, label };
  });
  const update = () => {
    const target = modelOf(opts, draft.model);
    for (const { c, input, note } of rows) {
      const other = c.model !== target;
      input.disabled = other && !input.checked; // a chosen one stays, so it can be unchosen (the quote says why)
      note.textContent = other ? ` ${t("create.concepts.other", { model: c.model })}` : "";
    }
  };
  box.append(...rows.map((r) => r.label), h("p", { class: "muted" }, h("small", {}, t("create.concepts.note"))));
  update();
  return { box, update };
}

let changed = () => {};

export function render(main, { params }) {
  const extend = params.get("extend");
  if (extend) draft.frame0 = { ...blankFrame(), kind: "generation", id: extend };
  const heading = h("h1", {}, t("create.title")); // kept when the form replaces "loading": it may hold the focus
  main.replaceChildren(heading, h("p", { class: "muted" }, t("loading")));
  const controller = new AbortController();
  Promise.all([options ? options : api.options(), api.gallery({ state: "completed", limit: 100 })])
    .then(([opts, done]) => {
      options = opts;
      draft.model = draft.model || opts.default_model;
      build(main, heading, opts, done.generations, extend, controller);
    })
    .catch((err) => {
      main.replaceChildren(heading);
      fail(main, err);
    });
  return () => controller.abort();
}

function build(main, heading, opts, completed, extend, controller) {
  const bind = (control, key, read = (c) => c.value) => {
    control.addEventListener("input", () => {
      draft[key] = read(control);
      changed();
    });
    control.addEventListener("change", () => {
      draft[key] = read(control);
      changed();
    });
    return control;
  };
  const prompt = bind(h("textarea", { name: "prompt", dir: "auto", rows: 4, maxlength: 5000 }), "prompt");
  prompt.value = draft.prompt;
  const negative = bind(h("textarea", { name: "negative_prompt", dir: "auto", rows: 2, maxlength: 5000 }), "negative_prompt");
  negative.value = draft.negative_prompt;
  const model = bind(h("input", { name: "model", list: "model-list", dir: "ltr", autocomplete: "off", value: draft.model }), "model");
  const modelList = h(
    "datalist",
    { id: "model-list" },
    opts.models.map((m) => h("option", { value: m.name }, `${m.name} → ${m.model}`)),
  );
  const aspect = bind(select("aspect_ratio", opts.aspect_ratios, draft.aspect_ratio), "aspect_ratio");
  const resolution = bind(select("resolution", opts.resolutions, draft.resolution), "resolution");
  const duration = bind(select("duration", opts.durations, draft.duration), "duration");
  const loop = bind(h("input", { type: "checkbox", name: "loop", id: "loop", checked: draft.loop }), "loop", (c) => c.checked);
  const known = new Set(opts.concepts);
  draft.concepts = draft.concepts.filter((k) => known.has(k)); // one removed since the draft was made
  const concepts = conceptPicker(opts);
  const quote = h("p", { class: "quote", role: "status", "aria-live": "polite", "data-testid": "quote" });
  const submit = h("button", { type: "submit", class: "primary" }, t("create.submit"));
  const errors = h("div", { class: "errors" });
  const form = h(
    "form",
    { class: "grid-2", novalidate: true },
    h(
      "div",
      { class: "card" },
      field("prompt", t("create.prompt"), prompt, t("create.prompt.hint")),
      field("negative", t("create.negative"), negative, t("create.negative.hint")),
      h("h2", {}, t("create.keyframes")),
      extend ? h("p", { class: "muted" }, t("create.extend.note", { id: extend })) : null,
      frameChooser("frame0", completed),
      frameChooser("frame1", completed),
    ),
    h(
      "div",
      { class: "card" },
      h("h2", { style: "margin-block-start: 0" }, t("create.settings")),
      field("model", t("create.model"), model),
      modelList,
      h(
        "div",
        { class: "row" },
        field("aspect", t("create.aspect"), aspect),
        field("resolution", t("create.resolution"), resolution),
        field("duration", t("create.duration"), duration),
      ),
      h("div", { class: "check" }, loop, h("label", { for: "loop" }, t("create.loop"))),
      concepts.box,
      h("h2", {}, t("create.quote")),
      quote,
      h("div", { class: "actions" }, submit),
      errors,
    ),
  );

  let timer = null;
  let inflight = null;
  const requote = async () => {
    if (inflight) inflight.abort();
    inflight = new AbortController();
    const mine = inflight;
    controller.signal.addEventListener("abort", () => mine.abort());
    quote.classList.remove("refused");
    delete quote.dataset.etaS;
    const body = requestBody();
    if (!body.prompt.trim() && !body.keyframes) {
      quote.textContent = t("create.quote.empty");
      return;
    }
    quote.textContent = t("create.quote.busy");
    try {
      const q = await api.quote(body, mine.signal);
      const vars = { eta: seconds(q.eta_s), done: seconds(q.done_in_s), price: dollars(q.price_cents), width: q.width, height: q.height, frames: q.num_frames, fps: q.fps };
      quote.textContent = q.eta_s === null ? t("create.quote.noeta", vars) : t("create.quote.line", vars);
      quote.dataset.etaS = q.eta_s === null ? "" : String(q.eta_s);
      quote.dataset.priceCents = String(q.price_cents);
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err.status === 401) return fail(null, err);
      quote.classList.add("refused");
      quote.textContent = t("create.quote.refused", { detail: err.detail || String(err) });
    }
  };
  changed = () => {
    concepts.update(); // the model may have changed
    clearError(errors); // a refusal of the last submit says nothing about the form as it is now
    clearTimeout(timer);
    timer = setTimeout(requote, 250);
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errors);
    submit.disabled = true;
    submit.textContent = t("create.submitting");
    try {
      const g = await api.create(requestBody());
      draft.prompt = "";
      draft.negative_prompt = "";
      draft.frame0 = blankFrame();
      draft.frame1 = blankFrame();
      refreshCredits();
      notice(t("create.submitted", { id: g.id, eta: seconds(g.done_in_s ?? g.eta_s), price: dollars(g.price_cents) }), "info", true);
      location.hash = `#/g/${encodeURIComponent(g.id)}`;
    } catch (err) {
      fail(errors, err);
      errors.scrollIntoView({ block: "nearest" });
    } finally {
      submit.disabled = false;
      submit.textContent = t("create.submit");
    }
  });
  replaceAfter(heading, form);
  requote();
}
