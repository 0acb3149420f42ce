// The dashboard: sign-in, the page router, the live stream, the plant clock.
import * as api from "./api.js";
import { configurePlant, clockTime, h, message, now, plant, replace, setClock, field } from "./ui.js";
import * as fleet from "./pages/fleet.js";
import * as device from "./pages/device.js";
import * as board from "./pages/board.js";
import * as workorder from "./pages/workorder.js";
import * as engineers from "./pages/engineers.js";
import * as analytics from "./pages/analytics.js";
import * as settings from "./pages/settings.js";

const ROUTES = [
  [/^#\/fleet$/, fleet], [/^#\/device\/(.+)$/, device], [/^#\/board$/, board],
  [/^#\/work-orders\/(.+)$/, workorder], [/^#\/engineers$/, engineers], [/^#\/analytics$/, analytics],
  [/^#\/settings(?:\/(\w+))?$/, settings],
];

const main = document.getElementById("main");
const context = { me: null, can: () => false };
let current = null;
let renderedHash = null;
let navigation = 0;
let listening = new Set();
let stopStream = null;

function signInPage() {
  document.getElementById("top").hidden = true;
  renderedHash = null;
  navigation += 1;
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const totp = h("input", { name: "totp", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "sign-in panel", "aria-label": "Sign in" },
    h("h1", {}, "Sign in to pm-gateway"),
    field("User", username), field("Password", password),
    field("Authenticator code", totp, "only if your account has two-factor sign-in"),
    error, h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.signIn(username.value, password.value, totp.value);
      await start();
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
  replace(main, form);
  username.focus();
}

async function start() {
  const [me, info] = await Promise.all([api.get("/auth/me"), api.get("/plant")]);
  context.me = me;
  context.can = (action) => me.actions.includes(action);
  configurePlant(info);
  document.getElementById("top").hidden = false;
  document.getElementById("who").textContent = `${me.name} (${me.role.replace("_", " ")})`;
  document.getElementById("plant-name").textContent = info.name ? `· ${info.name}` : "";
  // Only the roles that may read analytics see the page in the navigation.
  document.querySelector('nav a[data-page="analytics"]').hidden = !context.can("analytics.read");
  document.querySelector('nav a[data-page="settings"]').hidden = !context.can("config.read");
  if (stopStream) stopStream();
  stopStream = api.stream(dispatch, (state) => document.body.setAttribute("data-stream", state));
  if (!location.hash || location.hash === "#/") location.hash = "#/fleet";
  else route();
}

function dispatch(kind, data) {
  if (kind === "tick") setClock(data.data_now, data.server_now);
  for (const listener of listening) listener(kind, data);
}

async function route() {
  if (!api.signedIn()) return signInPage();
  const refresh = location.hash === renderedHash;
  // A refresh (the same page again, after a change) never throws away a form being filled in.
  if (refresh && main.querySelector("form[data-dirty]")) {
    if (!main.querySelector(".stale")) {
      main.prepend(h("p", { class: "message stale", role: "status" }, "This changed meanwhile: ",
        h("button", { type: "button", onclick: () => { clearDirty(); route(); } }, "show the latest")));
    }
    return;
  }
  const match = ROUTES.map(([pattern, page]) => [location.hash.match(pattern), page]).find(([m]) => m);
  if (!match) {
    location.hash = "#/fleet";
    return;
  }
  const [found, page] = match;
  for (const link of document.querySelectorAll("nav a")) {
    link.toggleAttribute("aria-current", location.hash.startsWith(link.getAttribute("href")));
  }
  // Each navigation renders into its own view with its own listeners: a slower earlier one that
  // finishes late is thrown away instead of painting over the page asked for last. A refresh is
  // laid out hidden beside the page it replaces, so the reader's place does not jump.
  const mine = ++navigation;
  const view = h("div", { class: refresh ? "view rendering" : "view" });
  const pageContext = { ...context, listeners: new Set() };
  if (refresh) main.append(view);
  else replace(main, view, h("p", { class: "loading" }, "Loading…"));
  renderedHash = location.hash;
  try {
    const cleanup = await page.render(view, found.slice(1).map(decodeURIComponent), pageContext);
    if (mine !== navigation) {
      if (cleanup) cleanup();
      view.remove();
      return;
    }
    if (current && current.cleanup) current.cleanup();
    current = { cleanup };
    listening = pageContext.listeners;
    for (const other of [...main.children]) if (other !== view) other.remove();
    view.classList.remove("rendering");
    if (!refresh) main.focus({ preventScroll: true });
  } catch (failure) {
    if (mine !== navigation) return;
    if (failure.status === 401) return signInPage();
    replace(main, h("p", { class: "error", role: "alert" }, failure.message));
  }
}

function clearDirty() {
  for (const form of main.querySelectorAll("form[data-dirty]")) form.removeAttribute("data-dirty");
}

// Forms mark themselves dirty when edited and clean when submitted.
main.addEventListener("input", (event) => event.target.closest("form")?.setAttribute("data-dirty", ""));
main.addEventListener("submit", clearDirty, true);

function tickClock() {
  const clock = document.getElementById("clock");
  const label = `${clockTime(now())} ${plant.timezone}`;
  clock.textContent = plant.simulatedSpeed ? `Simulated time ${label} · ${plant.simulatedSpeed}× speed` : label;
  clock.title = plant.simulatedSpeed
    ? "The demo's devices run faster than real time; times shown are the devices' own clock"
    : "Plant time";
}

document.getElementById("sign-out").addEventListener("click", () => {
  api.signOut();
  if (stopStream) stopStream();
  location.hash = "";
  signInPage();
});
// The skip link would change the route: it moves the focus instead.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", route);
window.addEventListener("pmgw:signed-out", () => {
  if (stopStream) stopStream();
  message("Your session ended; sign in again.");
  signInPage();
});
window.addEventListener("unhandledrejection", (event) => message(event.reason?.message || String(event.reason)));
setInterval(tickClock, 1000);

if (api.signedIn()) start().catch(signInPage);
else signInPage();
