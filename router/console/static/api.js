// The JSON API under /api/ (docs/activity.md). With ui.auth.bearer the token the user typed is
// kept in this tab's sessionStorage and sent as a header; with basic auth the browser sends the
// credentials itself. State-changing requests echo the router_csrf cookie in X-CSRF-Token.

const TOKEN_KEY = "router.console.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function hasToken() {
  return Boolean(sessionStorage.getItem(TOKEN_KEY));
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// The router_csrf cookie is HttpOnly: its value comes from GET /api/csrf, once per page.
let csrfToken = "";

async function csrf(headers) {
  if (!csrfToken) {
    const response = await fetch("/api/csrf", { headers, credentials: "same-origin", cache: "no-store" });
    if (!response.ok) throw new ApiError(response.status, `CSRF token: HTTP ${response.status}`);
    csrfToken = (await response.json()).token;
  }
  return csrfToken;
}

export async function api(path, options) {
  const method = (options && options.method) || "GET";
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  let body;
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = await csrf({ ...headers });
    body = JSON.stringify((options && options.body) || {});
  }
  const response = await fetch(path, { method, headers, body, credentials: "same-origin", cache: "no-store" });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 403 && method !== "GET") csrfToken = ""; // a new cookie: ask again next time
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`);
  return data;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== "" && value !== null && value !== undefined) search.set(key, value);
  const text = search.toString();
  return text ? "?" + text : "";
}
