// One work order: context snapshot, evidence chart, timeline, chain verdict, dispatch explanation,
// the lifecycle steps legal from its state as forms with their guard fields, sign-off (with a drawn
// signature) and the service report.
import * as api from "../api.js";
import { trendChart } from "../chart.js";
import { field, h, message, priorityBadge, replace, section, select, slaClass, table, when } from "../ui.js";

const LABELS = {
  reason: "Reason", note: "Note", engineer_id: "Engineer", eta: "ETA (minutes from now)", resolution: "Resolution",
  failure_mode: "Failure mode", failure_mechanism: "Failure mechanism", failure_cause: "Failure cause",
  maintainable_item: "Maintainable item", restored_at: "Function restored at", parts: "Parts (one per line)",
  labour_hours: "Labour (hours)", verified_by: "Verified by", merged_into: "Merge into work order",
};

export async function render(main, [code], context) {
  const path = `/work-orders/${encodeURIComponent(code)}`;
  const [order, verdict, lifecycle, coding, engineers, signatures] = await Promise.all([
    api.get(path), api.get(`${path}/verify`), api.get("/lifecycle"), api.get("/coding"),
    api.get("/engineers", { limit: 1000 }), 
    // Open to anyone and so rate-limited per address: a refusal must not cost the page.
    api.get(`/verify/${encodeURIComponent(code)}`).catch((failure) => ({ verdict: "unchecked", reasons: [failure.message] }))]);
  const me = context.me;
  const mine = me.engineer_id && order.assigned_engineer_id === me.engineer_id;
  const mayMove = context.can("workorders.transition") && (me.role !== "technician" || mine);

  const readings = order.context.triggering_readings || [];
  const metrics = [...new Set(readings.map((r) => r.metric))];

  replace(main,
    h("h1", {}, order.code, " ", priorityBadge(order.priority), " ", h("span", { class: "state", "data-state": order.state }, order.state)),
    h("p", { class: "lead" }, order.title),
    h("div", { class: "columns" },
      section("Context", facts(order)),
      section("SLA", sla(order))),
    section("Evidence", metrics.length ? metrics.map((metric) => h("figure", { class: "chart", "data-metric": metric },
      h("figcaption", {}, metric))) : h("p", {}, "No readings: opened by an alarm or by hand.")),
    section("Dispatch", dispatch(order, engineers.items)),
    offer(order, context, me, code),
    mayMove ? section("Next steps", actions(order, lifecycle, coding, engineers.items, code)) : null,
    signOff(order, me, context, code),
    context.can("workorders.report") ? section("Service report", report(order, code, signatures)) : null,
    section("Timeline", timeline(order)),
    section("Chain of custody", chain(verdict)));

  const since = Math.min(...readings.map((r) => r.timestamp));
  const until = Math.max(...readings.map((r) => r.timestamp));
  const charts = metrics.map((metric) => trendChart(main.querySelector(`figure[data-metric="${CSS.escape(metric)}"]`), {
    metric, readings: readings.filter((r) => r.metric === metric), since: since - 1, until: until + 1, limits: [],
    anomalies: [], alarms: [], workOrders: [], onZoom: () => {},
  }));
  context.listeners.add((kind, data) => {
    if (kind !== "work_order" || data.work_order_code !== code) return;
    // The caller's own steps have redrawn the page already; the router keeps a form being filled in.
    if (data.actor === me.name || (me.engineer_id && data.actor === me.engineer_id)) return;
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  });
  return () => { for (const chart of charts) chart.destroy(); };
}

function facts(order) {
  const asset = order.context.asset || {};
  const finding = order.context.finding || {};
  const rows = [
    ["Asset", h("a", { href: `#/device/${encodeURIComponent(order.device_id)}` }, `${asset.name || order.device_id} (${order.device_id})`)],
    ["Model", asset.model], ["Serial", asset.serial], ["Firmware", asset.firmware],
    ["Site", asset.site ? `${asset.site.name} (${asset.site.id})` : order.site_id],
    ["Origin", order.origin], ["Failure mode", order.failure_mode], ["Mechanism", order.failure_mechanism || "—"],
    ["Cause", order.failure_cause || "—"], ["Maintainable item", order.maintainable_item || "—"],
    ["Impact", order.impact], ["Occurrences", order.occurrences], ["Opened", when(order.created_at)],
    ["Finding", finding.message || finding.detector || "—"],
  ];
  return h("dl", { class: "facts" }, rows.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? "—")]));
}

