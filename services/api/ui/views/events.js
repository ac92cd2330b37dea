// Events: the node's live event stream, newest first.

import { h, replace, section, when, json } from '../dom.js';

let list = null;

function row(event) {
  return h('li', { class: 'event', 'data-event': event.event_id },
    h('span', { class: 'muted' }, when(event.created || event.received), ' '),
    h('strong', {}, event.event_id), ' ', h('code', {}, json(event.data)));
}

export function render(el, api, state) {
  list = h('ul', { id: 'event-list', class: 'events' }, state.events.slice().reverse().map(row));
  replace(el, section('Events', h('p', { class: 'muted' }, 'pushed by the node as they happen'), list));
}

export function leave() { list = null; }

export function onEvent(event) {
  if (list) list.prepend(row(event));
}
