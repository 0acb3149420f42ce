// Configuration: the sections that change without a restart, edited by the roles that own them. Each edit
// is checked as the file would be (every problem with its path), can be tried on the last days of history,
// and applied with a reason; every revision has its diff and can be restored.
import * as api from "../api.js";
import { badge, field, h, message, replace, section, select, table, when } from "../ui.js";

let lastChange = null;
// The revision the page was drawn from (sent with every change).
let baseRevision = null;
const SECTIONS = ["detectors", "ticketing", "engineers", "sites", "assets", "sources"];
const TITLES = {
  detectors: "Detectors and limit rules", ticketing: "Ticketing, SLA, dispatch and routing", engineers: "Engineer roster",
  sites: "Sites", assets: "Asset registry", sources: "Connectors (sources)",
};

function problems(list) {
  return h("ul", { class: "problems", "aria-label": "Problems" },
    list.map((p) => h("li", {}, h("code", {}, p.field), ": ", p.reason)));
}

function diffView(text) {
  if (!text) return h("p", {}, "No change.");
  return h("pre", { class: "diff" }, text.split("\n").map((line) => h("span", {
    class: line.startsWith("+") && !line.startsWith("+++") ? "added"
      : line.startsWith("-") && !line.startsWith("---") ? "removed" : "" }, `${line}\n`)));
}

function orderRows(orders) {
  return orders.map((o) => h("tr", {}, h("td", {}, o.device_id), h("td", {}, o.failure_mode), h("td", {}, o.priority),
    h("td", {}, when(o.opened_at)), h("td", {}, o.engineer_id || "dispatcher queue"), h("td", {}, o.title)));
}

function dryRunView(result) {
  const columns = ["Device", "Failure mode", "Priority", "Opened", "Engineer", "Title"];
  return h("div", { class: "dry-run" },
    h("p", {}, `Replayed ${result.replayed === "readings" ? `${result.readings} readings` : "the findings"} and ${result.alarms} `
      + `device alarms of ${result.devices} devices since ${when(result.since)}: `
      + `${result.current.work_orders} work orders now, ${result.proposed.work_orders} with the change.`),
    h("h3", {}, `Would open (${result.would_open.length})`),
    result.would_open.length ? table(columns, orderRows(result.would_open), { "aria-label": "Would open" }) : h("p", {}, "None."),
    h("h3", {}, `Would not open (${result.would_not_open.length})`),
    result.would_not_open.length ? table(columns, orderRows(result.would_not_open), { "aria-label": "Would not open" }) : h("p", {}, "None."),
    h("h3", {}, `Would differ (${result.changed.length})`),
    result.changed.length ? h("ul", {}, result.changed.map((c) => h("li", {}, `${c.device_id} ${c.failure_mode} at ${when(c.opened_at)}: `
      + Object.entries(c.differences).map(([k, d]) => `${k} ${d.current ?? "—"} → ${d.proposed ?? "—"}`).join(", ")))) : h("p", {}, "None."));
}

function appliedView(answer) {
  if (!answer.changed) return h("p", {}, "Nothing changed: the section is already like this.");
  const a = answer.applied;
  return h("div", {},
    h("p", { role: "status" }, `Revision ${answer.revision.number} in force (${answer.sections.join(", ")}). `
      + `Detectors started over: ${a.detectors.reset?.join(", ") || "none"}; new checks: ${a.detectors.rechecked?.join(", ") || "none"}; `
      + `connectors restarted: ${a.connectors_restarted.join(", ") || "none"}.`),
    diffView(answer.diff));
}

