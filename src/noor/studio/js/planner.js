// Planner: a site plan (POST /v1/plan/site) and a chip comparison (POST /v1/plan/chips), with their charts
// drawn here as SVG bar charts (the API answers numbers; the page draws them in the page's language and direction).

import { api } from "./api.js";
import { compact, lang, num, seconds, t } from "./i18n.js";
import { fail } from "./session.js";
import { clearError, field, h, replaceAfter, select } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
let chipOptions = null;
const inputs = { power: "150", chip: "b200", cooling: "liquid", chipsPower: "150", chipsCooling: "liquid" };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

// The width `text` takes at `sizePx` in the page's font (the SVG's text inherits it): a canvas measures it before
// the chart is in the page, so every column is as wide as its longest text and no label is clipped.
const ruler = document.createElement("canvas").getContext("2d");
function textWidth(text, sizePx) {
  ruler.font = `${sizePx}px ${getComputedStyle(document.documentElement).fontFamily}`;
  return ruler.measureText(text).width;
}

// A horizontal bar chart: labels, bars, then values, inside a padded viewBox about as wide as the chart will be
// drawn (so 13 px text stays 13 px on a phone). In Arabic the bars grow from the right, the labels sit at the
// right and every text runs right to left (text-anchor "start" is then its right edge).
export function barChart(title, rows, format) {
  const rtl = lang() === "ar";
  const labelPx = 13;
  const valuePx = 12;
  const pad = 8; // inside the viewBox, at both ends
  const gap = 6; // between a label, its bar and its value
  const slack = 1.08; // a measured width, plus a margin for the renderer's own rounding
  const labelW = Math.ceil(Math.max(0, ...rows.map((r) => textWidth(r.label, labelPx))) * slack);
  const values = rows.map((r) => format(r.value));
  const valueW = Math.ceil(Math.max(0, ...values.map((v) => textWidth(v, valuePx))) * slack);
  const minPlot = 60;
  const drawnW = Math.min(560, Math.max(300, document.documentElement.clientWidth - 90));
  const width = Math.max(drawnW, 2 * pad + labelW + valueW + 2 * gap + minPlot);
  const plotW = width - 2 * pad - labelW - valueW - 2 * gap;
  const barH = 22;
  const step = barH + 8;
  const height = 2 * pad + rows.length * step - 8;
  const max = Math.max(...rows.map((r) => r.value), 0) || 1;
  // x measured from the start side (left in English, right in Arabic)
  const at = (x) => (rtl ? width - x : x);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, direction: rtl ? "rtl" : "ltr" });
  chart.append(svg("title", {}, `${title}: ${rows.map((r, i) => `${r.label} ${values[i]}`).join(", ")}`));
  rows.forEach((r, i) => {
    const y = pad + i * step;
    const w = Math.max(1, (r.value / max) * plotW);
    const barStart = pad + labelW + gap;
    const baseline = y + barH * 0.7;
    chart.append(
      // the label ends where the bar starts; the value starts after the bar
      svg("text", { x: at(barStart - gap), y: baseline, "text-anchor": "end", "font-size": labelPx, fill: "#14213d" }, r.label),
      svg("rect", { x: rtl ? at(barStart) - w : barStart, y, width: w, height: barH, rx: 3, fill: r.color || "#1d4ed8" }),
      svg("text", { x: at(barStart + w + gap), y: baseline, "text-anchor": "start", "font-size": valuePx, fill: "#5c6475" }, values[i]),
    );
  });
  return h("figure", { class: "chart" }, h("figcaption", {}, title), chart);
}

const usd = (v) => t("planner.usd", { n: compact(v) });
const mw = (v) => t("planner.mw", { n: num(v, 1) });

