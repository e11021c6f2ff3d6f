// Interface strings in English and Arabic (../i18n/*.json), the page's lang/dir, and number formatting.

const LANGS = ["en", "ar"];
const strings = {};
let current = "en";

export async function loadStrings() {
  await Promise.all(
    LANGS.map(async (lang) => {
      const res = await fetch(`/studio/i18n/${lang}.json`);
      if (!res.ok) throw new Error(`interface strings ${lang}: HTTP ${res.status}`);
      strings[lang] = await res.json();
    }),
  );
  const saved = localStorage.getItem("noor.lang");
  setLang(LANGS.includes(saved) ? saved : "en");
}

export function lang() {
  return current;
}

export function setLang(next) {
  if (!LANGS.includes(next)) throw new Error(`language must be one of ${LANGS.join(", ")}, got ${next}`);
  current = next;
  localStorage.setItem("noor.lang", next);
  document.documentElement.lang = next;
  document.documentElement.dir = next === "ar" ? "rtl" : "ltr";
  document.title = t("app.title");
  const other = document.getElementById("lang-switch");
  if (other) other.lang = next === "ar" ? "en" : "ar"; // it names the other language, in that language
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  }
}

// t("credits", {amount: "$1.00"}): the string for `key` in the current language, with {name} filled in.
export function t(key, vars = {}) {
  const table = strings[current] || {};
  const text = key in table ? table[key] : (strings.en || {})[key];
  if (text === undefined) {
    console.error(`missing interface string ${key}`);
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

export function num(value, digits = 2) {
  return new Intl.NumberFormat(current, { maximumFractionDigits: digits }).format(value);
}

export function seconds(value) {
  if (value === null || value === undefined) return "—";
  return value >= 120 ? t("unit.min", { n: num(value / 60, 1) }) : t("unit.s", { n: num(value, 1) });
}

// Money: the API gives cents (credit_balance, price_cents; exact to the micro-cent). Every amount is shown the
// same way, as the CLI shows it (noor.jobs.money.usd): US dollars, two decimals, more only where the amount has
// them, to the micro-cent: $50.00, $0.00002336, $49.99997664.
// In Arabic, Intl writes "\u200f50.00 US$" (number, then the symbol); set in a right-to-left line it was shown
// as "$US 50.00". The amount goes into a left-to-right isolate (LRI ... PDI, without the RLM), so every Arabic
// string that carries it shows "50.00 US$", as Intl means it, and the text around it keeps its own order.
export function dollars(centsValue) {
  const fmt = { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 8 };
  const text = new Intl.NumberFormat(current, fmt).format((centsValue || 0) / 100);
  return current === "ar" ? `\u2066${text.replace(/[\u200e\u200f\u061c]/g, "")}\u2069` : text;
}

export function when(iso) {
  return new Intl.DateTimeFormat(current, { dateStyle: "medium", timeStyle: "medium" }).format(new Date(iso));
}

export function compact(value) {
  if (value === null || value === undefined) return "—";
  return new Intl.NumberFormat(current, { notation: "compact", maximumSignificantDigits: 3 }).format(value);
}
