// The agent-api web console: sign-in, chat with the agent (streamed, tools, approvals) and
// admin pages. Vanilla JS modules, no build step; DOM built with nodes, never HTML strings.
import { api, ApiError, describeError } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const root = document.getElementById("app");
const state = { me: null, models: [], tools: [], conversations: [], nextCursor: null, current: null, run: null, flash: null };

// What a tool card says for each state of its call (others are shown as they are named).
const CARD_STATUS = { "awaiting-approval": "awaiting approval", "no-result": "no result" };

// ---------------------------------------------------------------- DOM helpers
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, ""); // also the default (form.reset keeps it)
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function notify(message, kind = "error") {
  const area = document.getElementById("notices");
  if (!area) return;
  const item = h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", {}, message),
    h("button", { class: "link", type: "button", "aria-label": "Dismiss", onclick: () => item.remove() }, "×"));
  area.append(item);
  if (kind !== "error") setTimeout(() => item.remove(), 4000);
}

// A notice for the next page drawn (shell() replaces the notice area when the route changes).
function flash(message) {
  state.flash = message;
}

function showError(error) {
  notify(describeError(error));
}

function fmtDate(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

function pretty(value) {
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
  }
  return JSON.stringify(value, null, 2);
}

// ---------------------------------------------------------------- shell and routing
api.onSessionEnded = (error) => {
  state.me = null;
  const expired = !error || (error instanceof ApiError && error.status === 401);
  renderLogin(expired ? "Your session has expired or was ended. Please sign in again." : describeError(error));
};

function isAdmin() {
  return state.me && state.me.user && state.me.user.role === "admin";
}

function shell(active) {
  const user = state.me.user;
  const nav = h("nav", { class: "nav", "aria-label": "Main" },
    h("a", { href: "#/chat", class: active === "chat" ? "active" : "" }, "Chat"),
    isAdmin() && h("a", { href: "#/admin/users", class: active === "users" ? "active" : "" }, "Users"),
    isAdmin() && h("a", { href: "#/admin/keys", class: active === "keys" ? "active" : "" }, "API keys"),
    isAdmin() && h("a", { href: "#/admin/usage", class: active === "usage" ? "active" : "" }, "Usage"));
  const who = h("span", { class: "who", title: user.email },
    `${user.email}${state.me.auth.type === "api_key" ? " (API key)" : ""}${user.role === "admin" ? " · admin" : ""}`);
  const main = h("main", { id: "main", class: `view view-${active}` });
  root.replaceChildren(
    h("header", { class: "topbar" },
      h("strong", { class: "brand" }, "agent-api"), nav, who,
      h("button", { type: "button", id: "sign-out", class: "secondary", onclick: signOut }, "Sign out")),
    h("div", { id: "notices", class: "notices" }),
    main);
  if (state.flash) {
    notify(state.flash, "info");
    state.flash = null;
  }
  return main;
}

async function signOut() {
  await api.logout();
  state.me = null;
  history.replaceState(null, "", location.pathname); // no hashchange: stay on this message
  renderLogin("Signed out.");
}

async function route() {
  if (!api.session) return renderLogin();
  if (!state.me) {
    try {
      state.me = await api.me();
    } catch (error) {
      if (!api.session) return undefined; // onSessionEnded already showed the sign-in form
      return renderLogin(describeError(error));
    }
  }
  const hash = location.hash || "#/chat";
  const [, section, part] = hash.split("/");
  if (section === "admin" && isAdmin()) {
    if (part === "keys") return renderKeys();
    if (part === "usage") return renderUsage();
    return renderUsers();
  }
  return renderChat(section === "chat" ? part : undefined);
}

window.addEventListener("hashchange", () => { route(); });

