// The console's only way to the server: the public API (docs: /docs, contract: API.md).
// Holds the session (a JWT pair refreshed before it expires, or an API key) in
// sessionStorage: it survives a reload, stays in this tab, and is gone when the tab closes.

const STORE = "agent-api-console-session";
const REFRESH_MARGIN_SECONDS = 60;

export class ApiError extends Error {
  constructor(status, body, headers) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || null;
    this.code = error.code || null;
    this.param = error.param || null;
    const retry = headers ? Number(headers.get("Retry-After")) : NaN;
    this.retryAfter = Number.isFinite(retry) && retry > 0 ? retry : null;
  }
}

// A sentence a person can act on.
export function describeError(error) {
  if (!(error instanceof ApiError)) return `Network error: ${error && error.message ? error.message : error}`;
  if (error.status === 429) {
    if (error.code === "insufficient_quota") return `Token budget exhausted: ${error.message}`;
    const seconds = error.retryAfter;
    const wait = !seconds ? "" : seconds >= 120 ? ` Try again in ${Math.ceil(seconds / 60)} min.` : ` Try again in ${seconds} s.`;
    return `Rate limited: too many requests.${wait}`;
  }
  if (error.status === 401 && ["token_expired", "token_revoked"].includes(error.code)) {
    return "Your session has expired. Please sign in again.";
  }
  const code = error.code ? ` (${error.code})` : "";
  return `${error.message}${code}`;
}

class Client {
  constructor() {
    this.session = null;
    this.refreshing = null;
    this.timer = null;
    this.onSessionEnded = () => {};
    try {
      this.session = JSON.parse(sessionStorage.getItem(STORE) || "null");
    } catch {
      this.session = null;
    }
  }

  save(session) {
    this.session = session;
    if (session) sessionStorage.setItem(STORE, JSON.stringify(session));
    else sessionStorage.removeItem(STORE);
    this.schedule();
  }

  // Refresh a little before the access token expires (single flight: refresh tokens rotate).
  schedule() {
    clearTimeout(this.timer);
    if (!this.session || this.session.kind !== "jwt") return;
    const wait = Math.max(0, this.session.refreshAt - Date.now());
    this.timer = setTimeout(() => this.refresh().catch(() => {}), wait);
  }

  tokenPair(body) {
    const margin = Math.min(REFRESH_MARGIN_SECONDS, body.expires_in / 5);
    return {
      kind: "jwt",
      access: body.access_token,
      refresh: body.refresh_token,
      expiresAt: Date.now() + body.expires_in * 1000,
      refreshAt: Date.now() + (body.expires_in - margin) * 1000,
    };
  }

  refresh() {
    if (!this.session || this.session.kind !== "jwt") return Promise.reject(new Error("no session"));
    if (!this.refreshing) {
      const token = this.session.refresh;
      this.refreshing = this.raw("POST", "/v1/auth/refresh", { refresh_token: token }, false)
        .then((body) => this.save(this.tokenPair(body)))
        .catch((error) => {
          this.end(error);
          throw error;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  end(error) {
    this.save(null);
    this.onSessionEnded(error);
  }

  headers(json) {
    const headers = {};
    if (json) headers["Content-Type"] = "application/json";
    if (this.session) headers.Authorization = `Bearer ${this.session.kind === "jwt" ? this.session.access : this.session.key}`;
    return headers;
  }

  async fetch(method, path, body, auth = true) {
    const init = { method, headers: auth ? this.headers(body !== undefined) : body !== undefined ? { "Content-Type": "application/json" } : {} };
    if (body !== undefined) init.body = JSON.stringify(body);
    return fetch(path, init);
  }

  async raw(method, path, body, auth = true) {
    const response = await this.fetch(method, path, body, auth);
    return this.parse(response);
  }

  async parse(response) {
    if (response.status === 204) return null;
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, body, response.headers);
    return body;
  }

  // An authenticated call; an expired access token is refreshed once and the call retried.
  async call(method, path, body) {
    if (this.session && this.session.kind === "jwt" && Date.now() >= this.session.refreshAt) {
      await this.refresh();
    }
    let response = await this.fetch(method, path, body);
    if (response.status === 401 && this.session && this.session.kind === "jwt") {
      await this.refresh();
      response = await this.fetch(method, path, body);
    }
    if (response.status === 401 && this.session) {
      const error = await this.parse(response).catch((e) => e);
      this.end(error);
      throw error;
    }
    return this.parse(response);
  }

  get(path) { return this.call("GET", path); }
  post(path, body) { return this.call("POST", path, body ?? {}); }
  patch(path, body) { return this.call("PATCH", path, body); }
  del(path) { return this.call("DELETE", path); }

  async login(email, password) {
    const body = await this.raw("POST", "/v1/auth/login", { email, password }, false);
    this.save(this.tokenPair(body));
    return this.me();
  }

  async useKey(key) {
    this.save({ kind: "key", key });
    try {
      return await this.me();
    } catch (error) {
      this.save(null);
      throw error;
    }
  }

  me() { return this.get("/v1/auth/me"); }

  async logout() {
    if (this.session && this.session.kind === "jwt") {
      try { await this.raw("POST", "/v1/auth/logout"); } catch { /* the session ends here anyway */ }
    }
    this.save(null);
  }

  // POST that answers an agent event stream (SSE, named events). Calls onEvent(name, data, id).
  async stream(path, body, onEvent, signal) {
    if (this.session && this.session.kind === "jwt" && Date.now() >= this.session.refreshAt) {
      await this.refresh();
    }
    const init = () => ({ method: "POST", headers: { ...this.headers(true), Accept: "text/event-stream" }, body: JSON.stringify(body), signal });
    let response = await fetch(path, init());
    if (response.status === 401 && this.session && this.session.kind === "jwt") {
      await this.refresh();
      response = await fetch(path, init());
    }
    if (!response.ok) await this.parse(response);
    await readEventStream(response.body, onEvent);
  }
}

// Parses a text/event-stream body (named events, `id:`, multi-line `data:`, `:` comments,
// any line ending, chunks cut anywhere) and calls onEvent(name, data, id) per event, with
// data parsed as JSON when it is JSON (`[DONE]` stays a string).
export async function readEventStream(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { name: "message", data: [], id: null };
  const line = (text) => {
    if (text === "") {
      if (event.data.length) {
        const raw = event.data.join("\n");
        let data = raw;
        try { data = JSON.parse(raw); } catch { /* e.g. [DONE] */ }
        onEvent(event.name, data, event.id);
      }
      event = { name: "message", data: [], id: null };
    } else if (!text.startsWith(":")) {
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      const value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event.name = value;
      else if (field === "data") event.data.push(value);
      else if (field === "id") event.id = value;
    }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    // A lone "\r" at the end of a chunk may be the first half of "\r\n": wait for more.
    while ((cut = buffer.search(/\r\n|\r(?=[^\n])|\n/)) >= 0) {
      const width = buffer.startsWith("\r\n", cut) ? 2 : 1;
      line(buffer.slice(0, cut));
      buffer = buffer.slice(cut + width);
    }
  }
  if (buffer) line(buffer.replace(/\r$/, ""));
  line("");
}

export const api = new Client();