function sla(order) {
  if (!order.sla) return h("p", {}, "No SLA policy applies.");
  return table(["Clock", "Deadline", "Used", "Met"], Object.entries(order.sla.clocks).map(([name, clock]) =>
    h("tr", {}, h("th", { scope: "row" }, name.replace("_", " ")), h("td", {}, when(clock.deadline)),
      h("td", {}, h("span", { class: `sla ${slaClass(clock.used)}` }, `${Math.round(clock.used * 100)} %`)),
      h("td", {}, clock.met_at ? when(clock.met_at) : clock.breached ? "breached" : "—"))));
}

function dispatch(order, engineers) {
  const decision = order.assignment;
  if (!decision) return h("p", {}, "Not dispatched yet.");
  const names = Object.fromEntries(engineers.map((e) => [e.id, e.name || e.id]));
  const objectives = decision.candidates.length ? Object.keys(decision.candidates[0].grades) : [];
  // Late commitment: planned for an engineer who is not asked until shortly before they would set off.
  const chosen = decision.engineer_id || decision.planned_engineer_id;
  const planned = !decision.engineer_id && decision.planned_engineer_id
    ? h("p", { class: "planned" }, `Planned for ${names[chosen] || chosen}, on site about ${when(order.eta)}; `
      + `offered at ${when(decision.offer_at)} unless a re-plan moves it.`) : null;
  return [
    planned,
    h("p", { class: "explanation" }, decision.reason),
    decision.weights ? h("p", {}, "Weights: ", Object.entries(decision.weights).map(([k, v]) => `${k.replace("_", " ")} ${v}`).join(", ")) : null,
    decision.candidates.length ? table(["Engineer", "Score", ...objectives.map((o) => o.replace("_", " ")), "Travel", "Open orders"],
      decision.candidates.map((c) => h("tr", { class: c.engineer_id === chosen ? "chosen" : "" },
        h("th", { scope: "row" }, c.name || names[c.engineer_id] || c.engineer_id, c.engineer_id === chosen ? " ✓ chosen" : ""),
        h("td", {}, c.score.toFixed(2)), objectives.map((o) => h("td", {}, c.grades[o].toFixed(2))),
        h("td", {}, `${c.travel_min.toFixed(0)} min (${c.distance_km.toFixed(1)} km)`), h("td", {}, c.open_work_orders))),
      { class: "candidates", "aria-label": "Candidates and their grades" }) : null,
    Object.keys(decision.excluded).length ? [h("h3", {}, "Not considered"), h("ul", { class: "excluded" },
      Object.entries(decision.excluded).map(([id, why]) => h("li", {}, `${names[id] || id}: ${why}`)))] : null,
  ];
}

