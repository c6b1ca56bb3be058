// The console's entry point: a hash router (#/activity, #/event/<id>, #/dead, #/rules,
// #/channels, #/overview) and, with ui.auth.bearer, the token form.
import { api, hasToken, setToken } from "./api.js";
import { h, clear, append } from "./dom.js";
import { activityView } from "./activity.js";
import { eventView } from "./event.js";
import { deadView } from "./dead.js";
import { rulesView, channelsView } from "./tables.js";
import { overviewView } from "./overview.js";

const main = document.getElementById("main");
let cleanup = null;

function navigate(path) {
  location.hash = "#" + path;
}

function parse() {
  const raw = location.hash.replace(/^#/, "") || "/activity";
  const [path, search] = raw.split("?", 2);
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(search || "") };
}

async function show() {
  if (cleanup) cleanup();
  cleanup = null;
  const { parts, params } = parse();
  const name = parts[0] || "activity";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === name);
  try {
    await api("/api/csrf"); // also tells whether a token is needed
  } catch (error) {
    if (error.status === 401) return tokenForm(hasToken());
    append(clear(main), h("p", { class: "status error" }, "The router's API does not answer: " + error.message));
    return;
  }
  if (name === "event" && parts[1]) cleanup = eventView(main, decodeURIComponent(parts[1]));
  else if (name === "dead") cleanup = deadView(main, params, navigate);
  else if (name === "rules") cleanup = rulesView(main);
  else if (name === "channels") cleanup = channelsView(main);
  else if (name === "overview") cleanup = overviewView(main);
  else cleanup = activityView(main, params, navigate);
}

function tokenForm(rejected) {
  const input = h("input", { type: "password", name: "token", autocomplete: "current-password", required: true });
  const form = h("form", { class: "login", onsubmit: (e) => { e.preventDefault(); setToken(input.value.trim()); show(); } },
    h("p", null, "This console needs the token set in ui.auth.bearer. It is kept in this tab only."),
    rejected ? h("p", { class: "status error", role: "alert" }, "That token was not accepted. Check ui.auth.bearer and try again.") : null,
    h("label", { class: "field" }, h("span", null, "Token"), input),
    h("button", { type: "submit" }, "Open the console"),
  );
  append(clear(main), [h("h1", null, "Sign in"), form]);
  input.focus();
}

window.addEventListener("hashchange", show);
show();