// Check, try and apply one proposal (`proposal()` gives {value} or {yaml}); the outcome below the buttons.
function actions(name, proposal, editable, done) {
  const reason = h("input", { name: "reason", required: true, minlength: 3, maxlength: 500, size: 50,
    placeholder: "why (kept with the revision)" });
  const days = h("input", { name: "days", type: "number", min: 1, max: 31, value: 7, size: 3 });
  const out = h("div", { class: "outcome", "aria-live": "polite" });
  async function run(what, call) {
    replace(out, h("p", { class: "loading" }, `${what}…`));
    try {
      replace(out, await call());
    } catch (failure) {
      replace(out, h("p", { class: "error", role: "alert" }, failure.message), failure.errors?.length ? problems(failure.errors) : null);
    }
  }
  const check = () => run("Checking", async () => {
    const answer = await api.post(`/config/sections/${name}/validate`, proposal());
    return answer.valid ? h("div", {}, h("p", { class: "ok" }, "Valid. The change would be:"), diffView(answer.diff))
      : h("div", {}, h("p", { class: "error", role: "alert" }, `${answer.problems.length} problem(s); nothing was changed.`),
        problems(answer.problems));
  });
  const tryIt = () => run("Replaying history", async () => dryRunView(
    await api.post("/config/dry-run", { section: name, days: Number(days.value), ...proposal() })));
  const apply = (event) => {
    event.preventDefault();
    return run("Applying", async () => {
      // The revision this page was drawn from: a change someone made meanwhile is not overwritten unseen.
      const answer = await api.put(`/config/sections/${name}`, { reason: reason.value, base_revision: baseRevision, ...proposal() });
      done(answer);
      return appliedView(answer);
    });
  };
  if (!editable) return h("p", {}, "Your role reads this section; its editors change it.");
  return h("form", { class: "config-actions", onsubmit: apply },
    h("div", { class: "row" },
      h("button", { type: "button", class: "secondary", onclick: check }, "Check"),
      h("span", {}, h("button", { type: "button", class: "secondary", onclick: tryIt }, "Try on history"), " last ", days, " days"),
      field("Reason", reason), h("button", { type: "submit" }, "Apply")),
    out);
}

// A list of a section (rules, policies, assets) as a table of inputs: edit, add and remove rows. `columns`:
// [key, label, type ("text", "number" or a list of choices)]; `blank`: a new row; `put(items)`: the section.
function listEditor({ title, hint, items, columns, blank, put, section: name, editable, done, noun }) {
  const body = h("tbody");
  function cell(item, [key, label, type]) {
    const attributes = { name: key, "aria-label": label, disabled: !editable };
    if (Array.isArray(type)) return h("td", {}, select(key, type, item[key] ?? type[0], attributes));
    return h("td", {}, h("input", { ...attributes, type, step: type === "number" ? "any" : undefined,
      value: item[key] ?? "", size: type === "number" ? 6 : 12 }));
  }
  function row(item) {
    const remove = editable ? h("button", { type: "button", class: "link", onclick: () => tr.remove() }, "remove") : null;
    const tr = h("tr", { "data-item": "" }, columns.map((column) => cell(item, column)), h("td", {}, remove));
    tr.item = item;
    return tr;
  }
  for (const item of items) body.append(row(item));
  const value = () => ({ value: put([...body.querySelectorAll("tr[data-item]")].map((tr) => {
    const item = { ...tr.item };
    for (const input of tr.querySelectorAll("input, select")) {
      const text = input.value.trim();
      item[input.name] = input.type === "number" ? (text === "" ? null : Number(text)) : text;
    }
    return item;
  })) });
  const add = editable ? h("button", { type: "button", class: "secondary", onclick: () => body.append(row({ ...blank })) },
    `Add ${noun}`) : null;
  return section(title, hint ? h("p", {}, hint) : null,
    table([...columns.map(([, label]) => label), ""], body, { "aria-label": title, class: "rules" }),
    add, actions(name, value, editable, done));
}

function limitRules(current, editable, done) {
  return listEditor({
    title: "Limit rules", section: "detectors", editable, done, noun: "a rule", items: current.rules,
    hint: "A reading beyond a limit for ‘on delay’ samples in a row raises a finding with the failure mode.",
    columns: [["device_type", "device type", "text"], ["metric", "metric", "text"], ["low", "low", "number"],
      ["high", "high", "number"], ["on_delay", "on delay", "number"], ["failure_mode", "failure mode", "text"]],
    blank: { device_type: "", metric: "", high: null, low: null, on_delay: 3, failure_mode: "" },
    put: (rules) => ({ ...current, rules }),
  });
}

