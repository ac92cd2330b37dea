// Network: peers (connections), relay, DHT.

import { h, replace, table, section, json, bytes } from '../dom.js';

let node = null;
let root = null;

export async function render(el, api) {
  node = api;
  root = el;
  await draw();
}

export function leave() { root = null; }

async function draw() {
  const [status, connections] = await Promise.all([
    node.call('network_status', { dht: true, proxy: true }).catch((err) => ({ error: err.message })),
    node.call('connections_list').catch((err) => ({ error: err.message }))]);
  if (!root) return;
  const peers = Array.isArray(connections) ? connections.map((c) => h('tr', {},
    h('td', {}, c.idurl || c.global_id || ''), h('td', {}, c.proto || c.protocol || ''), h('td', {}, c.state || ''),
    h('td', {}, c.host || c.address || ''))) : [];
  const dht = status.dht || {};
  const proxy = status.proxy || {};
  replace(root,
    section('Node', status.error ? h('p', { class: 'error' }, status.error) : h('dl', {},
      h('dt', {}, 'Network'), h('dd', { id: 'network-connector' }, status.network_connector_state || ''),
      h('dt', {}, 'P2P'), h('dd', {}, status.p2p_connector_state || ''),
      h('dt', {}, 'Contacts'), h('dd', {}, (status.identity_contacts || []).join(' ')))),
    section('Peers', peers.length ? table(['Peer', 'Protocol', 'State', 'Address'], peers, { id: 'peers' })
      : h('p', { class: 'muted' }, connections.error || 'no connections')),
    section('Relay', h('dl', {},
      h('dt', {}, 'State'), h('dd', { id: 'relay-state' }, proxy.state || ''),
      h('dt', {}, 'Behind NAT'), h('dd', {}, proxy.behind_nat ? 'yes' : 'no'),
      h('dt', {}, 'Router'), h('dd', {}, proxy.router || '—'),
      h('dt', {}, 'Relayed for others'),
      h('dd', {}, proxy.server ? `${proxy.server.relayed_packets} packets, ${bytes(proxy.server.relayed_bytes)}` : ''))),
    section('DHT', h('dl', {},
      h('dt', {}, 'State'), h('dd', { id: 'dht-state' }, dht.state || ''),
      h('dt', {}, 'Traffic'), h('dd', {}, `${bytes(dht.bytes_received)} in, ${bytes(dht.bytes_sent)} out`)),
    table(['Layer', 'Active', 'Contacts', 'Items'], (dht.layers || []).map((l) => h('tr', {},
      h('td', {}, l.name), h('td', {}, l.active ? 'yes' : 'no'), h('td', {}, l.contacts),
      h('td', {}, l.data_store_items)))),
    h('details', {}, h('summary', {}, 'raw'), h('pre', {}, json(dht)))));
}
