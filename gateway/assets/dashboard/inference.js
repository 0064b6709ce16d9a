// Inference (actor `inference`, aggregate ModelDeployment): each worker's
// versions with their load records and the active version; and, for the
// workers `up` was told about (`--inference-worker`), requests/s and mean
// latency between two reads of their /metrics.

import { get, ids, parseMetrics, redrawOn, state } from './api.js';
import { plot } from './charts.js';
import { el, facts, num, section, table } from './dom.js';

/** How often the workers' metrics are read. */
const SAMPLE_EVERY_MS = 2000;
/** How many rate points each worker keeps. */
const KEEP = 90;
/** CarlaRL's per-request HTTP histogram; only its `/predict` series count
 * (the others are probes and the gateway's own reads of /metrics). */
const REQUESTS = 'carla_rl_request_duration_seconds';

/** `#/inference`: the deployments, live, and the workers' rates. */
export async function list(view, ctx) {
  const deployments = el('div');
  const rates = el('div');
  view.replaceChildren(deployments, rates);
  const draw = async () => {
    const names = await ids('inference').catch((error) => {
      if (error.code !== 'UNAVAILABLE') throw error;
      deployments.replaceChildren(section('Inference', el('p', { class: 'empty' }, `No inference worker answers: ${error.message}.`)));
      return null;
    });
    if (names === null) return;
    const all = await Promise.all(names.map(async (id) => ({ id, d: await state('inference', id) })));
    deployments.replaceChildren(
      ...(all.length ? all.map(deploymentView) : [section('Inference', el('p', { class: 'empty' }, 'no deployment yet'))]));
  };
  watchRates(rates, ctx);
  await redrawOn(ctx.signal, (e) => e.stream.startsWith('inference/'), draw, ctx.notice);
}

function deploymentView({ id, d }) {
  const versions = Object.entries(d.versions ?? {}).map(([name, v]) => ({ name, ...v }));
  return section(`Deployment ${id}`,
    facts([['active version', d.active], ['served before', (d.history ?? []).join(', ') || '—']]),
    table([
      ['version', (v) => el('span', { class: v.name === d.active ? 'active' : '' }, v.name)],
      ['status', (v) => el('span', { class: `state ${v.status}` }, v.status)],
      ['model', (v) => v.model_name ?? '—'],
      ['layers', (v) => (v.layer_sizes ? [v.input_size, ...v.layer_sizes].join('→') : '—')],
      ['warm-up', (v) => (v.warmup_ms === undefined ? '—' : `${num(v.warmup_ms)} ms`)],
      ['artifacts', (v) => Object.keys(v.artifact_hashes ?? {}).length || '—'],
      ['error', (v) => (v.code ? `${v.code}: ${v.message}` : '')],
    ], versions, `versions-${id}`));
}

/** The request count and summed seconds of a worker's metrics text. */
function totals(text) {
  const samples = parseMetrics(text);
  const value = (name) => samples
    .filter((s) => s.name === name && s.labels.endpoint === '/predict')
    .reduce((sum, s) => sum + s.value, 0);
  return { count: value(`${REQUESTS}_count`), seconds: value(`${REQUESTS}_sum`) };
}

/** Reads the workers' metrics every SAMPLE_EVERY_MS and draws their rates into `holder`. */
function watchRates(holder, ctx) {
  const workers = new Map();
  const sample = async () => {
    const { workers: read } = await get('/v1/inference/workers');
    const now = Date.now();
    for (const w of read) {
      const entry = workers.get(w.url) ?? { last: null, points: [], error: null };
      workers.set(w.url, entry);
      entry.error = w.error ?? null;
      if (w.error) continue;
      const t = { at: now, ...totals(w.metrics) };
      if (entry.last && t.count >= entry.last.count) {
        const requests = t.count - entry.last.count;
        entry.points.push({
          at: now,
          rate: requests / ((now - entry.last.at) / 1000),
          latency: requests ? ((t.seconds - entry.last.seconds) / requests) * 1000 : null,
        });
        if (entry.points.length > KEEP) entry.points.shift();
      }
      entry.last = t;
    }
    holder.replaceChildren(...(workers.size ? ratesView(workers) : []));
  };
  const timer = setInterval(() => sample().catch(ctx.notice), SAMPLE_EVERY_MS);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));
  sample().catch(ctx.notice);
}

function ratesView(workers) {
  const entries = [...workers.entries()];
  const t0 = Math.min(...entries.flatMap(([, w]) => w.points.map((p) => p.at)));
  const series = (key) => entries.map(([url, w], i) => ({
    name: url, cls: `s${(i % 2) + 1}`, line: true, dots: true,
    points: w.points.filter((p) => p[key] !== null).map((p) => [(p.at - t0) / 1000, p[key]]),
  }));
  const latest = (w, key) => w.points[w.points.length - 1]?.[key];
  const charts = entries.some(([, w]) => w.points.length) ? el('div', { class: 'grid' },
    plot({ title: 'requests per second', x: 'seconds', y: 'req/s', series: series('rate') }),
    plot({ title: 'mean latency', x: 'seconds', y: 'ms', series: series('latency') })) : el('p', { class: 'empty' }, 'measuring…');
  return [section('Workers: requests and latency',
    table([
      ['worker', ([url]) => url],
      ['req/s', ([, w]) => el('span', { 'data-rate': latest(w, 'rate') ?? '' }, num(latest(w, 'rate')))],
      ['mean latency', ([, w]) => (latest(w, 'latency') === undefined || latest(w, 'latency') === null ? '—' : `${num(latest(w, 'latency'))} ms`)],
      ['error', ([, w]) => w.error ?? ''],
    ], entries, 'workers'),
    charts)];
}