function facts(pairs) {
  return h("dl", { class: "figures", "data-testid": "figures" }, pairs.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}

function siteResult(plan) {
  const p = plan.power;
  const c = plan.cost;
  const o = plan.output;
  const palette = ["#1d4ed8", "#0e7490", "#7c3aed", "#b45309", "#64748b"];
  const power = [
    ["accelerators", p.accelerators_mw],
    ["hosts", p.hosts_mw],
    ["network", p.network_mw],
    ["storage", p.storage_mw],
    ["cooling", p.cooling_and_losses_mw],
  ].map(([k, v], i) => ({ label: t(`planner.power.${k}`), value: v, color: palette[i] }));
  const classes = plan.classes.map((cl) => ({ label: cl.name, value: cl.chips, color: "#0e7490" }));
  const cost = [
    { label: t("planner.cost.capex"), value: c.capex_per_day_usd, color: "#1d4ed8" },
    { label: t("planner.cost.energy"), value: c.energy_per_day_usd, color: "#b45309" },
    { label: t("planner.cost.opex"), value: c.opex_per_day_usd, color: "#64748b" },
  ];
  return h(
    "section",
    { class: "result card", "data-testid": "site-result", "aria-label": t("planner.site") },
    facts([
      [t("planner.k.facility"), mw(p.facility_mw)],
      [t("planner.k.it"), mw(p.it_mw)],
      [t("planner.k.pue"), num(p.pue, 2)],
      [t("planner.k.chips"), `${compact(plan.hardware.chips)} × ${plan.hardware.chip}`],
      [t("planner.k.racks"), num(plan.hardware.racks, 0)],
      [t("planner.k.videos"), compact(o.videos_per_day)],
      [t("planner.k.images"), compact(o.images_per_day)],
      [t("planner.k.usd_video"), o.usd_per_video === null ? "—" : `$${num(o.usd_per_video, 3)}`],
      [t("planner.k.kwh_video"), o.kwh_per_video === null ? "—" : num(o.kwh_per_video, 3)],
      [t("planner.k.capex"), usd(c.capex_usd)],
      [t("planner.k.total_day"), usd(c.total_per_day_usd)],
      [t("planner.k.e2e"), seconds(o.video_e2e_p95_s)],
    ]),
    h(
      "div",
      { class: "charts" },
      barChart(t("planner.chart.power"), power, (v) => num(v, 1)),
      barChart(t("planner.chart.classes"), classes, compact),
      barChart(t("planner.chart.cost"), cost, usd),
    ),
    plan.notes && plan.notes.length
      ? h("details", {}, h("summary", {}, t("planner.notes")), h("ul", { dir: "ltr" }, plan.notes.map((n) => h("li", {}, n))))
      : null,
  );
}

function chipsResult(doc) {
  const ok = doc.ranking.filter((r) => r.ok);
  const out = doc.ranking.filter((r) => !r.ok);
  const videos = ok.map((r) => ({ label: r.chip, value: r.videos_per_day, color: "#1d4ed8" }));
  const price = [...ok].sort((a, b) => a.usd_per_video - b.usd_per_video).map((r) => ({ label: r.chip, value: r.usd_per_video, color: "#b45309" }));
  const numCell = (v, d) => h("td", { class: "num" }, v === null || v === undefined ? "—" : d(v));
  const table = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, t("planner.table.chip")),
          h("th", { scope: "col", class: "num" }, t("planner.k.videos")),
          h("th", { scope: "col", class: "num" }, t("planner.k.usd_video")),
          h("th", { scope: "col", class: "num" }, t("planner.k.kwh_video")),
          h("th", { scope: "col", class: "num" }, t("planner.k.racks")),
          h("th", { scope: "col" }, t("planner.table.why")),
        ),
      ),
      h(
        "tbody",
        {},
        doc.ranking.map((r) =>
          h(
            "tr",
            { "data-chip": r.chip },
            h("th", { scope: "row" }, r.name),
            numCell(r.videos_per_day, compact),
            numCell(r.usd_per_video, (v) => `$${num(v, 3)}`),
            numCell(r.kwh_per_video, (v) => num(v, 3)),
            numCell(r.racks, (v) => num(v, 0)),
            h("td", { dir: "ltr" }, r.why_not || ""),
          ),
        ),
      ),
    ),
  );
  return h(
    "section",
    { class: "result card", "data-testid": "chips-result", "aria-label": t("planner.chips") },
    h(
      "div",
      { class: "charts" },
      barChart(t("planner.chart.videos"), videos, compact),
      barChart(t("planner.chart.usd"), price, (v) => `$${num(v, 3)}`),
    ),
    table,
  );
}

function planForm({ id, title, intro, controls, button, run }) {
  const submit = h("button", { type: "submit", class: "primary" }, button);
  const status = h("p", { class: "muted", role: "status" });
  const errors = h("div");
  const result = h("div");
  const form = h("form", { class: "card", novalidate: true, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title`, style: "margin-block-start: 0" }, title), h("p", { class: "muted" }, intro), h("div", { class: "row" }, controls), h("div", { class: "actions" }, submit), status, errors);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errors);
    submit.disabled = true;
    status.textContent = t("planner.busy");
    try {
      result.replaceChildren(await run());
    } catch (err) {
      result.replaceChildren();
      fail(errors, err);
    } finally {
      submit.disabled = false;
      status.textContent = "";
    }
  });
  return [form, result];
}

export function render(main) {
  const heading = h("h1", {}, t("planner.title")); // kept when the forms replace "loading": it may hold the focus
  main.replaceChildren(heading, h("p", { class: "muted" }, t("loading")));
  (chipOptions ? Promise.resolve(chipOptions) : api.options().then((o) => o.chips))
    .then((chips) => {
      chipOptions = chips;
      build(main, heading, chips);
    })
    .catch((err) => {
      main.replaceChildren(heading);
      fail(main, err);
    });
}

function build(main, heading, chips) {
  const keep = (control, key) => {
    control.addEventListener("change", () => (inputs[key] = control.value));
    return control;
  };
  const power = keep(h("input", { type: "number", min: "0", step: "any", inputmode: "decimal", value: inputs.power, dir: "ltr" }), "power");
  const chip = keep(select("chip", chips.map((c) => c.id), inputs.chip, (id) => chips.find((c) => c.id === id).name), "chip");
  const coolingOf = (v) => t(`planner.cooling.${v}`);
  const cooling = keep(select("cooling", ["liquid", "air"], inputs.cooling, coolingOf), "cooling");
  const chipsPower = keep(h("input", { type: "number", min: "0", step: "any", inputmode: "decimal", value: inputs.chipsPower, dir: "ltr" }), "chipsPower");
  const chipsCooling = keep(select("cooling", ["liquid", "air"], inputs.chipsCooling, coolingOf), "chipsCooling");
  const site = planForm({
    id: "site",
    title: t("planner.site"),
    intro: t("planner.site.intro"),
    controls: [field("site-power", t("planner.power"), power), field("site-chip", t("planner.chip"), chip), field("site-cooling", t("planner.cooling"), cooling)],
    button: t("planner.run"),
    run: async () => siteResult(await api.planSite({ power_mw: Number(power.value), chip: chip.value, cooling: cooling.value })),
  });
  const compare = planForm({
    id: "chips",
    title: t("planner.chips"),
    intro: t("planner.chips.intro"),
    controls: [field("chips-power", t("planner.power"), chipsPower), field("chips-cooling", t("planner.cooling"), chipsCooling)],
    button: t("planner.compare"),
    run: async () => chipsResult(await api.planChips({ power_mw: Number(chipsPower.value), cooling: chipsCooling.value })),
  });
  replaceAfter(heading, ...site, h("div", { style: "height: 1rem" }), ...compare);
}
