// The shell: hash routes to pages, one page at a time. Each page gets the
// view element and a context whose `signal` aborts when the page is left
// (closing its event stream and timers) and `notice` shows a message.

import { forgetToken, hasToken } from './api.js';
import * as studies from './studies.js';
import * as queues from './queues.js';
import * as pools from './pools.js';
import * as inference from './inference.js';
import * as events from './events.js';

/** [pattern, page, name of the nav entry]; a pattern's groups are the page's arguments. */
const ROUTES = [
  [/^#\/studies$/, studies.list, 'studies'],
  [/^#\/studies\/([^/?]+)$/, studies.one, 'studies'],
  [/^#\/queues$/, queues.list, 'queues'],
  [/^#\/queues\/([^/?]+)$/, queues.one, 'queues'],
  [/^#\/pools$/, pools.list, 'pools'],
  [/^#\/pools\/([^/?]+)$/, pools.one, 'pools'],
  [/^#\/inference$/, inference.list, 'inference'],
  [/^#\/events(?:\?(.*))?$/, events.log, 'events'],
  [/^#\/replay\/([^/]+)\/([^/]+)\/(\d+)$/, events.replay, 'events'],
];

let leaving = null;

function notice(message) {
  const box = document.getElementById('notice');
  box.textContent = message ?? '';
  box.hidden = !message;
}

async function route() {
  leaving?.abort();
  leaving = new AbortController();
  notice(null);
  const hash = location.hash || '#/studies';
  const found = ROUTES.map(([pattern, page, nav]) => [hash.match(pattern), page, nav]).find(([m]) => m);
  const view = document.getElementById('view');
  view.replaceChildren();
  if (!found) {
    notice(`No page ${hash}`);
    return;
  }
  const [match, page, nav] = found;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('here', a.dataset.page === nav);
  const context = { signal: leaving.signal, notice: (e) => notice(e?.message ?? String(e)) };
  try {
    // Inside the try: a malformed escape in the address is shown, not lost.
    const args = match.slice(1).map((part) => (part === undefined ? '' : decodeURIComponent(part)));
    await page(view, context, ...args);
  } catch (error) {
    if (!context.signal.aborted) context.notice(error);
  }
}

document.getElementById('forget').addEventListener('click', () => {
  forgetToken();
  route();
});
document.getElementById('forget').hidden = !hasToken();
window.addEventListener('hashchange', route);
route();
