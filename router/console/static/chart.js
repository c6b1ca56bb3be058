// Small SVG line charts for the Overview page: no library, elements built with createElementNS.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

function fmt(value) {
  if (!Number.isFinite(value)) return "0";
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

// series: [{name, cls, values: [number|null]}], times: [iso], unit: "/s" or "ms"
export function lineChart(title, times, series, unit) {
  const width = 600;
  const height = 180;
  const pad = { left: 44, right: 8, top: 10, bottom: 22 };
  const all = series.flatMap((s) => s.values.filter((v) => Number.isFinite(v)));
  const top = Math.max(1e-9, ...all) * 1.1 || 1;
  const n = Math.max(1, times.length - 1);
  const x = (i) => pad.left + (i / n) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title });
  root.append(svg("title", null, title));
  for (const fraction of [0, 0.5, 1]) {
    const value = (top / 1.1) * fraction;
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value), class: "grid" }));
    root.append(svg("text", { x: pad.left - 4, y: y(value) + 4, class: "axis", "text-anchor": "end" }, fmt(value)));
  }
  if (times.length) {
    const label = (iso) => new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
    root.append(svg("text", { x: pad.left, y: height - 6, class: "axis" }, label(times[0])));
    root.append(svg("text", { x: width - pad.right, y: height - 6, class: "axis", "text-anchor": "end" }, label(times[times.length - 1])));
  }
  for (const s of series) {
    const points = [];
    s.values.forEach((v, i) => {
      if (Number.isFinite(v)) points.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    });
    if (points.length) root.append(svg("polyline", { points: points.join(" "), class: "line " + s.cls }));
  }
  const figure = document.createElement("figure");
  figure.className = "chart-box";
  const caption = document.createElement("figcaption");
  caption.textContent = `${title} (${unit})`;
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.className = "key " + s.cls;
    const last = [...s.values].reverse().find((v) => Number.isFinite(v));
    item.textContent = `${s.name}: ${fmt(last ?? 0)}`;
    legend.append(item);
  }
  figure.append(caption, root, legend);
  return figure;
}
