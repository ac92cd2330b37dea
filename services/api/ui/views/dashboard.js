// Dashboard: identity, network, programs, services, space and a small traffic chart.

import { h, replace, bytes, duration, table, section } from '../dom.js';

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

// Bytes exchanged with each peer (the busiest six), in and out, from one `packets_stats` answer.
function trafficCard(stats) {
  const width = 360;
  const row = 22;
  const label = 110;
  const peers = new Map();
  if (stats && stats.in) {
    for (const [idurl, n] of Object.entries(stats.in.peers || {})) peers.set(idurl, { in: n, out: 0 });
    for (const [idurl, n] of Object.entries(stats.out.peers || {})) {
      peers.set(idurl, Object.assign(peers.get(idurl) || { in: 0 }, { out: n }));
    }
  }
  const busiest = [...peers.entries()].sort((a, b) => (b[1].in + b[1].out) - (a[1].in + a[1].out)).slice(0, 6);
  const top = Math.max(1, ...busiest.map(([, v]) => Math.max(v.in, v.out)));
  const svg = h('svg:svg', { viewBox: `0 0 ${width} ${Math.max(1, busiest.length) * row}`, width,
    height: Math.max(1, busiest.length) * row, class: 'chart', id: 'traffic-chart' });
  busiest.forEach(([idurl, v], i) => {
    const name = idurl.split('/').pop().replace(/\.xml$/, '');
    const y = i * row;
    const span = width - label - 8;
    svg.append(h('svg:text', { x: 4, y: y + 15, class: 'chart-label' }, name));
    svg.append(h('svg:rect', { x: label, y: y + 3, height: 7, width: Math.max(1, (v.in * span) / top), class: 'bar-in' }));
    svg.append(h('svg:rect', { x: label, y: y + 11, height: 7, width: Math.max(1, (v.out * span) / top),
      class: 'bar-out' }));
  });
  const totals = stats && stats.in
    ? `in ${bytes(stats.in.total_bytes)} · out ${bytes(stats.out.total_bytes)}` : 'no traffic figures';
  return section('Traffic', busiest.length ? svg : h('p', { class: 'muted' }, 'no peers yet'),
    h('p', { class: 'muted' }, totals, h('span', { class: 'legend-in' }, ' ■ in'),
      h('span', { class: 'legend-out' }, ' ■ out')));
}
