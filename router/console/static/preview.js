// A delivered message shown the way the person receives it: a Discord embed, Slack blocks, an
// email with its subject and recipients, a webhook's JSON. Built from text nodes only.
import { h, externalLink, markdown, json } from "./dom.js";

export function preview(delivery) {
  const type = String(delivery.channel_type || "");
  const message = delivery.message || {};
  const payload = message.payload && typeof message.payload === "object" ? message.payload : null;
  let body;
  if (type === "discord") body = discord(message, payload);
  else if (type === "slack") body = slack(message, payload);
  else if (type === "email") body = email(message, payload, delivery);
  else if (type === "webhook") body = webhook(message, payload);
  else body = plain(message, payload);
  return h("div", { class: "preview preview-" + (["discord", "slack", "email", "webhook"].includes(type) ? type : "plain") }, body);
}

function discord(message, payload) {
  const p = payload || { embeds: [{ title: message.title, description: message.body }] };
  const embeds = Array.isArray(p.embeds) ? p.embeds : [];
  return h(
    "div",
    { class: "dc-message" },
    h("div", { class: "dc-author" }, p.username || "Router", h("span", { class: "dc-bot" }, "BOT")),
    p.content ? h("div", { class: "dc-content" }, markdown(p.content)) : null,
    embeds.map((embed) => discordEmbed(embed || {})),
  );
}

function discordEmbed(embed) {
  const box = h(
    "div",
    { class: "dc-embed" },
    embed.author ? h("div", { class: "dc-embed-author" }, embed.author.url ? externalLink(embed.author.url, embed.author.name) : embed.author.name) : null,
    embed.title ? h("div", { class: "dc-embed-title" }, embed.url ? externalLink(embed.url, embed.title) : embed.title) : null,
    embed.description ? h("div", { class: "dc-embed-description" }, markdown(embed.description)) : null,
    Array.isArray(embed.fields) && embed.fields.length
      ? h(
          "div",
          { class: "dc-fields" },
          embed.fields.map((field) =>
            h("div", { class: field && field.inline ? "dc-field inline" : "dc-field" }, h("div", { class: "dc-field-name" }, field && field.name), h("div", { class: "dc-field-value" }, markdown(field && field.value))),
          ),
        )
      : null,
    embed.image && embed.image.url ? h("div", { class: "dc-media" }, "image: ", externalLink(embed.image.url)) : null,
    embed.thumbnail && embed.thumbnail.url ? h("div", { class: "dc-media" }, "thumbnail: ", externalLink(embed.thumbnail.url)) : null,
    embed.footer || embed.timestamp
      ? h("div", { class: "dc-footer" }, embed.footer ? embed.footer.text : null, embed.footer && embed.timestamp ? " • " : null, embed.timestamp || null)
      : null,
  );
  // The colour bar: a number only (never a string from the event), applied through the CSSOM.
  if (Number.isInteger(embed.color) && embed.color >= 0 && embed.color <= 0xffffff) {
    box.style.borderLeftColor = "#" + embed.color.toString(16).padStart(6, "0");
  }
  return box;
}

function slackText(value) {
  if (!value) return null;
  if (typeof value === "string") return markdown(value, "slack");
  return value.type === "mrkdwn" ? markdown(value.text, "slack") : String(value.text ?? "");
}

function slack(message, payload) {
  const p = payload || { text: message.title, blocks: [{ type: "section", text: { type: "mrkdwn", text: `*${message.title}*\n${message.body}` } }] };
  const blocks = Array.isArray(p.blocks) ? p.blocks : [];
  return h(
    "div",
    { class: "sl-message" },
    h("div", { class: "sl-author" }, p.username || "Router", h("span", { class: "sl-app" }, "APP")),
    blocks.length ? blocks.map((block) => slackBlock(block || {})) : h("div", { class: "sl-section" }, slackText(p.text)),
    Array.isArray(p.attachments) ? p.attachments.map((a) => h("div", { class: "sl-attachment" }, slackText((a && (a.text || a.fallback)) || ""))) : null,
  );
}

function slackBlock(block) {
  switch (block.type) {
    case "header":
      return h("div", { class: "sl-header" }, block.text ? String(block.text.text ?? "") : "");
    case "divider":
      return h("hr", { class: "sl-divider" });
    case "context":
      return h("div", { class: "sl-context" }, (block.elements || []).map((e) => h("span", null, e && e.type === "image" ? "[image] " : slackText(e), " ")));
    case "image":
      return h("div", { class: "sl-image" }, "image: ", externalLink(block.image_url, block.alt_text || block.image_url));
    case "actions":
      return h("div", { class: "sl-actions" }, (block.elements || []).map((e) => (e && e.url ? externalLink(e.url, h("span", { class: "sl-button" }, slackText(e.text))) : h("span", { class: "sl-button" }, slackText(e && e.text)))));
    case "section":
    default:
      return h(
        "div",
        { class: "sl-section" },
        slackText(block.text),
        Array.isArray(block.fields) ? h("div", { class: "sl-fields" }, block.fields.map((f) => h("div", null, slackText(f)))) : null,
      );
  }
}

function list(value) {
  if (Array.isArray(value)) return value.map(String).join(", ");
  return value ? String(value) : "";
}

function email(message, payload, delivery) {
  const p = payload || {};
  const to = list(p.to) || `the recipients of channel ${delivery.channel} (rules.yaml)`;
  return h(
    "div",
    { class: "em-message" },
    h(
      "dl",
      { class: "em-headers" },
      h("dt", null, "To"),
      h("dd", { class: "em-to" }, to),
      p.cc ? [h("dt", null, "Cc"), h("dd", null, list(p.cc))] : null,
      p.bcc ? [h("dt", null, "Bcc"), h("dd", null, list(p.bcc))] : null,
      p.reply_to ? [h("dt", null, "Reply-To"), h("dd", null, list(p.reply_to))] : null,
      h("dt", null, "Subject"),
      h("dd", { class: "em-subject" }, p.subject || message.title || ""),
    ),
    h("div", { class: "em-body" }, String(message.body ?? "")),
  );
}

function webhook(message, payload) {
  return h("div", null, h("div", { class: "wh-label" }, "POST body (JSON)"), json(payload || { title: message.title, body: message.body }));
}

function plain(message, payload) {
  return h("div", null, h("div", { class: "pl-title" }, message.title || ""), h("div", { class: "pl-body" }, String(message.body ?? "")), payload ? json(payload) : null);
}
