// The Noor API from the browser: the key from this tab's session, JSON in and out, errors as ApiError.

const KEY = "noor.key";

export class ApiError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.status = status; // 0: the server could not be reached
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

export function key() {
  return sessionStorage.getItem(KEY);
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

// FastAPI says {"detail": "text"} for our errors and {"detail": [{loc, msg}]} for validation (422).
function detailOf(data, text, status) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const where = (d.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
        return where ? `${where}: ${d.msg}` : d.msg;
      })
      .join("; ");
  }
  return text ? text.slice(0, 300) : `HTTP ${status}`;
}

export async function call(method, path, { json, form, signal, auth = key() } = {}) {
  const headers = {};
  if (auth) headers.Authorization = `Bearer ${auth}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, String(err.message || err));
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) throw new ApiError(res.status, detailOf(data, text, res.status), res.headers.get("Retry-After"));
  return data;
}

export const api = {
  credits: (auth) => call("GET", "/dream-machine/v1/credits", { auth }),
  options: () => call("GET", "/v1/studio/options"),
  quote: (body, signal) => call("POST", "/v1/studio/quote", { json: body, signal }),
  create: (body) => call("POST", "/dream-machine/v1/generations/video", { json: body }),
  get: (id) => call("GET", `/dream-machine/v1/generations/${encodeURIComponent(id)}`),
  list: (limit, offset) => call("GET", `/dream-machine/v1/generations?limit=${limit}&offset=${offset}`),
  gallery: (params) => call("GET", `/v1/studio/generations?${new URLSearchParams(params)}`),
  remove: (id) => call("DELETE", `/dream-machine/v1/generations/${encodeURIComponent(id)}`),
  upscale: (id, resolution) =>
    call("POST", `/dream-machine/v1/generations/${encodeURIComponent(id)}/upscale`, { json: { resolution } }),
  // Modify Video (an edit that keeps the source's shapes and motion as far as `mode` says) and Reframe: the source
  // is a finished generation's own file, named by its URL as the Dream Machine API takes it
  modify: (url, mode, prompt, model) =>
    call("POST", "/dream-machine/v1/generations/video/modify", {
      json: { generation_type: "modify_video", media: { url }, mode, prompt, model },
    }),
  reframe: (kind, url, aspect_ratio, prompt, model) =>
    call("POST", `/dream-machine/v1/generations/${kind}/reframe`, {
      json: { generation_type: `reframe_${kind}`, media: { url }, aspect_ratio, prompt: prompt || undefined, model },
    }),
  // sound for a finished clip, made by the installed audio model: a new generation, the clip with an AAC track
  addAudio: (id, prompt) =>
    call("POST", `/dream-machine/v1/generations/${encodeURIComponent(id)}/audio`, {
      json: { generation_type: "add_audio", prompt: prompt || undefined },
    }),
  upload: (file) => {
    const form = new FormData();
    form.append("file", file);
    return call("POST", "/v1/uploads", { form });
  },
  planSite: (body) => call("POST", "/v1/plan/site", { json: body }),
  planChips: (body) => call("POST", "/v1/plan/chips", { json: body }),
};