function offer(order, context, me, code) {
  const offered = order.state === "DISPATCHED" && order.accepted_at === null && order.assigned_engineer_id;
  if (!offered || !context.can("dispatch.answer")) return null;
  if (me.role === "technician" && me.engineer_id !== order.assigned_engineer_id) return null;
  const engineer = order.assigned_engineer_id;
  const reason = h("input", { name: "reason", maxlength: 2000 });
  const answer = async (kind) => {
    try {
      await api.post(`/work-orders/${encodeURIComponent(code)}/${kind}`, { engineer_id: engineer, reason: reason.value || null });
      message(`${kind === "accept" ? "Accepted" : "Declined"} for ${engineer}.`, "info");
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (failure) {
      message(failure.message);
    }
  };
  return section("Offer", h("p", {}, `Offered to ${engineer} at ${when(order.offered_at)}.`),
    h("div", { class: "inline" }, h("button", { type: "button", onclick: () => answer("accept") }, "Accept"),
      field("Reason to decline", reason), h("button", { type: "button", class: "secondary", onclick: () => answer("decline") }, "Decline")));
}

function control(name, order, coding, engineers) {
  const items = [...(coding.maintainable_items[order.equipment_class] || []), ...(coding.maintainable_items["*"] || [])];
  switch (name) {
    case "failure_mode":
      return select(name, Object.entries(coding.failure_modes).map(([c, n]) => [c, `${c} ${n}`]), order.failure_mode, { required: true });
    case "failure_mechanism":
      return select(name, [["", "choose…"], ...coding.failure_mechanisms], order.failure_mechanism || "", { required: true });
    case "failure_cause":
      return select(name, [["", "choose…"], ...coding.failure_causes], "", { required: true });
    case "maintainable_item":
      return select(name, [["", "choose…"], ...items], order.maintainable_item || "");
    case "engineer_id":
      return select(name, engineers.map((e) => [e.id, e.name || e.id]), order.assigned_engineer_id || "", { required: true });
    case "eta":
      return h("input", { name, type: "number", min: "1", value: "60", required: true });
    case "restored_at":
      return h("input", { name, type: "datetime-local", required: true, value: localNow() });
    case "parts":
    case "resolution":
    case "note":
      return h("textarea", { name, rows: 2, maxlength: 20000, required: name === "resolution" });
    case "labour_hours":
      return h("input", { name, type: "number", min: "0", step: "0.25" });
    default:
      return h("input", { name, maxlength: 2000, required: true });
  }
}

function localNow() {
  const date = new Date();
  date.setMinutes(date.getMinutes() - date.getTimezoneOffset());
  return date.toISOString().slice(0, 16);
}

function value(name, element) {
  const raw = element.value.trim();
  if (raw === "") return null;
  if (name === "eta") return Date.now() / 1000 + Number(raw) * 60;
  if (name === "restored_at") return Date.parse(raw) / 1000;
  if (name === "labour_hours") return Number(raw);
  if (name === "parts") return raw.split("\n").map((p) => p.trim()).filter(Boolean);
  return raw;
}

function actions(order, lifecycle, coding, engineers, code) {
  const targets = lifecycle.transitions[order.state] || [];
  if (!targets.length) return h("p", {}, "No further steps from this state.");
  const forms = targets.map((target) => {
    const required = lifecycle.required[target] || [];
    const optional = target === "DONE" ? ["maintainable_item", "parts", "labour_hours", "note"] : ["note"];
    const fields = [...required, ...optional.filter((name) => !required.includes(name))];
    const controls = Object.fromEntries(fields.map((name) => [name, control(name, order, coding, engineers)]));
    const form = h("form", { class: "step", "data-target": target, "aria-label": `Move to ${target}` },
      h("h3", {}, `→ ${target.replace("_", " ")}`),
      fields.map((name) => field(LABELS[name] || name, controls[name], required.includes(name) ? null : "optional")),
      h("button", { type: "submit" }, `Move to ${target.replace("_", " ")}`));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { to: target };
      for (const [name, element] of Object.entries(controls)) {
        const v = value(name, element);
        if (v !== null) body[name] = v;
      }
      try {
        await api.post(`/work-orders/${encodeURIComponent(code)}/transitions`, body);
        message(`${code} is now ${target}.`, "info");
        window.dispatchEvent(new HashChangeEvent("hashchange"));
      } catch (failure) {
        message(failure.message);
      }
    });
    return form;
  });
  return h("div", { class: "steps" }, forms);
}

const SUPERVISORS = ["dispatcher", "admin"];
const SIGNERS = {
  engineer: "Engineer: the work described here was done",
  supervisor: "Supervisor: the repair was verified",
  customer: "Customer: the repair was verified and accepted",
};

// Who the signed-in person may sign as now (the API decides; this only offers what it would accept).
function signers(order, me, context) {
  if (!context.can("workorders.sign")) return [];
  const entered = order.events.map((e) => e.data.to).lastIndexOf(order.state);
  const signed = new Set(order.events.slice(entered + 1).filter((e) => e.kind === "signed")
    .map((e) => e.data.content.statement));
  const mine = me.engineer_id && order.assigned_engineer_id === me.engineer_id;
  const offered = [];
  if (order.state === "DONE" && mine) offered.push("engineer");
  if (order.state === "VERIFIED" && SUPERVISORS.includes(me.role)) offered.push("supervisor");
  if (order.state === "VERIFIED" && (me.role !== "technician" || mine)) offered.push("customer");
  return offered.filter((statement) => !signed.has(statement));
}

function signaturePad() {
  const canvas = h("canvas", { class: "signature-pad", width: 480, height: 140, "aria-label": "Signature (draw here)" });
  const pen = canvas.getContext("2d");
  let drawing = false;
  canvas.drawn = false;
  const clear = () => {
    pen.fillStyle = "#fff";
    pen.fillRect(0, 0, canvas.width, canvas.height);
    canvas.drawn = false;
  };
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    pen.beginPath();
    pen.moveTo(...at(event));
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    pen.lineWidth = 2.5;
    pen.lineCap = pen.lineJoin = "round";
    pen.strokeStyle = "#0f172a";
    pen.lineTo(...at(event));
    pen.stroke();
    canvas.drawn = true;
  });
  for (const end of ["pointerup", "pointercancel"]) canvas.addEventListener(end, () => { drawing = false; });
  clear();
  canvas.clear = clear;
  return canvas;
}