// ---------------------------------------------------------------- sign in
function renderLogin(message) {
  let mode = "password";
  const error = h("p", { id: "login-error", class: "form-error", role: "alert" }, message || "");
  if (message === "Signed out.") error.className = "form-info";
  const email = h("input", { id: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password", required: true });
  const key = h("input", { id: "api-key", type: "password", autocomplete: "off", placeholder: "sk-..." });
  const passwordFields = h("div", {}, h("label", {}, "Email", email), h("label", {}, "Password", password));
  const keyFields = h("div", { hidden: true }, h("label", {}, "API key", key));
  const submit = h("button", { type: "submit", id: "sign-in" }, "Sign in");
  const tabs = h("div", { class: "tabs", role: "tablist" },
    h("button", { type: "button", role: "tab", id: "tab-password", "aria-selected": "true", onclick: () => pick("password") }, "Email and password"),
    h("button", { type: "button", role: "tab", id: "tab-key", "aria-selected": "false", onclick: () => pick("key") }, "API key"));
  function pick(next) {
    mode = next;
    passwordFields.hidden = mode !== "password";
    keyFields.hidden = mode !== "key";
    email.required = password.required = mode === "password";
    key.required = mode === "key";
    tabs.children[0].setAttribute("aria-selected", String(mode === "password"));
    tabs.children[1].setAttribute("aria-selected", String(mode === "key"));
  }
  const form = h("form", { class: "card login", onsubmit: async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.className = "form-error";
    error.textContent = "";
    try {
      state.me = mode === "password" ? await api.login(email.value.trim(), password.value) : await api.useKey(key.value.trim());
      password.value = "";
      key.value = "";
      location.hash = "#/chat";
      await route();
    } catch (err) {
      error.textContent = describeError(err);
    } finally {
      submit.disabled = false;
    }
  } }, h("h1", {}, "Sign in"), tabs, passwordFields, keyFields, submit, error,
  h("p", { class: "hint" }, "The API reference is at ", h("a", { href: "/docs" }, "/docs"), "."));
  root.replaceChildren(h("div", { class: "login-page" }, form));
  (mode === "password" ? email : key).focus();
}

// ---------------------------------------------------------------- chat
async function loadCatalog() {
  const [models, tools] = await Promise.allSettled([api.get("/v1/models"), api.get("/v1/tools")]);
  state.models = models.status === "fulfilled" ? models.value.data : [];
  state.tools = tools.status === "fulfilled" ? tools.value.data : [];
}

async function renderChat(conversationId) {
  if (!conversationId) state.current = null;
  const main = shell("chat");
  const list = h("ul", { id: "conversation-list", class: "conversation-list" });
  const more = h("button", { type: "button", class: "secondary", id: "more-conversations", hidden: true, onclick: () => loadConversations(list, more, true) }, "Load more");
  const status = h("select", { id: "conversation-status", "aria-label": "Which conversations", onchange: () => loadConversations(list, more, false) },
    h("option", { value: "active" }, "Active"), h("option", { value: "archived" }, "Archived"));
  const sidebar = h("aside", { class: "sidebar", id: "sidebar" },
    h("div", { class: "sidebar-head" },
      h("button", { type: "button", id: "new-conversation", onclick: () => showNewConversation(pane) }, "New conversation"), status),
    list, more);
  const toggle = h("button", { type: "button", class: "secondary sidebar-toggle", "aria-controls": "sidebar",
    onclick: () => sidebar.classList.toggle("open") }, "Conversations");
  const pane = h("section", { class: "chat-pane", id: "chat-pane" });
  main.append(toggle, sidebar, pane);
  await loadCatalog();
  const available = await loadConversations(list, more, false);
  if (!available) {
    sidebar.hidden = true;
    toggle.hidden = true;
    main.classList.add("no-sidebar");
    pane.replaceChildren(h("div", { class: "empty", id: "conversations-unavailable" },
      h("h2", {}, "Conversations are not available"),
      h("p", {}, "This server does not offer the conversations API (/v1/conversations). The admin pages and the OpenAI-compatible endpoints still work.")));
    return;
  }
  if (conversationId) await openConversation(pane, conversationId);
  else pane.replaceChildren(h("div", { class: "empty" }, h("h2", {}, "Pick a conversation or start a new one.")));
}

async function loadConversations(list, more, append) {
  const status = document.getElementById("conversation-status");
  const params = new URLSearchParams({ limit: "20" });
  // Always named: without `status` the API lists archived conversations too.
  params.set("status", status && status.value === "archived" ? "archived" : "active");
  if (append && state.nextCursor) params.set("cursor", state.nextCursor);
  try {
    const page = await api.get(`/v1/conversations?${params}`);
    state.conversations = append ? [...state.conversations, ...page.data] : page.data;
    state.nextCursor = page.next_cursor;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return false;
    showError(error);
    return true;
  }
  const [, section, openId] = (location.hash || "").split("/");
  list.replaceChildren(...state.conversations.map((c) => h("li", { dataset: { conversationId: c.id } },
    h("a", { href: `#/chat/${c.id}`, class: section === "chat" && openId === c.id ? "active" : "" },
      h("span", { class: "title" }, c.title || "Untitled"),
      h("small", {}, fmtDate(c.updated_at || c.created_at))))));
  if (!state.conversations.length) list.append(h("li", { class: "muted" }, "No conversations yet."));
  more.hidden = !state.nextCursor;
  return true;
}

function showNewConversation(pane) {
  const title = h("input", { id: "new-title", placeholder: "Optional" });
  const model = h("select", { id: "new-model" }, state.models.map((m) => h("option", { value: m.id }, m.id)));
  const system = h("textarea", { id: "new-system", rows: 3, placeholder: "Optional system prompt" });
  const tools = state.tools.map((t) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "tool", value: t.name, checked: !t.requires_approval }),
    h("span", {}, t.name, t.requires_approval ? h("em", { class: "badge" }, "needs approval") : null),
    h("small", {}, t.description || "")));
  const form = h("form", { class: "card", id: "new-conversation-form", onsubmit: async (event) => {
    event.preventDefault();
    const chosen = [...form.querySelectorAll("input[name=tool]:checked")].map((i) => i.value);
    try {
      const conversation = await api.post("/v1/conversations", {
        title: title.value.trim() || null, model: model.value || null,
        system_prompt: system.value.trim() || null, tools: chosen,
      });
      location.hash = `#/chat/${conversation.id}`;
    } catch (error) { showError(error); }
  } },
  h("h2", {}, "New conversation"),
  h("label", {}, "Title", title), h("label", {}, "Model", model),
  h("fieldset", {}, h("legend", {}, "Tools"), tools.length ? tools : h("p", { class: "muted" }, "No tools available.")),
  h("label", {}, "System prompt", system),
  h("button", { type: "submit", id: "create-conversation" }, "Start"));
  pane.replaceChildren(form);
  title.focus();
}

