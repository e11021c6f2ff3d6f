// Play: a world drawn frame by frame from what the player does (issue #27).
//
// Start asks for a session (POST /v1/worlds/sessions) and opens its WebSocket: the first message is the session's
// token, then an action each time the wanted one changes (the latest stays in force on the server until another
// arrives). The server sends each frame as one binary message (a JPEG), drawn scaled up by a whole number on a
// canvas, and JSON text: status (frame, action, latency, fps, seconds, cost), queued (position), ended (reason)
// and error (code, message). End deletes the session. The session outlives a re-render of the page (a language
// switch): the new page takes it over; leaving the page for another of the studio's ends it (it holds a worker and
// is billed by the second). A reload resumes it: its id is kept in this tab's sessionStorage, and the reloaded page
// reads the session and, while it is live, opens a socket with a fresh token (POST .../token: the POST's token
// is not kept, and lives only ten minutes). Closing the tab leaves it to end idle (NOOR_WORLD_IDLE_S): a page
// being unloaded cannot tell a reload from a close.

import { call, key } from "./api.js";
import { dollars, num, seconds, t } from "./i18n.js";
import { fail, refreshCredits } from "./session.js";
import { clearError, field, h } from "./ui.js";

const SUGGESTIONS = ["desert", "city", "coast", "oasis"]; // the prompts of play.suggest.* in each language
const TARGET_PX = 512; // a frame is drawn scaled up by the whole number that brings its longer side nearest this
const HOLD_MAX_MS = 1000; // the longest a move is kept waiting for the server to show it (see `steer`)
const LIVE = new Set(["queued", "connecting", "active"]);

// Keys by where they are (event.code), not what they type: W A S D are the same four keys on an Arabic layout,
// where they type ص ش س ي. The arrows keep their physical directions in both languages.
const KEYS = {
  ArrowUp: "up",
  ArrowDown: "down",
  ArrowLeft: "left",
  ArrowRight: "right",
  KeyW: "up",
  KeyA: "left",
  KeyS: "down",
  KeyD: "right",
};

// The WebSocket's close codes (the sessions API): what the player is told.
const CLOSED = { 4401: "token", 4409: "replaced", 4410: "ended", 1008: "flood", 1003: "binary" };
// After these the socket is not opened again: the session is over, the token is refused, or another window
// plays it now. After any other (a lost connection, or the server's 1003/1008, which keep the session) it is.
const FINAL_CLOSES = new Set([1000, 4401, 4409, 4410]);
const RETRY_MS = [500, 1000, 2000]; // the waits before each new socket
const KEPT = "noor.play.session"; // sessionStorage: the id of this tab's live session, for a reload to resume

const worlds = {
  models: () => call("GET", "/v1/worlds/models"),
  start: (body) => call("POST", "/v1/worlds/sessions", { json: body }),
  get: (id, auth) => call("GET", `/v1/worlds/sessions/${encodeURIComponent(id)}`, { auth }),
  end: (id, auth) => call("DELETE", `/v1/worlds/sessions/${encodeURIComponent(id)}`, { auth }),
  token: (id) => call("POST", `/v1/worlds/sessions/${encodeURIComponent(id)}/token`),
};

const keep = (id) => (id ? sessionStorage.setItem(KEPT, id) : sessionStorage.removeItem(KEPT));

const draft = { prompt: "", model: "" }; // what the user typed survives a language switch or a visit elsewhere
let models = null; // GET /v1/worlds/models, read once
let game = null; // the session being played, if any (it survives a re-render of the page)
let view = null; // the elements of the page as drawn now, which the game updates
let leaving = null; // leaving the page ends the session, unless the page is drawn again at once

// --- the session -------------------------------------------------------------------------------------------------

function newGame(session) {
  return {
    session, // the latest record of it (POST, then GET once it is over)
    auth: key(), // its tenant's key, kept: signing out ends the session with it
    socket: null,
    state: session.state === "queued" ? "queued" : "connecting", // queued | connecting | active | ended | failed
    position: session.queue_position ?? null,
    status: null, // the latest status message
    latency: null, // ms from the last change of action to its frame (a status carries it on that frame only)
    message: null, // {kind: "info" | "error", text}: why it ended, or an error the server sent
    frames: 0, // frames drawn
    bitmap: null, // the latest frame, redrawn when the page is
    decoding: 0, // frames received (decoding is asynchronous: an older frame never replaces a newer one)
    shown: 0,
    // steering: the inputs held now (keys and pointers, oldest first), the action last sent and whether the
    // server has drawn a frame with it yet
    held: [],
    sent: "none",
    applied: true,
    sentAt: -1, // the status frame number when it was sent
    holdTimer: null,
    retries: 0, // sockets opened again after a lost one, since the last frame
    retryTimer: null,
    ending: false, // End was pressed
  };
}

