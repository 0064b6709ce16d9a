// Studies (actor `solver`): the list, and one study with its best-so-far
// curve, each trial's value, a parameter-vs-value scatter per parameter, the
// trials table and, when the control plane runs it (`study_run`), its jobs.

import { act, ids, redrawOn, state } from './api.js';
import { plot } from './charts.js';
import { el, facts, link, num, pairs, section, table, time, duration } from './dom.js';

/** `#/studies`: every study with its progress and best value. */
export async function list(view, ctx) {
  const draw = async () => {
    const names = await ids('solver');
    const rows = await Promise.all(names.map(async (id) => ({ id, study: await state('solver', id) })));
    view.replaceChildren(section('Studies', table([
      ['study', (r) => link(`#/studies/${encodeURIComponent(r.id)}`, r.id)],
      ['status', (r) => r.study.status],
      ['told / budget', (r) => `${r.study.counts?.told ?? 0} / ${r.study.counts?.budget ?? '—'}`],
      ['running', (r) => num(r.study.counts?.running)],
      ['best', (r) => num(r.study.best?.value)],
      ['sampler', (r) => samplerName(r.study.config?.sampler)],
    ], rows, 'studies')));
  };
  await redrawOn(ctx.signal, (e) => e.stream.startsWith('solver/'), draw, ctx.notice);
}

function samplerName(sampler) {
  if (!sampler) return '—';
  return typeof sampler === 'string' ? sampler : sampler.type ?? JSON.stringify(sampler);
}

/** `#/studies/<id>`: one study, live. */
export async function one(view, ctx, id) {
  const times = new Map();
  const streams = [`solver/${id}`, `study_run/${id}`];
  const draw = async () => {
    const [study, run] = await Promise.all([state('solver', id), state('study_run', id).catch(() => null)]);
    view.replaceChildren(...studyView(id, study, times), ...runView(id, run, ctx));
  };
  await redrawOn(ctx.signal, (e) => {
    if (e.stream === streams[0]) recordTimes(times, e);
    return streams.includes(e.stream);
  }, draw, ctx.notice);
}

/** Notes when each trial was handed out and when it ended, from the study's events. */
function recordTimes(times, e) {
  const at = Date.parse(e.at);
  const p = e.payload;
  const started = [...(p.trials ?? []), ...(p.retried ?? [])];
  if (e.type === 'trials_asked') for (const t of started) times.set(t.trial_id, { asked: at });
  const ended = e.type === 'trials_told' ? p.results : e.type === 'trials_failed' ? p.failures : [];
  for (const t of ended ?? []) {
    const entry = times.get(t.trial_id);
    if (entry && entry.ended === undefined) entry.ended = at;
  }
}

function studyView(id, study, times) {
  const trials = study.trials ?? [];
  const told = trials.filter((t) => typeof t.value === 'number').sort((a, b) => a.number - b.number);
  const maximize = study.config?.direction === 'maximize';
  const directions = study.config?.directions ?? [];
  const multi = directions.length > 1;
  const empty = el('p', { class: 'empty' }, 'no trial told yet');
  const result = multi
    ? ['Pareto front', `${study.best_trials?.length ?? 0} trials: ${(study.best_trials ?? []).map((t) => t.trial_id).join(', ') || '—'}`]
    : ['best', study.best ? `${num(study.best.value)} (trial ${study.best.number}: ${pairs(study.best.params)})` : '—'];
  return [
    section(`Study ${id}`, facts([
      ['status', study.status + (study.stop_reason ? ` (${study.stop_reason})` : '')],
      multi ? ['directions', directions.join(', ')] : ['direction', maximize ? 'maximize' : 'minimize'],
      ['told / budget', `${study.counts?.told ?? 0} / ${study.counts?.budget ?? '—'}`],
      ['running', num(study.counts?.running)],
      ['failed', num(study.counts?.failed)],
      result,
    ])),
    multi
      ? section('Pareto front', told.length ? frontChart(told, study.best_trials ?? [], directions) : empty)
      : section('Best so far', told.length ? bestChart(told, maximize) : empty),
    section('Parameters vs value', el('div', { class: 'grid' }, paramCharts(study.config?.bounds ?? {}, told))),
    section('Trials', trialsTable(trials, times)),
  ];
}

