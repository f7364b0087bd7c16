// The app's one way to reach the server: same-origin fetch, session cookie, CSRF header.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || (body.error && body.error.message))) || `HTTP ${status}`);
    this.status = status;
    this.code = body && (body.code || (body.error && body.error.code));
  }
}

export function csrfToken() {
  const match = document.cookie.split("; ").find((c) => c.startsWith("levant_csrf="));
  return match ? decodeURIComponent(match.slice("levant_csrf=".length)) : "";
}

export function headers(extra = {}) {
  return { "content-type": "application/json", "x-csrf-token": csrfToken(), ...extra };
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: headers(),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export async function me() {
  try {
    return await api("/auth/me");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

export const signIn = (body) => api("/auth/login", { method: "POST", body });
export const signOut = () => api("/auth/logout", { method: "POST" });

/**
 * Yield the JSON payloads of an SSE response body (`data: …` records, until [DONE]).
 */
export async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const record = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = record
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.releaseLock();
  }
}
