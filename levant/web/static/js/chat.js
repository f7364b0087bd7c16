// The chat app: conversations on the left, the current one on the right, replies streamed
// from the public POST /v1/chat/completions. History is saved through /api/conversations
// (unless the workspace has zero retention). Model and user text reach the DOM only as text.

import { ApiError, api, headers, me, signOut, sseEvents } from "./api.js";
import { $, clear, copyButton, h, relativeTime } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { setupThemeToggle, showSignIn } from "./signin.js";

const DEFAULTS = { instructions: "", temperature: 0.7, max_tokens: 512 };

const state = {
  me: null,
  models: [],
  conversation: null, // the stored conversation (null: a draft not saved yet)
  messages: [], // {role, content, model, finish_reason}; index === seq on the server
  settings: { ...DEFAULTS },
  model: null,
  streaming: null, // {controller, message}
};

const stores = () => state.me && state.me.stores_conversations;

// ---- boot --------------------------------------------------------------------------------

async function boot() {
  setupThemeToggle($("#theme-toggle"));
  state.me = await me();
  if (!state.me) {
    $("#chat-view").hidden = true;
    document.querySelectorAll("[data-signed-in]").forEach((el) => (el.hidden = true));
    showSignIn($("#signin-view"), () => location.reload());
    return;
  }
  wireEvents(); // before any control shows: a click never lands on an unwired button
  $("#signin-view").hidden = true;
  $("#chat-view").hidden = false;
  document.querySelectorAll("[data-signed-in]").forEach((el) => (el.hidden = false));
  $("#retention-banner").hidden = stores();
  if (!stores()) {
    const note = $("#history-note");
    note.textContent = "History is off in this workspace (zero retention).";
    note.hidden = false;
    $("#search").hidden = true;
  }
  await loadModels();
  await refreshList();
  const id = new URLSearchParams(location.hash.slice(1)).get("c");
  if (id && stores()) await openConversation(id);
  else newChat();
  document.body.dataset.ready = "true";
}

async function loadModels() {
  const { data } = await api("/api/console/catalogue");
  state.models = data.filter((m) => m.capabilities.completion_chat);
  const picker = $("#model-picker");
  clear(picker).append(...state.models.map((m) => h("option", { value: m.id }, m.name || m.id)));
  state.model = state.models.length ? state.models[0].id : null;
  showModelInfo();
}

function showModelInfo() {
  const info = $("#model-info");
  const card = state.models.find((m) => m.id === state.model);
  $("#model-picker").value = state.model || "";
  if (!card) {
    info.textContent = state.models.length ? "" : "No model is available to this workspace.";
    return;
  }
  const licence = card.licence_url
    ? h("a", { href: card.licence_url, target: "_blank", rel: "noopener noreferrer" }, card.licence)
    : card.licence;
  clear(info).append(
    h("span", { class: `badge track-${card.track}` }, card.track === "open" ? "open weights" : "commercial"),
    " · licence ",
    licence,
    ` · ${card.max_context_length.toLocaleString()} tokens context · region ${card.regions.join(", ")}`,
  );
}

