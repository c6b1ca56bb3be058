// Dead letters: reason, error, attempts; replay one, or all that match the filter, after an
// inline confirmation. Replaying re-runs only the deliveries that did not succeed.
import { api, query } from "./api.js";
import { h, clear, append, route, time, table, confirmButton, confirming } from "./dom.js";

const FIELDS = ["since", "type", "rule", "channel"];

const nonEmpty = (values) => Object.fromEntries(Object.entries(values).filter(([, v]) => v !== ""));

export function deadView(main, params, navigate) {
  const filters = Object.fromEntries(FIELDS.map((f) => [f, params.get(f) || (f === "since" ? "24h" : "")]));
  let stopped = false;
  let timer = null;
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); const data = new FormData(form); navigate("/dead" + query(Object.fromEntries(FIELDS.map((f) => [f, String(data.get(f) || "").trim()])))); } },
    h("label", { class: "field" }, h("span", null, "Since"), h("select", { name: "since" }, ["1h", "6h", "24h", "7d"].map((v) => h("option", { value: v, selected: v === filters.since }, v)))),
    h("label", { class: "field" }, h("span", null, "Type"), h("input", { name: "type", value: filters.type })),
    h("label", { class: "field" }, h("span", null, "Rule"), h("input", { name: "rule", value: filters.rule })),
    h("label", { class: "field" }, h("span", null, "Channel"), h("input", { name: "channel", value: filters.channel })),
    h("button", { type: "submit" }, "Apply"),
  );
  const bulk = h("div", { class: "actions" });
  const status = h("p", { class: "status" });
  const list = h("div", { class: "list" });
  append(clear(main), [h("h1", null, "Dead letters"), form, bulk, status, list]);

  async function refresh() {
    if (stopped) return;
    try {
      const answer = await api("/api/dead-letters" + query({ ...filters, limit: 200 }));
      if (!stopped) render(answer.dead_letters || []);
      status.textContent = "";
    } catch (error) {
      status.textContent = "Could not load dead letters: " + error.message;
      status.className = "status error";
    }
    if (!stopped) timer = setTimeout(refresh, 5000);
  }

  function render(items) {
    if (confirming(main)) return;
    clear(bulk);
    if (items.length) {
      bulk.append(
        confirmButton(`Replay all ${items.length} matching`, `Replay every dead letter matching these filters (${items.length} shown)?`, async () => {
          const result = await api("/api/replay", { method: "POST", body: { filter: { outcome: "dead", ...nonEmpty(filters) } } });
          setTimeout(refresh, 300);
          return `matched ${result.matched ?? 0}, replayed ${result.replayed ?? 0}, skipped ${result.skipped ?? 0}` + (result.errors && result.errors.length ? `, ${result.errors.length} errors` : "");
        }),
      );
    }
    const rows = items.map((d) =>
      h("tr", { "data-event-id": d.event_id },
        h("td", { class: "nowrap" }, time(d.dead_at)),
        h("td", null, route("/event/" + encodeURIComponent(d.event_id), d.event_id)),
        h("td", null, d.type || ""),
        h("td", null, d.rule || ""),
        h("td", null, d.channel || ""),
        h("td", null, d.reason || ""),
        h("td", { class: "error" }, d.error || ""),
        h("td", { class: "num" }, String(d.attempts ?? "")),
        h("td", null, confirmButton("Replay", "Replay this delivery?", async () => {
          const result = await api("/api/replay", { method: "POST", body: { event_ids: [d.event_id] } });
          setTimeout(refresh, 300);
          return `replayed ${result.replayed ?? 0}`;
        })),
      ),
    );
    clear(list).append(table(["Dead at", "Event", "Type", "Rule", "Channel", "Reason", "Error", "Attempts", ""], rows, "No dead letters match."));
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
