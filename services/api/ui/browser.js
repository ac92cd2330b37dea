// The folder browser: what the node may read, listed by the node (GET /ui/folders).

import { h, replace, bytes, status } from './dom.js';

// Opens under `anchor`; `pick(path)` gets the chosen file (mode "file") or folder (mode "folder").
export function openBrowser(node, anchor, mode, pick) {
  const list = h('ul', { class: 'browser-list' });
  const here = h('code', { class: 'browser-path' });
  const note = status();
  const chooseHere = h('button', { type: 'button', class: 'browser-choose', hidden: mode !== 'folder' },
    'Choose this folder');
  const close = h('button', { type: 'button', class: 'browser-close' }, 'Close');
  const panel = h('div', { class: 'browser', 'data-mode': mode }, h('div', {}, here, chooseHere, close), list, note);
  let current = '';
  close.addEventListener('click', () => panel.remove());
  chooseHere.addEventListener('click', () => { if (current) { pick(current); panel.remove(); } });

  async function go(path) {
    try {
      const found = await node.folders(path);
      current = found.path;
      here.textContent = found.path || 'roots';
      chooseHere.disabled = !found.path;
      const rows = [];
      if (found.parent !== null) {
        rows.push(h('li', {}, h('button', { type: 'button', class: 'entry dir', 'data-name': '..',
          onclick: () => go(found.parent) }, '..')));
      }
      for (const entry of found.entries) {
        if (entry.type === 'dir') {
          rows.push(h('li', {}, h('button', { type: 'button', class: 'entry dir', 'data-name': entry.name,
            onclick: () => go(entry.path) }, `${entry.name}/`)));
        } else if (entry.type === 'file' && mode === 'file') {
          rows.push(h('li', {}, h('button', { type: 'button', class: 'entry file', 'data-name': entry.name,
            onclick: () => { pick(entry.path); panel.remove(); } }, entry.name),
            h('span', { class: 'muted' }, ` ${bytes(entry.size)}`)));
        }
      }
      replace(list, rows);
      note.busy('');
    } catch (err) {
      note.fail(err);
    }
  }

  for (const old of anchor.querySelectorAll('.browser')) old.remove();
  anchor.append(panel);
  go('');
  return panel;
}
