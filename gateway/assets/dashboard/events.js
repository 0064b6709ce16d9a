// Events: the live log, filtered by stream, type and principal, each event
// linked to the state of its aggregate at its seq (`#/replay/...`).

import { follow, stateAt } from './api.js';
import { el, facts, link, section, table, time } from './dom.js';

/** How many events the page keeps (the newest). */
const KEEP = 1000;
const FILTERS = ['stream', 'type', 'principal'];

/** `#/events?stream=&type=&principal=`: the log, live. */
export async function log(view, ctx, query) {
  const wanted = new URLSearchParams(query);
  const inputs = Object.fromEntries(FILTERS.map((name) => [name,
    el('input', { id: `filter-${name}`, name, placeholder: `${name} contains`, value: wanted.get(name) ?? '' })]));
  const count = el('span', { class: 'count' });
  const holder = el('div');
  view.replaceChildren(section('Events',
    el('form', { class: 'filters' }, FILTERS.map((name) => el('label', {}, name, inputs[name])), count),
    holder));
  const events = [];
  const keep = (e) => FILTERS.every((name) => (e[name] ?? '').includes(inputs[name].value.trim()));
  const draw = () => {
    const shown = events.filter(keep).reverse();
    count.textContent = `${shown.length} of ${events.length} events`;
    holder.replaceChildren(eventsTable(shown));
  };
  for (const input of Object.values(inputs)) input.addEventListener('input', draw);
  let timer = null;
  draw();
  await follow((e) => {
    events.push(e);
    if (events.length > KEEP) events.shift();
    clearTimeout(timer);
    timer = setTimeout(draw, 100);
  }, ctx.signal);
}

/** Where an aggregate's page is, for the actors that have one. */
function pageOf(stream) {
  const [actor, id] = stream.split('/');
  const page = { solver: 'studies', study_run: 'studies', scheduler: 'queues', provisioner: 'pools' }[actor];
  if (page) return `#/${page}/${encodeURIComponent(id)}`;
  return actor === 'inference' ? '#/inference' : null;
}

function eventsTable(events) {
  return table([
    ['time', (e) => time(e.at)],
    ['stream', (e) => (pageOf(e.stream) ? link(pageOf(e.stream), e.stream) : e.stream)],
    ['seq', (e) => link(`#/replay/${e.stream}/${e.seq}`, `state at ${e.seq}`)],
    ['type', (e) => e.type],
    ['principal', (e) => e.principal ?? '—'],
  ], events, 'events');
}

/** `#/replay/<actor>/<id>/<seq>`: the aggregate's state after that event. */
export async function replay(view, ctx, actor, id, seq) {
  const stream = `${actor}/${id}`;
  const at = await stateAt(stream, seq);
  const step = (n, text) => link(`#/replay/${stream}/${n}`, text);
  view.replaceChildren(section(`${stream} at seq ${at.seq}`,
    facts([['stream', stream], ['seq', String(at.seq)], ['stored at', time(at.at)]]),
    el('p', { class: 'actions' }, Number(seq) > 1 ? step(Number(seq) - 1, '← previous') : '',
      ' ', step(Number(seq) + 1, 'next →'), ' ', link(`#/events?stream=${encodeURIComponent(stream)}`, 'its events')),
    el('pre', { id: 'replayed' }, JSON.stringify(at.state, null, 2))));
}
