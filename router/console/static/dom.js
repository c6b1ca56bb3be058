// DOM helpers. Everything that comes from events goes through text nodes (textContent) or
// setAttribute on attributes this file names; no API that parses HTML is ever used. Links from event data
// keep only http(s) and mailto targets: javascript:, data: and the rest become plain text.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// An internal link to a view of the console ("#/event/<id>"): ids are URI-encoded.
export function route(path, text, props) {
  return h("a", { href: "#" + path, ...(props || {}) }, text);
}

export function safeUrl(value) {
  try {
    const url = new URL(String(value));
    return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

// A link from event data: a real link for http(s)/mailto, else the text alone (marked).
export function externalLink(url, text) {
  const safe = safeUrl(url);
  if (safe === null) return h("span", { class: "unsafe-link", title: "link not followed" }, text ?? String(url));
  return h("a", { href: safe, rel: "noopener noreferrer nofollow", target: "_blank" }, text ?? safe);
}

// A tiny markdown subset as chat clients show it: **bold**, *italic* or _italic_ (Slack's
// mrkdwn: *bold*), `code`, ~~strike~~, [text](url), Slack's <url|text>, line breaks. Always text nodes.
const INLINE = /(\*\*[^*\n]+\*\*|`[^`\n]+`|~~[^~\n]+~~|\*[^*\n]+\*|_[^_\n]+_|\[[^\]\n]+\]\([^)\s]+\)|<[^>\s|]+\|[^>\n]+>|<https?:[^>\s]+>)/;

export function markdown(text, flavour) {
  const slack = flavour === "slack";
  const out = [];
  String(text ?? "").split("\n").forEach((line, index) => {
    if (index > 0) out.push(h("br"));
    for (const part of line.split(INLINE)) {
      if (!part) continue;
      out.push(inline(part, slack));
    }
  });
  return out;
}

function inline(part, slack) {
  let m;
  if ((m = /^\*\*([^*]+)\*\*$/.exec(part))) return h("strong", null, m[1]);
  if (slack && (m = /^\*([^*]+)\*$/.exec(part))) return h("strong", null, m[1]);
  if ((m = /^`([^`]+)`$/.exec(part))) return h("code", null, m[1]);
  if ((m = /^~~([^~]+)~~$/.exec(part))) return h("s", null, m[1]);
  if ((m = /^\*([^*]+)\*$/.exec(part)) || (m = /^_([^_]+)_$/.exec(part))) return h("em", null, m[1]);
  if ((m = /^\[([^\]]+)\]\(([^)\s]+)\)$/.exec(part))) return externalLink(m[2], m[1]);
  if ((m = /^<([^>\s|]+)\|([^>]+)>$/.exec(part))) return externalLink(m[1], m[2]);
  if ((m = /^<(https?:[^>\s]+)>$/.exec(part))) return externalLink(m[1], m[1]);
  return document.createTextNode(part);
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function badge(outcome) {
  const name = String(outcome ?? "");
  const known = ["sent", "failed", "dead", "pending", "retry", "skipped", "dry_run", "already_sent", "fired", "ok", "rejected"];
  return h("span", { class: "badge " + (known.includes(name) ? "b-" + name : "b-other") }, name || "—");
}

export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

export function ago(iso) {
  if (!iso) return "—";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!Number.isFinite(seconds)) return String(iso);
  if (seconds < 60) return Math.max(0, Math.round(seconds)) + "s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + "m ago";
  if (seconds < 86400) return Math.round(seconds / 3600) + "h ago";
  return Math.round(seconds / 86400) + "d ago";
}

export function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty || "Nothing here.");
  return h(
    "div",
    { class: "scroll" },
    h("table", null, h("thead", null, h("tr", null, headers.map((name) => h("th", null, name)))), h("tbody", null, rows)),
  );
}

// An inline confirmation in place of window.confirm: the action runs only after "Confirm".
export function confirmButton(label, question, action) {
  const box = h("span", { class: "confirm" });
  const start = h("button", { type: "button", class: "danger", onclick: () => ask() }, label);
  box.append(start);
  function ask() {
    box.dataset.state = "asking";
    clear(box);
    const yes = h("button", { type: "button", class: "danger confirm-yes", onclick: run }, "Confirm");
    const no = h("button", { type: "button", onclick: reset }, "Cancel");
    append(box, [h("span", { class: "question" }, question), " ", yes, " ", no]);
  }
  async function run() {
    box.dataset.state = "working";
    clear(box);
    box.append(h("span", { class: "busy" }, "working…"));
    try {
      const note = await action();
      box.dataset.state = "done";
      clear(box);
      box.append(h("span", { class: "done" }, note || "done"));
    } catch (error) {
      box.dataset.state = "";
      clear(box);
      box.append(h("span", { class: "error" }, String(error.message || error)), " ", start);
    }
  }
  function reset() {
    box.dataset.state = "";
    clear(box);
    box.append(start);
  }
  return box;
}

// True while the user is answering a confirmation (or its action runs): live refreshes wait,
// so that a re-render never takes the question away from under the pointer.
export function confirming(root) {
  return root.querySelector('.confirm[data-state="asking"], .confirm[data-state="working"]') !== null;
}