async function start(prompt, model) {
  const body = { prompt };
  if (model) body.model = model;
  const session = await worlds.start(body);
  game = newGame(session);
  keep(session.id);
  connect(game);
  paint();
}

// A reloaded page: the tab's session, if it is still live, played on with a fresh token; else forgotten.
async function resume(errors) {
  const id = sessionStorage.getItem(KEPT);
  if (!id || game || !key()) return;
  let session;
  try {
    session = await worlds.get(id);
    if (!LIVE.has(session.state)) throw null;
    session = await worlds.token(id); // 409 if it ended meanwhile
  } catch (err) {
    keep(null);
    if (err && err.status !== 404 && err.status !== 409) fail(errors, err);
    return;
  }
  if (game) return; // Start was pressed meanwhile
  game = newGame(session);
  connect(game);
  paint();
}

function streamUrl(url) {
  const u = new URL(url, location.href); // an absolute ws:// URL, or one relative to this page
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

function connect(g) {
  const socket = new WebSocket(streamUrl(g.session.stream_url));
  socket.binaryType = "blob";
  g.socket = socket;
  socket.addEventListener("open", () => {
    socket.send(JSON.stringify({ token: g.session.token }));
    g.sent = null; // the server may hold any action (a socket lost with a key down): say the wanted one
    g.applied = true;
    steer(g);
  });
  socket.addEventListener("message", (event) => {
    if (g !== game) return;
    if (typeof event.data === "string") onText(g, event.data);
    else onFrame(g, event.data);
  });
  socket.addEventListener("close", (event) => onClose(g, event));
}

function onText(g, data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    g.message = { kind: "error", text: t("play.error", { code: "bad_message", message: data.slice(0, 200) }) };
    paint();
    return;
  }
  if (msg.type === "status") {
    if (g.retries) {
      g.retries = 0; // connected again
      if (g.message && g.message.retrying) g.message = null;
    }
    g.status = msg;
    if (msg.latency_ms !== null && msg.latency_ms !== undefined) g.latency = msg.latency_ms;
    if (msg.state && LIVE.has(msg.state)) g.state = msg.state;
    else if (!msg.state) g.state = "active";
    if (!g.applied && msg.action === g.sent && msg.frame > g.sentAt) {
      g.applied = true; // the move is on the screen: a tap moved at least one step
      steer(g);
    }
  } else if (msg.type === "queued") {
    g.state = "queued";
    g.position = msg.position;
  } else if (msg.type === "ended") {
    g.state = msg.reason === "error" ? "failed" : "ended"; // the model failed: failure_reason says how
    g.message = { kind: g.state === "failed" ? "error" : "info", text: endedText(msg.reason, msg.failure_reason) };
  } else if (msg.type === "error") {
    g.message = { kind: "error", text: t("play.error", { code: msg.code, message: msg.message }) };
  }
  paint();
}

// Why a session ends (the sessions API's end reasons), in words; one this page does not know, as the server says it.
const REASONS = new Set(["client", "idle", "max_seconds", "credits", "server_restart", "error"]);

function endedText(reason, failure = null) {
  if (!reason) return t("play.ended");
  const text = t("play.ended.reason", { reason: REASONS.has(reason) ? t(`play.reason.${reason}`) : reason });
  return failure ? `${text} ${failure}` : text;
}

function onFrame(g, blob) {
  const n = ++g.decoding;
  createImageBitmap(blob).then(
    (bitmap) => {
      if (g !== game || n < g.shown) return bitmap.close(); // a newer frame is already drawn
      g.shown = n;
      if (g.bitmap) g.bitmap.close();
      g.bitmap = bitmap;
      g.frames += 1;
      draw();
    },
    (err) => {
      g.message = { kind: "error", text: t("play.error", { code: "bad_frame", message: String(err.message || err) }) };
      paint();
    },
  );
}