function wireEvents() {
  $("#composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("#composer-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $("#stop").addEventListener("click", stop);
  $("#new-chat").addEventListener("click", () => {
    newChat();
    closeSidebarOnNarrow();
  });
  $("#model-picker").addEventListener("change", async (e) => {
    state.model = e.target.value;
    showModelInfo();
    if (state.conversation) await patch({ model: state.model });
  });
  let searchTimer;
  $("#search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(refreshList, 200);
  });
  $("#open-settings").addEventListener("click", openSettings);
  $("#temperature").addEventListener("input", (e) => ($("#temperature-value").textContent = e.target.value));
  $("#settings-dialog").addEventListener("close", saveSettings);
  $("#rename").addEventListener("click", () => {
    $("#rename-input").value = state.conversation.name;
    $("#rename-dialog").showModal();
  });
  $("#rename-dialog").addEventListener("close", async () => {
    const name = $("#rename-input").value.trim();
    if ($("#rename-dialog").returnValue === "save" && name) await patch({ name });
  });
  $("#delete").addEventListener("click", () => $("#delete-dialog").showModal());
  $("#delete-dialog").addEventListener("close", async () => {
    if ($("#delete-dialog").returnValue !== "delete") return;
    await api(`/api/conversations/${state.conversation.id}`, { method: "DELETE" });
    newChat();
    await refreshList();
  });
  $("#export-md").addEventListener("click", () => download("markdown"));
  $("#export-json").addEventListener("click", () => download("json"));
  $("#sign-out").addEventListener("click", async () => {
    await signOut();
    location.hash = "";
    location.reload();
  });
  $("#close-sidebar").addEventListener("click", () => {
    closeSidebarOnNarrow();
    $("#toggle-sidebar").focus();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("sidebar-open")) {
      closeSidebarOnNarrow();
      $("#toggle-sidebar").focus();
    }
  });
  $("#toggle-sidebar").addEventListener("click", () => {
    const open = !document.body.classList.contains("sidebar-open");
    document.body.classList.toggle("sidebar-open", open);
    $("#toggle-sidebar").setAttribute("aria-expanded", String(open));
    if (open) $("#new-chat").focus();
  });
}

function closeSidebarOnNarrow() {
  document.body.classList.remove("sidebar-open");
  $("#toggle-sidebar").setAttribute("aria-expanded", "false");
}

// ---- conversations -----------------------------------------------------------------------

async function refreshList() {
  const list = $("#conversation-list");
  if (!stores()) return clear(list);
  const q = $("#search").value.trim();
  const { data } = await api(`/api/conversations${q ? `?q=${encodeURIComponent(q)}` : ""}`);
  clear(list).append(
    ...data.map((c) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "conversation-item",
            "aria-current": state.conversation && state.conversation.id === c.id ? "page" : null,
            dataset: { id: c.id },
            onclick: async () => {
              await openConversation(c.id);
              closeSidebarOnNarrow();
            },
          },
          h("span", { class: "conversation-name" }, c.name),
          h("span", { class: "muted small" }, relativeTime(c.updated_at)),
        ),
      ),
    ),
  );
  if (!data.length) list.append(h("li", { class: "muted small empty" }, q ? "No conversation matches." : "No conversations yet."));
}

function newChat() {
  if (state.streaming) stop();
  state.conversation = null;
  state.messages = [];
  state.settings = { ...DEFAULTS };
  if (state.models.length && !state.models.some((m) => m.id === state.model)) state.model = state.models[0].id;
  history.replaceState(null, "", location.pathname);
  render();
  refreshList();
  $("#composer-input").focus();
}

