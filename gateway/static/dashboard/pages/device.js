// Device: context, detector state, trend charts with limits, anomalies, device alarms and work-order spans,
// its work orders.
import * as api from "../api.js";
import { trendChart } from "../chart.js";
import {
  ago, field, fromPlantInput, h, healthBadge, now, plant, priorityBadge, replace, section, select, table, toPlantInput, when,
} from "../ui.js";

const RANGES = [["1h", 3600], ["24h", 86400], ["7d", 7 * 86400]];

export async function render(main, [deviceId], context) {
  const path = `/devices/${encodeURIComponent(deviceId)}`;
  const [asset, latest, detector, orders, fleet] = await Promise.all([
    api.get(`/assets/${encodeURIComponent(deviceId)}`), api.get(`${path}/readings/latest`),
    api.get(`${path}/detector`), api.get("/work-orders", { device_id: deviceId, limit: 50 }),
    api.get("/fleet", { device_id: deviceId, limit: 1 }),
  ]);
  const metrics = latest.readings.map((r) => r.metric);
  const charts = h("div", { class: "charts" });
  const rangeBar = h("div", { class: "ranges", role: "group", "aria-label": "Time range" });
  let charted = [];
  let span = 3600;
  let custom = null;

  async function draw() {
    const until = custom ? custom.until : now();
    const since = custom ? custom.since : until - span;
    const rollup = until - since > 2 * 86400;
    from.value = toPlantInput(since);
    to.value = toPlantInput(until);
    const [anomalies, alarms, spans] = await Promise.all([
      api.get("/anomalies", { device_id: deviceId, since: Math.floor(since), limit: 1000 }),
      api.get("/alarms", { device_id: deviceId, since: Math.floor(since), until: Math.ceil(until), limit: 1000 }),
      api.get("/work-orders", { device_id: deviceId, limit: 200 }),
    ]);
    const series = await Promise.all(metrics.map((metric) => rollup
      ? api.get(`${path}/readings`, { metric, since, until, resolution: "rollup" })
        .then((answer) => answer.rollups.map((b) => ({ timestamp: b.timestamp, value: b.mean })))
      : api.get(`${path}/readings`, { metric, since, until, limit: 20000 }).then((answer) => answer.readings)));
    for (const chart of charted) chart.destroy();
    charted = [];
    replace(charts);
    metrics.forEach((metric, index) => {
      const holder = h("figure", { class: "chart", "data-metric": metric },
        h("figcaption", {}, metric, rollup ? h("small", {}, " (mean per bucket)") : null));
      charts.append(holder);
      charted.push(trendChart(holder, {
        metric, readings: series[index], since, until,
        limits: detector.limits.filter((l) => l.metric === metric),
        anomalies: anomalies.items.filter((a) => a.metrics.includes(metric) || a.metrics.length === 0),
        alarms: alarms.items, // a device's alarm is about the machine, so it shows on every metric
        workOrders: spans.items,
        onZoom: (from, to) => { custom = { since: from, until: to }; markRange(null); draw(); },
      }));
    });
    if (!metrics.length) charts.append(h("p", {}, "No readings from this device yet."));
  }

  function markRange(active) {
    for (const button of rangeBar.querySelectorAll("button[data-span]")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.span) === active));
    }
  }

  const from = h("input", { type: "datetime-local", "aria-label": "start of range" });
  const to = h("input", { type: "datetime-local", "aria-label": "end of range" });
  const rangeError = h("span", { class: "error", role: "alert" });
  replace(rangeBar,
    RANGES.map(([label, seconds]) => h("button", {
      type: "button", "data-span": seconds, "aria-pressed": String(seconds === span),
      onclick: () => { span = seconds; custom = null; markRange(seconds); draw(); },
    }, label)),
    h("span", { class: "custom" }, from, "–", to, h("button", {
      type: "button",
      onclick: () => {
        // The inputs are the plant's wall time, like every time on the page.
        const since = fromPlantInput(from.value);
        const until = fromPlantInput(to.value);
        if (!(since < until)) {
          rangeError.textContent = "Choose a start before the end.";
          return;
        }
        rangeError.textContent = "";
        custom = { since, until };
        markRange(null);
        draw();
      },
    }, "Show"), h("small", {}, ` ${plant.timezone}`), rangeError));
  const key = h("p", { class: "legend-key" }, h("span", { class: "key-anomaly" }, "anomaly"),
    h("span", { class: "key-alarm" }, "device alarm raised"), h("span", { class: "key-cleared" }, "cleared"),
    h("span", { class: "key-span" }, "work order open"), h("span", { class: "key-limit" }, "limit"),
    h("span", {}, "drag across a chart to zoom"));

  const entry = fleet.items[0];
  const state = asset.operating_state;
  const context_ = section("Asset",
    h("dl", { class: "facts" },
      fact("Health", entry ? healthBadge(entry) : "—"),
      fact("Site", `${asset.site.name} (${asset.site.id})`), fact("Type", asset.type), fact("Model", asset.model),
      fact("Serial", asset.serial), fact("Firmware", asset.firmware || "—"), fact("Criticality", asset.criticality),
      fact("Environment", Object.entries(asset.site.environment).map(([k, v]) => `${k} ${v}`).join(", ") || "—"),
      fact("Operating state", state.state + (state.until ? ` until ${when(state.until)}` : "")
        + (state.reason ? ` — ${state.reason} (${state.actor})` : "")),
      fact("Last reading", ago(entry && entry.last_reading_at))));

  const detectorPanel = section("Detector",
    h("p", {}, detector.warming_up
      ? `Warming up: ${detector.samples} of ${detector.warmup_samples} samples learnt (or ${fmt(detector.warmup_s / 3600)} h, `
        + "whichever comes first); no alerts until then."
      : `Calibrated: threshold ${fmt(detector.threshold)}, latest score ${fmt(detector.score)}`
        + (detector.alerting ? " — alerting" : "")),
    Object.keys(detector.rejected).length ? h("ul", { class: "refusals" }, Object.entries(detector.rejected).map(
      ([reason, r]) => h("li", {}, reason === "clock_reset"
        ? `Its clock went back; scoring followed it (${ago(r.last_at)}: ${r.example}).`
        : `${r.count} reading(s) not scored: ${reason.replace(/_/g, " ")} (last ${ago(r.last_at)}: ${r.example}).`))) : null,
    table(["Metric", "Latest value", "Deviation (sd)", "Limits"], metrics.map((metric) => {
      const reading = latest.readings.find((r) => r.metric === metric);
      const limits = detector.limits.filter((l) => l.metric === metric);
      return h("tr", {}, h("th", { scope: "row" }, metric), h("td", {}, fmt(reading.value)),
        h("td", {}, fmt(detector.contributions[metric])),
        h("td", {}, limits.map((l) => [l.low !== null ? `low ${l.low}` : "", l.high !== null ? `high ${l.high}` : ""]
          .filter(Boolean).join(", ")).join("; ") || "—"));
    })));

  const orderList = section("Work orders", orders.items.length ? table(["Code", "State", "Priority", "Failure mode", "Opened"],
    orders.items.map((o) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/work-orders/${o.code}` }, o.code)), h("td", {}, o.state),
      h("td", {}, priorityBadge(o.priority)), h("td", {}, o.failure_mode), h("td", {}, when(o.created_at))))) : h("p", {}, "None."));

  replace(main, h("h1", {}, asset.name || asset.id, " ", h("small", {}, asset.id)),
    h("div", { class: "columns" }, context_, detectorPanel),
    section("Trends", rangeBar, key, charts),
    context.can("assets.set_state") ? stateForm(deviceId, state) : null,
    orderList);
  await draw();
  context.listeners.add((kind, data) => {
    if (kind === "work_order" && data.device_id === deviceId && !custom) draw();
  });
  return () => { for (const chart of charted) chart.destroy(); };
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

function fmt(value) {
  return value === null || value === undefined || !isFinite(value) ? "—" : Number(value).toFixed(Math.abs(value) >= 100 ? 0 : 2);
}

function stateForm(deviceId, current) {
  const state = select("state", ["maintenance", "standby", "commissioning", "operating"],
    current.state === "operating" ? "maintenance" : "operating");
  const reason = h("input", { name: "reason", required: true, maxlength: 2000 });
  const hours = h("input", { name: "hours", type: "number", min: "0.1", step: "0.1", value: "8" });
  const form = h("form", { class: "inline", "aria-label": "Operating state" },
    field("State", state), field("Reason", reason), field("Ends by itself after (hours)", hours),
    h("button", { type: "submit" }, "Set state"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    // Ticketing keeps states on the wall clock, whatever the devices' simulated time.
    const until = hours.value ? Date.now() / 1000 + Number(hours.value) * 3600 : null;
    await api.put(`/assets/${encodeURIComponent(deviceId)}/state`, { state: state.value, reason: reason.value, until });
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  });
  return section("Operating state", h("p", {}, "Maintenance, standby and commissioning raise no tickets."), form);
}
