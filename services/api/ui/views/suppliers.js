// Suppliers and customers: position, user, supplier state, contact state; change a supplier.

import { h, replace, table, section, status, bytes } from '../dom.js';

let node = null;
let root = null;

export async function render(el, api) {
  node = api;
  root = el;
  await draw();
}

export function leave() { root = null; }

export function onModel(model) {
  if (root && model.name === 'online_status') draw().catch(() => {});
}

async function draw() {
  const [suppliers, customers] = await Promise.all([
    node.call('suppliers_list').catch((err) => ({ error: err.message })),
    node.call('customers_list').catch((err) => ({ error: err.message }))]);
  if (!root) return;
  const note = status();
  const supplierRows = suppliers.error ? [] : suppliers.map((s) => h('tr', { 'data-position': s.position },
    h('td', {}, s.position), h('td', {}, s.global_id || '(vacant)'), h('td', {}, s.supplier_state || '—'),
    h('td', {}, s.contact_state || '—'),
    h('td', {}, h('button', { type: 'button', class: 'change-supplier', onclick: () => {
      note.busy(`changing the supplier at position ${s.position}…`);
      node.call('supplier_change', { position: s.position })
        .then(() => { note.ok('supplier change started'); return draw(); })
        .catch((err) => note.fail(err));
    } }, 'Change'))));
  const customerRows = customers.error ? [] : customers.map((c) => h('tr', {},
    h('td', {}, c.position ?? ''), h('td', {}, c.global_id || c.idurl || ''),
    h('td', {}, c.contact_state || c.state || '—'), h('td', {}, c.used !== undefined ? bytes(c.used) : '')));
  replace(root,
    section('Suppliers', suppliers.error ? h('p', { class: 'error' }, suppliers.error)
      : table(['Position', 'User', 'Supplier state', 'Contact state', ''], supplierRows, { id: 'suppliers' }), note),
    section('Customers', customers.error ? h('p', { class: 'error' }, customers.error)
      : customerRows.length ? table(['Position', 'User', 'State', 'Used'], customerRows, { id: 'customers' })
        : h('p', { class: 'muted' }, 'no customers')));
}
