// Planner: placeholder until the plan API lands.
import { t } from "./i18n.js";
import { h } from "./ui.js";

export function render(main) {
  main.replaceChildren(h("h1", {}, t("planner.title")));
}