async function onClose(g, event) {
  clearTimeout(g.holdTimer);
  if (g !== game) return;
  const text = t(`play.closed.${CLOSED[event.code] || "lost"}`, { code: event.code });
  const why = event.reason ? `${text.replace(/\.$/, "")} (${event.reason}).` : text; // the server's words inside
  if (LIVE.has(g.state) && !g.ending && !FINAL_CLOSES.has(event.code) && g.retries < RETRY_MS.length) {
    // the session lives on without a socket until its idle timeout: open another with the same token
    g.state = "connecting";
    g.message = { kind: "error", text: why, retrying: true };
    g.retryTimer = setTimeout(() => g === game && connect(g), RETRY_MS[g.retries++]);
    paint();
    return;
  }
  if (LIVE.has(g.state)) {
    // the socket closed before an `ended` message: say why, by its close code
    const gaveUp = !FINAL_CLOSES.has(event.code) && !g.ending;
    g.state = event.code === 4410 || event.code === 1000 || event.code === 4409 ? "ended" : "failed";
    g.message = { kind: g.state === "ended" ? "info" : "error", text: why };
    // given up on a session the server still holds (and bills): end it there too
    if (gaveUp) await worlds.end(g.session.id, g.auth).catch(() => {});
  }
  paint();
  // the record as the server closed it: the seconds served and what they cost
  try {
    g.session = await worlds.get(g.session.id, g.auth);
    if (g.session.state === "failed") g.state = "failed";
  } catch (err) {
    if (g === game && g.auth === key()) fail(view && view.errors, err);
  }
  if (g === game) paint();
  refreshCredits();
}

async function end(g) {
  if (!LIVE.has(g.state)) return;
  g.ending = true; // no socket is opened again from now on
  clearTimeout(g.retryTimer);
  try {
    await worlds.end(g.session.id, g.auth); // 204; the socket then says `ended` and closes
  } catch (err) {
    if (err.status !== 404 && err.status !== 409) {
      fail(view && view.errors, err);
      return;
    }
  }
  // the server closes the socket with its `ended` message; a socket that never opened is closed here
  if (g.socket && g.socket.readyState !== WebSocket.OPEN) g.socket.close();
  if (LIVE.has(g.state) && !(g.socket && g.socket.readyState === WebSocket.OPEN)) {
    g.state = "ended";
    g.message = { kind: "info", text: t("play.ended") };
  }
  paint();
}

// Leaving the page for another ends the session: it would otherwise hold a worker until its idle timeout.
function abandon() {
  const g = game;
  game = null;
  keep(null);
  if (!g) return;
  clearTimeout(g.holdTimer);
  clearTimeout(g.retryTimer);
  if (g.bitmap) g.bitmap.close();
  if (LIVE.has(g.state)) worlds.end(g.session.id, g.auth).then(refreshCredits, () => {});
  if (g.socket) g.socket.close(1000);
}

// Unloading the tab (a reload, or a close: the page cannot tell which) does not end the session: the browser
// closes its socket, a reload resumes it (`resume`), and a closed tab's ends idle on the server.

// --- steering ----------------------------------------------------------------------------------------------------

const wanted = (g) => (g.held.length ? g.held[g.held.length - 1].action : "none");

// Send the wanted action if it differs from the last one sent: only changes go out, so a key's auto-repeat or a
// held button sends nothing more. A move is kept until the server has drawn a frame with it (or HOLD_MAX_MS has
// passed): the server applies the latest action at each tick, so a tap shorter than a tick would otherwise be lost.
function steer(g) {
  const want = wanted(g);
  if (want === g.sent || !g.socket || g.socket.readyState !== WebSocket.OPEN) return;
  if (!g.applied) return; // re-checked when the status shows the move, or when the hold timer ends
  g.socket.send(JSON.stringify({ action: want }));
  g.sent = want;
  g.applied = want === "none";
  g.sentAt = g.status ? g.status.frame : -1;
  clearTimeout(g.holdTimer);
  if (!g.applied) {
    g.holdTimer = setTimeout(() => {
      g.applied = true;
      steer(g);
    }, HOLD_MAX_MS);
  }
  if (view) view.stage.dataset.sent = want;
}

function press(source, action) {
  if (!game || !LIVE.has(game.state)) return;
  game.held = game.held.filter((x) => x.source !== source);
  game.held.push({ source, action });
  steer(game);
  showHeld();
}

function release(source) {
  if (!game) return;
  game.held = game.held.filter((x) => x.source !== source);
  steer(game);
  showHeld();
}

function releaseAll() {
  if (!game) return;
  game.held = [];
  steer(game);
  showHeld();
}

function onKey(event) {
  const action = KEYS[event.code] || KEYS[event.key];
  if (!action || !game || event.ctrlKey || event.altKey || event.metaKey) return;
  if (event.type === "keyup") {
    release(`key:${event.code || event.key}`);
    return;
  }
  if (!LIVE.has(game.state)) return;
  if (event.target instanceof Element && event.target.closest("input, textarea, select")) return; // typing
  event.preventDefault(); // the arrows would scroll the page
  if (!event.repeat) press(`key:${event.code || event.key}`, action);
}