async function loadAllMessages(id) {
  const messages = [];
  let cursor = null;
  for (let page = 0; page < 50; page += 1) {
    const params = new URLSearchParams({ limit: "100" });
    if (cursor) params.set("cursor", cursor);
    const body = await api.get(`/v1/conversations/${id}/messages?${params}`);
    messages.push(...body.data);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return messages;
}

async function openConversation(pane, id) {
  let conversation;
  let messages;
  try {
    [conversation, messages] = await Promise.all([api.get(`/v1/conversations/${id}`), loadAllMessages(id)]);
  } catch (error) {
    showError(error);
    pane.replaceChildren(h("div", { class: "empty" }, h("h2", {}, "This conversation could not be opened.")));
    return;
  }
  state.current = conversation;
  const view = new ConversationView(pane, conversation);
  view.showHistory(messages);
}

class ConversationView {
  constructor(pane, conversation) {
    this.conversation = conversation;
    this.cards = new Map();
    this.bubbles = new Map();
    this.controller = null;
    this.running = false;
    const titleText = h("h2", { id: "conversation-title" }, conversation.title || "Untitled");
    this.log = h("div", { class: "messages", id: "messages", role: "log", "aria-live": "polite" });
    this.input = h("textarea", { id: "composer", rows: 2, placeholder: "Message (Enter sends, Shift+Enter new line)",
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.send();
        }
      } });
    this.sendButton = h("button", { type: "submit", id: "send" }, "Send");
    this.cancelButton = h("button", { type: "button", id: "cancel-run", class: "danger", hidden: true, onclick: () => this.cancel() }, "Cancel");
    const composer = h("form", { class: "composer", onsubmit: (event) => { event.preventDefault(); this.send(); } },
      this.input, h("div", { class: "composer-actions" }, this.cancelButton, this.sendButton));
    const actions = h("div", { class: "conversation-actions" },
      h("button", { type: "button", class: "secondary", id: "rename", onclick: () => this.rename(titleText) }, "Rename"),
      h("button", { type: "button", class: "secondary", id: "archive", onclick: () => this.archive() },
        conversation.archived || conversation.status === "archived" ? "Unarchive" : "Archive"),
      h("button", { type: "button", class: "danger", id: "delete", onclick: (event) => this.remove(event.currentTarget) }, "Delete"));
    const meta = h("small", { class: "muted" }, `model ${conversation.model || "default"} · tools ${(conversation.tools || []).join(", ") || "none"}`);
    pane.replaceChildren(h("div", { class: "conversation-head" }, h("div", {}, titleText, meta), actions), this.log, composer);
    this.input.focus();
  }

  rename(titleText) {
    const field = h("input", { id: "rename-input", value: this.conversation.title || "" });
    const form = h("form", { class: "inline-form", onsubmit: async (event) => {
      event.preventDefault();
      try {
        this.conversation = await api.patch(`/v1/conversations/${this.conversation.id}`, { title: field.value.trim() });
        titleText.textContent = this.conversation.title || "Untitled";
        form.replaceWith(titleText);
        refreshList();
      } catch (error) { showError(error); }
    } }, field, h("button", { type: "submit" }, "Save"), h("button", { type: "button", class: "secondary", onclick: () => form.replaceWith(titleText) }, "Cancel"));
    titleText.replaceWith(form);
    field.focus();
  }

  async archive() {
    const archived = !(this.conversation.archived || this.conversation.status === "archived");
    try {
      this.conversation = await api.patch(`/v1/conversations/${this.conversation.id}`, { archived });
      flash(archived ? "Conversation archived." : "Conversation restored.");
      location.hash = "#/chat";
    } catch (error) { showError(error); }
  }

  async remove(button) {
    if (button.dataset.confirm !== "yes") {
      button.dataset.confirm = "yes";
      button.textContent = "Really delete?";
      return;
    }
    try {
      await api.del(`/v1/conversations/${this.conversation.id}`);
      flash("Conversation deleted.");
      location.hash = "#/chat";
    } catch (error) { showError(error); }
  }

  scroll() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  // -- rendering of stored messages
  showHistory(messages) {
    const results = new Map(messages.filter((m) => m.role === "tool").map((m) => [m.tool_call_id, m]));
    let pending = [];
    for (const message of messages) {
      if (message.role === "tool") continue;
      if (message.role === "user") this.userBubble(message.content);
      else if (message.role === "assistant") {
        if (message.content || !(message.tool_calls || []).length) {
          const bubble = this.bubble(message.id);
          bubble.text = message.content || "";
          this.paint(bubble);
          if (message.status && message.status !== "complete") bubble.node.classList.add(message.status);
        }
        for (const call of message.tool_calls || []) {
          const fn = call.function || call;
          const card = this.toolCard(call.id, fn.name, fn.arguments);
          const result = results.get(call.id);
          if (result) this.finishCard(card, { status: result.status === "error" ? "error" : "done", output: result.content });
          else pending.push({ tool_call_id: call.id, name: fn.name, arguments: fn.arguments });
        }
      }
    }
    // What the run waits for: the API's active run (GET /v1/conversations/{id} carries it,
    // with each approval's reason); from a server without it, the tool calls that have no
    // result yet and need approval.
    const unanswered = pending;
    if ("active_run" in this.conversation) {
      const run = this.conversation.active_run;
      pending = run && run.status === "requires_approval" ? run.pending_approvals || [] : [];
    } else {
      const gated = new Set(state.tools.filter((t) => t.requires_approval).map((t) => t.name));
      pending = pending.filter((p) => gated.has(p.name)).map((p) => ({ ...p, reason: p.reason || `${p.name} requires approval before it runs.` }));
    }
    const waiting = new Set(pending.map((p) => p.tool_call_id));
    const running = this.conversation.active_run && this.conversation.active_run.status === "running";
    for (const call of unanswered) {
      const card = this.cards.get(call.tool_call_id);
      if (!card) continue;
      if (waiting.has(call.tool_call_id)) this.setCardStatus(card, "awaiting-approval");
      else if (!running) this.setCardStatus(card, "no-result");
    }
    if (pending.length) this.approvalPanel(pending);
    this.scroll();
  }

  userBubble(text) {
    this.log.append(h("div", { class: "msg user" }, h("div", { class: "body" }, text)));
  }

  bubble(messageId) {
    let bubble = messageId ? this.bubbles.get(messageId) : null;
    if (!bubble) {
      const body = h("div", { class: "body markdown" });
      const node = h("div", { class: "msg assistant", dataset: { messageId: messageId || "" } }, body);
      bubble = { node, body, text: "", reasoning: null, reasoningText: "", frame: 0 };
      if (messageId) this.bubbles.set(messageId, bubble);
      this.log.append(node);
    }
    return bubble;
  }

  paint(bubble) {
    bubble.body.replaceChildren(renderMarkdown(bubble.text));
  }

  schedulePaint(bubble) {
    if (bubble.frame) return;
    bubble.frame = requestAnimationFrame(() => {
      bubble.frame = 0;
      this.paint(bubble);
      this.scroll();
    });
  }

  toolCard(id, name, args, initial = "running") {
    const status = h("span", { class: `status ${initial}` }, CARD_STATUS[initial] || initial);
    const duration = h("span", { class: "duration" });
    const output = h("pre", { class: "tool-output", hidden: true });
    const node = h("div", { class: "tool-card", dataset: { toolCallId: id || "" } },
      h("div", { class: "tool-head" }, h("strong", {}, name), status, duration),
      h("details", {}, h("summary", {}, "Arguments"), h("pre", {}, pretty(args ?? {}))),
      output);
    const card = { node, status, duration, output, started: performance.now() };
    if (id) this.cards.set(id, card);
    this.log.append(node);
    return card;
  }

  setCardStatus(card, status) {
    card.status.className = `status ${status}`;
    card.status.textContent = CARD_STATUS[status] || status;
    card.node.dataset.status = status;
  }

  finishCard(card, { status, output, error, durationMs }) {
    this.setCardStatus(card, status);
    if (durationMs !== undefined && durationMs !== null) card.duration.textContent = `${Math.round(durationMs)} ms`;
    const text = error ? `${error}` : output;
    if (text !== undefined && text !== null && text !== "") {
      card.output.hidden = false;
      card.output.textContent = typeof text === "string" ? text : pretty(text);
    }
  }

  approvalPanel(approvals) {
    const panel = h("div", { class: "approval", id: "approval", role: "group", "aria-label": "Approval required" },
      h("h3", {}, "Approval required"));
    const decisions = approvals.map((a) => {
      const reason = h("input", { class: "reject-reason", placeholder: "Reason (for a rejection)" });
      const choice = { tool_call_id: a.tool_call_id, approve: null, reason };
      const approve = h("button", { type: "button", class: "approve", onclick: () => pick(true) }, "Approve");
      const reject = h("button", { type: "button", class: "danger reject", onclick: () => pick(false) }, "Reject");
      function pick(value) {
        choice.approve = value;
        approve.classList.toggle("chosen", value);
        reject.classList.toggle("chosen", !value);
        maybeSubmit();
      }
      panel.append(h("div", { class: "approval-item", dataset: { toolCallId: a.tool_call_id } },
        h("div", {}, h("strong", {}, a.name), " wants to run with:"),
        h("pre", {}, pretty(a.arguments ?? {})),
        h("p", { class: "reason" }, a.reason || ""),
        h("div", { class: "row" }, approve, reject, reason)));
      return choice;
    });
    const maybeSubmit = () => {
      if (decisions.some((d) => d.approve === null)) return;
      panel.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      // Approved calls run now; rejected ones will not (tool.result confirms either).
      for (const d of decisions) {
        const card = this.cards.get(d.tool_call_id);
        if (card) this.setCardStatus(card, d.approve ? "running" : "rejected");
      }
      const body = decisions.map((d) => ({ tool_call_id: d.tool_call_id, approve: d.approve,
        ...(d.approve ? {} : { reason: d.reason.value.trim() || "rejected in the console" }) }));
      panel.classList.add("decided");
      this.run(`/v1/conversations/${this.conversation.id}/approvals`, { decisions: body, stream: true }, () => panel.remove());
    };
    this.log.append(panel);
    this.scroll();
  }

  // -- a run
  send() {
    const content = this.input.value;
    if (!content.trim() || this.running) return;
    this.input.value = "";
    this.userBubble(content);
    this.run(`/v1/conversations/${this.conversation.id}/messages`, { content, stream: true });
  }

  setRunning(running) {
    this.running = running;
    this.sendButton.disabled = running;
    this.cancelButton.hidden = !running;
    this.cancelButton.disabled = false;
  }

  async cancel() {
    this.cancelButton.disabled = true;
    try {
      await api.post(`/v1/conversations/${this.conversation.id}/cancel`, {});
    } catch (error) {
      showError(error);
      this.cancelButton.disabled = false;
    }
  }

  async run(path, body, onAccepted) {
    this.setRunning(true);
    this.controller = new AbortController();
    try {
      await api.stream(path, body, (name, data) => {
        if (onAccepted) { onAccepted(); onAccepted = null; }
        this.onEvent(name, data);
      }, this.controller.signal);
    } catch (error) {
      showError(error);
      const panel = document.getElementById("approval");
      if (panel) {
        panel.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        panel.classList.remove("decided");
        for (const item of panel.querySelectorAll(".approval-item")) {
          const card = this.cards.get(item.dataset.toolCallId);
          if (card) this.setCardStatus(card, "awaiting-approval"); // the decision did not reach the server
        }
      }
    } finally {
      this.setRunning(false);
      refreshList();
    }
  }

  onEvent(name, data) {
    switch (name) {
      case "run.started":
        this.log.append(h("div", { class: "run-marker", dataset: { runId: data.run_id } }));
        break;
      case "message.delta": {
        const bubble = this.bubble(data.message_id);
        bubble.text += data.delta || "";
        this.schedulePaint(bubble);
        break;
      }
      case "reasoning.delta": {
        const bubble = this.bubble(data.message_id);
        if (!bubble.reasoning) {
          bubble.reasoning = h("pre", { class: "reasoning-text" });
          bubble.node.prepend(h("details", { class: "reasoning" }, h("summary", {}, "Reasoning"), bubble.reasoning));
        }
        bubble.reasoningText += data.delta || "";
        bubble.reasoning.textContent = bubble.reasoningText;
        break;
      }
      case "tool.call":
        this.toolCard(data.tool_call_id, data.name, data.arguments);
        break;
      case "tool.result": {
        const card = this.cards.get(data.tool_call_id) || this.toolCard(data.tool_call_id, data.name, {});
        this.finishCard(card, { status: data.status, output: data.output, error: data.error, durationMs: data.duration_ms });
        break;
      }
      case "approval.required":
        for (const approval of data.approvals || []) {
          const card = this.cards.get(approval.tool_call_id) || this.toolCard(approval.tool_call_id, approval.name, approval.arguments);
          this.setCardStatus(card, "awaiting-approval");
        }
        this.approvalPanel(data.approvals || []);
        break;
      case "message.completed":
        if (data.role === "assistant") {
          const bubble = this.bubble(data.id);
          if (typeof data.content === "string" && data.content) bubble.text = data.content;
          if (bubble.frame) { cancelAnimationFrame(bubble.frame); bubble.frame = 0; }
          this.paint(bubble);
          if (!bubble.text && !bubble.reasoning) bubble.node.remove();
          if (data.status && data.status !== "complete") bubble.node.classList.add(data.status);
        }
        break;
      case "run.completed":
        this.log.append(h("div", { class: `run-end ${data.status}`, role: "status", dataset: { status: data.status } },
          data.status === "completed" ? `Run completed${data.usage && data.usage.total_tokens ? ` · ${data.usage.total_tokens} tokens` : ""}`
            : data.status === "requires_approval" ? "Waiting for approval"
              : `Run ${data.status}${data.error ? `: ${data.error.message || data.error.code || ""}` : ""}`));
        break;
      case "error":
        notify(describeError(new ApiError(0, data)));
        break;
      default:
        break;
    }
    this.scroll();
  }
}

