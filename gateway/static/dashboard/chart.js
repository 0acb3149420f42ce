// One metric's trend (uPlot, vendored): limit lines, work-order spans, anomaly marks and the device's own
// alarms (raised, cleared, and the band while active) on one time axis.
// Drag across the chart to zoom; the caller reloads the data for the chosen range.
import { clockTime, h, hourMinute, plant, when } from "./ui.js";

const COLOURS = { line: "#2563eb", limit: "#b45309", span: "rgba(220, 38, 38, 0.08)", alarm: "rgba(124, 58, 237, 0.55)" };

// [start, end] of each alarm's active period: a raise until the next clear of the same code.
function alarmBands(alarms, until) {
  const bands = [];
  const open = new Map();
  for (const alarm of [...alarms].sort((a, b) => a.at - b.at)) {
    if (alarm.active && !open.has(alarm.code)) open.set(alarm.code, alarm.at);
    else if (!alarm.active && open.has(alarm.code)) {
      bands.push([open.get(alarm.code), alarm.at]);
      open.delete(alarm.code);
    }
  }
  for (const start of open.values()) bands.push([start, until]);
  return bands;
}

export function trendChart(holder, { metric, readings, since, until, limits, anomalies, alarms = [], workOrders, onZoom }) {
  const xs = readings.map((r) => r.timestamp);
  const ys = readings.map((r) => r.value);
  const marks = h("div", { class: "marks" });
  const width = Math.max(320, holder.parentElement.clientWidth - 24);
  const levels = limits.flatMap((l) => [l.low, l.high]).filter((v) => v !== null && v !== undefined);
  holder.setAttribute("aria-label", `${metric}: ${readings.length} reading${readings.length === 1 ? "" : "s"} from ${when(since)} to ${when(until)}; `
    + `${anomalies.length} anomalies; ${alarms.length} device alarm changes`
    + `${levels.length ? `; limits ${levels.join(", ")}` : ""}`);
  holder.setAttribute("role", "img");
  holder.dataset.since = String(since);
  holder.dataset.until = String(until);
  const bands = alarmBands(alarms, until);

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
    // An active alarm is a strip along the top edge, so it never hides the trend under it.
    ctx.fillStyle = COLOURS.alarm;
    for (const [start, end] of bands) {
      if (end < since || start > until) continue;
      const x0 = u.valToPos(Math.max(start, since), "x", true);
      const x1 = u.valToPos(Math.min(end, until), "x", true);
      ctx.fillRect(x0, top, Math.max(2, x1 - x0), 6 * (window.devicePixelRatio || 1));
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

  // Marks are elements, not pixels: they have a tooltip, a label and can be found.
  function mark(u, at, kind, label, data) {
    const left = u.valToPos(at, "x") + u.over.offsetLeft;
    const element = h("span", { class: `mark ${kind}`, title: label, "aria-label": label, role: "note", "data-at": at, ...data });
    element.style.left = `${left}px`;
    element.style.top = `${u.over.offsetTop}px`;
    element.style.height = `${u.over.clientHeight}px`;
    marks.append(element);
  }

  function placeMarks(u) {
    marks.replaceChildren();
    for (const anomaly of anomalies) {
      if (anomaly.detected_at < since || anomaly.detected_at > until) continue;
      mark(u, anomaly.detected_at, `anomaly ${anomaly.severity}`, `anomaly at ${when(anomaly.detected_at)}: ${anomaly.message}`,
        { "data-work-order": anomaly.work_order_code || "" });
    }
    for (const alarm of alarms) {
      if (alarm.at < since || alarm.at > until) continue;
      const what = alarm.active ? "raised" : "cleared";
      const outcome = alarm.work_order_code ? ` (${alarm.outcome.replace("_", " ")} ${alarm.work_order_code})`
        : ` (${alarm.outcome.replace("_", " ")})`;
      mark(u, alarm.at, `alarm ${what}`, `device alarm ${alarm.code} ${what} at ${when(alarm.at)}: ${alarm.message}${outcome}`,
        { "data-code": alarm.code, "data-work-order": alarm.work_order_code || "" });
    }
  }

  const options = {
    width, height: 180,
    scales: { x: { time: false, min: since, max: until } },
    axes: [
      // Ticks in the plant's wall time (uPlot would use the browser's zone).
      { values: (_u, ticks) => ticks.map((t) => (until - since > 2 * 86400 ? when(t).slice(0, 5)
        : until - since < 900 ? clockTime(t) : hourMinute(t))) },
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
