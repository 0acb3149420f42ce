// Fleet: every asset with its health, filters, the connector strip; live from the stream.
import * as api from "../api.js";
import { ago, h, HEALTH_LABELS, healthBadge, replace, section, select, field, table } from "../ui.js";

export async function render(main, _params, context) {
  const filters = { site_id: "", type: "", health: "" };
  const fromHash = new URLSearchParams(location.hash.split("?")[1] || "");
  const strip = h("ul", { class: "connectors", "aria-label": "Connectors" });
  const counts = h("p", { class: "counts", "aria-live": "polite" });
  const body = h("tbody", { id: "fleet-rows" });
  const filterBar = h("form", { class: "filters", "aria-label": "Filter the fleet" });
  const rows = new Map();
  let page = await api.get("/fleet", { limit: 1000 });

  function renderFilters() {
    const control = (name, label, options) => {
      const chooser = select(name, [["", `every ${label}`], ...options], filters[name], { "aria-label": label });
      chooser.addEventListener("change", () => { filters[name] = chooser.value; reload(); });
      return field(label, chooser);
    };
    replace(filterBar,
      control("site_id", "site", page.sites.map((s) => [s.id, s.name])),
      control("type", "type", page.types.map((t) => [t, t])),
      control("health", "health", Object.entries(HEALTH_LABELS)));
  }

  function row(entry) {
    const ageCell = h("td", { "data-age": entry.last_reading_at || "" }, ago(entry.last_reading_at));
    const tr = h("tr", { "data-device": entry.id, "data-health": entry.health },
      h("th", { scope: "row" }, h("a", { href: `#/device/${encodeURIComponent(entry.id)}` }, entry.name || entry.id),
        entry.name && entry.name !== entry.id ? h("small", {}, ` ${entry.id}`) : null),
      h("td", {}, healthBadge(entry)),
      h("td", {}, entry.site_name), h("td", {}, entry.type), h("td", {}, entry.model), ageCell,
      h("td", {}, entry.open_work_orders
        ? h("a", { href: `#/board?device_id=${encodeURIComponent(entry.id)}` }, `${entry.open_work_orders} open`) : "—"));
    return tr;
  }

  function renderRows() {
    rows.clear();
    replace(body, page.items.map((entry) => {
      const tr = row(entry);
      rows.set(entry.id, tr);
      return tr;
    }));
    const byHealth = Object.entries(page.health_counts).filter(([, n]) => n)
      .map(([health, n]) => `${n} ${HEALTH_LABELS[health]}`).join(" · ");
    counts.textContent = `${page.total} assets${page.total > page.items.length ? ` (first ${page.items.length} shown)` : ""}: ${byHealth}`;
  }

  async function reload() {
    page = await api.get("/fleet", { limit: 1000, ...filters });
    renderRows();
  }

  function renderConnectors(connectors) {
    replace(strip, connectors.map((c) => h("li", { class: c.connected ? "up" : "down", "data-connector": c.name },
      h("strong", {}, c.name), ` ${c.type} · `, c.connected ? "connected" : "disconnected",
      ` · ${c.readings_per_s.toFixed(0)} readings/s · ${c.errors} errors`)));
  }

  let pending = null;
  function later() {
    // Work-order events come in bursts: one reload for a burst.
    if (!pending) pending = setTimeout(() => { pending = null; reload(); }, 500);
  }
  context.listeners.add((kind, data) => {
    if (kind === "tick") {
      renderConnectors(data.connectors);
      for (const [device, at] of Object.entries(data.last_seen)) {
        const tr = rows.get(device);
        if (tr) {
          const cell = tr.querySelector("[data-age]");
          cell.dataset.age = at;
          cell.textContent = ago(at);
        }
      }
      if (data.health_changed.length) later();
    } else if (kind === "work_order") later();
  });
  const ages = setInterval(() => {
    for (const cell of body.querySelectorAll("[data-age]")) cell.textContent = ago(Number(cell.dataset.age) || null);
  }, 5000);

  if (fromHash.get("health")) filters.health = fromHash.get("health");
  renderFilters();
  renderRows();
  renderConnectors(page.connectors);
  replace(main,
    h("h1", {}, "Fleet"),
    section("Connectors", strip),
    section("Assets", filterBar, counts,
      table(["Asset", "Health", "Site", "Type", "Model", "Last reading", "Work orders"], body,
        { class: "fleet", "aria-label": "Assets and their health" })));
  if (filters.health) reload();
  return () => { clearInterval(ages); if (pending) clearTimeout(pending); };
}
