// The REST API as the pages use it: signed in with OAuth tokens kept for this tab only.
const BASE = "/api/v1";
const KEY = "pmgw.session";

export class ApiError extends Error {
  // `errors`: a refused request's problems, each with the field (the path) and the reason.
  constructor(status, detail, errors = []) {
    super(detail);
    this.status = status;
    this.errors = errors;
  }
}

function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

function keep(tokens) {
  sessionStorage.setItem(KEY, JSON.stringify(tokens));
}

export function signedIn() {
  return session() !== null;
}

export function signOut() {
  const current = session();
  sessionStorage.removeItem(KEY);
  if (current && current.refresh_token) {
    fetch(`${BASE}/oauth/revoke`, { method: "POST", body: new URLSearchParams({ token: current.refresh_token }) });
  }
}

async function token(form) {
  const response = await fetch(`${BASE}/oauth/token`, { method: "POST", body: new URLSearchParams(form) });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(response.status, body.error_description || body.detail || `sign-in failed (${response.status})`);
  }
  keep({ access_token: body.access_token, refresh_token: body.refresh_token });
  return body;
}

export function signIn(username, password, totp) {
  const form = { grant_type: "password", username, password };
  if (totp) form.totp = totp;
  return token(form);
}

let refreshing = null;

async function refresh() {
  const current = session();
  if (!current || !current.refresh_token) return false;
  // One refresh for every request that met the expired token at once (refresh tokens rotate).
  refreshing = refreshing || token({ grant_type: "refresh_token", refresh_token: current.refresh_token })
    .then(() => true, () => false)
    .finally(() => { refreshing = null; });
  return refreshing;
}

async function request(method, path, body, retried = false) {
  const current = session();
  const headers = { Accept: "application/json" };
  if (current) headers.Authorization = `Bearer ${current.access_token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401 && !retried && (await refresh())) return request(method, path, body, true);
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    window.dispatchEvent(new Event("pmgw:signed-out"));
  }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new ApiError(response.status, problem.detail || problem.error_description || response.statusText,
      problem.errors || []);
  }
  return response;
}

async function send(method, path, body) {
  const response = await request(method, path, body);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// A file (a PDF) fetched signed in: links cannot carry the Authorization header.
export async function blob(path, params) {
  return (await request("GET", params ? `${path}?${query(params)}` : path)).blob();
}

export const get = (path, params) => send("GET", params ? `${path}?${query(params)}` : path);
export const post = (path, body) => send("POST", path, body);
export const put = (path, body) => send("PUT", path, body);

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  return search.toString();
}

// Server-sent events through fetch (EventSource cannot send the Authorization header).
// Reconnects with a growing pause; `onEvent(kind, data)` per event; returns a function that stops it.
export function stream(onEvent, onState) {
  let stopped = false;
  let controller = null;
  let pause = 1000;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const current = session();
        const response = await fetch(`${BASE}/stream`, {
          headers: current ? { Authorization: `Bearer ${current.access_token}` } : {},
          signal: controller.signal,
        });
        if (response.status === 401 && (await refresh())) continue;
        if (!response.ok) throw new Error(`stream: ${response.status}`);
        onState("live");
        pause = 1000;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let kind = "message";
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) kind = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
            }
            if (data) onEvent(kind, JSON.parse(data));
          }
        }
      } catch (error) {
        if (stopped) return;
      }
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 15000);
    }
  }
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
