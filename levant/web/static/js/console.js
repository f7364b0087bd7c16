// The console: API keys, usage (chart, table, CSV), limits and policy, members, the catalogue.
// Reads the public /v1/usage and /v1/models routes plus /api/console; writes keys only.

import { api, ApiError, me, signOut } from "./api.js";
import { barChart, PALETTE } from "./chart.js";
import { $, clear, copyButton, formatDate, h } from "./dom.js";
import { setupThemeToggle, showSignIn } from "./signin.js";

let identity = null;

async function boot() {
  setupThemeToggle($("#theme-toggle"));
  identity = await me();
  if (!identity) {
    document.querySelectorAll("[data-signed-in]").forEach((el) => (el.hidden = true));
    showSignIn($("#signin-view"), () => location.reload());
    return;
  }
  $("#signin-view").hidden = true;
  $("#console-view").hidden = false;
  document.querySelectorAll("[data-signed-in]").forEach((el) => (el.hidden = false));
  $("#whoami").textContent = `${identity.display} · workspace ${identity.workspace.name}`;
  $("#sign-out").addEventListener("click", async () => {
    await signOut();
    location.reload();
  });
  const admin = identity.role === "admin";
  $("#create-key").hidden = !admin;
  if (!admin) {
    $("#keys-note").textContent = "Only a workspace admin signed in with a password can create or revoke keys.";
    $("#keys-note").hidden = false;
  }
  $("#create-key").addEventListener("submit", createKey);
  $("#usage-days").addEventListener("change", loadUsage);
  $("#usage-metric").addEventListener("change", loadUsage);
  $("#usage-refresh").addEventListener("click", loadUsage);
  let resizeTimer;
  let lastWidth = window.innerWidth;
  window.addEventListener("resize", () => {
    if (window.innerWidth === lastWidth) return;
    lastWidth = window.innerWidth;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(loadUsage, 300); // redraw the chart at its new width
  });
  await Promise.all([loadKeys(), loadUsage(), loadPolicy(), loadMembers(), loadCatalogue()]);
  document.body.dataset.ready = "true";
}

// ---- keys --------------------------------------------------------------------------------

async function loadKeys() {
  const { data } = await api("/api/console/keys");
  const admin = identity.role === "admin";
  clear($("#keys-table tbody")).append(
    ...data.map((k) =>
      h(
        "tr",
        { dataset: { keyId: k.id } },
        h("td", {}, k.name),
        h("td", {}, h("code", {}, k.prefix)),
        h("td", {}, formatDate(k.created_at)),
        h("td", {}, k.last_used_at ? formatDate(k.last_used_at) : "never"),
        h("td", {}, h("span", { class: `badge status-${k.status}` }, k.status)),
        h(
          "td",
          {},
          admin && k.status === "active"
            ? h("button", { type: "button", class: "danger small", "aria-label": `Revoke key ${k.name}`, onclick: () => revokeKey(k) }, "Revoke")
            : null,
        ),
      ),
    ),
  );
}

async function createKey(event) {
  event.preventDefault();
  const name = $("#key-name").value.trim();
  if (!name) return;
  const created = await api("/api/console/keys", { method: "POST", body: { name } });
  $("#key-name").value = "";
  const box = $("#new-key");
  clear(box).append(
    h("p", {}, h("strong", {}, `Key “${created.name}” created.`), " Copy it now: it is shown only once."),
    h("div", { class: "key-row" }, h("code", { id: "new-key-value" }, created.key), copyButton(() => created.key, "Copy key")),
    h("button", { type: "button", class: "link", onclick: () => (box.hidden = true) }, "I have stored it — hide"),
  );
  box.hidden = false;
  await loadKeys();
}

