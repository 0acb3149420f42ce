// Work-order board: columns by lifecycle state with live SLA countdowns, filters, a sortable list, CSV export.
import * as api from "../api.js";
import { duration, field, h, priorityBadge, replace, section, select, slaClass, table, when } from "../ui.js";

const PER_COLUMN = 50;
const FILTERS = ["site_id", "priority", "state", "engineer_id", "failure_mode", "origin", "created_since", "created_until", "code"];

// The SLA clock that matters next: the first one not met yet, extrapolated from when it was read.
export function nextClock(order, readAt) {
  if (!order.sla) return null;
  for (const [name, clock] of Object.entries(order.sla.clocks)) {
    if (clock.met_at !== null) continue;
    const remaining = clock.deadline - readAt;
    const allowance = clock.used < 1 ? remaining / (1 - clock.used) : null;
    return { name, deadline: clock.deadline, allowance, paused: order.sla.paused, usedAtRead: clock.used, readAt };
  }
  return null;
}

export function clockNow(clock) {
  const wall = Date.now() / 1000;
  const used = clock.paused || !clock.allowance ? clock.usedAtRead : 1 - (clock.deadline - wall) / clock.allowance;
  return { used, remaining: clock.deadline - wall };
}

function countdown(order, readAt) {
  const clock = nextClock(order, readAt);
  if (!clock) return h("span", { class: "sla none" }, "no SLA clock running");
  const element = h("span", { class: "sla", "data-sla": JSON.stringify(clock) });
  paint(element, clock);
  return element;
}

function paint(element, clock) {
  const { used, remaining } = clockNow(clock);
  element.className = `sla ${slaClass(used)}`;
  element.textContent = `${clock.name.replace("_", " ")} ${remaining >= 0 ? `in ${duration(remaining)}` : `overdue ${duration(-remaining)}`}`
    + `${clock.paused ? " (paused)" : ""} · ${Math.round(used * 100)} %`;
}

function card(order, readAt) {
  return h("li", { class: `card ${order.priority}`, "data-code": order.code },
    h("div", {}, h("a", { href: `#/work-orders/${order.code}`, class: "code" }, order.code), " ", priorityBadge(order.priority)),
    h("div", {}, h("a", { href: `#/device/${encodeURIComponent(order.device_id)}` }, order.device_id), ` · ${order.failure_mode}`),
    h("div", { class: "title" }, order.title),
    h("div", {}, order.assigned_engineer_id ? `engineer ${order.assigned_engineer_id}` : "unassigned"),
    countdown(order, readAt));
}

