// Rules and Channels: figures over the last hour, refreshed every 10 s.
import { api } from "./api.js";
import { h, clear, append, time, ago, table } from "./dom.js";

function poller(main, title, load) {
  let stopped = false;
  let timer = null;
  const status = h("p", { class: "status" });
  const body = h("div");
  append(clear(main), [h("h1", null, title), h("p", { class: "muted" }, "Last hour."), status, body]);
  async function refresh() {
    if (stopped) return;
    try {
      const content = await load();
      if (!stopped) clear(body).append(content);
      status.textContent = "";
    } catch (error) {
      status.textContent = `Could not load ${title.toLowerCase()}: ${error.message}`;
      status.className = "status error";
    }
    if (!stopped) timer = setTimeout(refresh, 10000);
  }
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

const num = (v, digits) => (v === null || v === undefined ? "—" : Number(v).toFixed(digits ?? 0));

export function rulesView(main) {
  return poller(main, "Rules", async () => {
    const { rules } = await api("/api/rules");
    return table(["Rule", "Matched", "Fired", "Skipped", "Last fired"], (rules || []).map((r) =>
      h("tr", null, h("td", null, r.rule), h("td", { class: "num" }, num(r.matched)), h("td", { class: "num" }, num(r.fired)), h("td", { class: "num" }, num(r.skipped)), h("td", { title: r.last_fired || "" }, r.last_fired ? ago(r.last_fired) : "never")),
    ), "No rules.");
  });
}

export function channelsView(main) {
  return poller(main, "Channels", async () => {
    const { channels } = await api("/api/channels");
    return table(["Channel", "Type", "Sent", "Failed", "Send rate /s", "Success", "p50 ms", "p99 ms", "Paused until", "Last error"], (channels || []).map((c) =>
      h("tr", null,
        h("td", null, c.channel), h("td", null, c.type || ""), h("td", { class: "num" }, num(c.sent)), h("td", { class: "num" }, num(c.failed)),
        h("td", { class: "num" }, num(c.send_rate, 3)), h("td", { class: "num" }, c.success_ratio === null || c.success_ratio === undefined ? "—" : (c.success_ratio * 100).toFixed(1) + "%"),
        h("td", { class: "num" }, num(c.p50_ms, 1)), h("td", { class: "num" }, num(c.p99_ms, 1)),
        h("td", null, c.paused_until ? time(c.paused_until) : "—"),
        h("td", { class: "error" }, c.last_error ? [c.last_error, c.last_error_at ? h("span", { class: "muted" }, " (" + ago(c.last_error_at) + ")") : null] : ""),
      ),
    ), "No channels.");
  });
}
