// Engineers: skills, certifications, shifts, load, location; a map of sites, engineers and open work
// orders drawn from latitude and longitude alone (no online tiles).
import * as api from "../api.js";
import { h, replace, section, table, when } from "../ui.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) element.append(child);
  return element;
}

function title(text) {
  const element = document.createElementNS(SVG, "title");
  element.textContent = text;
  return element;
}

export function plot(sites, engineers, orders) {
  const width = 720;
  const height = 420;
  const points = [
    ...sites.map((s) => [s.latitude, s.longitude]),
    ...engineers.filter((e) => e.position).map((e) => [e.position.latitude, e.position.longitude]),
  ];
  if (!points.length) return h("p", {}, "Nothing to place.");
  const lats = points.map((p) => p[0]);
  const lons = points.map((p) => p[1]);
  const pad = 0.05;
  let [south, north] = [Math.min(...lats), Math.max(...lats)];
  let [west, east] = [Math.min(...lons), Math.max(...lons)];
  const spanLat = Math.max(north - south, 0.02);
  const spanLon = Math.max(east - west, 0.02);
  south -= spanLat * pad; north += spanLat * pad; west -= spanLon * pad; east += spanLon * pad;
  // Equirectangular, with longitude shrunk by the cosine of the middle latitude so distances look right.
  const squash = Math.cos(((south + north) / 2) * Math.PI / 180);
  const scale = Math.min((width - 40) / ((east - west) * squash), (height - 40) / (north - south));
  // Centred: the narrower extent gets the spare room on both sides.
  const left = (width - (east - west) * squash * scale) / 2;
  const top = (height - (north - south) * scale) / 2;
  const x = (lon) => left + (lon - west) * squash * scale;
  const y = (lat) => top + (north - lat) * scale;
  const openBySite = {};
  for (const order of orders) openBySite[order.site_id] = (openBySite[order.site_id] || []).concat(order);

  const drawing = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "plot",
    "aria-label": `${sites.length} sites, ${engineers.filter((e) => e.position).length} engineers located, ${orders.length} open work orders` });
  drawing.append(svg("rect", { x: 0, y: 0, width, height, class: "plot-bg" }));
  for (const site of sites) {
    const open = openBySite[site.id] || [];
    drawing.append(svg("g", { class: "site", "data-site": site.id },
      title(`${site.name}: ${open.length} open work orders${open.length ? ` (${open.map((o) => o.code).join(", ")})` : ""}`),
      svg("rect", { x: x(site.longitude) - 7, y: y(site.latitude) - 7, width: 14, height: 14 }),
      open.length ? svg("circle", { cx: x(site.longitude) + 9, cy: y(site.latitude) - 9, r: 8, class: "open" }) : "",
      open.length ? svg("text", { x: x(site.longitude) + 9, y: y(site.latitude) - 5, class: "count" }, String(open.length)) : "",
      svg("text", { x: x(site.longitude) + 12, y: y(site.latitude) + 16 }, site.name)));
  }
  for (const engineer of engineers.filter((e) => e.position)) {
    const { latitude, longitude } = engineer.position;
    drawing.append(svg("g", { class: "engineer", "data-engineer": engineer.id },
      title(`${engineer.name || engineer.id}: ${engineer.open_work_orders} open work orders`),
      svg("circle", { cx: x(longitude), cy: y(latitude), r: 6 }),
      svg("text", { x: x(longitude) + 9, y: y(latitude) + 4 }, engineer.name || engineer.id)));
  }
  return h("figure", {}, drawing,
    h("figcaption", {}, "■ site (with its open work orders) · ● engineer at last known location or home; north is up"));
}

export async function render(main) {
  const [engineers, fleet, orders] = await Promise.all([
    api.get("/engineers", { limit: 1000 }), api.get("/fleet", { limit: 1 }), api.get("/work-orders", { open: true, limit: 1000 })]);
  const listed = engineers.items.map((e) => ({ ...e, position: e.last_known_location || e.home }));
  const rows = listed.map((e) => h("tr", { "data-engineer": e.id },
    h("th", { scope: "row" }, e.name || "—", h("small", {}, ` ${e.id}`)),
    h("td", {}, Object.entries(e.skill_levels).map(([skill, level]) => `${skill} ${level}`).join(", ")),
    h("td", {}, e.certifications.map((c) => `${c.name}${c.expires ? ` until ${c.expires}` : ""}`).join(", ") || "—"),
    h("td", {}, `${e.shift.days.join(" ")} ${e.shift.start}–${e.shift.end} ${e.shift.timezone}`,
      e.on_call ? h("div", {}, `on call ${e.on_call.start}–${e.on_call.end}`) : null),
    h("td", {}, e.on_shift ? "on shift" : "off shift", e.available_for.length ? ` · takes ${e.available_for.join(" ")}` : " · unavailable"),
    h("td", {}, `${e.open_work_orders} / ${e.capacity}`),
    h("td", {}, e.last_known_location
      ? `${e.last_known_location.latitude.toFixed(4)}, ${e.last_known_location.longitude.toFixed(4)}`
        + (e.last_known_location.updated_at ? ` (${when(e.last_known_location.updated_at)})` : "")
      : e.home ? "home" : "hidden for your role"),
    h("td", {}, e.phone || e.email ? [e.phone, e.email].filter(Boolean).join(" · ") : "—")));
  replace(main, h("h1", {}, "Engineers"),
    section("Where", plot(fleet.sites, listed, orders.items)),
    section("Bench", table(["Engineer", "Skills (level)", "Certifications", "Shift", "Now", "Load", "Last known location", "Contact"],
      rows, { "aria-label": "Engineers" })));
}
