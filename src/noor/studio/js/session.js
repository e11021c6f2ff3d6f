// Who is signed in, their credits, and what happens when the server stops accepting the key.

import { api, key, setKey } from "./api.js";
import { dollars, t } from "./i18n.js";
import { notice, showError } from "./ui.js";

export async function refreshCredits() {
  const badge = document.getElementById("credits");
  if (!key()) {
    badge.hidden = true;
    return;
  }
  try {
    const { credit_balance, metered } = await api.credits();
    // an unmetered tenant (a local server's own user) is never charged: no balance to show
    badge.textContent = metered === false ? t("credits.unmetered") : t("credits", { amount: dollars(credit_balance) });
    badge.dataset.cents = String(credit_balance);
    badge.dataset.metered = String(metered !== false);
    badge.hidden = false;
  } catch (err) {
    fail(null, err);
  }
}

export function signOut() {
  setKey(null);
  document.getElementById("credits").hidden = true;
  document.getElementById("sign-out").hidden = true;
  location.hash = "#/signin";
}

// Show an API error where it happened (or page-wide); a refused key sends the user back to sign in.
export function fail(where, err) {
  if (err && err.name === "AbortError") return;
  if (err && err.status === 401 && key()) {
    signOut();
    notice(t("err.session"));
    return;
  }
  if (where) showError(where, err);
  else notice(err);
}
