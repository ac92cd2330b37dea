// Files: the catalog as a tree, upload / download / delete, versions and redundancy, live transfers.

import { h, replace, bytes, table, section, status } from '../dom.js';
import { openBrowser } from '../browser.js';

let node = null;
let root = null;
let keyId = '';
let transfersEl = null;
let treeEl = null;
let detailsEl = null;
let selected = '';
const transfers = new Map();

export async function render(el, api) {
  node = api;
  root = el;
  try {
    const me = await node.call('identity_get');
    keyId = `master$${me.global_id}`;
  } catch (err) {
    replace(el, section('Files', h('p', {}, 'Create an identity first: ', err.message)));
    return;
  }
  transfersEl = h('div', { id: 'transfers' });
  treeEl = h('div', { id: 'catalog' });
  detailsEl = h('div', { id: 'file-details' });
  replace(el, h('div', { class: 'grid' }, uploadForm(), section('Transfers', transfersEl)),
    h('div', { class: 'grid' }, section('Catalog', treeEl), section('File', detailsEl)));
  for (const kind of ['files_uploads', 'files_downloads']) {
    node.call(kind).then((jobs) => {
      const list = Array.isArray(jobs) ? jobs : [];
      for (const job of list) track(job);
    }).catch(() => {});
  }
  drawTransfers();
  await loadTree();
  if (selected) await showFile(selected);
}

export function leave() { root = null; }

export function onEvent(event) {
  const id = event.event_id || '';
  const data = event.data || {};
  if (/^(upload|download)-(started|progress|finished|failed)$/.test(id) && data.remote_path) {
    track(data);
    if (root) drawTransfers();
    if (root && /finished|failed/.test(id)) {
      loadTree().catch(() => {});
      if (selected === data.remote_path) showFile(selected).catch(() => {});
    }
  }
}

function track(job) {
  const kind = job.kind || 'upload';
  transfers.set(`${kind}:${job.remote_path}`, job);
}

function percent(job) {
  return Math.max(0, Math.min(100, parseInt(String(job.progress || '0'), 10) || 0));
}

function drawTransfers() {
  if (!transfersEl) return;
  const items = [...transfers.values()].slice(-20).reverse();
  if (!items.length) { replace(transfersEl, h('p', { class: 'muted' }, 'no transfers')); return; }
  replace(transfersEl, items.map((job) => {
    const running = job.state === 'running' || job.state === 'stopping';
    const cancel = running ? h('button', { type: 'button', class: 'cancel', onclick: () => {
      const method = job.kind === 'download' ? 'file_download_stop' : 'file_upload_stop';
      node.call(method, { remote_path: job.remote_path }).catch(() => {});
    } }, 'Cancel') : null;
    return h('div', { class: 'transfer', 'data-transfer': job.remote_path, 'data-kind': job.kind },
      h('div', {}, h('strong', {}, job.kind === 'download' ? '↓ ' : '↑ '), job.remote_path.split(':').pop()),
      h('progress', { max: 100, value: percent(job) }),
      h('span', { class: 'progress-text' }, `${percent(job)}%`), ' ',
      h('span', { class: 'transfer-state' }, job.state), ' ',
      h('span', { class: 'muted' }, `${bytes(job.bytes_processed)} of ${bytes(job.total_size)}`),
      job.error ? h('div', { class: 'error' }, job.error) : null, cancel);
  }));
}

function uploadForm() {
  const local = h('input', { id: 'upload-local', placeholder: 'a file on the node\'s machine', size: 40 });
  const remote = h('input', { id: 'upload-remote', placeholder: 'name in the catalog, e.g. docs/a.txt', size: 30 });
  const note = status();
  const holder = h('div');
  const browse = h('button', { type: 'button', id: 'upload-browse' }, 'Browse…');
  browse.addEventListener('click', () => openBrowser(node, holder, 'file', (path) => {
    local.value = path;
    if (!remote.value) remote.value = path.split('/').pop();
  }));
  const start = h('button', { type: 'submit', id: 'upload-start' }, 'Upload');
  const form = h('form', { id: 'upload-form' },
    h('label', {}, 'Local file ', local), browse, holder,
    h('label', {}, 'Catalog path ', remote), start, note);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const remotePath = `${keyId}:${remote.value.trim()}`;
    note.busy('starting…');
    node.call('file_upload_start', { local_path: local.value.trim(), remote_path: remotePath })
      .then(() => note.ok(`uploading ${remote.value.trim()}`))
      .catch((err) => note.fail(err));
  });
  return section('Upload', form);
}