function refreshList() {
  const list = document.getElementById("conversation-list");
  const more = document.getElementById("more-conversations");
  if (list && more) loadConversations(list, more, false);
}

// ---------------------------------------------------------------- admin: users
async function renderUsers() {
  const main = shell("users");
  const body = h("tbody", {});
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  let cursor = null;
  async function load(append) {
    try {
      const params = new URLSearchParams({ limit: "50" });
      if (append && cursor) params.set("cursor", cursor);
      const page = await api.get(`/v1/admin/users?${params}`);
      cursor = page.next_cursor;
      if (!append) body.replaceChildren();
      body.append(...page.data.map(userRow));
      more.hidden = !cursor;
    } catch (error) { showError(error); }
  }
  function userRow(user) {
    const row = h("tr", { dataset: { email: user.email } });
    const update = async (changes) => {
      try {
        const updated = await api.patch(`/v1/admin/users/${user.id}`, changes);
        row.replaceWith(userRow(updated));
        const what = "role" in changes ? `role is now ${updated.role}` : updated.is_active ? "activated" : "deactivated";
        notify(`${updated.email}: ${what}.`, "info");
      } catch (error) { showError(error); }
    };
    const self = state.me.user.id === user.id;
    row.append(
      h("td", { "data-label": "Email" }, user.email),
      h("td", { "data-label": "Name" }, user.name || "—"),
      h("td", { "data-label": "Role", class: "role" }, user.role),
      h("td", { "data-label": "Status", class: "active" }, user.is_active ? "active" : "deactivated"),
      h("td", { "data-label": "Created" }, fmtDate(user.created_at)),
      h("td", { class: "actions" },
        user.is_active
          ? h("button", { type: "button", class: "danger deactivate", disabled: self, onclick: () => update({ is_active: false }) }, "Deactivate")
          : h("button", { type: "button", class: "activate", onclick: () => update({ is_active: true }) }, "Activate"),
        user.role === "admin"
          ? h("button", { type: "button", class: "secondary make-user", disabled: self, onclick: () => update({ role: "user" }) }, "Make user")
          : h("button", { type: "button", class: "secondary make-admin", onclick: () => update({ role: "admin" }) }, "Make admin")));
    return row;
  }
  more.addEventListener("click", () => load(true));
  main.append(h("section", { class: "card wide" }, h("h2", {}, "Users"),
    h("table", { class: "table", id: "users-table" },
      h("thead", {}, h("tr", {}, ["Email", "Name", "Role", "Status", "Created", ""].map((t) => h("th", {}, t)))), body),
    more));
  await load(false);
}

