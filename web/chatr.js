// chatr web client: plain JavaScript, no framework, no build step.
// It speaks protocol version 1 (docs/protocol.md) over one WebSocket.
'use strict';

(function () {
  const NAME_KEY = 'chatr.name';
  const TOKEN_KEY = 'chatr.token';  // sessionStorage: a sign-in token, this tab only
  const REFRESH_EARLY_MS = 60000;   // refresh a token this long before it expires
  const HISTORY = 100;          // messages asked for on a first join
  const PING_MS = 25000;        // below common proxy idle timeouts
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_TEXT_BYTES = 4096;  // the server's limit; checked here to fail early

  const $ = (id) => document.getElementById(id);
  const ui = {
    room: $('room'), status: $('status'), namebox: $('namebox'), name: $('name'),
    join: $('join'), log: $('log'), empty: $('empty'), messages: $('messages'),
    outbox: $('outbox'), error: $('error'), composer: $('composer'),
    text: $('text'), send: $('send'), presence: $('presence'),
  };

  const room = roomFromURL();
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // Resolved against the page, so a proxy prefix in front of /chatr/ still works.
  const ownURL = new URL('ws', location.href);
  ownURL.protocol = scheme;

  const state = {
    name: '',              // the name typed and stored
    me: '',                // the name the server accepted (welcome.name)
    nameRejected: false,   // hello was refused: wait for a new name
    ws: null,
    ready: false,          // joined and synced: sends can go out now
    welcomed: false,       // the current socket got a welcome
    everConnected: false,  // tells "connected" from "reconnected"
    node: null,            // {id, name} of the node we are on
    nodes: [],             // welcome.nodes, kept for failover
    avoid: '',             // node id that told us it is going away (1001)
    attempt: 0,            // failed attempts since the last welcome
    retryTimer: 0,
    pingTimer: 0,
    cursors: new Map(),    // room -> newest cursor; resumes after any reconnect
    seen: new Set(),       // message ids on screen, so a replay never doubles one
    pending: new Map(),    // ref -> {text, el}: sent, not yet acked
    acked: new Map(),      // id -> outbox element whose message has not come yet
    // Names of the people present. The server lists a person once however
    // many sessions and nodes they have, and sends left only when the last
    // one goes, naming the node of that session, which need not be the node
    // it named when the person came (docs/protocol.md, presence).
    presence: new Map(),   // person key (user, or name with auth off) -> {name, user}
    replayFirst: null,     // first message element added during this join's replay
    // Sign-in (the node says in config.json whether it takes tokens).
    auth: false,           // the node needs a token: the name comes from it
    tokenURL: '',          // where the embedding site hands out tokens (--auth-token-url)
    token: '',             // the token in use
    user: '',              // welcome.user: who the token says we are
    signInNeeded: false,   // no usable token: wait for one, do not reconnect
    refreshTimer: 0,
    mine: new Set(),       // ids of the messages this page sent (auth off: names prove nothing)
  };

  // A ref must be unique per send and survive reconnects, so: random + counter.
  const refPrefix = Math.random().toString(36).slice(2, 10);
  let refCounter = 0;

  // ---- start ----

  ui.room.textContent = '#' + room;
  document.title = 'chatr · #' + room;
  ui.namebox.addEventListener('submit', onJoin);
  ui.composer.addEventListener('submit', onSend);
  window.addEventListener('online', () => { if (state.retryTimer) reconnectNow(); });

  takeFragmentToken();
  fetch(new URL('config.json', location.href), { cache: 'no-store' })
    .then((r) => (r.ok ? r.json() : {}))
    .catch(() => ({}))
    .then(begin);

  function begin(cfg) {
    state.auth = !!(cfg && cfg.auth);
    state.tokenURL = (cfg && cfg.tokenURL) || '';
    if (state.auth) {
      // The token says who we are; there is no name to choose.
      ui.namebox.hidden = true;
      getToken(false).then((ok) => { if (ok) connect(ownURL.href); });
      return;
    }
    const stored = (localStorage.getItem(NAME_KEY) || '').trim();
    if (stored) {
      ui.name.value = stored;
      setName(stored);
      connect(ownURL.href);
    } else {
      setStatus('idle', 'enter a name to join');
      ui.name.focus();
    }
  }

  // ---- sign-in ----

  // A token in the address (chatr.html#token=...) is kept for this tab and
  // taken out of the address bar, so it is not bookmarked or shared.
  function takeFragmentToken() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, '', location.pathname + location.search);
    }
    state.token = sessionStorage.getItem(TOKEN_KEY) || '';
  }

  // getToken makes sure there is a token: from --auth-token-url (with the
  // site's cookies: the site signs its own users in), else the one the page
  // was opened with. fresh asks the URL for a new one. It reports whether
  // a token is there; if not, the page says sign-in is required and why.
  async function getToken(fresh) {
    if (state.tokenURL && (fresh || !state.token)) {
      try {
        const res = await fetch(state.tokenURL, { credentials: 'include', cache: 'no-store' });
        if (!res.ok) throw new Error('the sign-in service answered HTTP ' + res.status);
        const body = await res.json();
        if (!body || typeof body.token !== 'string' || !body.token) throw new Error('the sign-in service gave no token');
        state.token = body.token;
        sessionStorage.setItem(TOKEN_KEY, state.token);
      } catch (e) {
        signInRequired(e.message + '.');
        return false;
      }
    }
    if (!state.token || (fresh && !state.tokenURL)) {
      signInRequired(fresh ? 'your sign-in has expired; open this page again from the site that signed you in.'
        : 'this chat takes signed-in users only; open it from the site that signs you in (a link ending in #token=…).');
      return false;
    }
    state.signInNeeded = false;
    return true;
  }

  function signInRequired(why) {
    state.signInNeeded = true;
    clearTimeout(state.refreshTimer);
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    disconnect();
    setStatus('idle', 'sign-in required');
    showError('Sign-in required: ' + why);
    ui.text.disabled = true;
    ui.send.disabled = true;
  }

  // scheduleRefresh sends the node a new token a minute before this one
  // expires (a refresh that crosses the expiry is still honoured).
  function scheduleRefresh(expires) {
    clearTimeout(state.refreshTimer);
    if (!state.tokenURL || !expires) return;
    const wait = Math.max(1000, expires - Date.now() - REFRESH_EARLY_MS);
    state.refreshTimer = setTimeout(refreshNow, wait);
  }

  async function refreshNow() {
    if (await getToken(true)) transmit({ type: 'refresh', token: state.token });
  }

  function roomFromURL() {
    const r = (new URLSearchParams(location.search).get('room') || '').trim().toLowerCase();
    return /^[a-z0-9_.-]{1,64}$/.test(r) ? r : 'lobby';
  }

  function setName(name) {
    state.name = name;
    ui.join.textContent = 'Rename';
    ui.join.classList.add('ghost');
    ui.text.disabled = false;
    ui.send.disabled = false;
  }

  // ---- user actions ----

  function onJoin(ev) {
    ev.preventDefault();
    const name = ui.name.value.trim();
    if (!name) { showError('Please enter a name.'); return; }
    if (name === state.name && state.ws) return;
    localStorage.setItem(NAME_KEY, name);
    setName(name);
    hideError();
    // hello comes only once per connection, so a new name needs a new one.
    disconnect();
    state.attempt = 0;
    connect(ownURL.href);
    ui.text.focus();
  }

  function onSend(ev) {
    ev.preventDefault();
    const text = ui.text.value;
    if (!text.trim() || !(state.auth ? state.me : state.name)) return;
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      showError('That message is too long (at most 4096 bytes).');
      return;
    }
    hideError();
    const ref = refPrefix + '-' + (++refCounter);
    const el = messageElement(state.auth ? state.me : state.name, text, '');
    el.className = 'outgoing mine';
    el.title = 'sending…';
    ui.outbox.append(el);
    state.pending.set(ref, { text, el });
    ui.text.value = '';
    scrollToEnd(true);
    // Before synced the send waits; the synced handler sends every pending one.
    if (state.ready) transmit({ type: 'send', room, text, ref });
  }

  // ---- connection ----

  function connect(url) {
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
    setStatus('connecting', state.everConnected ? 'reconnecting…' : 'connecting…');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      scheduleReconnect(false);
      return;
    }
    state.ws = ws;
    state.ready = false;
    state.welcomed = false;
    ws.onopen = () => transmit(state.auth ? { type: 'hello', token: state.token } : { type: 'hello', name: state.name });
    ws.onmessage = (ev) => {
      if (ws !== state.ws) return;
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      handle(f);
    };
    ws.onclose = (ev) => {
      if (ws !== state.ws) return; // a socket we dropped on purpose
      onClosed(ev);
    };
  }

  function disconnect() {
    const ws = state.ws;
    state.ws = null;
    state.ready = false;
    clearInterval(state.pingTimer);
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
    if (ws) ws.close(1000, 'bye');
  }

  function onClosed(ev) {
    const wasWelcomed = state.welcomed;
    state.ws = null;
    state.ready = false;
    state.welcomed = false;
    clearInterval(state.pingTimer);
    if (ev.code === 1008 || ev.code === 1009) {
      showError('The server closed the connection' + (ev.reason ? ': ' + ev.reason : '') + '.');
    }
    if (state.nameRejected || state.signInNeeded) return; // wait for the person to fix the name, or sign in
    if (ev.code === 4001) {
      // The token expired: get a new one, then come back.
      getToken(true).then((ok) => { if (ok) scheduleReconnect(true); });
      return;
    }
    // 4000: we fell behind; the node is fine, so come back at once and resume
    // from the cursor. 1008 and 1009 were about us, not the node. Any other
    // end of a working connection (1001 the node shuts down, 1006 it crashed
    // or the network failed) means that node may be gone: go to another one
    // at once, and try it last.
    const aboutUs = ev.code === 1008 || ev.code === 1009;
    if (wasWelcomed && !aboutUs && ev.code !== 4000 && state.node) state.avoid = state.node.id;
    scheduleReconnect(wasWelcomed && !aboutUs);
  }

  function scheduleReconnect(soon) {
    clearTimeout(state.retryTimer);
    // Exponential backoff with jitter, so that a restarted node is not hit by
    // every client at the same instant.
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    const delay = soon ? 100 + Math.random() * 400 : base / 2 + Math.random() * base / 2;
    state.attempt++;
    setStatus('waiting', 'reconnecting in ' + Math.max(1, Math.round(delay / 1000)) + 's');
    state.retryTimer = setTimeout(reconnectNow, delay);
  }

  function reconnectNow() {
    connect(nextURL());
  }

  // The candidates are the page's own host and the live nodes of
  // welcome.nodes; each failed attempt moves on to the next one. The own host
  // comes first (same origin, maybe a load balancer) unless our node said it
  // is going away, then the other nodes come first and it comes last.
  function nextURL() {
    const own = ownURL.href;
    const urls = [];
    for (const n of state.nodes) {
      if (n.id === state.avoid || !n.http) continue;
      const u = nodeURL(n.http);
      if (u && u !== own && !urls.includes(u)) urls.push(u);
    }
    if (state.avoid) urls.push(own);
    else urls.unshift(own);
    return urls[(state.attempt - 1) % urls.length];
  }

  // http is "host:port"; a node listening on all interfaces reports an empty
  // or unspecified host, which only the page's own host name can replace.
  function nodeURL(http) {
    const i = http.lastIndexOf(':');
    if (i < 0) return '';
    let host = http.slice(0, i);
    const port = http.slice(i + 1);
    if (host === '' || host === '0.0.0.0' || host === '[::]' || host === '::') host = location.hostname;
    if (host.includes(':') && !host.startsWith('[')) host = '[' + host + ']';
    return scheme + '//' + host + ':' + port + '/chatr/ws';
  }

  function transmit(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // ---- frames from the server ----

  function handle(f) {
    switch (f.type) {
      case 'welcome': return onWelcome(f);
      case 'joined': return onJoined(f);
      case 'message': return onMessage(f);
      case 'synced': return onSynced(f);
      case 'presence': return onPresence(f);
      case 'hidden': return onHidden(f);
      case 'ack': return onAck(f);
      case 'refreshed': return scheduleRefresh(Date.parse(f.expires));
      case 'error': return onError(f);
      default: return; // pong, left, and types from a newer server
    }
  }

  function onWelcome(f) {
    state.welcomed = true;
    state.nameRejected = false;
    state.me = f.name || state.name;
    state.user = f.user || '';
    if (state.auth) {
      ui.text.disabled = false;
      ui.send.disabled = false;
      scheduleRefresh(Date.parse(f.expires));
    }
    state.nodes = Array.isArray(f.nodes) ? f.nodes : [];
    const me = state.nodes.find((n) => n.id === f.node);
    state.node = { id: f.node, name: (me && me.name) || f.node };
    state.avoid = '';
    state.attempt = 0;
    setStatus('connected', (state.everConnected ? 'reconnected to ' : 'connected to ') + state.node.name);
    state.everConnected = true;
    hideError();
    clearInterval(state.pingTimer);
    state.pingTimer = setInterval(() => transmit({ type: 'ping' }), PING_MS);
    const cursor = state.cursors.get(room);
    transmit(cursor ? { type: 'join', room, since: cursor } : { type: 'join', room, history: HISTORY });
  }

  function onJoined(f) {
    if (f.room !== room) return;
    state.replayFirst = null;
    state.presence.clear();
    for (const p of f.presence || []) state.presence.set(personKey(p), p);
    renderPresence();
  }

  function onMessage(m) {
    if (m.room !== room) return;
    if (m.cursor) state.cursors.set(room, m.cursor);
    if (state.acked.has(m.id)) {
      state.acked.get(m.id).remove();
      state.acked.delete(m.id);
    }
    if (m.replaces) {
      // Another copy of the same send was shown before this one won: drop it.
      dropCopy(m.replaces);
    }
    if (state.seen.has(m.id)) return;
    state.seen.add(m.id);
    const el = messageElement(m.sender, m.text, m.created);
    el.dataset.id = m.id;
    el.key = sortKey(m.created, m.id);
    if (isMine(m)) el.classList.add('mine');
    const stick = nearEnd();
    insertSorted(el);
    if (!state.ready && !state.replayFirst) state.replayFirst = el;
    ui.empty.hidden = true;
    scrollToEnd(stick);
  }

  // A copy of a re-sent message that lost to an earlier copy: never show it.
  function onHidden(f) {
    if (f.room === room && f.id) dropCopy(f.id);
  }

  function dropCopy(id) {
    state.seen.add(id);
    const old = ui.messages.querySelector('[data-id="' + CSS.escape(id) + '"]');
    if (old) old.remove();
  }

  function onSynced(f) {
    if (f.room !== room) return;
    if (f.cursor) state.cursors.set(room, f.cursor);
    if (f.truncated && state.replayFirst) {
      // Older messages than replay allows were missed: mark where they belong,
      // with a way to page back through them over the HTTP API.
      const gap = document.createElement('li');
      gap.className = 'gap';
      const label = document.createElement('span');
      label.textContent = 'Some messages were skipped here. ';
      const more = document.createElement('button');
      more.type = 'button';
      more.className = 'load-earlier';
      more.textContent = 'Load them';
      more.dataset.before = state.replayFirst.dataset.id;
      more.addEventListener('click', () => loadEarlier(gap, more));
      gap.append(label, more);
      ui.messages.insertBefore(gap, state.replayFirst);
    }
    state.replayFirst = null;
    state.ready = true;
    // Sends that were never acked go again with the same ref.
    for (const [ref, p] of state.pending) transmit({ type: 'send', room, text: p.text, ref });
  }

  // loadEarlier fills a gap, a page at a time, from the node the page is
  // connected to (it answers the pages of any cluster member's client).
  async function loadEarlier(gap, more) {
    more.disabled = true;
    const limit = 100;
    try {
      const host = state.ws ? new URL(state.ws.url).host : location.host;
      const scheme = location.protocol === 'https:' ? 'https://' : 'http://';
      const res = await fetch(scheme + host + '/chatr/api/rooms/' + encodeURIComponent(room) +
        '/messages?limit=' + limit + '&before=' + encodeURIComponent(more.dataset.before),
        { headers: state.token ? { Authorization: 'Bearer ' + state.token } : {} });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      const page = await res.json();
      const msgs = page.messages || [];
      // The gap is closed once the page reaches what was shown before it.
      const closed = msgs.length < limit || msgs.some((m) => state.seen.has(m.id));
      for (const m of msgs) onMessage(m);
      if (closed) gap.remove();
      else more.dataset.before = msgs[0].id;
    } catch (e) {
      showError('could not load earlier messages: ' + e.message);
    } finally {
      more.disabled = false;
    }
  }

  function onPresence(f) {
    if (f.room !== room) return;
    for (const p of f.left || []) state.presence.delete(personKey(p));
    for (const p of f.joined || []) state.presence.set(personKey(p), p);
    renderPresence();
  }

  // A person is a user when the node takes tokens (two may share a name),
  // else a name.
  function personKey(p) {
    return p.user ? 'u:' + p.user : 'n:' + p.name;
  }

  // A message is ours when its user is ours (auth on), or when this page
  // sent it: with auth off a name is whatever anyone says.
  function isMine(m) {
    return state.user ? m.user === state.user : state.mine.has(m.id);
  }

  function onAck(f) {
    const p = state.pending.get(f.ref);
    if (!p) return;
    state.pending.delete(f.ref);
    state.mine.add(f.id);
    const shown = ui.messages.querySelector('[data-id="' + CSS.escape(f.id) + '"]');
    if (shown) shown.classList.add('mine');
    p.el.title = '';
    // The ack and our own message frame may come in either order.
    if (state.seen.has(f.id)) p.el.remove();
    else state.acked.set(f.id, p.el);
  }

  function onError(f) {
    if (f.code === 'token_expired') {
      // During a session: refresh now (the node closes it after a grace).
      // At hello: the 4001 close that follows gets a new token.
      if (state.welcomed) refreshNow();
      return;
    }
    if (f.code === 'unauthorized' && !state.welcomed) {
      signInRequired(f.message || 'the node did not take the token.');
      return;
    }
    // The join's cursor was refused: made under another key (by an earlier
    // release, or before the node joined a cluster) or for another cluster.
    // Join again with the recent history; what the page shows stays.
    if (f.code === 'bad_request' && !f.ref && state.welcomed && !state.ready && state.cursors.has(room)) {
      state.cursors.delete(room);
      transmit({ type: 'join', room, history: HISTORY });
      return;
    }
    if (f.code === 'unavailable' && f.ref && state.pending.has(f.ref)) {
      // Not refused for good: the node is shutting down (it names the
      // others) or could not replicate in time. The message stays pending
      // and goes again with the same ref, so it is stored once.
      if (Array.isArray(f.nodes)) return failOver(f.nodes);
      const ref = f.ref;
      setTimeout(() => {
        const p = state.pending.get(ref);
        if (p && state.ready) transmit({ type: 'send', room, text: p.text, ref });
      }, 1000 + Math.random() * 1000);
      return;
    }
    showError(f.message || f.code || 'error');
    if (f.ref && state.pending.has(f.ref)) {
      const p = state.pending.get(f.ref);
      state.pending.delete(f.ref);
      p.el.classList.add('failed');
      p.el.title = 'not sent: ' + (f.message || f.code);
    }
    // An error before welcome answers hello: the name is not acceptable, and
    // retrying with the same one cannot help. So does one to a join with
    // history (one with a cursor was retried above): the name looks like
    // that of someone already in the room.
    if (!state.ready && !f.ref && f.code === 'bad_request') {
      state.nameRejected = true;
      setStatus('idle', 'choose another name');
      disconnect();
      ui.name.focus();
    }
  }

  // failOver leaves a node that is shutting down for one of the nodes it
  // named; pending sends go again once synced there.
  function failOver(nodes) {
    if (!state.ws) return;
    if (nodes.length) state.nodes = nodes;
    if (state.node) state.avoid = state.node.id;
    const ws = state.ws;
    state.ws = null;
    state.ready = false;
    state.welcomed = false;
    clearInterval(state.pingTimer);
    ws.close(1000, 'failing over');
    state.attempt = 0;
    scheduleReconnect(true);
  }

  // ---- rendering ----

  function messageElement(sender, text, created) {
    const li = document.createElement('li');
    li.className = 'message';
    const time = document.createElement('span');
    time.className = 'time';
    if (created) {
      const d = new Date(created);
      time.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      time.title = d.toLocaleString();
    }
    // Names and texts are isolated (dir=auto here, unicode-bidi: isolate in
    // the CSS): an Arabic name or a bidi control in a text cannot move the
    // time, or anything else outside its own element.
    const who = document.createElement('span');
    who.className = 'sender';
    who.dir = 'auto';
    who.textContent = sender;
    const body = document.createElement('span');
    body.className = 'text';
    body.dir = 'auto';
    body.textContent = withoutOverrides(text); // never innerHTML: the text is whatever people typed
    li.append(who, time, body);
    return li;
  }

  // The bidi overrides LRO and RLO (U+202D, U+202E) reverse even Latin
  // letters, inside the element too: "invoice_\u202Efdp.exe" would read
  // "invoice_exe.pdf". They go; the marks and isolates that right-to-left
  // writers use stay (the terminal client drops them all).
  function withoutOverrides(text) {
    return text.replace(/[\u202D\u202E]/g, '');
  }

  // Messages sort by (created, id). created is fixed-width RFC 3339, so it
  // compares as a string; the id's sequence part compares as a number.
  function sortKey(created, id) {
    const i = id.lastIndexOf('-');
    return { created, origin: id.slice(0, i), seq: Number(id.slice(i + 1)) };
  }

  function before(a, b) {
    if (a.created !== b.created) return a.created < b.created;
    if (a.origin !== b.origin) return a.origin < b.origin;
    return a.seq < b.seq;
  }

  // New messages nearly always go last, so search from the end.
  function insertSorted(el) {
    let after = ui.messages.lastElementChild;
    // A gap marker (no key) is a barrier: what arrives later belongs after it.
    while (after && after.key && before(el.key, after.key)) after = after.previousElementSibling;
    ui.messages.insertBefore(el, after ? after.nextElementSibling : ui.messages.firstElementChild);
  }

  // Two people present under one name are told apart by their user id,
  // shown in a badge beside the name.
  function renderPresence() {
    const people = [...state.presence.values()];
    people.sort((a, b) => a.name.localeCompare(b.name) || (a.user || '').localeCompare(b.user || ''));
    const count = new Map();
    for (const p of people) count.set(p.name, (count.get(p.name) || 0) + 1);
    ui.presence.replaceChildren(...people.map((p) => {
      const li = document.createElement('li');
      li.dir = 'auto'; // isolated, as names are in messages
      li.textContent = p.name;
      if (p.user && count.get(p.name) > 1) {
        const badge = document.createElement('span');
        badge.className = 'who';
        badge.dir = 'auto';
        badge.textContent = p.user;
        badge.title = 'two people here are called ' + p.name + '; this one is ' + p.user;
        li.append(' ', badge);
      }
      if (state.user ? p.user === state.user : p.name === state.me) li.classList.add('me');
      return li;
    }));
  }

  function nearEnd() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }

  function scrollToEnd(stick) {
    if (stick) ui.log.scrollTop = ui.log.scrollHeight;
  }

  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.status.textContent = text;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  function hideError() {
    ui.error.hidden = true;
    ui.error.textContent = '';
  }
})();