// --- the page ----------------------------------------------------------------------------------------------------

// The on-screen pad: four large buttons in a cross. It is dir="ltr" in both languages, so "left" stays on the
// left and "right" on the right in Arabic too: they are physical directions on the screen (as the arrow keys
// are), not the reading order that the rest of the page mirrors.
function pad() {
  const arrows = { up: "▲", left: "◀", right: "▶", down: "▼" };
  const buttons = Object.entries(arrows).map(([action, arrow]) => {
    const button = h("button", { type: "button", class: "move", "data-action": action, "aria-label": t(`play.move.${action}`) }, arrow);
    const source = (e) => `pointer:${e.pointerId}`;
    button.addEventListener("pointerdown", (e) => {
      e.preventDefault(); // no focus ring, text selection or long-press menu on a phone
      button.setPointerCapture(e.pointerId); // its pointerup comes here even if the finger slides off
      press(source(e), action);
    });
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      button.addEventListener(type, (e) => release(source(e)));
    }
    button.addEventListener("contextmenu", (e) => e.preventDefault());
    button.addEventListener("click", (e) => {
      if (e.detail !== 0) return; // a pointer's click: the pointer events above moved already
      press("tap", action); // Enter or Space on the focused button: one step
      release("tap");
    });
    return button;
  });
  return h("div", { class: "pad", dir: "ltr", role: "group", "aria-label": t("play.pad") }, buttons);
}

function stat(name) {
  return h("div", {}, h("dt", {}, t(`play.stat.${name}`)), h("dd", { "data-stat": name }, "—"));
}

export function render(main) {
  clearTimeout(leaving); // drawn again at once (a language switch): the session goes on
  leaving = null;

  const prompt = h("input", { type: "text", name: "prompt", dir: "auto", maxlength: 500, autocomplete: "off", value: draft.prompt });
  prompt.addEventListener("input", () => (draft.prompt = prompt.value));
  // the server's world models (GET /v1/worlds/models), filled in when read; the server's default is world-tiny
  const model = h("select", { name: "model", dir: "ltr" });
  model.addEventListener("change", () => (draft.model = model.value));
  const fillModels = (list) => {
    if (!list.some((m) => m.id === draft.model)) draft.model = (list.find((m) => m.id === "world-tiny") || list[0] || { id: "" }).id;
    model.replaceChildren(...list.map((m) => h("option", { value: m.id, title: m.description }, m.id)));
    model.value = draft.model;
  };
  const suggestions = h(
    "div",
    { class: "suggestions", role: "group", "aria-label": t("play.suggestions") },
    SUGGESTIONS.map((name) =>
      h(
        "button",
        {
          type: "button",
          class: "chip",
          onclick: () => {
            prompt.value = draft.prompt = t(`play.suggest.${name}`);
            prompt.focus();
          },
        },
        t(`play.suggest.${name}`),
      ),
    ),
  );
  const startButton = h("button", { type: "submit", class: "primary" }, t("play.start"));
  const errors = h("div", { class: "errors" });
  const form = h(
    "form",
    { class: "card play-form", novalidate: true },
    field("play-prompt", t("play.prompt"), prompt, t("play.prompt.hint")),
    suggestions,
    h("details", { class: "play-more" }, h("summary", {}, t("play.more")), field("play-model", t("play.model"), model)),
    h("div", { class: "actions" }, startButton),
    errors,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(errors);
    if (game && LIVE.has(game.state)) return;
    const text = prompt.value.trim();
    if (!text) {
      fail(errors, t("play.prompt.empty"));
      prompt.focus();
      return;
    }
    if (game) abandon();
    startButton.disabled = true;
    startButton.textContent = t("play.starting");
    try {
      await start(text, model.value);
      view.stage.scrollIntoView({ block: "nearest" });
      view.canvas.focus({ preventScroll: true }); // the keys play now
    } catch (err) {
      fail(errors, err);
    } finally {
      startButton.textContent = t("play.start");
      paint();
    }
  });

  const canvas = h("canvas", { class: "screen", tabindex: "0", role: "img", "aria-label": t("play.screen"), width: 512, height: 512 });
  const stateLine = h("p", { class: "play-state", role: "status" });
  const sessionLine = h("p", { class: "muted play-id", "data-testid": "play-session", dir: "auto" });
  const message = h("div", { class: "play-message" });
  const endButton = h("button", { type: "button", class: "danger", onclick: () => game && end(game) }, t("play.end"));
  const stats = h("dl", { class: "figures play-stats", "data-testid": "play-stats" }, ["fps", "latency", "frame", "seconds", "cost"].map(stat));
  const stage = h(
    "section",
    { class: "play-stage", "aria-label": t("play.stage") },
    h("div", { class: "screen-box" }, canvas),
    h("div", { class: "play-side" }, stateLine, sessionLine, message, pad(), h("p", { class: "muted" }, t("play.keys")), stats, h("div", { class: "actions" }, endButton)),
  );
  main.replaceChildren(h("h1", {}, t("play.title")), h("p", { class: "muted" }, t("play.intro")), form, stage);
  view = { main, form, prompt, startButton, errors, canvas, stage, stateLine, sessionLine, message, endButton, stats, shownMessage: null };

  (models ? Promise.resolve(models) : worlds.models())
    .then((list) => {
      models = list;
      if (view && view.form === form) fillModels(list);
    })
    .catch((err) => fail(errors, err));

  window.addEventListener("keydown", onKey);
  window.addEventListener("keyup", onKey);
  window.addEventListener("blur", releaseAll); // a key released in another window never sends its keyup here
  paint();
  draw();
  resume(errors); // a reloaded page plays on with the tab's session
  return () => {
    window.removeEventListener("keydown", onKey);
    window.removeEventListener("keyup", onKey);
    window.removeEventListener("blur", releaseAll);
    view = null;
    leaving = setTimeout(() => abandon(), 0);
  };
}

