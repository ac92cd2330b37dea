// Shares: the keys this node shares or was granted; create, grant, open, close.

import { h, replace, table, section, status } from '../dom.js';

let node = null;
let root = null;

export async function render(el, api) {
  node = api;
  root = el;
  await draw();
}

export function leave() { root = null; }

async function draw() {
  const shares = await node.call('shares_list').catch((err) => ({ error: err.message }));
  if (!root) return;
  const note = status();
  const act = (method, kwargs, done) => {
    note.busy(`${method}…`);
    node.call(method, kwargs).then(() => { note.ok(done); return draw(); }).catch((err) => note.fail(err));
  };
  const rows = shares.error ? [] : shares.map((s) => {
    const trusted = h('input', { placeholder: 'user global id', size: 24 });
    return h('tr', { 'data-key-id': s.key_id },
      h('td', {}, s.key_id), h('td', {}, s.label || ''), h('td', {}, s.state || (s.active ? 'active' : '')),
      h('td', {},
        h('button', { type: 'button', onclick: () => act('share_open', { key_id: s.key_id }, 'opened') }, 'Open'),
        h('button', { type: 'button', onclick: () => act('share_close', { key_id: s.key_id }, 'closed') }, 'Close'),
        trusted,
        h('button', { type: 'button', onclick: () => act('share_grant',
          { key_id: s.key_id, trusted_user_id: trusted.value.trim() }, 'granted') }, 'Grant')));
  });
  const label = h('input', { id: 'share-label', placeholder: 'label', size: 20 });
  const create = h('form', {}, label, h('button', { type: 'submit' }, 'New share'));
  create.addEventListener('submit', (ev) => {
    ev.preventDefault();
    act('share_create', { label: label.value.trim() }, 'share created');
  });
  replace(root, section('Shares',
    shares.error ? h('p', { class: 'error' }, shares.error)
      : rows.length ? table(['Key', 'Label', 'State', ''], rows, { id: 'shares' })
        : h('p', { class: 'muted' }, 'no shares yet'),
    create, note));
}
