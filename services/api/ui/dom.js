// Building the page: every value from the node goes in as text, never as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value' && 'value' in el) el.value = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function bytes(n) {
  const value = Number(n) || 0;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = value;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function duration(seconds) {
  let s = Math.max(0, Math.floor(Number(seconds) || 0));
  const d = Math.floor(s / 86400); s %= 86400;
  const hh = Math.floor(s / 3600); s %= 3600;
  const mm = Math.floor(s / 60); s %= 60;
  return (d ? `${d}d ` : '') + (hh || d ? `${hh}h ` : '') + `${mm}m ${s}s`;
}

export function when(epoch) {
  if (!epoch) return '';
  return new Date(Number(epoch) * 1000).toLocaleString();
}

export function json(value) {
  return JSON.stringify(value, null, 1);
}

export function table(headers, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((name) => h('th', {}, name)))),
    h('tbody', {}, rows));
}

// A status line under a form: what went wrong, in words, never in the console.
export function status() {
  const el = h('p', { class: 'status', role: 'status' });
  el.ok = (text) => { el.className = 'status ok'; el.textContent = text; };
  el.fail = (err) => { el.className = 'status error'; el.textContent = err && err.message ? err.message : String(err); };
  el.busy = (text) => { el.className = 'status'; el.textContent = text; };
  return el;
}

export function section(title, ...children) {
  return h('section', {}, h('h2', {}, title), children);
}