function slaPolicies(current, editable, done) {
  return listEditor({
    title: "SLA policies", section: "ticketing", editable, done, noun: "a policy", items: current.sla.policies,
    hint: "Seconds from detection to a response, to an engineer on site, to the asset restored; a policy for a "
      + "criticality beats the priority's * policy.",
    columns: [["priority", "priority", ["P1", "P2", "P3", "P4"]], ["criticality", "criticality", ["*", "high", "medium", "low"]],
      ["respond_s", "respond (s)", "number"], ["on_site_s", "on site (s)", "number"], ["restore_s", "restore (s)", "number"]],
    blank: { priority: "P2", criticality: "*", respond_s: 3600, on_site_s: 14400, restore_s: 86400 },
    put: (policies) => ({ ...current, sla: { ...current.sla, policies } }),
  });
}

function assetRegistry(assets, sites, editable, done) {
  return listEditor({
    title: "Assets", section: "assets", editable, done, noun: "an asset", items: assets,
    hint: "Add a device, retire one (remove it), or move it to another site; its readings are accepted at once.",
    columns: [["id", "id", "text"], ["name", "name", "text"], ["type", "type", "text"], ["model", "model", "text"],
      ["serial", "serial", "text"], ["site", "site", sites.map((site) => site.id)],
      ["criticality", "criticality", ["high", "medium", "low"]]],
    blank: { id: "", name: "", type: "pump", model: "", serial: "", site: sites[0]?.id, criticality: "medium" },
    put: (items) => items,
  });
}

// Dispatch weights and the travel limit, and the routing rules tried on an example.
function dispatchForm(current, editable, done) {
  const limit = h("input", { name: "max_travel_min", type: "number", min: 1, step: "any", size: 6,
    value: current.dispatch.max_travel_min ?? "", disabled: !editable });
  const value = () => ({ value: { ...current, dispatch: { ...current.dispatch,
    max_travel_min: limit.value.trim() === "" ? null : Number(limit.value) } } });
  return section("Dispatch limits",
    field("Travel limit (minutes)", limit, "nobody further away is sent; the order goes to the dispatcher queue. Empty: no limit"),
    actions("ticketing", value, editable, done));
}

// A rule's conditions or actions as a plant engineer reads them: only what is set.
function describe(part) {
  const set = Object.entries(part).filter(([key, value]) => value !== null && value !== false
    && !(Array.isArray(value) && !value.length) && !(key === "timezone" && value === "UTC"));
  return set.map(([key, value]) => `${key.replaceAll("_", " ")} ${Array.isArray(value) ? value.join(", ") : value}`).join("; ")
    || "always";
}

function routingTester(current, sites) {
  const priority = select("priority", ["P1", "P2", "P3", "P4"], "P2");
  const site = select("site", sites.map((s) => [s.id, s.name || s.id]), sites[0]?.id);
  const type = h("input", { name: "device_type", value: "pump", size: 10 });
  const mode = h("input", { name: "failure_mode", value: "VIB", size: 5 });
  const out = h("div", { "aria-live": "polite" });
  const test = async (event) => {
    event.preventDefault();
    const answer = await api.post("/config/routing/test", { examples: [{ priority: priority.value, site: site.value,
      device_type: type.value, failure_mode: mode.value }] });
    const outcome = answer.results[0].outcome;
    const { matched, ...decided } = outcome;
    replace(out, h("p", { class: "routing-outcome" }, matched?.length
      ? `Matches ${matched.join(", ")}: ${describe(decided)}` : "No rule matches: the order opens as usual."));
  };
  return section(`Routing rules (${current.routing.length})`,
    current.routing.length ? h("ol", {}, current.routing.map((r) => h("li", {}, h("strong", {}, r.name), r.enabled ? "" : " (disabled)",
      ` — when ${describe(r.when)}; then ${describe(r.then)}`)))
      : h("p", {}, "No routing rules. Add them in the YAML below (ticketing → routing)."),
    h("form", { class: "row", onsubmit: test, "aria-label": "Test routing" }, h("strong", {}, "Test on an example: "),
      field("Priority", priority), field("Site", site), field("Device type", type), field("Failure mode", mode),
      h("button", { type: "submit", class: "secondary" }, "Test")), out);
}

function yamlEditor(name, text, editable, done) {
  const area = h("textarea", { name: "yaml", rows: Math.min(40, text.split("\n").length + 2), cols: 100,
    spellcheck: "false", readonly: !editable, "aria-label": `${name} as YAML` }, text);
  return section(`${TITLES[name]} as YAML`, h("p", {}, "The section as in the configuration file; ******** keeps a secret as it is."),
    area, actions(name, () => ({ yaml: area.value }), editable, done));
}

