// Identity: backup of the identity and its private key to a file, and a reminder until one is made.

import { h, replace, section, status } from '../dom.js';
import { openBrowser } from '../browser.js';

const REMINDER = 'bitdust-identity-backed-up';

function backedUp(globalId) {
  try { return localStorage.getItem(REMINDER) === globalId; } catch { return false; }
}

export function remind(node) {
  node.call('identity_get').then((me) => {
    const banner = document.getElementById('reminder');
    if (backedUp(me.global_id)) { banner.hidden = true; return; }
    replace(banner, 'Your identity and its private key exist only on this node: ',
      h('a', { href: '#/identity' }, 'back them up to a file'), '.');
    banner.hidden = false;
  }).catch(() => {});
}

export async function render(el, api) {
  const node = api;
  let me;
  try { me = await node.call('identity_get'); } catch (err) {
    replace(el, section('Identity', h('p', {}, err.message)));
    return;
  }
  const folder = h('input', { id: 'backup-folder', placeholder: 'a folder on the node\'s machine', size: 40 });
  const name = h('input', { id: 'backup-name', value: `${me.name || 'identity'}.key`, size: 20 });
  const holder = h('div');
  const note = status();
  const browse = h('button', { type: 'button', id: 'backup-browse' }, 'Browse…');
  browse.addEventListener('click', () => openBrowser(node, holder, 'folder', (path) => { folder.value = path; }));
  const form = h('form', { id: 'backup-form' }, h('label', {}, 'Folder ', folder), browse, holder,
    h('label', {}, ' File name ', name), h('button', { type: 'submit', id: 'backup-start' }, 'Back up'), note);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const path = `${folder.value.trim().replace(/\/+$/, '')}/${name.value.trim()}`;
    node.call('identity_backup', { destination_filepath: path }).then((result) => {
      try { localStorage.setItem(REMINDER, me.global_id); } catch { /* private mode: the reminder stays */ }
      note.ok(`saved to ${result.destination_filepath}; keep that file somewhere safe, off this machine`);
      remind(node);
    }).catch((err) => note.fail(err));
  });
  replace(el,
    section('Identity', h('dl', {},
      h('dt', {}, 'Global id'), h('dd', {}, me.global_id),
      h('dt', {}, 'IDURL'), h('dd', {}, me.idurl),
      h('dt', {}, 'Revision'), h('dd', {}, me.revision),
      h('dt', {}, 'Identity servers'), h('dd', {}, (me.sources || []).join(' ')),
      h('dt', {}, 'Contacts'), h('dd', {}, (me.contacts || []).join(' ')))),
    section('Backup', h('p', {}, 'The file holds your private key: anyone with it is you.'), form));
}