function showHeld() {
  if (!view || !game) return;
  const want = wanted(game);
  for (const button of view.stage.querySelectorAll(".pad .move")) button.classList.toggle("held", button.dataset.action === want);
}

// The page as the game stands: state, stats, the ended or error message, which buttons work.
function paint() {
  if (!view) return;
  const g = game;
  const state = g ? g.state : "idle";
  view.main.dataset.state = state;
  view.stage.hidden = !g;
  view.startButton.disabled = Boolean(g && LIVE.has(g.state));
  view.endButton.disabled = !(g && LIVE.has(g.state));
  for (const button of view.stage.querySelectorAll(".pad .move")) button.disabled = !(g && LIVE.has(g.state));
  if (!g) return;
  view.main.dataset.id = g.session.id;
  const idLine = t("play.session", { id: g.session.id });
  if (view.sessionLine.textContent !== idLine) view.sessionLine.textContent = idLine;
  const line = state === "queued" && g.position !== null ? t("play.state.queued.at", { n: num(g.position, 0) }) : t(`play.state.${state}`);
  if (view.stateLine.textContent !== line) view.stateLine.textContent = line; // a live region: only changes
  view.stateLine.dataset.state = state;
  if (view.shownMessage !== g.message) {
    // redrawn only when it changes: an alert is announced each time it is put in the page
    view.shownMessage = g.message;
    view.message.replaceChildren();
    if (g.message) {
      const kind = g.message.kind === "error" ? "error" : "ok";
      view.message.append(h("p", { class: kind, role: kind === "error" ? "alert" : "status" }, g.message.text));
    }
  }
  const s = g.status || {};
  const record = g.session || {};
  const values = {
    fps: s.fps === undefined || s.fps === null ? "—" : num(s.fps, 1),
    latency: g.latency === null ? "—" : t("play.ms", { n: num(g.latency, 0) }),
    frame: s.frame === undefined ? "—" : num(s.frame, 0),
    seconds: seconds(LIVE.has(state) ? (s.seconds ?? record.seconds) : (record.seconds ?? s.seconds)),
    cost: money(LIVE.has(state) ? (s.cost ?? record.cost) : (record.cost ?? s.cost)),
  };
  for (const [name, value] of Object.entries(values)) {
    const dd = view.stats.querySelector(`[data-stat=${name}]`);
    if (dd.textContent !== value) dd.textContent = value;
  }
  Object.assign(view.stage.dataset, { frame: String(s.frame ?? -1), action: s.action || "", drawn: String(g.frames), sent: g.sent });
}

const money = (cents) => (cents === undefined || cents === null ? "—" : dollars(cents));

// The latest frame on the canvas, scaled up by a whole number with no smoothing: every pixel a crisp square.
function draw() {
  if (!view || !game || !game.bitmap) {
    paint();
    return;
  }
  const { bitmap } = game;
  const scale = Math.max(1, Math.round(TARGET_PX / Math.max(bitmap.width, bitmap.height)));
  const canvas = view.canvas;
  if (canvas.width !== bitmap.width * scale || canvas.height !== bitmap.height * scale) {
    canvas.width = bitmap.width * scale;
    canvas.height = bitmap.height * scale;
  }
  canvas.dataset.scale = String(scale);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  paint();
}
