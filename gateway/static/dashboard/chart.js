// One metric's trend (uPlot, vendored): limit lines, work-order spans and anomaly marks on one time axis.
// Drag across the chart to zoom; the caller reloads the data for the chosen range.
import { clockTime, h, hourMinute, plant, when } from "./ui.js";

const COLOURS = { line: "#2563eb", limit: "#b45309", anomaly: "#dc2626", span: "rgba(220, 38, 38, 0.08)" };

export function trendChart(holder, { metric, readings, since, until, limits, anomalies, workOrders, onZoom }) {
  const xs = readings.map((r) => r.timestamp);
  const ys = readings.map((r) => r.value);
  const marks = h("div", { class: "marks" });
  const width = Math.max(320, holder.parentElement.clientWidth - 24);
  const levels = limits.flatMap((l) => [l.low, l.high]).filter((v) => v !== null && v !== undefined);
  holder.setAttribute("aria-label", `${metric}: ${readings.length} readings from ${when(since)} to ${when(until)}; `
    + `${anomalies.length} anomalies${levels.length ? `; limits ${levels.join(", ")}` : ""}`);
  holder.setAttribute("role", "img");

  function drawOverlays(u) {
    const { ctx } = u;
    const top = u.bbox.top;
    const height = u.bbox.height;
    ctx.save();
    for (const order of workOrders) {
      const start = Math.max(order.created_at, since);
      const end = Math.min(order.closed_at || until, until);
      if (end < since || start > until) continue;
      const x0 = u.valToPos(start, "x", true);
      const x1 = u.valToPos(end, "x", true);
      ctx.fillStyle = COLOURS.span;
      ctx.fillRect(x0, top, Math.max(2, x1 - x0), height);
    }
    ctx.strokeStyle = COLOURS.limit;
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 1.5;
    for (const level of levels) {
      const y = u.valToPos(level, "y", true);
      if (y < top || y > top + height) continue;
      ctx.beginPath();
      ctx.moveTo(u.bbox.left, y);
      ctx.lineTo(u.bbox.left + u.bbox.width, y);
      ctx.stroke();
    }
    ctx.restore();
    placeMarks(u);
  }

  // Anomaly marks are elements, not pixels: they have a tooltip, a label and can be found.
  function placeMarks(u) {
    marks.replaceChildren();
    for (const anomaly of anomalies) {
      if (anomaly.detected_at < since || anomaly.detected_at > until) continue;
      const left = u.valToPos(anomaly.detected_at, "x") + u.over.offsetLeft;
      const label = `anomaly at ${when(anomaly.detected_at)}: ${anomaly.message}`;
      marks.append(h("span", {
        class: `mark ${anomaly.severity}`, title: label, "aria-label": label, role: "note",
        "data-at": anomaly.detected_at, "data-work-order": anomaly.work_order_code || "",
      }));
      marks.lastChild.style.left = `${left}px`;
      marks.lastChild.style.top = `${u.over.offsetTop}px`;
      marks.lastChild.style.height = `${u.over.clientHeight}px`;
    }
  }

  const options = {
    width, height: 180,
    scales: { x: { time: false, min: since, max: until } },
    axes: [
      // Ticks in the plant's wall time (uPlot would use the browser's zone).
      { values: (_u, ticks) => ticks.map((t) => (until - since > 2 * 86400 ? when(t).slice(0, 5) : hourMinute(t))) },
      { size: 60 },
    ],
    series: [{ label: `time (${plant.timezone})`, value: (_u, v) => (v === null ? "—" : clockTime(v)) },
      { label: metric, stroke: COLOURS.line, width: 1.5, spanGaps: false }],
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
    hooks: {
      draw: [drawOverlays],
      setSelect: [(u) => {
        if (u.select.width < 5) return;
        const from = u.posToVal(u.select.left, "x");
        const to = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ width: 0, height: 0 }, false);
        onZoom(from, to);
      }],
    },
  };
  if (levels.length || ys.length) {
    const values = [...ys.filter((v) => v !== null), ...levels];
    const low = Math.min(...values);
    const high = Math.max(...values);
    const pad = (high - low) * 0.1 || 1;
    options.scales.y = { range: [low - pad, high + pad] };
  }
  const chart = new window.uPlot(options, [xs, ys], holder);
  chart.root.querySelector(".u-wrap").append(marks);
  return chart;
}
