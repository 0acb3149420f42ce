// Analytics for reliability engineering: the KPIs, the failure-mode Pareto, bad actors, the
// detectors' own quality, and fault clusters with their evidence and trend by month.
import * as api from "../api.js";
import { field, h, replace, section, select, table } from "../ui.js";

function number(value, digits = 1) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

function percent(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value * 100)} %`;
}

function tile(label, value, hint) {
  return h("div", { class: "tile", role: "group", "aria-label": label },
    h("div", { class: "tile-value" }, value), h("div", { class: "tile-label" }, label), hint ? h("small", {}, hint) : null);
}

// Horizontal bars in plain HTML, read by screen readers as the numbers they are; sized once drawn.
function bars(rows, label, valueOf, textOf) {
  return h("ul", { class: "bars", "aria-label": label }, rows.map((row) => h("li", {},
    h("span", { class: "bar-label" }, textOf(row)),
    h("span", { class: "bar", "data-value": valueOf(row) }),
    h("span", { class: "bar-value" }, String(valueOf(row))))));
}

function sizeBars(container) {
  const values = [...container.querySelectorAll(".bar")].map((bar) => Number(bar.dataset.value));
  const top = Math.max(1, ...values);
  for (const bar of container.querySelectorAll(".bar")) bar.style.width = `${(Number(bar.dataset.value) / top) * 100}%`;
}

// The metrics whose mean before the group's failures differs most from the rest's, largest first.
function operating(contrast) {
  const rows = Object.entries(contrast || {}).filter(([, c]) => c.rest !== null && c.rest !== 0)
    .map(([metric, c]) => [metric, c, Math.abs(c.group - c.rest) / Math.abs(c.rest)])
    .sort((a, b) => b[2] - a[2]).slice(0, 3);
  return rows.length ? rows.map(([metric, c]) => `${metric} ${number(c.group)} vs ${number(c.rest)}`).join("; ") : "—";
}

function months(byMonth) {
  const entries = Object.entries(byMonth);
  const top = Math.max(1, ...entries.map(([, n]) => n));
  return h("span", { class: "months", "aria-label": entries.map(([m, n]) => `${m}: ${n}`).join(", ") },
    entries.map(([month, n]) => {
      const bar = h("span", { class: "month", title: `${month}: ${n}` });
      bar.style.height = `${Math.max(2, (n / top) * 24)}px`;
      return bar;
    }));
}

export async function render(main) {
  const filters = { since: "", until: "", model: "", type: "", failure_mode: "", cuts: "" };
  const [fleet, lifecycle] = await Promise.all([api.get("/fleet", { limit: 1 }), api.get("/lifecycle")]);
  const content = h("div", { class: "analytics" });

  function chooser(name, label, options) {
    const control = select(name, [["", "any"], ...options], filters[name], { "aria-label": label });
    control.addEventListener("change", () => { filters[name] = control.value; load(); });
    return field(label, control);
  }
  function date(name, label) {
    const input = h("input", { type: "date", name, "aria-label": label });
    input.addEventListener("change", () => {
      filters[name] = input.value ? Date.parse(input.value) / 1000 + (name === "until" ? 86400 : 0) : "";
      load();
    });
    return field(label, input);
  }
  const cuts = h("input", { name: "cuts", placeholder: "humidity_pct:80", "aria-label": "environment cut points" });
  cuts.addEventListener("change", () => { filters.cuts = cuts.value.trim(); load(); });
  const bar = h("form", { class: "filters", "aria-label": "Filter the analysis", onsubmit: (e) => e.preventDefault() },
    date("since", "From"), date("until", "Until"),
    chooser("type", "Type", fleet.types.map((t) => [t, t])),
    chooser("failure_mode", "Failure mode", Object.entries(lifecycle.failure_modes).map(([c, n]) => [c, `${c} ${n}`])),
    field("Environment cut points", cuts, "e.g. humidity_pct:80 (else quartiles)"),
    h("a", { class: "button", href: "#", onclick: download }, "Facts as CSV"));

  async function download(event) {
    event.preventDefault();
    const { cuts: _, ...rest } = filters;
    const text = await api.get("/analytics/facts", rest);
    const link = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: "work-order-facts.csv" });
    document.body.append(link);
    link.click();
    link.remove();
  }

  // A slow answer to an earlier filter must not overwrite the answer to the latest one.
  let generation = 0;
  async function load() {
    const mine = ++generation;
    const { cuts: cutPoints, ...rest } = filters;
    const [kpi, found] = await Promise.all([
      api.get("/analytics/kpis", { ...rest, group_by: "model" }),
      api.get("/analytics/fault-clusters", { ...rest, cuts: cutPoints }),
    ]);
    if (mine !== generation) return;
    const sla = kpi.sla_attainment;
    replace(content,
      section("Key figures", h("div", { class: "tiles" },
        tile("Work orders", String(kpi.work_orders)), tile("Failures", String(kpi.failures)),
        tile("MTTR", `${number(kpi.mttr_h)} h`, "detected → restored"),
        tile("MTBF", `${number(kpi.mtbf_h, 0)} h`, "monitored hours / failures"),
        tile("Time to dispatch", `${number(kpi.time_to_dispatch_min, 0)} min`),
        tile("Time to acknowledge", `${number(kpi.time_to_acknowledge_min, 0)} min`),
        tile("SLA respond / on site / restore", `${percent(sla.respond)} / ${percent(sla.on_site)} / ${percent(sla.restore)}`),
        tile("Backlog", `${kpi.backlog.count}`, `oldest ${number(kpi.backlog.age_h_max, 0)} h`),
        tile("First-time fix", percent(kpi.first_time_fix_rate)), tile("Repeat failures", percent(kpi.repeat_failure_rate)),
        tile("Predictive lead time", `${number(kpi.predictive_lead_time_h, 0)} h`))),
      h("div", { class: "columns" },
        section("Failure modes (Pareto)", bars(kpi.pareto, "failures per mode", (r) => r.failures,
          (r) => `${r.failure_mode} ${lifecycle.failure_modes[r.failure_mode] || ""} (${percent(r.cumulative_share)} cumulative)`)),
        section("Bad actors (downtime, h)", bars(kpi.bad_actors, "downtime per asset", (r) => Math.round(r.downtime_h),
          (r) => r.device_id))),
      section("Detector quality", kpi.detector_quality.length ? table(["Detector", "Closed", "Real failures", "False positives", "False-positive rate"],
        kpi.detector_quality.map((d) => h("tr", {}, h("th", { scope: "row" }, d.detector), h("td", {}, d.closed),
          h("td", {}, d.real_failures), h("td", {}, d.false_positives), h("td", {}, percent(d.false_positive_rate))))) : h("p", {}, "No automatic work orders closed yet.")),
      section(`Fault clusters (${found.clusters.length} at 5 % false-discovery rate; ${found.failures} failures over ${Math.round(found.device_days)} device-days)`,
        found.clusters.length ? table(["Group", "Failures", "Rate / 1000 device-days", "Rate ratio (95 % CI)", "q", "By month",
          "Operating context before failure (group vs rest)", "Evidence"],
          found.clusters.map((c) => h("tr", { class: "cluster" },
            h("th", { scope: "row" }, Object.entries(c.group).map(([k, v]) => `${k} ${v.startsWith(k) ? v.slice(k.length + 1) : v}`).join(" × "),
              Object.entries(c.also).map(([k, v]) => h("span", { class: "also" }, ` (${k} ${v})`))),
            h("td", {}, c.failures), h("td", {}, `${number(c.rate_per_1000_days, 2)} vs ${number(c.rest_rate_per_1000_days, 2)}`),
            h("td", {}, `${number(c.rate_ratio, 2)} (${number(c.ci_low, 2)}–${c.ci_high === null ? "∞" : number(c.ci_high, 2)})`),
            h("td", {}, c.q_value.toExponential(1)), h("td", {}, months(c.by_month)),
            h("td", { class: "operating" }, operating(c.operating)),
            h("td", {}, c.work_orders.slice(0, 3).map((code) => [h("a", { href: `#/work-orders/${code}` }, code), " "]),
              c.work_orders.length > 3 ? `+${c.failures - 3}` : ""))),
          { "aria-label": "Fault clusters" }) : h("p", {}, "No group fails more often than the rest of the fleet beyond chance.")));
    sizeBars(content);
  }

  replace(main, h("h1", {}, "Analytics"), section("Filters", bar), content);
  await load();
}
