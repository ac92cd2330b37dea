// Messages and groups: history with one correspondent, send, and new messages as the node pushes them.

import { h, replace, append, table, section, status, when, json } from '../dom.js';

let node = null;
let root = null;
let feed = null;
let historyEl = null;
let correspondent = '';
const recent = [];

function text(data) {
  if (data && typeof data === 'object' && typeof data.message === 'string') return data.message;
  return json(data);
}

function who(part) {
  return String((part || {}).glob_id || '').replace(/^master\$/, '');
}

function line(doc) {
  const payload = doc.payload || {};
  return h('li', { class: `message ${doc.direction || ''}`, 'data-message-id': payload.message_id || '' },
    h('span', { class: 'muted' }, `${when(payload.time)} ${who(doc.sender)} → ${who(doc.recipient)}: `),
    h('span', { class: 'message-text' }, text(payload.data)));
}

export async function render(el, api) {
  node = api;
  root = el;
  feed = h('ul', { id: 'message-feed', class: 'messages' }, recent.map(line));
  historyEl = h('ul', { id: 'message-history', class: 'messages' });
  const to = h('input', { id: 'message-to', placeholder: 'recipient global id', size: 36, value: correspondent });
  const body = h('input', { id: 'message-text', placeholder: 'message', size: 40 });
  const note = status();
  const form = h('form', { id: 'message-form' }, h('label', {}, 'To ', to), h('label', {}, ' Say ', body),
    h('button', { type: 'submit', id: 'message-send' }, 'Send'), note);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    correspondent = to.value.trim();
    note.busy('sending…');
    node.call('message_send', { recipient_id: correspondent, data: { message: body.value } })
      .then(() => { note.ok('sent'); body.value = ''; return loadHistory(); })
      .catch((err) => note.fail(err));
  });
  to.addEventListener('change', () => { correspondent = to.value.trim(); loadHistory().catch(() => {}); });
  const [conversations, groups] = await Promise.all([
    node.call('message_conversations_list').catch(() => []),
    node.call('groups_list').catch((err) => ({ error: err.message }))]);
  if (!root) return;
  const convRows = (conversations || []).map((c) => {
    const id = c.key_id || c.conversation_id || c.id || '';
    return h('li', {}, h('button', { type: 'button', onclick: () => {
      correspondent = String(id).replace(/^master\$/, '');
      to.value = correspondent;
      loadHistory().catch(() => {});
    } }, c.label || id));
  });
  replace(root,
    h('div', { class: 'grid' },
      section('New messages', feed),
      section('Conversation', form, historyEl)),
    h('div', { class: 'grid' },
      section('Conversations', convRows.length ? h('ul', {}, convRows) : h('p', { class: 'muted' }, 'none yet')),
      groupsCard(groups)));
  await loadHistory();
}

export function leave() { root = null; feed = null; }

export function onModel(model) {
  if (model.name !== 'message' || !model.data) return;
  recent.push(model.data);
  if (recent.length > 100) recent.shift();
  if (feed) append(feed, line(model.data));
  const doc = model.data;
  const ids = [who(doc.sender), who(doc.recipient)];
  if (historyEl && correspondent && ids.includes(correspondent)) loadHistory().catch(() => {});
}

async function loadHistory() {
  if (!historyEl) return;
  if (!correspondent) { replace(historyEl, h('li', { class: 'muted' }, 'choose a correspondent')); return; }
  try {
    const items = await node.call('message_history', { recipient_id: correspondent });
    replace(historyEl, items.map((item) => line(item.doc || item)));
  } catch (err) {
    replace(historyEl, h('li', { class: 'error' }, err.message));
  }
}

function groupsCard(groups) {
  if (groups.error) return section('Groups', h('p', { class: 'error' }, groups.error));
  const note = status();
  const label = h('input', { placeholder: 'group label', size: 20 });
  const create = h('form', {}, label, h('button', { type: 'submit' }, 'New group'), note);
  create.addEventListener('submit', (ev) => {
    ev.preventDefault();
    node.call('group_create', { label: label.value.trim() }).then(() => note.ok('group created'))
      .catch((err) => note.fail(err));
  });
  const rows = groups.map((g) => {
    const say = h('input', { placeholder: 'message to the group', size: 24 });
    return h('tr', {}, h('td', {}, g.group_key_id || g.key_id || ''), h('td', {}, g.label || ''),
      h('td', {}, g.state || ''),
      h('td', {}, say, h('button', { type: 'button', onclick: () => node.call('message_send_group',
        { group_key_id: g.group_key_id || g.key_id, data: { message: say.value } })
        .then(() => note.ok('sent to the group')).catch((err) => note.fail(err)) }, 'Send')));
  });
  return section('Groups', rows.length ? table(['Group', 'Label', 'State', ''], rows) : h('p', { class: 'muted' },
    'no groups'), create);
}