async function openConversation(id) {
  if (state.streaming) stop();
  let conv;
  try {
    conv = await api(`/api/conversations/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return newChat();
    throw err;
  }
  state.conversation = conv;
  state.messages = conv.messages.map(({ role, content, model, finish_reason }) => ({ role, content, model, finish_reason }));
  state.settings = {
    instructions: conv.instructions || "",
    temperature: conv.completion_args.temperature ?? DEFAULTS.temperature,
    max_tokens: conv.completion_args.max_tokens ?? DEFAULTS.max_tokens,
  };
  if (state.models.some((m) => m.id === conv.model)) state.model = conv.model;
  history.replaceState(null, "", `#c=${encodeURIComponent(conv.id)}`);
  render();
  refreshList();
}

async function ensureConversation(firstMessage) {
  if (state.conversation || !stores()) return;
  const name = firstMessage.replace(/\s+/g, " ").trim().slice(0, 60) || "New chat";
  state.conversation = await api("/api/conversations", {
    method: "POST",
    body: {
      name,
      model: state.model,
      instructions: state.settings.instructions || null,
      completion_args: { temperature: state.settings.temperature, max_tokens: state.settings.max_tokens },
    },
  });
  history.replaceState(null, "", `#c=${encodeURIComponent(state.conversation.id)}`);
  renderHeader();
}

async function patch(body) {
  if (!state.conversation) return renderHeader();
  state.conversation = { ...state.conversation, ...(await api(`/api/conversations/${state.conversation.id}`, { method: "PATCH", body })) };
  renderHeader();
  await refreshList();
}

async function persist(message) {
  if (!state.conversation || !stores()) return;
  await api(`/api/conversations/${state.conversation.id}/messages`, {
    method: "POST",
    body: { role: message.role, content: message.content, model: message.model || null, finish_reason: message.finish_reason || null },
  });
}

async function truncate(fromSeq) {
  state.messages = state.messages.slice(0, fromSeq);
  if (state.conversation && stores()) {
    await api(`/api/conversations/${state.conversation.id}/messages?from_seq=${fromSeq}`, { method: "DELETE" });
  }
}

async function download(format) {
  const res = await fetch(`/api/conversations/${state.conversation.id}/export?format=${format}`, { credentials: "same-origin" });
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: `${state.conversation.name}.${format === "json" ? "json" : "md"}` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---- settings ----------------------------------------------------------------------------

function openSettings() {
  $("#system-prompt").value = state.settings.instructions;
  $("#temperature").value = state.settings.temperature;
  $("#temperature-value").textContent = state.settings.temperature;
  $("#max-tokens").value = state.settings.max_tokens;
  $("#settings-dialog").showModal();
}

async function saveSettings() {
  if ($("#settings-dialog").returnValue !== "save") return;
  const maxTokens = parseInt($("#max-tokens").value, 10);
  state.settings = {
    instructions: $("#system-prompt").value,
    temperature: parseFloat($("#temperature").value),
    max_tokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : DEFAULTS.max_tokens,
  };
  await patch({
    instructions: state.settings.instructions || null,
    completion_args: { temperature: state.settings.temperature, max_tokens: state.settings.max_tokens },
  });
}

// ---- sending and streaming ---------------------------------------------------------------

async function send() {
  const input = $("#composer-input");
  const text = input.value;
  if (!text.trim() || state.streaming || !state.model) return;
  input.value = "";
  try {
    const isNew = !state.conversation;
    await ensureConversation(text);
    const message = { role: "user", content: text };
    state.messages.push(message);
    renderMessages();
    await persist(message);
    if (isNew) refreshList();
  } catch (err) {
    showError(err);
    return;
  }
  await generate();
  refreshList();
}

function stop() {
  if (state.streaming) state.streaming.controller.abort();
}

async function generate() {
  const history = state.messages.map(({ role, content }) => ({ role, content }));
  if (state.settings.instructions.trim()) history.unshift({ role: "system", content: state.settings.instructions });
  const message = { role: "assistant", content: "", model: state.model, finish_reason: null };
  state.messages.push(message);
  const controller = new AbortController();
  state.streaming = { controller, message };
  setStreaming(true);
  const view = renderMessages();
  let error = null;
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      credentials: "same-origin",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: state.model,
        messages: history,
        stream: true,
        temperature: state.settings.temperature,
        max_tokens: state.settings.max_tokens,
      }),
    });
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
    for await (const event of sseEvents(res.body)) {
      if (event.object === "error" || event.error) throw new ApiError(500, event);
      const choice = event.choices && event.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) {
        message.content += choice.delta.content;
        scheduleUpdate(view, message);
      }
      if (choice.finish_reason) message.finish_reason = choice.finish_reason;
    }
  } catch (err) {
    if (err.name === "AbortError") message.finish_reason = "cancelled";
    else error = err;
  } finally {
    state.streaming = null;
    setStreaming(false);
  }
  if (error && !message.content) {
    state.messages.pop();
    renderMessages();
    showError(error);
    replyEnded(`error: ${error.message || error}`);
    return;
  }
  if (error) message.finish_reason = "error";
  renderMessages();
  $("#status").textContent = message.finish_reason === "cancelled" ? "Reply stopped." : "Reply finished.";
  replyEnded(message.finish_reason || "stop");
  try {
    await persist(message);
  } catch (err) {
    showError(err);
  }
  if (error) showError(error);
}

/** Every reply attempt ends here, failed ones included, so nothing waits on it forever:
 * body[data-replies] counts them and body[data-last-reply] says how the last one ended. */
function replyEnded(outcome) {
  document.body.dataset.lastReply = String(outcome);
  document.body.dataset.replies = String(Number(document.body.dataset.replies || 0) + 1);
}

