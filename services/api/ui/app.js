// The page: log in check, one WebSocket to the node, views by hash route.

import { h, replace } from './dom.js';
import { NodeApi, loadSession, showNotice } from './api.js';
import * as dashboard from './views/dashboard.js';
import * as files from './views/files.js';
import * as suppliers from './views/suppliers.js';
import * as shares from './views/shares.js';
import * as messages from './views/messages.js';
import * as network from './views/network.js';
import * as events from './views/events.js';
import * as settings from './views/settings.js';
import * as identity from './views/identity.js';

const VIEWS = { dashboard, files, suppliers, shares, messages, network, events, settings, identity };

const state = { node: null, current: null, name: '', events: [] };

function route() {
  const name = (location.hash.replace(/^#\/?/, '').split('/')[0]) || 'dashboard';
  return VIEWS[name] ? name : 'dashboard';
}

function show() {
  const name = route();
  const root = document.getElementById('view');
  if (state.current && state.current.leave) state.current.leave();
  state.name = name;
  state.current = VIEWS[name];
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.view === name);
  }
  root.dataset.view = name;
  replace(root, h('p', { class: 'muted' }, 'loading…'));
  Promise.resolve(state.current.render(root, state.node, state)).catch(showNotice);
}

function loggedOut() {
  replace(document.getElementById('view'),
    h('section', { id: 'login-needed' }, h('h2', {}, 'Not logged in'),
      h('p', {}, 'Run ', h('code', {}, 'bitdust open'),
        ' on the node\'s machine: it opens this page with a one-time login link.')));
  document.getElementById('link-state').textContent = 'logged out';
  document.getElementById('logout').hidden = true;
}

async function boot() {
  const session = await loadSession();
  if (!session) {
    loggedOut();
    return;
  }
  const node = new NodeApi(session);
  state.node = node;
  const logout = document.getElementById('logout');
  logout.hidden = false;
  logout.addEventListener('click', () => {
    window.removeEventListener('hashchange', show);
    node.logout().then(loggedOut).catch(showNotice);
  });
  start(node);
}

function start(node) {
  node.on('link', (text) => {
    if (node.closing) return;
    const pill = document.getElementById('link-state');
    pill.textContent = text;
    pill.dataset.state = text;
  });
  node.on('event', (event) => {
    state.events.push(Object.assign({ received: Date.now() / 1000 }, event));
    if (state.events.length > 500) state.events.shift();
    if (state.current && state.current.onEvent) state.current.onEvent(event);
  });
  node.on('model', (model) => {
    if (state.current && state.current.onModel) state.current.onModel(model);
  });
  node.connect();
  identity.remind(node);
  window.addEventListener('hashchange', show);
  show();
}

boot().catch(showNotice);
