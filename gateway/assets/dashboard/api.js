// The API client: the gateway's /v1 routes with the session's bearer token,
// and the live event stream (/v1/events?follow=true, newline-delimited JSON
// read through fetch: EventSource cannot send an Authorization header).

const TOKEN_KEY = 'flotilla.token';

/** A refused request: the HTTP status and the gateway's error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let waitingForToken = null;

/** Shows the token form; resolves once a token is entered. */
function askToken() {
  if (waitingForToken) return waitingForToken;
  const form = document.getElementById('login');
  const input = document.getElementById('token');
  form.hidden = false;
  input.focus();
  waitingForToken = new Promise((resolve) => {
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      input.value = '';
      form.hidden = true;
      document.getElementById('forget').hidden = false;
      waitingForToken = null;
      resolve();
    }, { once: true });
  });
  return waitingForToken;
}

/** Forgets the session's token (the next request asks again). */
export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById('forget').hidden = true;
}

/** Whether a token is in use. */
export function hasToken() {
  return sessionStorage.getItem(TOKEN_KEY) !== null;
}

/** fetch with the token; a 401 asks for a token and tries again. */
async function request(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.set('Authorization', `Bearer ${token}`);
    const res = await fetch(path, { ...init, headers });
    if (res.status !== 401) return res;
    if (token) sessionStorage.removeItem(TOKEN_KEY);
    await askToken();
  }
}

async function failure(res) {
  const body = await res.json().catch(() => null);
  const error = body && body.error;
  const hint = res.status === 403 ? ' (your token\'s role does not allow this)' : '';
  return new ApiError(res.status, error ? error.code : `HTTP_${res.status}`,
    `${error ? error.message : res.statusText}${hint}`);
}

/** GET a /v1 route; the whole reply (`{ok, stream, seq, result}`). */
export async function reply(path) {
  const res = await request(path);
  if (!res.ok) throw await failure(res);
  return res.json();
}

/** GET a /v1 route; its reply's `result`. */
export async function get(path) {
  return (await reply(path)).result;
}

const part = encodeURIComponent;

/** The ids of an actor's aggregates. */
export async function ids(actor) {
  return (await get(`/v1/query/${part(actor)}`)).ids;
}

/** The state of one aggregate. */
export function state(actor, id) {
  return get(`/v1/query/${part(actor)}/${part(id)}`);
}

/** The query reply of one aggregate (its `seq` and `result`). */
export function stateReply(actor, id) {
  return reply(`/v1/query/${part(actor)}/${part(id)}`);
}

/** The state of `stream` (`actor/id`) after its event `seq`. */
export function stateAt(stream, seq) {
  const [actor, id] = stream.split('/');
  return get(`/v1/replay/${part(actor)}/${part(id)}?seq=${part(seq)}`);
}

/** Sends a command; its reply. */
export async function send(actor, id, command) {
  const res = await request(`/v1/cmd/${part(actor)}/${part(id)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(command),
  });
  if (!res.ok) throw await failure(res);
  return res.json();
}

/**
 * Sends `command` to `actor/id` from a button and says how it went through
 * `notice`: a refusal shows its message and code (403 FORBIDDEN when the
 * token's role may not send commands).
 */
export async function act(actor, id, command, notice) {
  try {
    await send(actor, id, command);
    notice(`${command.type}: done`);
  } catch (error) {
    notice(`${command.type} refused: ${error.message} [${error.code}]`);
  }
}

/** The gateway's Prometheus text. */
export async function metrics() {
  const res = await request('/metrics');
  if (!res.ok) throw await failure(res);
  return res.text();
}

/** Prometheus text as samples: [{name, labels: {..}, value}]. */
export function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const text_line of text.split('\n')) {
    const m = line.exec(text_line);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(label)) labels[k] = v.replace(/\\(.)/g, '$1');
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

const RETRY_MS = 2000;

/**
 * Follows the event log until `signal` aborts: `onEvent(envelope)` for
 * every event, old ones first, then each new one as it is stored. A broken
 * connection is opened again; events seen before are skipped by their seq.
 */
export async function follow(onEvent, signal) {
  const seen = new Map();
  const live = document.getElementById('live');
  while (!signal.aborted) {
    try {
      const res = await request('/v1/events?follow=true', { signal });
      if (!res.ok) throw await failure(res);
      live.textContent = 'live';
      live.className = 'live on';
      for await (const envelope of lines(res.body)) {
        if (envelope.error) throw new ApiError(500, envelope.error.code, envelope.error.message);
        if ((seen.get(envelope.stream) ?? 0) >= envelope.seq) continue;
        seen.set(envelope.stream, envelope.seq);
        onEvent(envelope);
      }
    } catch (error) {
      if (signal.aborted) return;
      live.textContent = `reconnecting: ${error.message}`;
      live.className = 'live off';
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

/** The JSON values of a newline-delimited body, as they arrive. */
async function* lines(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const text = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (text) yield JSON.parse(text);
    }
  }
}

/**
 * Draws with `draw()` now, then again (at most every 250 ms) after every
 * event for which `matches(envelope)` is true, until `signal` aborts.
 * `draw` failures go to `onError`.
 */
export async function redrawOn(signal, matches, draw, onError) {
  let timer = null;
  const again = () => {
    clearTimeout(timer);
    timer = setTimeout(() => draw().catch(onError), 250);
  };
  signal.addEventListener('abort', () => clearTimeout(timer));
  await draw().catch(onError);
  await follow((envelope) => { if (matches(envelope)) again(); }, signal);
}
