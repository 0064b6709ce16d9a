// Building the DOM from data without ever parsing it as HTML: every text
// goes in through textContent, every attribute through setAttribute.

/** An element `tag` with `attrs` (`class`, `href`, data-*, ...) and children (nodes or text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  node.append(...children.flat().filter((c) => c !== undefined && c !== null).map(asNode));
  return node;
}

function asNode(child) {
  return child instanceof Node ? child : document.createTextNode(String(child));
}

/** A link to a dashboard route (`#/studies/x`). */
export function link(route, text) {
  return el('a', { href: route }, text);
}

/** A section with a heading. */
export function section(title, ...children) {
  return el('section', { class: 'card' }, el('h2', {}, title), ...children);
}

/**
 * A table: `columns` are [heading, row => cell] pairs, a cell text or a node.
 * `id` names it for tests and styles.
 */
export function table(columns, rows, id) {
  const head = el('tr', {}, columns.map(([heading]) => el('th', {}, heading)));
  const body = rows.map((row) => el('tr', {}, columns.map(([, cell]) => el('td', {}, cell(row) ?? ''))));
  if (rows.length === 0) body.push(el('tr', {}, el('td', { colspan: columns.length, class: 'empty' }, 'none')));
  return el('table', { id }, el('thead', {}, head), el('tbody', {}, body));
}

/** Key/value pairs as a definition list. */
export function facts(pairs) {
  return el('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v ?? '—')]));
}

/** A number for people: up to 6 significant digits. */
export function num(value) {
  if (value === null || value === undefined) return '—';
  return typeof value === 'number' ? String(Number(value.toPrecision(6))) : String(value);
}

/** Unix milliseconds or an RFC 3339 time as local time of day. */
export function time(value) {
  if (value === null || value === undefined) return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleTimeString();
}

/** Milliseconds as `1.2 s`, `3 min`. */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

/** `{a: 1, b: "x"}` as `a=1 b=x`. */
export function pairs(object) {
  return Object.entries(object ?? {}).map(([k, v]) => `${k}=${typeof v === 'number' ? num(v) : v}`).join(' ');
}

/** Calls `fn` at most once per `ms`, after the last call (a burst of events → one refresh). */
export function debounce(fn, ms = 250) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}