function signOff(order, me, context, code) {
  const offered = signers(order, me, context);
  if (!offered.length) return null;
  const who = select("signer", offered.map((s) => [s, SIGNERS[s]]), offered[0], { required: true });
  const name = h("input", { name: "name", maxlength: 200, placeholder: "as it should be printed" });
  const pad = signaturePad();
  const form = h("form", { class: "sign-off", "aria-label": "Sign off" },
    h("p", {}, "Your signature covers the work order as it is now; any later change to it shows at verification."),
    field("Sign as", who), field("Name", name, "optional, needed for the customer"),
    field("Signature", pad, "optional: draw with a finger, pen or mouse"),
    h("div", { class: "inline" },
      h("button", { type: "button", class: "secondary", onclick: () => pad.clear() }, "Clear signature"),
      h("button", { type: "submit" }, "Sign")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { signer: who.value };
    if (name.value.trim()) body.name = name.value.trim();
    if (pad.drawn) body.drawing = pad.toDataURL("image/png");
    try {
      await api.post(`/work-orders/${encodeURIComponent(code)}/sign-off`, body);
      message(`${code} signed off as ${who.value}; the service report is issued.`, "info");
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (failure) {
      message(failure.message);
    }
  });
  return section("Sign off", form);
}

function report(order, code, signatures) {
  const signed = order.events.filter((e) => e.kind === "signed");
  const head = signed.length ? signed[signed.length - 1].hash : null;
  const path = `/work-orders/${encodeURIComponent(code)}/report.pdf`;
  const download = async (copy) => {
    try {
      const file = await api.blob(path, copy ? { copy: true } : undefined);
      const url = URL.createObjectURL(file);
      const link = h("a", { href: url, download: `${code}${copy ? "-copy" : ""}.pdf` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (failure) {
      message(failure.message);
    }
  };
  if (!head) {
    return [h("p", {}, "Not signed yet: the report is issued at sign-off."),
      h("button", { type: "button", class: "secondary", onclick: () => download(true) }, "Draft (unsigned copy, PDF)")];
  }
  const holds = signatures.verdict === "valid";
  const state = holds ? `✓ ${signed.length} signature${signed.length > 1 ? "s" : ""}, each still matching what it signed.`
    : signatures.verdict === "unchecked" ? `Signatures not checked just now: ${signatures.reasons.join("; ")}`
      : `✗ Changed since signing: ${signatures.reasons.join("; ")}`;
  return [
    h("p", { class: holds ? "ok" : "error", "data-signatures": signatures.verdict }, state),
    h("p", {}, "The report was issued at the last sign-off."),
    h("div", { class: "inline" },
      h("button", { type: "button", onclick: () => download(false), "data-report": "issued" }, "Service report (PDF)"),
      h("a", { href: `/verify/${encodeURIComponent(code)}?head=${head}`, target: "_blank", rel: "noopener" },
        "Verification page")),
  ];
}

function describe(event) {
  if (event.kind === "signed") {
    const { statement, signer } = event.data.content;
    return `${statement} sign-off by ${signer.name} (${signer.role})${event.data.content.drawing_sha256 ? ", drawn signature" : ""}`;
  }
  if (event.kind === "report_issued") return `service report issued (sha256 ${event.data.sha256.slice(0, 16)}…)`;
  return null;
}

function timeline(order) {
  return h("ol", { class: "timeline" }, order.events.map((event) => {
    const described = describe(event);
    if (described) {
      return h("li", { "data-kind": event.kind }, h("time", {}, when(event.at)), " ",
        h("strong", {}, event.kind.replace("_", " ")), ` by ${event.actor}`, h("div", { class: "changes" }, described));
    }
    const changes = Object.entries(event.data).filter(([k]) => !["from", "to"].includes(k))
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
    return h("li", {},
      h("time", {}, when(event.at)), " ", h("strong", {}, event.kind.replace("_", " ")), ` by ${event.actor}`,
      event.data.from ? ` (${event.data.from} → ${event.data.to})` : "",
      changes.length ? h("div", { class: "changes" }, changes.slice(0, 8).join(" · ")) : null);
  }));
}

function chain(verdict) {
  return verdict.valid
    ? h("p", { class: "ok", "data-chain": "valid" }, `✓ ${verdict.events} events, each sealed with the gateway's key; the chain is complete and matches the work order.`)
    : h("p", { class: "error", "data-chain": "broken" }, `✗ Broken at event ${verdict.broken_at}: ${verdict.reason}`);
}