function revokeKey(key) {
  const dialog = $("#revoke-dialog");
  $("#revoke-text").textContent = `Applications using “${key.name}” (${key.prefix}) stop working at once.`;
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "revoke") return;
      await api(`/api/console/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      await loadKeys();
    },
    { once: true },
  );
  dialog.showModal();
}

// ---- usage -------------------------------------------------------------------------------

const euros = (micros) => `€${(micros / 1e6).toFixed(micros && micros < 10000 ? 4 : 2)}`;
const compact = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : String(Math.round(n)));

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

async function loadUsage() {
  const days = parseInt($("#usage-days").value, 10);
  const metric = $("#usage-metric").value;
  const end = new Date();
  const start = new Date(end.getTime() - (days - 1) * 86400000);
  const query = `start_date=${isoDay(start)}&end_date=${isoDay(end)}`;
  $("#usage-csv").href = `/v1/usage?format=csv&${query}`;
  const { data } = await api(`/v1/usage?${query}`);
  const dayList = [];
  for (let t = new Date(`${isoDay(start)}T00:00:00Z`); isoDay(t) <= isoDay(end); t = new Date(t.getTime() + 86400000)) dayList.push(isoDay(t));
  const models = [...new Set(data.map((r) => r.model))].sort();
  const value = (r) => (metric === "spend" ? r.price_micros : r.prompt_tokens + r.completion_tokens);
  const series = models.map((model) => ({
    model,
    values: dayList.map((day) => data.filter((r) => r.day === day && r.model === model).reduce((s, r) => s + value(r), 0)),
  }));
  const tokens = data.reduce((s, r) => s + r.prompt_tokens + r.completion_tokens, 0);
  const spend = data.reduce((s, r) => s + r.price_micros, 0);
  const requests = data.reduce((s, r) => s + r.requests, 0);
  $("#usage-summary").textContent = `${requests.toLocaleString()} requests · ${tokens.toLocaleString()} tokens · ${euros(spend)} in the last ${days} days`;
  const chart = $("#usage-chart");
  chart.dataset.totalTokens = String(tokens);
  chart.dataset.requests = String(requests);
  clear(chart).append(
    barChart({
      days: dayList,
      series,
      format: metric === "spend" ? euros : compact,
      label: `${metric === "spend" ? "Spend" : "Tokens"} per day and model, last ${days} days`,
      width: Math.max(320, Math.min(chart.clientWidth || 720, 1100)),
    }),
  );
  clear($("#usage-legend")).append(
    ...(models.length
      ? models.map((m, n) => h("span", { class: "legend-item" }, h("span", { class: "swatch", dataset: { colour: String(n) }, style: null }), m))
      : [h("span", { class: "muted" }, "No usage in this period yet.")]),
  );
  // Swatch colours are set through the CSSOM (CSP forbids inline style attributes).
  document.querySelectorAll("#usage-legend .swatch").forEach((el) => (el.style.background = PALETTE[Number(el.dataset.colour) % PALETTE.length]));
  clear($("#usage-table tbody")).append(
    ...[...data].reverse().map((r) =>
      h(
        "tr",
        {},
        h("td", {}, r.day),
        h("td", {}, r.model),
        h("td", { class: "num" }, r.requests.toLocaleString()),
        h("td", { class: "num" }, r.prompt_tokens.toLocaleString()),
        h("td", { class: "num" }, r.completion_tokens.toLocaleString()),
        h("td", { class: "num" }, r.cached_tokens.toLocaleString()),
        h("td", { class: "num" }, euros(r.price_micros)),
      ),
    ),
  );
}

// ---- policy ------------------------------------------------------------------------------

function limitText(l) {
  const parts = [];
  if (l.requests_per_second != null) parts.push(`${l.requests_per_second} requests/s`);
  if (l.tokens_per_minute != null) parts.push(`${l.tokens_per_minute.toLocaleString()} tokens/min`);
  if (l.tokens_per_month != null) parts.push(`${l.tokens_per_month.toLocaleString()} tokens/month`);
  if (l.monthly_budget_micros != null) parts.push(`${euros(l.monthly_budget_micros)}/month budget`);
  return parts.join(" · ") || "no limit";
}

async function loadPolicy() {
  const p = await api("/api/console/policy");
  const ws = p.workspace;
  const dl = (pairs) => h("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const limits = p.limits.length
    ? h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Key"), h("th", { scope: "col" }, "Model"), h("th", { scope: "col" }, "Limits"))),
          h("tbody", {}, p.limits.map((l) => h("tr", {}, h("td", {}, l.key_id === "*" ? "every key" : l.key_id), h("td", {}, l.model === "*" ? "every model" : l.model), h("td", {}, limitText(l))))),
        ),
      )
    : h("p", {}, p.default_limits ? `No workspace limits stored; server defaults apply: ${limitText(p.default_limits)}.` : "No limits configured: requests are not rate-limited or capped.");
  clear($("#policy-body")).append(
    h("h3", {}, "Residency and retention"),
    dl([
      ["Workspace", `${ws.name} (${ws.id})`],
      ["Retention", ws.retention === "zero" ? "zero — no prompt or completion text is stored anywhere" : "standard — conversations are kept until deleted"],
      ["Allowed regions", ws.allowed_regions && ws.allowed_regions.length ? ws.allowed_regions.join(", ") : "any region"],
      ["This gateway's region", p.gateway_region],
    ]),
    h("h3", {}, "Limits"),
    limits,
    h("h3", {}, "Grants"),
    p.grants.length
      ? h("ul", {}, p.grants.map((g) => h("li", {}, h("code", {}, g))))
      : h("p", {}, "No commercial-track models granted; open models need no grant."),
    h("p", { class: "muted small" }, "Admins change limits, grants and residency with the levant limits, grants and residency commands, or through /api/console/workspaces."),
  );
}

// ---- members -----------------------------------------------------------------------------

async function loadMembers() {
  const note = $("#members-note");
  let data = [];
  try {
    ({ data } = await api(`/api/console/workspaces/${encodeURIComponent(identity.workspace.id)}/members`));
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 403) throw err;
    note.textContent = "Sign in as a member of this workspace to see who else is in it.";
    note.hidden = false;
  }
  clear($("#members-table tbody")).append(
    ...data.map((m) =>
      h(
        "tr",
        { dataset: { userId: m.user_id } },
        h("td", {}, m.email),
        h("td", {}, h("span", { class: "badge" }, m.role)),
        h("td", {}, formatDate(m.created_at)),
      ),
    ),
  );
}

// ---- catalogue ---------------------------------------------------------------------------

async function loadCatalogue() {
  const { data } = await api("/api/console/catalogue");
  clear($("#catalogue-table tbody")).append(
    ...data.map((m) =>
      h(
        "tr",
        {},
        h("td", {}, h("strong", {}, m.name || m.id), h("br"), h("code", { class: "small" }, m.id)),
        h("td", {}, h("span", { class: `badge track-${m.track}` }, m.track)),
        h("td", {}, m.licence_url ? h("a", { href: m.licence_url, target: "_blank", rel: "noopener noreferrer" }, m.licence) : m.licence),
        h("td", { class: "num" }, m.max_context_length.toLocaleString()),
        h("td", {}, m.regions.join(", ")),
        h("td", {}, m.pricing ? `${m.pricing.input_per_million} in / ${m.pricing.output_per_million} out ${m.pricing.currency}` : "free"),
        h(
          "td",
          {},
          m.weights_url
            ? [h("a", { href: m.weights_url }, "manifest"), ...m.files.map((f) => [h("br"), h("a", { href: `${m.weights_url}/${f.path}`, download: "" }, `${f.path} (${(f.size / 1e6).toFixed(0)} MB)`)])]
            : h("span", { class: "muted" }, "API only"),
        ),
      ),
    ),
  );
}

boot().catch((err) => {
  const banner = h("p", { class: "banner error", role: "alert" }, err.message || String(err));
  document.body.prepend(banner);
});