let pending = null;
function scheduleUpdate(view, message) {
  if (pending) return;
  pending = requestAnimationFrame(() => {
    pending = null;
    fillMessageBody(view.body, message);
    view.scroll();
  });
}

function setStreaming(on) {
  $("#send").hidden = on;
  $("#stop").hidden = !on;
  $("#messages").setAttribute("aria-busy", String(on));
  if (on) $("#stop").focus();
  else if (document.activeElement === document.body || document.activeElement === $("#stop")) $("#composer-input").focus();
}

async function regenerate() {
  if (state.streaming) return;
  const last = state.messages.length - 1;
  if (last < 0 || state.messages[last].role !== "assistant") return;
  try {
    await truncate(last);
  } catch (err) {
    return showError(err);
  }
  await generate();
}

function editMessage(index, bubble) {
  if (state.streaming) return;
  const original = state.messages[index].content;
  const area = h("textarea", { class: "edit-area", "aria-label": "Edit message", rows: "3" });
  area.value = original;
  const save = h("button", { type: "button", class: "primary" }, "Save & send");
  const cancel = h("button", { type: "button" }, "Cancel");
  cancel.addEventListener("click", () => renderMessages());
  save.addEventListener("click", async () => {
    const text = area.value;
    if (!text.trim()) return;
    try {
      await truncate(index);
      const message = { role: "user", content: text };
      state.messages.push(message);
      renderMessages();
      await persist(message);
    } catch (err) {
      return showError(err);
    }
    await generate();
  });
  clear(bubble).append(area, h("div", { class: "message-actions" }, save, cancel));
  area.focus();
}

// ---- rendering ---------------------------------------------------------------------------

function render() {
  renderHeader();
  renderMessages();
  showModelInfo();
}

function renderHeader() {
  $("#conversation-title").textContent = state.conversation ? state.conversation.name : "New chat";
  $("#conversation-actions").hidden = !state.conversation;
}

function fillMessageBody(body, message) {
  clear(body);
  if (message.role === "assistant") body.append(renderMarkdown(message.content));
  else body.append(h("p", { class: "plain" }, message.content));
}

function renderMessages() {
  const list = clear($("#messages"));
  if (!state.messages.length) {
    list.append(
      h(
        "div",
        { class: "empty-chat" },
        h("h2", {}, "What shall we work on?"),
        h("p", { class: "muted" }, "Replies come from the model you pick above, served by this Levant."),
      ),
    );
  }
  let view = null;
  state.messages.forEach((message, index) => {
    const streaming = state.streaming && state.streaming.message === message;
    const body = h("div", { class: "message-body" });
    fillMessageBody(body, message);
    const actions = h("div", { class: "message-actions" });
    const isLast = index === state.messages.length - 1;
    if (message.role === "user" && !state.streaming) {
      actions.append(h("button", { type: "button", class: "link", onclick: () => editMessage(index, body) }, "Edit"));
    }
    if (message.role === "assistant" && !streaming) {
      actions.append(copyButton(() => message.content, "Copy"));
      if (isLast && !state.streaming) actions.append(h("button", { type: "button", class: "link", onclick: regenerate }, "Regenerate"));
      if (message.finish_reason === "cancelled") actions.append(h("span", { class: "muted small" }, "stopped"));
      if (message.finish_reason === "length") actions.append(h("span", { class: "muted small" }, "max tokens reached"));
    }
    const article = h(
      "article",
      {
        class: `message ${message.role}${streaming ? " streaming" : ""}`,
        "aria-label": message.role === "user" ? "You said" : "Assistant replied",
        "aria-busy": streaming ? "true" : null,
      },
      h("div", { class: "message-role" }, message.role === "user" ? "You" : message.model || "Assistant"),
      body,
      actions,
    );
    list.append(article);
    if (streaming) view = { body, scroll: () => (list.scrollTop = list.scrollHeight) };
  });
  list.scrollTop = list.scrollHeight;
  return view;
}

function showError(err) {
  const message = err instanceof Error ? err.message : String(err);
  const banner = h("p", { class: "banner error", role: "alert" }, message);
  $("#messages").append(banner);
  setTimeout(() => banner.remove(), 8000);
}

boot().catch(showError);
