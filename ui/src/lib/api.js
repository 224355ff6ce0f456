// The one way the pages talk to their party: its documented JSON API, on the page's own origin,
// with the session's bearer token. Every error answer of the services is {"error", "type"}; it
// becomes an ApiError whose message is the service's own, shown to the user as it is.
import { session } from "./session.svelte.js";

export class ApiError extends Error {
  constructor(status, message, type) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function headers(extra) {
  const all = { Accept: "application/json", ...extra };
  if (session.token) all.Authorization = `Bearer ${session.token}`;
  return all;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let type = "HTTPError";
  try {
    const body = await response.json();
    if (typeof body.error === "string") message = body.error;
    if (typeof body.type === "string") type = body.type;
  } catch {
    // Not a JSON error body (a proxy's page, say): the status line says what happened.
  }
  if (response.status === 401) session.refused = true;
  return new ApiError(response.status, message, type);
}

// Paths are relative to the page ("models", not "/models"): a party serving its page under a
// prefix is called under the same prefix.
async function call(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path.replace(/^\//, ""), init);
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJson(path) {
  return (await call("GET", path)).json();
}

export async function sendJson(method, path, body) {
  return (await call(method, path, body)).json();
}

// A download that needs the bearer token (a plain link cannot send it): fetched, then handed to
// the browser as a file named `filename`.
export async function download(path, filename) {
  const blob = await (await call("GET", path)).blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  URL.revokeObjectURL(url);
}

// Run `task` now and then every `milliseconds` after each run has ended (never two at once);
// returns the function that stops it, for an $effect's teardown.
export function every(milliseconds, task) {
  let timer;
  let stopped = false;
  async function tick() {
    try {
      await task();
    } finally {
      if (!stopped) timer = setTimeout(tick, milliseconds);
    }
  }
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
