// The studio's shell: strings, the language switch, sign-in state and a hash router over the views.

import { key } from "./api.js";
import { lang, loadStrings, setLang } from "./i18n.js";
import { refreshCredits, signOut } from "./session.js";
import { focusHeading, h, notice } from "./ui.js";
import * as signin from "./signin.js";
import * as create from "./create.js";
import * as gallery from "./gallery.js";
import * as detail from "./detail.js";
import * as planner from "./planner.js";
import * as play from "./play.js";

const main = document.getElementById("main");
let cleanup = null;

// "#/g/ID?x=1" -> {page: "g", id: "ID", params: URLSearchParams}
function parse(hash) {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  const [page = "", id = null] = path.split("/");
  return { page, id: id ? decodeURIComponent(id) : null, params: new URLSearchParams(query) };
}

function route() {
  if (location.hash && !location.hash.startsWith("#/")) return; // in-page anchors such as the skip link
  const { page, id, params } = parse(location.hash);
  if (cleanup) cleanup();
  cleanup = null;
  if (!key() && page !== "signin") {
    location.replace("#/signin");
    return;
  }
  const views = { signin, create, gallery, g: detail, planner, play };
  const view = views[page];
  if (!view) {
    location.replace(key() ? "#/create" : "#/signin");
    return;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    const current = link.getAttribute("href") === `#/${page}` || (page === "g" && link.getAttribute("href") === "#/gallery");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.getElementById("nav").hidden = !key();
  document.getElementById("sign-out").hidden = !key();
  main.dataset.view = page;
  delete main.dataset.state;
  delete main.dataset.id;
  cleanup = view.render(main, { id, params }) || null;
  // keyboard and screen-reader users land on the new page's heading, unless the view focused a field itself
  if (!main.contains(document.activeElement)) focusHeading(main);
}

async function start() {
  try {
    await loadStrings();
  } catch (err) {
    main.replaceChildren(h("p", { class: "error", role: "alert" }, String(err.message || err)));
    return;
  }
  document.getElementById("lang-switch").addEventListener("click", () => {
    setLang(lang() === "ar" ? "en" : "ar");
    refreshCredits();
    route(); // views re-render in the new language; the create form keeps its draft
  });
  document.getElementById("sign-out").addEventListener("click", signOut);
  document.getElementById("skip").addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
  window.addEventListener("hashchange", () => {
    const area = document.getElementById("notice");
    if (area.dataset.keep) delete area.dataset.keep;
    else notice(null);
    route();
  });
  refreshCredits();
  route();
  document.body.dataset.ready = "true";
}

start();
