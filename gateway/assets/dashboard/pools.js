// Pools (actor `provisioner`): the list, and one pool with its nodes by
// state, each node's GPU temperature and utilisation from the latest
// heartbeats (the gateway's /metrics gauges), replacements, the circuit
// breaker and the pool's recent health events.

import { act, follow, ids, metrics, parseMetrics, redrawOn, state } from './api.js';
import { bars } from './charts.js';
import { el, facts, link, num, pairs, section, table, time } from './dom.js';

/** How often the GPU gauges are read again. */
const METRICS_EVERY_MS = 5000;
/** How many of the pool's events are shown. */
const RECENT = 25;

/** `#/pools`: every pool with its counts. */
export async function list(view, ctx) {
  const draw = async () => {
    const names = await ids('provisioner');
    const rows = await Promise.all(names.map(async (id) => ({ id, pool: await state('provisioner', id) })));
    view.replaceChildren(listView(rows));
  };
  await redrawOn(ctx.signal, (e) => e.stream.startsWith('provisioner/'), draw, ctx.notice);
}

function listView(rows) {
  return section('Pools', table([
    ['pool', (r) => link(`#/pools/${encodeURIComponent(r.id)}`, r.id)],
    ['desired', (r) => num(r.pool.desired)],
    ['live', (r) => num(r.pool.live)],
    ['healthy', (r) => num(r.pool.healthy)],
    ['nodes', (r) => pairs(r.pool.counts)],
    ['circuit breaker', (r) => r.pool.circuit_breaker],
  ], rows, 'pools'));
}

/** GPU gauges by node: {node: [{gpu, temperature, utilization}]}. */
function gpusByNode(text) {
  const byNode = {};
  const entry = (labels) => {
    const gpus = (byNode[labels.node] ??= []);
    let gpu = gpus.find((g) => g.gpu === labels.gpu);
    if (!gpu) gpus.push((gpu = { gpu: labels.gpu }));
    return gpu;
  };
  for (const s of parseMetrics(text)) {
    if (s.name === 'flotilla_node_gpu_temperature_celsius') entry(s.labels).temperature = s.value;
    if (s.name === 'flotilla_node_gpu_utilization_percent') entry(s.labels).utilization = s.value;
  }
  return byNode;
}

/** `#/pools/<id>`: one pool, live. */
export async function one(view, ctx, id) {
  const stream = `provisioner/${id}`;
  const recent = [];
  let gpus = {};
  let timer = null;
  const draw = async () => {
    const pool = await state('provisioner', id);
    view.replaceChildren(...poolView(id, pool, gpus, recent, ctx));
  };
  const readGauges = async () => {
    gpus = gpusByNode(await metrics());
    await draw();
  };
  const tick = setInterval(() => readGauges().catch(ctx.notice), METRICS_EVERY_MS);
  ctx.signal.addEventListener('abort', () => { clearInterval(tick); clearTimeout(timer); });
  await readGauges().catch(ctx.notice);
  await follow((e) => {
    if (e.stream !== stream) return;
    recent.push(e);
    if (recent.length > RECENT) recent.shift();
    clearTimeout(timer);
    timer = setTimeout(() => draw().catch(ctx.notice), 250);
  }, ctx.signal);
}

function hottest(node, gpus, key) {
  const values = (gpus[node] ?? []).map((g) => g[key]).filter((v) => typeof v === 'number');
  return values.length ? Math.max(...values) : null;
}

/** Cordon for a serving node, uncordon for a cordoned one (operators only). */
function nodeAction(pool, node, ctx) {
  const type = { active: 'cordon_node', degraded: 'cordon_node', cordoned: 'uncordon_node' }[node.status];
  if (!type) return '';
  const button = el('button', { type: 'button', 'data-action': type, 'data-node': node.node_id }, type.replace('_node', ''));
  button.addEventListener('click', () => act('provisioner', pool, { type, node_id: node.node_id, now: Date.now() }, ctx.notice));
  return button;
}

function poolView(id, pool, gpus, recent, ctx) {
  const nodes = pool.nodes ?? [];
  const gauge = (key, title, unit) => bars({
    title, y: unit,
    items: nodes.filter((n) => hottest(n.node_id, gpus, key) !== null)
      .map((n) => ({ label: n.node_id, value: hottest(n.node_id, gpus, key), cls: 's1' })),
  });
  return [
    section(`Pool ${id}`, facts([
      ['desired', num(pool.desired)],
      ['live', num(pool.live)],
      ['healthy / unhealthy', `${num(pool.healthy)} / ${num(pool.unhealthy)}`],
      ['replacements', num(pool.replacements)],
      ['circuit breaker', pool.circuit_breaker + (pool.breaker_open_since ? ` since ${time(pool.breaker_open_since)}` : '')],
    ])),
    el('div', { class: 'grid' },
      section('Nodes by state', bars({ title: 'nodes by state', y: 'nodes',
        items: Object.entries(pool.counts ?? {}).map(([label, value]) => ({ label, value, cls: `st-${label}` })) })),
      section('GPU temperature (hottest GPU)', gauge('temperature', 'GPU temperature by node', '°C')),
      section('GPU utilisation (busiest GPU)', gauge('utilization', 'GPU utilisation by node', '%'))),
    section('Nodes', table([
      ['node', (n) => n.node_id],
      ['status', (n) => el('span', { class: `state ${n.status}` }, n.status)],
      ['health', (n) => n.health],
      ['GPUs', (n) => (gpus[n.node_id] ?? []).map((g) => `gpu${g.gpu} ${num(g.temperature)}°C ${num(g.utilization)}%`).join(', ') || '—'],
      ['reasons', (n) => (n.reasons ?? []).join('; ')],
      ['replaces', (n) => n.replaces ?? '—'],
      ['replaced by', (n) => n.replaced_by ?? '—'],
      ['action', (n) => nodeAction(id, n, ctx)],
    ], nodes, 'nodes')),
    section('Recent events', table([
      ['time', (e) => time(e.at)],
      ['seq', (e) => link(`#/replay/${e.stream}/${e.seq}`, String(e.seq))],
      ['type', (e) => e.type],
      ['node', (e) => e.payload?.node_id ?? '—'],
      ['details', (e) => pairs(Object.fromEntries(Object.entries(e.payload ?? {})
        .filter(([k, v]) => k !== 'type' && k !== 'node_id' && typeof v !== 'object')))],
    ], [...recent].reverse(), 'pool-events')),
  ];
}
