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

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

export async function api(path, options) {
  const method = (options && options.method) || "GET";
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  let body;
  if (method !== "GET") {
    if (!cookie("router_csrf")) await fetch("/api/csrf", { headers, credentials: "same-origin" });
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = cookie("router_csrf");
    body = JSON.stringify((options && options.body) || {});
  }
  const response = await fetch(path, { method, headers, body, credentials: "same-origin", cache: "no-store" });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`);
  return data;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== "" && value !== null && value !== undefined) search.set(key, value);
  const text = search.toString();
  return text ? "?" + text : "";
}
