// Inference (actor `inference`, aggregate ModelDeployment): each worker's
// versions with their load records and the active version.

import { ids, redrawOn, state } from './api.js';
import { el, facts, num, section, table } from './dom.js';

/** `#/inference`: every deployment, live. */
export async function list(view, ctx) {
  const draw = async () => {
    const names = await ids('inference').catch((error) => {
      if (error.code !== 'UNAVAILABLE') throw error;
      view.replaceChildren(section('Inference', el('p', { class: 'empty' }, `No inference worker answers: ${error.message}.`)));
      return null;
    });
    if (names === null) return;
    const deployments = await Promise.all(names.map(async (id) => ({ id, d: await state('inference', id) })));
    view.replaceChildren(
      ...(deployments.length ? deployments.map(deploymentView) : [section('Inference', el('p', { class: 'empty' }, 'no deployment yet'))]));
  };
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