function history(revisions, context, done) {
  const detail = h("div", { "aria-live": "polite" });
  const rows = revisions.items.map((r) => h("tr", { "data-revision": r.number },
    h("td", {}, String(r.number)), h("td", {}, when(r.at)), h("td", {}, r.author), h("td", {}, r.source),
    h("td", {}, r.sections.join(", ")), h("td", {}, r.reason + (r.restored_from ? ` (restores ${r.restored_from})` : "")),
    h("td", {},
      h("button", { type: "button", class: "link", onclick: async () => replace(detail, h("h3", {}, `Revision ${r.number}`),
        diffView((await api.get(`/config/revisions/${r.number}`)).diff)) }, "diff"),
      context.can("config.change") ? [" · ", h("button", { type: "button", class: "link", onclick: async () => {
        const reason = window.prompt(`Why restore revision ${r.number}?`);
        if (!reason) return;
        try {
          const answer = await api.post(`/config/revisions/${r.number}/restore`, { reason });
          done(answer);
          replace(detail, appliedView(answer));
        } catch (failure) {
          replace(detail, h("p", { class: "error", role: "alert" }, failure.message), failure.errors?.length ? problems(failure.errors) : null);
        }
      } }, "restore")] : null)));
  return section("Revisions", table(["#", "When", "By", "From", "Sections", "Reason", ""], rows, { "aria-label": "Revisions" }), detail);
}

export async function render(main, [chosen], context) {
  const name = SECTIONS.includes(chosen) ? chosen : "detectors";
  const [status, part, revisions, fleet] = await Promise.all([
    api.get("/config"), api.get(`/config/sections/${name}`), api.get("/config/revisions", { limit: 20 }), api.get("/fleet", { limit: 1 })]);
  const editable = context.can("config.change") && status.sections[name].includes(context.me.role);
  const rerender = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  // A change re-renders the page from what is now in force; its outcome stays on top until the next one.
  const done = (answer) => {
    if (!answer.changed) return;
    lastChange = { section: name, view: appliedView(answer) };
    message(`Revision ${answer.revision.number} is in force.`, "info");
    rerender();
  };
  const shownChange = lastChange && lastChange.section === name ? section("Last change", lastChange.view) : null;
  const revision = status.revision;
  baseRevision = revision ? revision.number : null;
  const exportLink = h("button", { type: "button", class: "secondary", onclick: async () => {
    const text = await api.get("/config/export");
    const link = h("a", { href: URL.createObjectURL(new Blob([text], { type: "application/yaml" })), download: "gateway.yaml" });
    link.click();
  } }, "Export as YAML");
  const tabs = h("nav", { class: "tabs", "aria-label": "Sections" }, SECTIONS.map((s) => h("a", {
    href: `#/settings/${s}`, "aria-current": s === name ? "page" : undefined }, s,
    status.sections[s].includes(context.me.role) ? null : h("small", {}, " (read)"))));
  replace(main, h("h1", {}, "Configuration"),
    h("p", { class: "config-status" },
      revision ? `Revision ${revision.number} by ${revision.author}, ${when(revision.at)} (${revision.source}). ` : "",
      status.runtime_changes ? badge("runtime changes in force over the file", "health-anomalous") : badge("as the file says", "health-healthy"),
      status.superseded.length ? ` The file changed at start-up and took over from revisions ${status.superseded.join(", ")}.` : "",
      status.restart_needed.length ? h("strong", {}, ` Waiting for a restart: ${status.restart_needed.join(", ")}.`) : "",
      " ", exportLink, " ", h("button", { type: "button", class: "link", onclick: rerender }, "reload")),
    tabs, shownChange,
    h("p", {}, TITLES[name], editable ? "" : " — read only for your role",
      ` · edited by ${status.sections[name].map((r) => r.replace("_", " ")).join(", ")}`),
    name === "detectors" ? limitRules(part.effective, editable, done) : null,
    name === "ticketing" ? [dispatchForm(part.effective, editable, done), slaPolicies(part.effective, editable, done),
      routingTester(part.effective, fleet.sites)] : null,
    name === "assets" ? assetRegistry(part.effective, (await api.get("/config/sections/sites")).effective, editable, done) : null,
    yamlEditor(name, part.yaml, editable, done),
    history(revisions, context, done));
}