// ---------------------------------------------------------------- admin: API keys
function scopePicker(label, id, names) {
  const all = h("input", { type: "radio", name: `${id}-mode`, value: "all", checked: true });
  const some = h("input", { type: "radio", name: `${id}-mode`, value: "some" });
  const boxes = names.map((n) => h("label", { class: "check" }, h("input", { type: "checkbox", value: n, name: id }), h("span", {}, n)));
  const list = h("div", { class: "checks", hidden: true }, boxes.length ? boxes : h("span", { class: "muted" }, "none available"));
  const sync = () => { list.hidden = !some.checked; };
  all.addEventListener("change", sync);
  some.addEventListener("change", sync);
  const field = h("fieldset", { id }, h("legend", {}, label),
    h("label", { class: "check" }, all, h("span", {}, "All")),
    h("label", { class: "check" }, some, h("span", {}, "Only these:")), list);
  field.value = () => (all.checked ? null : [...list.querySelectorAll("input:checked")].map((i) => i.value));
  return field;
}

function optionalInt(input) {
  const text = input.value.trim();
  return text === "" ? null : Number.parseInt(text, 10);
}

async function renderKeys() {
  const main = shell("keys");
  const [users, models, tools] = await Promise.allSettled([
    api.get("/v1/admin/users?limit=100"), api.get("/v1/models"), api.get("/v1/tools")]);
  const people = users.status === "fulfilled" ? users.value.data : [state.me.user];
  const owner = h("select", { id: "key-user" }, people.map((u) => h("option", { value: u.id, selected: u.id === state.me.user.id }, u.email)));
  const name = h("input", { id: "key-name", required: true, placeholder: "e.g. ci-bot" });
  const modelScope = scopePicker("Models", "key-models", models.status === "fulfilled" ? models.value.data.map((m) => m.id) : []);
  const toolScope = scopePicker("Tools", "key-tools", tools.status === "fulfilled" ? tools.value.data.map((t) => t.name) : []);
  const rpm = h("input", { id: "key-rpm", type: "number", min: 1, placeholder: "default" });
  const tpm = h("input", { id: "key-tpm", type: "number", min: 1, placeholder: "default" });
  const budget = h("input", { id: "key-budget", type: "number", min: 1, placeholder: "default" });
  const expires = h("input", { id: "key-expires", type: "datetime-local" });
  const secretBox = h("div", { id: "secret-box" });
  const body = h("tbody", {});
  const form = h("form", { class: "card", id: "issue-key-form", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const key = await api.post("/v1/api-keys", {
        user_id: owner.value, name: name.value.trim(),
        allowed_models: modelScope.value(), allowed_tools: toolScope.value(),
        rpm_limit: optionalInt(rpm), tpm_limit: optionalInt(tpm), daily_token_budget: optionalInt(budget),
        expires_at: expires.value ? new Date(expires.value).toISOString() : null,
      });
      showSecret(secretBox, key);
      form.reset();
      await loadKeys();
    } catch (error) { showError(error); }
  } },
  h("h2", {}, "Issue an API key"),
  h("div", { class: "grid" }, h("label", {}, "Owner", owner), h("label", {}, "Name", name)),
  h("div", { class: "grid" }, modelScope, toolScope),
  h("div", { class: "grid" }, h("label", {}, "Requests per minute", rpm), h("label", {}, "Tokens per minute", tpm),
    h("label", {}, "Daily token budget", budget), h("label", {}, "Expires", expires)),
  h("button", { type: "submit", id: "issue-key" }, "Issue key"));
  const emails = new Map(people.map((u) => [u.id, u.email]));
  async function loadKeys() {
    try {
      const page = await api.get("/v1/api-keys?limit=100");
      body.replaceChildren(...page.data.map((key) => {
        const scope = (v) => (v === null || v === undefined ? "all" : v.length ? v.join(", ") : "none");
        const limits = [key.rpm_limit && `${key.rpm_limit} rpm`, key.tpm_limit && `${key.tpm_limit} tpm`, key.daily_token_budget && `${key.daily_token_budget}/day`].filter(Boolean).join(", ") || "defaults";
        const revoke = h("button", { type: "button", class: "danger revoke", onclick: async () => {
          if (revoke.dataset.confirm !== "yes") { revoke.dataset.confirm = "yes"; revoke.textContent = "Really revoke?"; return; }
          try { await api.del(`/v1/api-keys/${key.id}`); notify(`Key ${key.name} revoked.`, "info"); await loadKeys(); } catch (error) { showError(error); }
        } }, "Revoke");
        return h("tr", { dataset: { keyId: key.id, name: key.name } },
          h("td", { "data-label": "Name" }, key.name),
          h("td", { "data-label": "Prefix" }, h("code", {}, key.prefix)),
          h("td", { "data-label": "Owner" }, emails.get(key.user_id) || key.user_id),
          h("td", { "data-label": "Models" }, scope(key.allowed_models)),
          h("td", { "data-label": "Tools" }, scope(key.allowed_tools)),
          h("td", { "data-label": "Limits" }, limits),
          h("td", { "data-label": "Last used" }, fmtDate(key.last_used_at)),
          h("td", { "data-label": "Status", class: "key-status" }, key.revoked_at ? "revoked" : key.expires_at && new Date(key.expires_at) < new Date() ? "expired" : "active"),
          h("td", { class: "actions" }, key.revoked_at ? null : revoke));
      }));
    } catch (error) { showError(error); }
  }
  main.append(form, secretBox, h("section", { class: "card wide" }, h("h2", {}, "Keys"),
    h("table", { class: "table", id: "keys-table" }, h("thead", {}, h("tr", {},
      ["Name", "Prefix", "Owner", "Models", "Tools", "Limits", "Last used", "Status", ""].map((t) => h("th", {}, t)))), body)));
  await loadKeys();
}