async function loadTree() {
  let items = [];
  try {
    items = await node.call('files_list', { key_id: keyId });
  } catch (err) {
    if (treeEl) replace(treeEl, h('p', { class: 'error' }, err.message));
    return;
  }
  if (!treeEl) return;
  const byParent = new Map();
  for (const item of items) {
    const parent = item.path.includes('/') ? item.path.slice(0, item.path.lastIndexOf('/')) : '';
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(item);
  }
  const branch = (parent) => h('ul', { class: 'tree' }, (byParent.get(parent) || [])
    .sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === 'dir' ? -1 : 1))
    .map((item) => {
      if (item.type === 'dir') {
        return h('li', { 'data-remote-path': item.remote_path, class: 'dir' },
          h('details', { open: true }, h('summary', {}, `${item.name}/`), branch(item.path)));
      }
      const latest = (item.versions || [])[0];
      return h('li', { 'data-remote-path': item.remote_path, class: 'file' },
        h('button', { type: 'button', class: 'file-name', onclick: () => showFile(item.remote_path) }, item.name),
        h('span', { class: 'muted' }, ` ${bytes(item.size)} ${latest ? latest.state : ''}`));
    }));
  replace(treeEl, items.length ? branch('') : h('p', { class: 'muted' }, 'the catalog is empty'));
}

function redundancy(version) {
  const held = (version.suppliers || []).filter((s) => s.fragments > 0).map((s) => s.position);
  const missing = version.missing_positions || [];
  return `${version.ecc_map || ''}; held at positions ${held.join(', ') || 'none'}` +
    (missing.length ? `; missing at ${missing.join(', ')}` : '') +
    (version.reliable ? `; reliable ${version.reliable}` : '');
}

async function showFile(remotePath) {
  selected = remotePath;
  let info;
  try {
    info = await node.call('file_info', { remote_path: remotePath });
  } catch (err) {
    replace(detailsEl, h('p', { class: 'error' }, err.message));
    return;
  }
  if (!detailsEl) return;
  const rows = (info.versions || []).map((v) => h('tr', { 'data-version': v.version },
    h('td', {}, v.label || v.version), h('td', { class: 'version-state' }, v.state), h('td', {}, bytes(v.size)),
    h('td', {}, v.progress), h('td', { class: 'redundancy' }, redundancy(v))));
  const dest = h('input', { id: 'download-dest', placeholder: 'a folder on the node\'s machine', size: 40 });
  const holder = h('div');
  const note = status();
  const browse = h('button', { type: 'button', id: 'download-browse' }, 'Browse…');
  browse.addEventListener('click', () => openBrowser(node, holder, 'folder', (path) => { dest.value = path; }));
  const download = h('button', { type: 'button', id: 'download-start' }, 'Download');
  download.addEventListener('click', () => {
    note.busy('starting…');
    node.call('file_download_start', { remote_path: remotePath, destination_path: dest.value.trim() || null })
      .then(() => note.ok('downloading'))
      .catch((err) => note.fail(err));
  });
  const remove = h('button', { type: 'button', id: 'delete-file', class: 'danger' }, 'Delete');
  remove.addEventListener('click', () => {
    node.call('file_delete', { remote_path: remotePath })
      .then(() => { selected = ''; replace(detailsEl, h('p', { class: 'muted' }, 'deleted')); return loadTree(); })
      .catch((err) => note.fail(err));
  });
  replace(detailsEl,
    h('h3', { id: 'file-path' }, info.remote_path),
    table(['Version', 'State', 'Size', 'Progress', 'Redundancy'], rows, { id: 'versions' }),
    h('div', { class: 'row' }, h('label', {}, 'Download to ', dest), browse, download, remove), holder, note);
}
