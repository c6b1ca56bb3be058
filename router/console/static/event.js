// An event's page: what arrived, each rule's verdict, and per delivery the timeline of every
// attempt next to the message as the person receives it, with the error where it failed.
import { api } from "./api.js";
import { h, clear, append, badge, time, json, table, confirmButton, confirming } from "./dom.js";
import { preview } from "./preview.js";

const POLL_MS = 3000;

function relative(start, iso) {
  const ms = new Date(iso).getTime() - new Date(start).getTime();
  if (!Number.isFinite(ms)) return "";
  return (ms >= 0 ? "+" : "") + (Math.abs(ms) < 1000 ? ms.toFixed(0) + " ms" : (ms / 1000).toFixed(2) + " s");
}

export function eventView(main, id) {
  let stopped = false;
  let timer = null;
  let last = "";
  const status = h("p", { class: "status" });
  append(clear(main), [h("h1", null, "Event"), status]);

  async function refresh() {
    if (stopped) return;
    try {
      const story = await api("/api/events/" + encodeURIComponent(id));
      const text = JSON.stringify(story);
      if (!stopped && text !== last && !confirming(main)) {
        last = text;
        render(story);
      }
    } catch (error) {
      status.textContent = error.status === 404 ? `No record of event ${id}.` : "Could not load the event: " + error.message;
      status.className = "status error";
    }
    // Retries and replays change the story: keep polling while the page is open.
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }

  function render(story) {
    const event = story.event || {};
    const dead = (story.deliveries || []).filter((d) => d.dead_letter_id || lastOutcome(d) === "dead");
    const replay = dead.length
      ? confirmButton("Replay failed deliveries", `Replay ${dead.length} dead-lettered deliver${dead.length === 1 ? "y" : "ies"} of this event?`, async () => {
          const result = await api("/api/replay", { method: "POST", body: { event_ids: [id] } });
          setTimeout(refresh, 300);
          return `replayed ${result.replayed ?? 0}, skipped ${result.skipped ?? 0}`;
        })
      : null;
    append(clear(main), [
      h("h1", null, "Event ", h("span", { class: "mono", id: "event-id" }, event.id || id), " ", h("span", { id: "event-outcome" }, badge(story.outcome))),
      h(
        "dl",
        { class: "facts" },
        fact("Type", event.type), fact("Source", event.source), fact("Subject", event.subject),
        fact("Received", time(story.received_at)), fact("Transport", story.transport), fact("Process", story.process),
        fact("Schema", story.schema), fact("Size", story.size !== undefined ? story.size + " bytes" : null),
      ),
      replay ? h("div", { class: "actions" }, replay) : null,
      story.rejection ? rejection(story.rejection) : null,
      h("h2", null, "Rules"),
      table(["Rule", "Verdict", "Reason"], (story.rules || []).map((r) => h("tr", null, h("td", null, r.rule), h("td", null, badge(r.verdict)), h("td", null, r.reason || ""))), "No rule concerned this event."),
      h("h2", null, "Deliveries"),
      (story.deliveries || []).length ? (story.deliveries || []).map((d) => delivery(d, story.received_at)) : h("p", { class: "empty" }, "No deliveries."),
      (story.jobs || []).length ? [h("h2", null, "Jobs"), table(["Rule", "Job", "Outcome", "Error"], story.jobs.map((j) => h("tr", null, h("td", null, j.rule), h("td", null, j.job), h("td", null, badge(j.outcome)), h("td", { class: "error" }, j.error || ""))))] : null,
      h("h2", null, "Payload"),
      json(event),
      h("p", { class: "status" }, "Live: this page refreshes every few seconds."),
    ]);
  }

  function fact(name, value) {
    return [h("dt", null, name), h("dd", null, value === undefined || value === null || value === "" ? "—" : String(value))];
  }

  // A message that never became a routed event: why, and where it is kept (router dlq list).
  function rejection(r) {
    return h("section", { class: "rejected", id: "rejection" },
      h("h2", null, "Rejected: ", r.reason),
      h("div", { class: "failure" }, h("strong", null, "Reason: "), r.error || "—"),
      h("dl", { class: "facts small" }, h("dt", null, "Dead letter"), h("dd", { class: "mono" }, r.dead_letter_id || "—")),
      h("p", { class: "muted" }, "It was not routed: no rule saw it. The message is in the dead-letter queue (router dlq list)."),
    );
  }

  function lastOutcome(d) {
    const attempts = d.attempts || [];
    return attempts.length ? attempts[attempts.length - 1].outcome : "";
  }

  function delivery(d, start) {
    const attempts = d.attempts || [];
    const final = lastOutcome(d);
    const failed = attempts.filter((a) => a.error);
    return h(
      "section",
      { class: "delivery", "data-channel": d.channel, "data-outcome": final },
      h("h3", null, d.rule, " → ", d.channel, " ", h("span", { class: "muted" }, "(" + (d.channel_type || "?") + ")"), " ", badge(final)),
      h("div", { class: "delivery-grid" },
        h("div", null,
          h("h4", null, "Timeline"),
          h("ol", { class: "timeline" },
            h("li", null, h("span", { class: "t" }, "+0 ms"), " received"),
            attempts.map((a, i) =>
              h("li", { class: "attempt a-" + a.outcome },
                h("span", { class: "t" }, relative(start, a.started_at)), " attempt ", String(i + 1), " ", badge(a.outcome),
                a.duration_ms !== undefined && a.duration_ms !== null ? h("span", { class: "muted" }, ` ${Number(a.duration_ms).toFixed(1)} ms`) : null,
                a.status ? h("span", { class: "muted" }, ` HTTP ${a.status}`) : null,
                a.error_class ? h("span", { class: "muted" }, ` ${a.error_class}`) : null,
                a.retry_at ? h("span", { class: "muted", title: time(a.retry_at) }, ` retry at ${relative(start, a.retry_at)}`) : null,
                a.error ? h("div", { class: "error attempt-error" }, a.error) : null,
              ),
            ),
          ),
          h("dl", { class: "facts small" },
            h("dt", null, "Idempotency key"), h("dd", { class: "mono" }, d.idempotency_key || "—"),
            h("dt", null, "Dead letter"), h("dd", { class: "mono" }, d.dead_letter_id || "—"),
          ),
          failed.length && final !== "sent" && final !== "already_sent" ? h("div", { class: "failure" }, h("strong", null, "Failed: "), failed[failed.length - 1].error) : null,
        ),
        h("div", null, h("h4", null, "Message as sent"), preview(d)),
      ),
    );
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
