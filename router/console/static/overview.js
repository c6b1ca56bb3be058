// Overview: events/s, deliveries/s by outcome and send latency over the last hour.
import { api } from "./api.js";
import { h, clear, append } from "./dom.js";
import { lineChart } from "./chart.js";

const OUTCOME_CLASSES = { sent: "c-sent", retry: "c-retry", dead: "c-dead", dry_run: "c-dry", skipped: "c-skipped", already_sent: "c-skipped" };

export function overviewView(main) {
  let stopped = false;
  let timer = null;
  const status = h("p", { class: "status" });
  const charts = h("div", { class: "charts" });
  append(clear(main), [h("h1", null, "Overview"), h("p", { class: "muted" }, "Last hour, one point a minute."), status, charts]);

  async function refresh() {
    if (stopped) return;
    try {
      const answer = await api("/api/overview?window=1h&step=60");
      if (!stopped) render(answer.series || []);
      status.textContent = "";
    } catch (error) {
      status.textContent = "Could not load the overview: " + error.message;
      status.className = "status error";
    }
    if (!stopped) timer = setTimeout(refresh, 10000);
  }

  function render(series) {
    const times = series.map((p) => p.t);
    const outcomes = [...new Set(series.flatMap((p) => Object.keys(p.deliveries_per_s || {})))].sort();
    clear(charts).append(
      lineChart("Events", times, [{ name: "events/s", cls: "c-events", values: series.map((p) => Number(p.events_per_s ?? 0)) }], "per second"),
      lineChart("Deliveries by outcome", times, (outcomes.length ? outcomes : ["sent"]).map((o) => ({ name: o, cls: OUTCOME_CLASSES[o] || "c-other", values: series.map((p) => Number((p.deliveries_per_s || {})[o] ?? 0)) })), "per second"),
      lineChart("Send latency", times, [
        { name: "p50", cls: "c-p50", values: series.map((p) => (p.latency_p50_ms === null || p.latency_p50_ms === undefined ? null : Number(p.latency_p50_ms))) },
        { name: "p99", cls: "c-p99", values: series.map((p) => (p.latency_p99_ms === null || p.latency_p99_ms === undefined ? null : Number(p.latency_p99_ms))) },
      ], "ms"),
    );
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
