// The node's API as the page uses it: API calls, events and model pushes over the node's WebSocket,
// and the page's own REST routes (session, folder browser) with the CSRF header.

export async function loadSession() {
  const response = await fetch('/ui/session', { cache: 'no-store', credentials: 'same-origin' });
  if (response.status !== 200) return null;
  const doc = await response.json();
  return doc.status === 'OK' ? doc.result : null;
}

const MODELS = ['message', 'service', 'online_status', 'correspondent', 'key'];

export class NodeApi {
  constructor(session) {
    this.csrf = session.csrf;
    this.wsPort = session.ws_port;
    this.pending = new Map();
    this.waiting = [];
    this.listeners = { event: new Set(), model: new Set(), link: new Set() };
    this.next = 1;
    this.socket = null;
    this.open = false;
  }

  connect() {
    const url = `ws://${location.hostname}:${this.wsPort}/?csrf=${encodeURIComponent(this.csrf)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.open = true;
      this.emit('link', 'connected');
      for (const text of this.waiting.splice(0)) socket.send(text);
      for (const name of MODELS) this.call('enable_model_listener', { model_name: name }).catch(() => {});
    });
    socket.addEventListener('message', (msg) => this.receive(msg.data));
    socket.addEventListener('close', () => {
      this.open = false;
      for (const [, pending] of this.pending) pending.reject(new Error('the connection to the node closed'));
      this.pending.clear();
      this.emit('link', 'disconnected');
      // Reconnect after a pause (the node may be restarting), unless the user logged out.
      if (!this.closing) setTimeout(() => this.connect(), 3000);
    });
  }

  receive(text) {
    let doc;
    try { doc = JSON.parse(text); } catch { return; }
    if (doc.type === 'api_call') {
      const payload = doc.payload || {};
      const pending = this.pending.get(payload.call_id);
      if (!pending) return;
      this.pending.delete(payload.call_id);
      const response = payload.response || {};
      if (response.status === 'OK') pending.resolve(response.result);
      else pending.reject(new Error((response.errors || ['error']).join('; ')));
    } else if (doc.type === 'event') {
      this.emit('event', doc.payload);
    } else if (doc.type === 'model') {
      this.emit('model', doc.payload);
    }
  }

  call(method, kwargs = {}) {
    const callId = `c${this.next++}`;
    const text = JSON.stringify({ command: 'api_call', method, kwargs, call_id: callId });
    return new Promise((resolve, reject) => {
      this.pending.set(callId, { resolve, reject });
      if (this.open) this.socket.send(text);
      else this.waiting.push(text);
    });
  }

  on(kind, listener) {
    this.listeners[kind].add(listener);
    return () => this.listeners[kind].delete(listener);
  }

  emit(kind, value) {
    for (const listener of this.listeners[kind]) {
      try { listener(value); } catch (err) { showNotice(err); }
    }
  }

  async logout() {
    this.closing = true;
    await fetch('/ui/logout', { method: 'POST', headers: { 'X-CSRF-Token': this.csrf }, credentials: 'same-origin' });
    if (this.socket) this.socket.close();
  }

  async folders(path) {
    const response = await fetch(`/ui/folders?path=${encodeURIComponent(path || '')}`,
      { headers: { 'X-CSRF-Token': this.csrf }, cache: 'no-store', credentials: 'same-origin' });
    const doc = await response.json();
    if (doc.status !== 'OK') throw new Error((doc.errors || ['error']).join('; '));
    return doc.result;
  }
}

export function showNotice(err) {
  const el = document.getElementById('notice');
  el.textContent = err && err.message ? err.message : String(err);
  el.hidden = false;
}
