// The console's only door to agentapi: the public REST mapping under /agentapi/v1
// (the same one /openapi.json describes), with the key from session storage.
const BASE = "/agentapi/v1";
const KEY_SLOT = "agentapi.console.key";

export const auth = {
  // sessionStorage: the key lives as long as the tab, never in a URL or a cookie.
  get key() {
    return sessionStorage.getItem(KEY_SLOT) || "";
  },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_SLOT, value);
    else sessionStorage.removeItem(KEY_SLOT);
  },
};

/** An agentapi error: OpenAI's shape with agentapi's reason beside it. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.reason = error.reason || "";
    this.code = error.code || "";
    this.param = error.param || "";
  }
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(name, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

function headers(extra) {
  return { Authorization: `Bearer ${auth.key}`, "Content-Type": "application/json", ...extra };
}

/** One unary call: resolves to the JSON body, or throws ApiError. */
export async function call(method, path, { params, body, signal } = {}) {
  const response = await fetch(BASE + path + query(params), {
    method,
    headers: headers(),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const text = await response.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { error: { message: text.slice(0, 200) } };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, params, signal) => call("GET", path, { params, signal });
export const post = (path, body) => call("POST", path, { body: body || {} });
export const patch = (path, body, params) => call("PATCH", path, { body, params });
export const del = (path) => call("DELETE", path);

/**
 * A streaming call (Server-Sent Events, one JSON event per `data:`): calls
 * onEvent for each event as it arrives. `event: error` carries an OpenAI-shaped
 * error, thrown as ApiError. Aborting `signal` ends the fetch.
 */
export async function stream(path, body, onEvent, signal) {
  const response = await fetch(BASE + path, {
    method: "POST",
    headers: headers({ Accept: "text/event-stream" }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    const text = await response.text();
    let data = {};
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: { message: text.slice(0, 200) } };
    }
    throw new ApiError(response.status, data);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(frame, onEvent);
    }
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(frame, onEvent) {
  let name = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  // The HTTP status was 200 when the stream began; the error body carries code and reason.
  if (name === "error") throw new ApiError(0, payload);
  onEvent(payload);
}

/**
 * What the key may do, found by cheap probes (the API has no "whoami"):
 * ListTenants answers only operators, ListApiKeys only admins.
 */
export async function probeRole() {
  await get("/catalog/models"); // throws UNAUTHENTICATED for a bad key
  const ok = async (path) => {
    try {
      await get(path, { pageSize: 1 });
      return true;
    } catch (error) {
      if (error.status === 403) return false;
      throw error;
    }
  };
  const operator = await ok("/tenants");
  const admin = operator || (await ok("/apiKeys"));
  return { operator, admin };
}