// The secret exists only in this box: it is never stored, and it is gone once dismissed.
function showSecret(box, key) {
  const secret = h("input", { id: "new-key-secret", readOnly: true, value: key.key, "aria-label": "The new key's secret" });
  const copied = h("span", { class: "muted", role: "status" });
  box.replaceChildren(h("div", { class: "card secret", role: "region", "aria-label": "New key" },
    h("h3", {}, `Key “${key.name}” issued`),
    h("p", {}, "Copy the secret now: it is shown only this once and cannot be retrieved later."),
    h("div", { class: "row" }, secret,
      h("button", { type: "button", id: "copy-secret", onclick: async () => {
        try {
          await navigator.clipboard.writeText(secret.value);
          copied.textContent = "Copied.";
        } catch {
          secret.select();
          copied.textContent = "Select and copy it (Ctrl+C): the browser refused clipboard access.";
        }
      } }, "Copy"),
      h("button", { type: "button", class: "secondary", id: "dismiss-secret", onclick: () => box.replaceChildren() }, "Done")),
    copied));
}

// ---------------------------------------------------------------- admin: usage
function labelOf(row, groupBy) {
  const value = row[groupBy] ?? row.day ?? row.date ?? row.model ?? row.api_key_name ?? row.api_key_id ?? row.key ?? row.group;
  return value === null || value === undefined ? "(none)" : String(value);
}

