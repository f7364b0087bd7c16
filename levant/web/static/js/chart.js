// A stacked bar chart in SVG: one bar per day, one colour per model. Built with
// createElementNS and textContent; each bar has a <title> for its exact numbers.

import { svg } from "./dom.js";

export const PALETTE = ["#3b6fd8", "#e0803a", "#2f9e6e", "#b04fc9", "#d24b5a", "#8a8f2a", "#2aa3b8"];

/**
 * days: ["2026-11-01", …]; series: [{model, values: [number per day]}]; format(n) → label.
 */
export function barChart({ days, series, format, label, width = 720 }) {
  const height = 240;
  const pad = { top: 12, right: 8, bottom: 28, left: 56 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const totals = days.map((_, d) => series.reduce((sum, s) => sum + s.values[d], 0));
  const max = niceCeiling(Math.max(...totals, 0));
  const step = innerW / Math.max(days.length, 1);
  const barW = Math.max(2, step * 0.7);
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": label,
    class: "bar-chart",
  });
  root.append(svg("title", {}, label));
  for (const frac of [0, 0.5, 1]) {
    const y = pad.top + innerH * (1 - frac);
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    root.append(svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, format(max * frac)));
  }
  days.forEach((day, d) => {
    let y = pad.top + innerH;
    const x = pad.left + d * step + (step - barW) / 2;
    series.forEach((s, n) => {
      const value = s.values[d];
      if (!value) return;
      const barH = (value / max) * innerH;
      y -= barH;
      root.append(
        svg(
          "rect",
          { x, y, width: barW, height: Math.max(barH, 1), fill: PALETTE[n % PALETTE.length], class: "bar" },
          svg("title", {}, `${day} · ${s.model}: ${format(value)}`),
        ),
      );
    });
    const every = Math.ceil(days.length / Math.max(3, Math.floor(innerW / 64)));
    if (d % every === 0) {
      root.append(svg("text", { x: x + barW / 2, y: height - 8, "text-anchor": "middle", class: "axis" }, day.slice(5)));
    }
  });
  return root;
}

/** The smallest of 1, 2, 5 × 10^k at or above ``value`` (at least 4), so axis labels are round. */
function niceCeiling(value) {
  if (value <= 4) return 4;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 4, 5, 10]) if (m * power >= value) return m * power;
  return 10 * power;
}