function bestChart(told, maximize) {
  let best = null;
  const curve = told.map((t) => {
    best = best === null || (maximize ? t.value > best : t.value < best) ? t.value : best;
    return [t.number, best];
  });
  return plot({
    title: 'best so far over trials', x: 'trial', y: 'value',
    series: [
      { name: 'trial value', cls: 's1', dots: true, points: told.map((t) => [t.number, t.value, `trial ${t.number}: ${num(t.value)}`]) },
      { name: 'best so far', cls: 's2', step: true, points: curve },
    ],
  });
}

/**
 * Every told trial by its first two objectives, the Pareto front (the
 * feasible non-dominated trials) highlighted; infeasible trials apart.
 */
function frontChart(told, front, directions) {
  const onFront = new Set(front.map((t) => t.trial_id));
  const point = (t) => [t.values[0], t.values[1], `trial ${t.number}: ${t.values.map(num).join(', ')}${t.feasible === false ? ' (infeasible)' : ''}`];
  const withValues = told.filter((t) => Array.isArray(t.values) && t.values.length > 1);
  const series = [
    { name: 'feasible', cls: 's1', dots: true, points: withValues.filter((t) => t.feasible !== false && !onFront.has(t.trial_id)).map(point) },
    { name: 'infeasible', cls: 's3', dots: true, points: withValues.filter((t) => t.feasible === false).map(point) },
    { name: 'Pareto front', cls: 's2', dots: true, points: withValues.filter((t) => onFront.has(t.trial_id)).map(point) },
  ].filter((s) => s.points.length);
  const axis = (k) => `f${k + 1} (${directions[k]})`;
  return plot({ title: `objectives ${axis(0)} and ${axis(1)}`, x: axis(0), y: axis(1), series });
}

/** A scatter per parameter: its value (categories by index) against the trial's value. */
function paramCharts(bounds, told) {
  return Object.keys(bounds).map((name) => {
    const raw = told.map((t) => t.params?.[name]);
    const categories = [...new Set(raw.filter((v) => typeof v !== 'number').map(String))];
    const position = (v) => (typeof v === 'number' ? v : categories.indexOf(String(v)));
    const xTick = categories.length ? (v) => categories[Math.round(v)] ?? '' : undefined;
    const points = told.map((t) => [position(t.params?.[name]), t.value, `trial ${t.number}: ${name}=${t.params?.[name]}, value ${num(t.value)}`]);
    return el('figure', { class: 'param', 'data-param': name }, el('figcaption', {}, name),
      plot({ title: `${name} vs value`, x: name, y: 'value', xTick, series: [{ cls: 's1', dots: true, points }] }));
  });
}

function trialsTable(trials, times) {
  const now = Date.now();
  return table([
    ['#', (t) => t.number],
    ['trial', (t) => t.trial_id],
    ['state', (t) => el('span', { class: `state ${t.state}` }, t.state)],
    ['params', (t) => pairs(t.params)],
    ['value', (t) => (Array.isArray(t.values) ? t.values.map(num).join(', ') : num(t.value))
      + (t.feasible === false ? ' (infeasible)' : '')],
    ['duration', (t) => {
      const entry = times.get(t.trial_id);
      return entry ? duration((entry.ended ?? now) - entry.asked) : '—';
    }],
    ['lease', (t) => (t.lease_until ? `until ${time(t.lease_until)}` : '—') + (t.retries ? `, ${t.retries} retries` : '')],
  ], [...trials].reverse(), 'trials');
}

/** The run of the study, if the control plane runs it: status, actions, live jobs. */
function runView(id, run, ctx) {
  if (!run || !run.status) return [];
  const button = (type) => el('button', { type: 'button', 'data-action': type }, type.replace('_run', ''));
  const buttons = el('div', { class: 'actions' }, button('pause_run'), button('resume_run'), button('stop_run'));
  buttons.addEventListener('click', (event) => {
    const type = event.target.dataset?.action;
    if (type) act('study_run', id, { type }, ctx.notice);
  });
  return [section(`Run of ${id}`,
    facts([
      ['status', run.status + (run.reason ? ` (${run.reason})` : '')],
      ['budget', num(run.budget)],
      ['parallel', num(run.spec?.parallel)],
      ['counts', pairs(run.counts)],
      ['queue', link(`#/queues/${encodeURIComponent(id)}`, id)],
    ]),
    buttons,
    el('h3', {}, 'Live jobs'),
    table([
      ['trial', (j) => j.trial_id],
      ['job', (j) => j.job_id],
      ['phase', (j) => j.phase],
      ['attempt', (j) => num(j.attempt)],
      ['node', (j) => j.node ?? '—'],
    ], run.running ?? [], 'run-jobs'))];
}
