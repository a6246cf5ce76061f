// Every call goes through the admin API a script would use, with the token in Kong-Admin-Token.
// The token is kept for this tab only (sessionStorage).
const KEY = 'event-hooks.admin-token';

export const token = () => sessionStorage.getItem(KEY);
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

let unauthorized = () => {};
export function onUnauthorized(handler) { unauthorized = handler; }

export async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers['Kong-Admin-Token'] = t;
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text }; }
  }
  if (response.status === 401) unauthorized(data);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body === undefined ? {} : body);
export const patch = (path, body) => call('PATCH', path, body);
export const put = (path, body) => call('PUT', path, body);
export const del = (path) => call('DELETE', path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

let catalogue = null;
// The sources catalogue, fetched once per page load (custom events included); `sources.reset()`
// after a change.
export async function sources() {
  if (!catalogue) catalogue = get('/event-hooks/sources').then((r) => r.data).catch((e) => { catalogue = null; throw e; });
  return catalogue;
}
sources.reset = () => { catalogue = null; };
