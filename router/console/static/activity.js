// Activity: the live list. Polls /api/activity with the filters in the URL every 2 s; new
// events appear at the top without a reload. Counts per outcome filter the list when clicked.
import { api, query } from "./api.js";
import { h, clear, append, route, badge, time, table } from "./dom.js";

const OUTCOMES = ["sent", "failed", "dead", "pending", "skipped", "dry_run", "rejected"];
const FIELDS = ["since", "type", "rule", "channel", "outcome", "q"];
const POLL_MS = 2000;

export function activityView(main, params, navigate) {
  const filters = Object.fromEntries(FIELDS.map((f) => [f, params.get(f) || (f === "since" ? "1h" : "")]));
  let seen = new Set(); // the ids shown by the last refresh: a row not among them is new
  let first = true;
  let timer = null;
  let stopped = false;
  let extra = []; // older pages loaded with "Load more"
  let next = null;

  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(); } },
    field("since", "Since", h("select", { name: "since" }, ["15m", "1h", "6h", "24h", "7d"].map((v) => h("option", { value: v, selected: v === filters.since }, v)))),
    field("type", "Type", h("input", { name: "type", value: filters.type, placeholder: "order.*" })),
    field("rule", "Rule", h("input", { name: "rule", value: filters.rule })),
    field("channel", "Channel", h("input", { name: "channel", value: filters.channel })),
    field("outcome", "Outcome", h("select", { name: "outcome" }, h("option", { value: "" }, "any"), OUTCOMES.map((v) => h("option", { value: v, selected: v === filters.outcome }, v)))),
    field("q", "Event id or subject", h("input", { name: "q", value: filters.q })),
    h("button", { type: "submit" }, "Apply"),
  );
  const counts = h("div", { class: "counts" });
  const list = h("div", { class: "list" });
  const status = h("p", { class: "status" });
  const more = h("button", { type: "button", class: "more", onclick: loadMore, hidden: true }, "Load more");
  append(clear(main), [h("h1", null, "Activity"), form, counts, status, list, more]);

  function field(name, label, input) {
    return h("label", { class: "field" }, h("span", null, label), input);
  }

  function apply() {
    const data = new FormData(form);
    const next = {};
    for (const f of FIELDS) next[f] = String(data.get(f) || "").trim();
    navigate("/activity" + query(next));
  }

  async function refresh() {
    if (stopped) return;
    if (document.hidden) {
      timer = setTimeout(refresh, POLL_MS); // a tab nobody looks at costs the router nothing
      return;
    }
    try {
      const answer = await api("/api/activity" + query({ ...filters, limit: 50 }));
      if (stopped) return;
      render(answer);
      status.textContent = "Live: updated " + new Date().toLocaleTimeString(undefined, { hour12: false });
      status.className = "status";
    } catch (error) {
      status.textContent = "Could not load activity: " + error.message;
      status.className = "status error";
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }

  function render(answer) {
    clear(counts);
    const c = answer.counts || {};
    const exact = answer.counts_exact !== false; // very large ranges are counted up to a bound
    for (const outcome of OUTCOMES) {
      const active = filters.outcome === outcome;
      counts.append(
        h("a", { href: "#/activity" + query({ ...filters, outcome: active ? "" : outcome }), class: "count" + (active ? " active" : ""), "data-outcome": outcome },
          badge(outcome), " ", h("span", { class: "n", title: exact ? null : "counted over the newest matching events only" }, String(c[outcome] ?? 0) + (exact ? "" : "+"))),
      );
    }
    const events = [...(answer.events || []), ...extra];
    if (!extra.length) next = answer.next;
    more.hidden = !next;
    const shown = new Set();
    const rows = events.map((event) => {
      const fresh = !first && !seen.has(event.event_id);
      shown.add(event.event_id);
      return h("tr", { class: fresh ? "fresh" : null, "data-event-id": event.event_id },
        h("td", { class: "nowrap" }, time(event.received_at)),
        h("td", null, route("/event/" + encodeURIComponent(event.event_id), event.event_id, { class: "event-link" })),
        h("td", null, event.type || "—"),
        h("td", null, event.subject || ""),
        h("td", null, (event.rules_fired || []).join(", ")),
        h("td", null, Object.entries(event.channels || {}).map(([name, outcome]) => h("span", { class: "chan" }, name, " ", badge(outcome)))),
        h("td", null, badge(event.outcome), event.rejection ? h("div", { class: "muted rejection" }, event.rejection.reason + ": " + (event.rejection.error || "")) : null),
      );
    });
    first = false;
    seen = shown;
    clear(list).append(table(["Received", "Event id", "Type", "Subject", "Rules fired", "Channels", "Outcome"], rows, "No events match these filters in this time range."));
  }

  async function loadMore() {
    if (!next) return;
    try {
      const answer = await api("/api/activity" + query({ ...filters, limit: 50, before: next }));
      extra = extra.concat(answer.events || []);
      next = answer.next;
      more.hidden = !next;
      clearTimeout(timer); // show them now, and keep one polling timer
      refresh();
    } catch (error) {
      status.textContent = "Could not load more: " + error.message;
    }
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
