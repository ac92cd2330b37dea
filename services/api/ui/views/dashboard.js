// Dashboard: identity, network, programs, services, space and a small traffic chart.

import { h, replace, bytes, duration, table, section } from '../dom.js';

const samples = [];
let root = null;
let node = null;
let refreshing = null;

export async function render(el, api) {
  root = el;
  node = api;
  await refresh();
}

export function leave() { root = null; }

export function onEvent() { schedule(); }
export function onModel(model) { if (model.name === 'service') schedule(); }

// Events drive the refresh; a burst of them costs one refresh per second at most.
function schedule() {
  if (!root || refreshing) return;
  refreshing = setTimeout(() => { refreshing = null; refresh().catch(() => {}); }, 1000);
}

async function optional(promise) {
  try { return await promise; } catch (err) { return { error: err.message }; }
}

async function refresh() {
  const [ident, connected, info, services, consumed, donated, stats] = await Promise.all([
    optional(node.call('identity_get')), optional(node.call('network_connected', { wait_timeout: 0.5 })),
    optional(node.call('process_info')), optional(node.call('services_list')),
    optional(node.call('space_consumed')), optional(node.call('space_donated')),
    optional(node.call('packets_stats'))]);
  if (!root) return;
  if (stats && stats.in) {
    samples.push({ t: Date.now() / 1000, in: stats.in.total_bytes || 0, out: stats.out.total_bytes || 0 });
    if (samples.length > 60) samples.shift();
  }
  replace(root,
    h('div', { class: 'grid' },
      identityCard(ident),
      section('Network', h('p', {}, 'Connected: ',
        h('strong', { id: 'network-state' }, connected.error ? 'no' : 'yes')),
      connected.error ? h('p', { class: 'muted' }, connected.error) : null),
      spaceCard(consumed, donated),
      trafficCard(stats)),
    programsCard(info),
    servicesCard(services));
}

function identityCard(ident) {
  if (ident.error) return section('Identity', h('p', { id: 'global-id', class: 'muted' }, 'no identity yet'),
    h('p', {}, ident.error));
  return section('Identity',
    h('dl', {},
      h('dt', {}, 'Global id'), h('dd', { id: 'global-id' }, ident.global_id),
      h('dt', {}, 'Revision'), h('dd', { id: 'identity-revision' }, ident.revision),
      h('dt', {}, 'Identity servers'),
      h('dd', { id: 'identity-servers' }, (ident.sources || []).map((src) => h('div', {}, src)))));
}

function programsCard(info) {
  if (info.error) return section('Programs', h('p', {}, info.error));
  const rows = (info.processes || []).map((p) => h('tr', { 'data-program': p.name },
    h('td', {}, p.name), h('td', { class: 'program-state' }, p.state), h('td', {}, p.pid),
    h('td', {}, duration(p.uptime)), h('td', {}, p.memory ? bytes(p.memory) : '—')));
  return section('Programs', table(['Program', 'State', 'PID', 'Uptime', 'Memory'], rows, { id: 'programs' }));
}

function servicesCard(services) {
  if (services.error) return section('Services', h('p', {}, services.error));
  const rows = (services || []).map((s) => h('tr', { 'data-service': s.name },
    h('td', {}, s.name), h('td', { class: `state-${String(s.state).toLowerCase()}` }, s.state),
    h('td', {}, s.process || '')));
  return section('Services', table(['Service', 'State', 'Program'], rows, { id: 'services' }));
}

function spaceCard(consumed, donated) {
  return section('Space',
    h('dl', {},
      h('dt', {}, 'Used of needed'),
      h('dd', { id: 'space-used' }, consumed.error ? consumed.error
        : `${bytes(consumed.used)} of ${bytes(consumed.needed)} (${consumed.used_percent})`),
      h('dt', {}, 'Donated'),
      h('dd', { id: 'space-donated' }, donated.error ? donated.error
        : `${bytes(donated.used)} used of ${bytes(donated.donated)} donated`)));
}

function trafficCard(stats) {
  const width = 240;
  const height = 60;
  const svg = h('svg:svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'chart', id: 'traffic-chart' });
  const rates = [];
  for (let i = 1; i < samples.length; i += 1) {
    const dt = Math.max(0.001, samples[i].t - samples[i - 1].t);
    rates.push({ in: (samples[i].in - samples[i - 1].in) / dt, out: (samples[i].out - samples[i - 1].out) / dt });
  }
  const top = Math.max(1, ...rates.map((r) => Math.max(r.in, r.out)));
  for (const [key, cls] of [['in', 'line-in'], ['out', 'line-out']]) {
    const points = rates.map((r, i) => `${(i * width) / Math.max(1, rates.length - 1)},${height - (r[key] * (height - 4)) / top}`);
    if (points.length > 1) svg.append(h('svg:polyline', { points: points.join(' '), class: cls }));
  }
  const totals = stats && stats.in
    ? `in ${bytes(stats.in.total_bytes)} · out ${bytes(stats.out.total_bytes)}` : 'no traffic figures';
  return section('Traffic', svg, h('p', { class: 'muted' }, totals,
    h('span', { class: 'legend-in' }, ' ■ in'), h('span', { class: 'legend-out' }, ' ■ out')));
}