export async function render(main, _params, context) {
  const [lifecycle, fleet, engineers] = await Promise.all([
    api.get("/lifecycle"), api.get("/fleet", { limit: 1 }), api.get("/engineers", { limit: 1000 })]);
  const fromHash = new URLSearchParams(location.hash.split("?")[1] || "");
  const filters = Object.fromEntries(FILTERS.map((name) => [name, fromHash.get(name) || ""]));
  filters.device_id = fromHash.get("device_id") || "";
  let view = "board";
  let sort = "-created_at";
  let listOffset = 0;
  const content = h("div", { class: "board-content" });
  const summary = h("p", { class: "counts", "aria-live": "polite" });

  function period(name, label) {
    const input = h("input", { type: "date", name, "aria-label": label });
    input.addEventListener("change", () => {
      filters[name] = input.value ? Date.parse(input.value) / 1000 + (name === "created_until" ? 86400 : 0) : "";
      load();
    });
    return field(label, input);
  }
  function chooser(name, label, options) {
    const control = select(name, [["", "any"], ...options], filters[name], { "aria-label": label });
    control.addEventListener("change", () => { filters[name] = control.value; load(); });
    return field(label, control);
  }
  const search = h("input", { type: "search", name: "code", placeholder: "WO-…", "aria-label": "search by code", value: filters.code });
  search.addEventListener("input", () => { filters.code = search.value.trim(); load(); });
  const bar = h("form", { class: "filters", "aria-label": "Filter work orders", onsubmit: (e) => e.preventDefault() },
    field("Code", search),
    chooser("site_id", "Site", fleet.sites.map((s) => [s.id, s.name])),
    chooser("priority", "Priority", ["P1", "P2", "P3", "P4"]),
    chooser("state", "State", lifecycle.states),
    chooser("engineer_id", "Engineer", engineers.items.map((e) => [e.id, e.name || e.id])),
    chooser("failure_mode", "Failure mode", Object.entries(lifecycle.failure_modes).map(([code, name]) => [code, `${code} ${name}`])),
    chooser("origin", "Origin", Object.entries(lifecycle.origins)),
    period("created_since", "Opened from"), period("created_until", "Opened until"));

  const views = h("div", { role: "group", "aria-label": "View", class: "ranges" },
    h("button", { type: "button", "aria-pressed": "true", "data-view": "board", onclick: () => switchTo("board") }, "Board"),
    h("button", { type: "button", "aria-pressed": "false", "data-view": "list", onclick: () => switchTo("list") }, "List"),
    h("a", { class: "button", id: "export", href: "#", onclick: exportCsv }, "Export CSV"));

  function switchTo(name) {
    view = name;
    for (const b of views.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.view === name));
    load();
  }

  async function exportCsv(event) {
    event.preventDefault();
    const text = await api.get("/work-orders/export", { ...filters, sort });
    const link = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: "work-orders.csv" });
    document.body.append(link);
    link.click();
    link.remove();
  }

  // Typing in the search box starts a load per key: only the newest one paints.
  let generation = 0;

  async function loadBoard() {
    const mine = ++generation;
    const columns = filters.state ? [filters.state] : lifecycle.board_states;
    const readAt = Date.now() / 1000;
    const pages = await Promise.all(columns.map((state) => api.get("/work-orders", { ...filters, state, limit: PER_COLUMN })));
    if (mine !== generation) return;
    // The columns are read one request each: an order that moved while they were read comes back
    // in both, so only its newest state is drawn (the move's own event reloads the counts).
    const newest = new Map();
    for (const page of pages) for (const order of page.items) {
      if (!newest.has(order.code) || order.updated_at > newest.get(order.code).updated_at) newest.set(order.code, order);
    }
    for (const page of pages) page.items = page.items.filter((order) => newest.get(order.code) === order);
    const total = pages.reduce((sum, page) => sum + page.total, 0);
    summary.textContent = `${total} work order${total === 1 ? "" : "s"} on the board`;
    replace(content, h("div", { class: "board" }, columns.map((state, index) => {
      const page = pages[index];
      return h("section", { class: page.total ? "column" : "column empty", "aria-label": `${state}: ${page.total}`, "data-state": state },
        h("h2", {}, state.replace("_", " "), " ", h("span", { class: "count" }, page.total)),
        h("ol", {}, page.items.map((order) => card(order, readAt))),
        page.total > page.items.length
          ? h("p", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); filters.state = state; switchTo("list"); } },
            `${page.total - page.items.length} more…`)) : null);
    })));
  }

  async function loadList() {
    const mine = ++generation;
    const readAt = Date.now() / 1000;
    const page = await api.get("/work-orders", { ...filters, sort, limit: 100, offset: listOffset });
    if (mine !== generation) return;
    summary.textContent = page.total
      ? `${page.total} work order${page.total === 1 ? "" : "s"}; ${page.offset + 1}–${page.offset + page.items.length} shown`
      : "No work orders match.";
    const header = (label, key) => h("th", { scope: "col", "aria-sort": sort === key ? "ascending" : sort === `-${key}` ? "descending" : "none" },
      h("button", { type: "button", class: "link", onclick: () => { sort = sort === `-${key}` ? key : `-${key}`; loadList(); } }, label));
    replace(content, h("table", { class: "orders", "aria-label": "Work orders" },
      h("thead", {}, h("tr", {}, header("Code", "code"), header("Priority", "priority"), header("State", "state"),
        h("th", { scope: "col" }, "Asset"), h("th", { scope: "col" }, "Failure mode"), h("th", { scope: "col" }, "Engineer"),
        header("Opened", "created_at"), header("Updated", "updated_at"), h("th", { scope: "col" }, "SLA"))),
      h("tbody", {}, page.items.map((o) => h("tr", { "data-code": o.code },
        h("th", { scope: "row" }, h("a", { href: `#/work-orders/${o.code}` }, o.code)), h("td", {}, priorityBadge(o.priority)),
        h("td", {}, o.state), h("td", {}, o.device_id), h("td", {}, o.failure_mode), h("td", {}, o.assigned_engineer_id || "—"),
        h("td", {}, when(o.created_at)), h("td", {}, when(o.updated_at)), h("td", {}, countdown(o, readAt)))))),
      h("nav", { class: "pager", "aria-label": "Pages" },
        h("button", { type: "button", disabled: listOffset === 0, onclick: () => { listOffset = Math.max(0, listOffset - 100); loadList(); } }, "Previous"),
        h("button", { type: "button", disabled: listOffset + 100 >= page.total, onclick: () => { listOffset += 100; loadList(); } }, "Next")));
  }

  function load() {
    listOffset = 0;
    return view === "board" ? loadBoard() : loadList();
  }

  const ticker = setInterval(() => {
    for (const element of content.querySelectorAll("[data-sla]")) paint(element, JSON.parse(element.dataset.sla));
  }, 1000);
  let pending = null;
  context.listeners.add((kind) => {
    if (kind === "work_order" && !pending) pending = setTimeout(() => { pending = null; view === "board" ? loadBoard() : loadList(); }, 300);
  });

  replace(main, h("h1", {}, "Work orders"), section("Filters", bar), h("div", { class: "toolbar" }, views, summary), content);
  await load();
  return () => { clearInterval(ticker); if (pending) clearTimeout(pending); };
}
