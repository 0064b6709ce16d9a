// Queues (actor `scheduler`): the list, and one queue with its depth
// (pending and running) over time and its jobs with attempts and output
// tails. The depth's history comes from replays of the queue at seqs spread
// over its stream; then a sample is taken at every new event.

import { ids, redrawOn, stateAt, stateReply } from './api.js';
import { plot } from './charts.js';
import { el, facts, link, num, pairs, section, table, time } from './dom.js';

/** How many replays draw the depth's history. */
const HISTORY_SAMPLES = 24;

/** `#/queues`: every queue with its depth. */
export async function list(view, ctx) {
  const draw = async () => {
    const names = await ids('scheduler');
    const rows = await Promise.all(names.map(async (id) => ({ id, queue: (await stateReply('scheduler', id)).result })));
    view.replaceChildren(section('Queues', table([
      ['queue', (r) => link(`#/queues/${encodeURIComponent(r.id)}`, r.id)],
      ['pending', (r) => num(r.queue.depth?.pending)],
      ['running', (r) => num(r.queue.depth?.running)],
      ['jobs', (r) => pairs(r.queue.counts)],
    ], rows, 'queues')));
  };
  await redrawOn(ctx.signal, (e) => e.stream.startsWith('scheduler/'), draw, ctx.notice);
}

/** The depth of the queue at up to HISTORY_SAMPLES seqs up to `last`, oldest first. */
async function history(stream, last) {
  const every = Math.max(1, Math.ceil(last / HISTORY_SAMPLES));
  const seqs = [];
  for (let seq = 1; seq <= last; seq += every) seqs.push(seq);
  if (seqs[seqs.length - 1] !== last) seqs.push(last);
  const states = await Promise.all(seqs.map((seq) => stateAt(stream, seq)));
  return states.map((s) => ({ t: Date.parse(s.at), depth: s.state.depth ?? {} }));
}

/** `#/queues/<id>`: one queue, live. */
export async function one(view, ctx, id) {
  const stream = `scheduler/${id}`;
  let samples = null;
  const draw = async () => {
    const reply = await stateReply('scheduler', id);
    const queue = reply.result;
    if (samples === null) samples = reply.seq > 0 ? await history(stream, reply.seq) : [];
    else samples.push({ t: Date.now(), depth: queue.depth ?? {} });
    view.replaceChildren(...queueView(id, queue, samples));
  };
  await redrawOn(ctx.signal, (e) => e.stream === stream, draw, ctx.notice);
}

function queueView(id, queue, samples) {
  const t0 = samples.length ? samples[0].t : 0;
  const series = (name, cls, key) => ({
    name, cls, step: true, dots: true,
    points: samples.map((s) => [(s.t - t0) / 1000, s.depth[key] ?? 0, `${name} ${s.depth[key] ?? 0} at ${time(s.t)}`]),
  });
  const jobs = [...(queue.jobs ?? [])].reverse();
  return [
    section(`Queue ${id}`, facts([
      ['pending', num(queue.depth?.pending)],
      ['running', num(queue.depth?.running)],
      ['jobs', pairs(queue.counts)],
      ['more jobs', queue.next ? `listed up to ${queue.next}` : null],
    ])),
    section('Depth over time', samples.length
      ? plot({ title: 'queue depth', x: 'seconds', y: 'jobs', series: [series('pending', 's1', 'pending'), series('running', 's2', 'running')] })
      : el('p', { class: 'empty' }, 'no events yet')),
    section('Jobs', table([
      ['job', (j) => j.job_id],
      ['status', (j) => el('span', { class: `state ${j.status}` }, j.status)],
      ['trial', (j) => j.trial_id ?? '—'],
      ['attempts', (j) => (j.attempts ?? []).map((a) => `#${a.attempt} ${a.status}${a.node ? ` on ${a.node}` : ''}${a.reason ? ` (${a.reason})` : ''}`).join(', ') || '—'],
      ['value', (j) => num(j.value)],
      ['exit', (j) => num(j.exit_code)],
      ['output', (j) => el('pre', { class: 'tail' }, [j.outputs?.stdout_tail, j.outputs?.stderr_tail].filter(Boolean).join('\n--- stderr\n'))],
    ], jobs, 'jobs')),
  ];
}
