// Settings: the config tree with help text and types; values set one at a time.

import { h, replace, section, status } from '../dom.js';

let node = null;

export async function render(el, api) {
  node = api;
  const tree = await node.call('configs_tree', { include_info: true });
  replace(el, section('Settings', h('p', { class: 'muted' }, 'every option of the node, with its type and help'),
    h('div', { id: 'settings' }, (tree || []).map((top) => branch(top)))));
}

function isOption(value) {
  return value && typeof value === 'object' && typeof value.key === 'string' && 'value' in value;
}

function branch(obj) {
  return Object.entries(obj).map(([name, value]) => {
    if (isOption(value)) return option(value);
    return h('details', { class: 'config-group' }, h('summary', {}, name), h('div', {}, branch(value)));
  });
}

function option(opt) {
  const note = status();
  let input;
  if (opt.type === 'boolean') {
    input = h('input', { type: 'checkbox', checked: opt.value === true });
  } else if (Array.isArray(opt.possible_values) && opt.possible_values.length) {
    input = h('select', {}, opt.possible_values.map((v) => h('option', { value: String(v), selected: v === opt.value },
      String(v))));
  } else {
    input = h('input', { value: opt.value === null || opt.value === undefined ? '' : String(opt.value), size: 30 });
  }
  input.disabled = Boolean(opt.readonly);
  const save = h('button', { type: 'button', disabled: Boolean(opt.readonly) }, 'Set');
  save.addEventListener('click', () => {
    let value;
    if (opt.type === 'boolean') value = input.checked;
    else if (typeof opt.value === 'number' || /number|integer|port/.test(opt.type)) value = Number(input.value);
    else value = input.value;
    node.call('config_set', { key: opt.key, value }).then(() => note.ok('saved')).catch((err) => note.fail(err));
  });
  return h('div', { class: 'option', 'data-key': opt.key },
    h('label', {}, h('code', {}, opt.key), ' ', h('span', { class: 'type' }, opt.type), ' '), input, save,
    h('div', { class: 'help muted' }, opt.info || opt.label || ''), note);
}
