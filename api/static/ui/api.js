// The console's only way to the server: the public REST API, with the key the user typed in.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** A client for the API under the page's origin (and path prefix, if any). */
export function makeApi(key) {
  async function request(method, path, { query, body } = {}) {
    // Relative to the page (/ui): "v1/x" is /v1/x, also behind a proxy that adds a prefix.
    const url = new URL(path, document.baseURI);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    const headers = { Authorization: `Bearer ${key}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }
  return {
    get: (path, query) => request("GET", path, { query }),
    post: (path, body) => request("POST", path, { body }),
  };
}

/** A path segment, percent-encoded (user ids may hold "/" or "?"). */
export const seg = (value) => encodeURIComponent(value);
