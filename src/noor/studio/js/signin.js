// Sign in: the key is checked with GET /credits, then kept in sessionStorage (this tab only).

import { api, setKey } from "./api.js";
import { t } from "./i18n.js";
import { refreshCredits } from "./session.js";
import { clearError, field, h, rich, showError } from "./ui.js";

export function render(main) {
  const input = h("input", { type: "password", name: "key", autocomplete: "off", spellcheck: "false", required: true, dir: "ltr" });
  const status = h("p", { class: "muted", role: "status" });
  const button = h("button", { type: "submit", class: "primary" }, t("signin.submit"));
  const form = h(
    "form",
    { class: "card narrow", novalidate: true },
    field("signin-key", t("signin.key"), input),
    button,
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(form);
    const value = input.value.trim();
    if (!value) {
      showError(form, t("signin.empty"));
      input.focus();
      return;
    }
    button.disabled = true;
    status.textContent = t("signin.busy");
    try {
      await api.credits(value);
      setKey(value);
      document.getElementById("sign-out").hidden = false;
      await refreshCredits();
      location.hash = "#/create";
    } catch (err) {
      showError(form, err);
      input.focus();
      input.select();
    } finally {
      button.disabled = false;
      status.textContent = "";
    }
  });
  main.replaceChildren(h("h1", {}, t("signin.title")), h("p", {}, rich(t("signin.intro"))), form);
  input.focus();
}