function tokensOf(row) {
  return Number(row.total_tokens ?? row.tokens ?? (row.prompt_tokens || 0) + (row.completion_tokens || 0)) || 0;
}

function barChart(rows, groupBy, metric) {
  const values = rows.map((r) => (metric === "requests" ? Number(r.requests ?? r.request_count ?? 0) : tokensOf(r)));
  const max = Math.max(1, ...values);
  const barHeight = 22;
  const gap = 8;
  const labelWidth = 170;
  const width = 640;
  const height = rows.length * (barHeight + gap) + gap;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart", id: "usage-chart", "aria-label": `${metric} by ${groupBy}` });
  rows.forEach((row, i) => {
    const y = gap + i * (barHeight + gap);
    const w = Math.max(1, Math.round(((width - labelWidth - 80) * values[i]) / max));
    const label = labelOf(row, groupBy);
    chart.append(
      svg("text", { x: labelWidth - 8, y: y + barHeight * 0.7, "text-anchor": "end", class: "chart-label" }, label.length > 24 ? `${label.slice(0, 23)}…` : label),
      svg("rect", { x: labelWidth, y, width: w, height: barHeight, rx: 3, class: "chart-bar" }, svg("title", {}, `${label}: ${values[i]}`)),
      svg("text", { x: labelWidth + w + 6, y: y + barHeight * 0.7, class: "chart-value" }, values[i].toLocaleString()));
  });
  return chart;
}

