// Small DOM and formatting helpers shared by the pages. No framework: elements are built with h().

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

// The plant's time zone and clock, set once from /plant.
export const plant = { timezone: "UTC", simulatedSpeed: null, offset: 0 };

export function configurePlant(info) {
  plant.timezone = info.timezone;
  plant.simulatedSpeed = info.simulated_speed;
  plant.name = info.name;
  setClock(info.data_now, info.server_now);
}

// In a simulation the plant's "now" is the newest reading's time, which runs ahead of the wall clock.
export function setClock(dataNow, serverNow) {
  if (plant.simulatedSpeed && dataNow) {
    plant.offset = dataNow - serverNow;
    plant.anchor = { data: dataNow, wall: Date.now() / 1000 };
  }
}

export function now() {
  if (plant.simulatedSpeed && plant.anchor) {
    return plant.anchor.data + (Date.now() / 1000 - plant.anchor.wall) * plant.simulatedSpeed;
  }
  return Date.now() / 1000;
}

const formats = {};
function formatter(kind) {
  const key = `${kind}/${plant.timezone}`;
  if (!formats[key]) {
    const options = kind === "time"
      ? { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }
      : { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false };
    formats[key] = new Intl.DateTimeFormat("en-GB", { ...options, timeZone: plant.timezone });
  }
  return formats[key];
}

export function when(epochSeconds) {
  if (epochSeconds === null || epochSeconds === undefined) return "—";
  return formatter("datetime").format(new Date(epochSeconds * 1000));
}

export function hourMinute(epochSeconds) {
  return formatter("time").format(new Date(epochSeconds * 1000)).slice(0, 5);
}

export function clockTime(epochSeconds) {
  return formatter("time").format(new Date(epochSeconds * 1000));
}

// The plant zone's wall time of an instant as the "YYYY-MM-DDTHH:MM" a datetime-local input holds.
export function toPlantInput(epochSeconds) {
  const parts = Object.fromEntries(formatter("datetime").formatToParts(new Date(epochSeconds * 1000))
    .map((p) => [p.type, p.value]));
  const hour = parts.hour === "24" ? "00" : parts.hour;
  return `${parts.year}-${parts.month}-${parts.day}T${hour}:${parts.minute}`;
}

// The instant a plant-zone wall time names (NaN when the text is not one); DST gaps resolve forwards.
export function fromPlantInput(text) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(text || "");
  if (!match) return NaN;
  const [year, month, day, hour, minute] = match.slice(1).map(Number);
  const asUtc = Date.UTC(year, month - 1, day, hour, minute) / 1000;
  const offset = (t) => fromPlantParts(t) - t;
  let guess = asUtc - offset(asUtc);
  guess = asUtc - offset(guess);
  return guess;
}

function fromPlantParts(epochSeconds) {
  const [date, time] = toPlantInput(epochSeconds).split("T");
  const [year, month, day] = date.split("-").map(Number);
  const [hour, minute] = time.split(":").map(Number);
  return Date.UTC(year, month - 1, day, hour, minute) / 1000 + (Math.floor(epochSeconds) % 60);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  const sign = seconds < 0 ? "−" : "";
  let rest = Math.abs(seconds);
  if (rest < 90) return `${sign}${Math.round(rest)} s`;
  if (rest < 5400) return `${sign}${Math.round(rest / 60)} min`;
  if (rest < 172800) return `${sign}${(rest / 3600).toFixed(1)} h`;
  return `${sign}${(rest / 86400).toFixed(1)} d`;
}

export function ago(epochSeconds) {
  if (!epochSeconds) return "never";
  return `${duration(now() - epochSeconds)} ago`;
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || ""}` }, text);
}

export const HEALTH_LABELS = {
  healthy: "healthy", warming_up: "warming up", anomalous: "anomalous", work_order: "open work order",
  offline: "offline", maintenance: "in maintenance", degraded: "readings refused",
};

export function healthBadge(entry) {
  const label = entry.health === "work_order" ? `work order ${entry.open_priority}` : HEALTH_LABELS[entry.health];
  const kind = entry.health === "work_order" ? `health-wo ${entry.open_priority}` : `health-${entry.health}`;
  return badge(label, kind);
}

export function priorityBadge(priority) {
  return badge(priority, `priority ${priority}`);
}

// An SLA clock's colour: under 50 % used, 50-75 %, 75-100 %, breached.
export function slaClass(used) {
  if (used >= 1) return "sla-breached";
  if (used >= 0.75) return "sla-75";
  if (used >= 0.5) return "sla-50";
  return "sla-ok";
}

export function message(text, kind = "error") {
  const area = document.getElementById("messages");
  const note = h("div", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  area.append(note);
  setTimeout(() => note.remove(), 8000);
}

export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", {}, hint) : null);
}

export function select(name, options, value, attributes = {}) {
  return h("select", { name, ...attributes },
    options.map((option) => {
      const [optionValue, label] = Array.isArray(option) ? option : [option, option];
      return h("option", { value: optionValue, selected: optionValue === value }, label);
    }));
}

// `rows`: the row elements, or a tbody the caller keeps to update.
export function table(columns, rows, attributes = {}) {
  return h("table", attributes,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    rows instanceof HTMLTableSectionElement ? rows : h("tbody", {}, rows));
}

export function section(title, ...children) {
  return h("section", { class: "panel", "aria-label": title }, h("h2", {}, title), children);
}