async function renderUsage() {
  const main = shell("usage");
  const groupBy = h("select", { id: "usage-group" }, ["day", "model", "api_key"].map((g) => h("option", { value: g }, g.replace("_", " "))));
  const metric = h("select", { id: "usage-metric" }, h("option", { value: "tokens" }, "tokens"), h("option", { value: "requests" }, "requests"));
  const start = h("input", { type: "date", id: "usage-start" });
  const end = h("input", { type: "date", id: "usage-end" });
  const output = h("div", { id: "usage-output" });
  let rows = [];
  async function load() {
    const params = new URLSearchParams({ group_by: groupBy.value });
    if (start.value) params.set("start", new Date(`${start.value}T00:00:00Z`).toISOString());
    if (end.value) params.set("end", new Date(`${end.value}T23:59:59Z`).toISOString());
    try {
      const body = await api.get(`/v1/usage?${params}`);
      rows = body.data || [];
      draw();
    } catch (error) {
      rows = [];
      if (error instanceof ApiError && error.status === 404) {
        output.replaceChildren(h("p", { class: "empty", id: "usage-unavailable" }, "Usage reporting is not available on this server (GET /v1/usage answered 404)."));
      } else showError(error);
    }
  }
  function draw() {
    if (!rows.length) return output.replaceChildren(h("p", { class: "muted" }, "No usage in this period."));
    return output.replaceChildren(barChart(rows, groupBy.value, metric.value));
  }
  groupBy.addEventListener("change", load);
  metric.addEventListener("change", draw);
  start.addEventListener("change", load);
  end.addEventListener("change", load);
  main.append(h("section", { class: "card wide" }, h("h2", {}, "Usage"),
    h("div", { class: "row" }, h("label", {}, "Group by", groupBy), h("label", {}, "Measure", metric),
      h("label", {}, "From", start), h("label", {}, "To", end)), output));
  await load();
}

// ---------------------------------------------------------------- start
api.schedule();
route();
