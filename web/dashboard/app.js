// qm dashboard: a live view of one qm server, in plain JavaScript.
//
// Every figure on the page comes from the server's API:
//   GET /v1/status                  totals, agents per type and product, health
//   GET /v1/queue                   the queue with scores and reasons
//   GET /v1/allocations             active and queued allocations (holders, locks)
//   GET /v1/costs                   today's tokens and cost, limits, projection
//   GET /v1/reservations, /v1/conflicts
//   GET /v1/monitor/system          sampled history for the charts (404: none yet)
//   GET /v1/events   (stream)       every state change: refreshes the figures
//   GET /v1/monitor  (stream)       a status snapshot every few seconds
// Streams are read with fetch() rather than EventSource so that the bearer
// token travels in the Authorization header (never in a URL); the stream
// resumes with Last-Event-ID after a disconnect, as EventSource would.
'use strict';

(() => {
  // ------------------------------------------------------------ helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // Builds an element: h('td', {class: 'num', title: 'x'}, 'text', child...).
  // Text goes in as text (never parsed as HTML).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'style') {
        for (const [p, pv] of Object.entries(v)) el.style[p] = pv;
      } else if (k.startsWith('on')) {
        el.addEventListener(k.slice(2), v);
      } else {
        el.setAttribute(k, v === true ? '' : String(v));
      }
    }
  }
  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  const nf = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (n === null || n === undefined ? '—' : nf.format(Math.round(n)));
  function fmtCompact(n) {
    if (n === null || n === undefined) return '—';
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 1 : 2) + 'B';
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 1 : 2) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
    return nf.format(Math.round(n));
  }
  function fmtUsd(x) {
    if (x === null || x === undefined) return '—';
    const a = Math.abs(x);
    const digits = a >= 1000 ? 0 : a >= 1 || a === 0 ? 2 : 3;
    return '$' + x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  const fmtPct = (p) => (p === null || p === undefined ? '—' : (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + '%');

  // The server's durations ("1h2m3s", "250ms") in milliseconds.
  function parseDuration(text) {
    if (typeof text === 'number') return text * 1000;
    if (!text) return null;
    const units = { d: 86400000, h: 3600000, m: 60000, s: 1000, ms: 1 };
    let ms = 0;
    let matched = false;
    const re = /(\d+(?:\.\d+)?)(ms|d|h|m|s)/g;
    let m;
    while ((m = re.exec(text)) !== null) {
      ms += parseFloat(m[1]) * units[m[2]];
      matched = true;
    }
    if (!matched) return null;
    return text.startsWith('-') ? -ms : ms;
  }
  // Milliseconds as two units at most: "3h 05m", "12m 30s", "45s".
  function fmtSpan(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
    const neg = ms < 0;
    let t = Math.abs(Math.round(ms / 1000));
    const d = Math.floor(t / 86400); t -= d * 86400;
    const hh = Math.floor(t / 3600); t -= hh * 3600;
    const mm = Math.floor(t / 60);
    const ss = t - mm * 60;
    const pad = (n) => String(n).padStart(2, '0');
    let out;
    if (d > 0) out = `${d}d ${hh}h`;
    else if (hh > 0) out = `${hh}h ${pad(mm)}m`;
    else if (mm > 0) out = `${mm}m ${pad(ss)}s`;
    else out = `${ss}s`;
    return neg ? '-' + out : out;
  }
  const fmtClock = (ms) => {
    const d = new Date(ms);
    return d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  };
  const fmtHm = (ms) => new Date(ms).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
  const levelOf = (pct, warn = 80, crit = 100) =>
    pct === null || pct === undefined ? null : pct >= crit ? 'crit' : pct >= warn ? 'warn' : null;

  // ------------------------------------------------------------ state

  const state = {
    token: sessionStorage.getItem('qm.token') || '',
    status: null, // /v1/status result
    queue: null, // /v1/queue result
    allocations: null, // /v1/allocations?status=active,queued result
    costs: null,
    reservations: null,
    conflicts: null,
    system: null, // /v1/monitor/system result (null: none yet)
    historyMissing: false, // /v1/monitor/system answered 404
    range: '1h',
    samples: [], // what this page saw, for the charts when the server keeps no history
    alerts: new Map(), // key -> {type, severity, message, recommended_action, state, time}
    events: [], // the latest events, newest first
    serverOffset: 0, // server clock - this clock, ms
    streams: { events: 'connecting', monitor: 'connecting' },
    lastUpdate: 0,
    authFailed: false,
  };
  const serverNow = () => Date.now() + state.serverOffset;

  // ------------------------------------------------------------ API

  class HttpError extends Error {
    constructor(status, envelope) {
      const msg = envelope?.error?.message || `HTTP ${status}`;
      super(msg);
      this.status = status;
      this.envelope = envelope;
    }
  }

  function authHeaders() {
    return state.token ? { Authorization: 'Bearer ' + state.token } : {};
  }

  // GET or POST an /v1 route; resolves with the envelope's result.
  async function api(path, { method = 'GET', body } = {}) {
    const headers = { Accept: 'application/json', ...authHeaders() };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    let env = null;
    try {
      env = await res.json();
    } catch (_) {
      env = null;
    }
    if (res.status === 401) {
      askToken(env?.error?.message);
      throw new HttpError(401, env);
    }
    if (!res.ok || !env || env.status !== 'success') throw new HttpError(res.status, env);
    if (env.timestamp) {
      const t = Date.parse(env.timestamp);
      if (!Number.isNaN(t)) state.serverOffset = t - Date.now();
    }
    return env.result;
  }

  // ------------------------------------------------------------ token

  let tokenWaiters = [];
  function askToken(message) {
    const dlg = $('#token-dialog');
    $('#btn-token').hidden = false;
    const err = $('#token-error');
    if (state.token) {
      err.textContent = message || 'The server refused this token.';
      err.hidden = false;
    } else {
      err.hidden = true;
    }
    state.authFailed = true;
    if (!dlg.open) {
      try {
        dlg.showModal();
      } catch (_) {
        dlg.setAttribute('open', '');
      }
      $('#token-input').focus();
    }
  }
  function tokenReady() {
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }
  function setToken(t) {
    state.token = t;
    state.authFailed = false;
    if (t) sessionStorage.setItem('qm.token', t);
    else sessionStorage.removeItem('qm.token');
    const waiters = tokenWaiters;
    tokenWaiters = [];
    waiters.forEach((w) => w());
    for (const c of streamControllers) c.abort();
    refreshAll();
  }

  // ------------------------------------------------------------ streams

  // Reads Server-Sent Events from `path` with fetch, calling on(event, data,
  // id) per event; reconnects for ever (sending Last-Event-ID when `resume`).
  // Open streams, aborted (and so reopened) when the token changes.
  const streamControllers = new Set();

  async function stream(name, path, on, { resume = false } = {}) {
    let lastId = null;
    let retry = 1000;
    let failures = 0;
    for (;;) {
      const ctrl = new AbortController();
      streamControllers.add(ctrl);
      try {
        const headers = { Accept: 'text/event-stream', ...authHeaders() };
        if (resume && lastId !== null) headers['Last-Event-ID'] = lastId;
        const res = await fetch(path, { headers, cache: 'no-store', signal: ctrl.signal });
        if (res.status === 401) {
          setStream(name, 'down');
          askToken();
          await tokenReady();
          continue;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        setStream(name, 'live');
        failures = 0;
        if (name === 'events') refreshAll(); // what changed while away
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        let ev = { type: '', data: [], id: null };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            let line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.endsWith('\r')) line = line.slice(0, -1);
            if (line === '') {
              if (ev.data.length) {
                if (ev.id !== null) lastId = ev.id;
                try {
                  on(ev.type || 'message', ev.data.join('\n'), ev.id);
                } catch (e) {
                  console.error('qm dashboard: event handler', e);
                }
              }
              ev = { type: '', data: [], id: null };
              continue;
            }
            if (line.startsWith(':')) continue; // keep-alive comment
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            let val = colon < 0 ? '' : line.slice(colon + 1);
            if (val.startsWith(' ')) val = val.slice(1);
            if (field === 'data') ev.data.push(val);
            else if (field === 'event') ev.type = val;
            else if (field === 'id') ev.id = val;
            else if (field === 'retry' && /^\d+$/.test(val)) retry = parseInt(val, 10);
          }
        }
      } catch (e) {
        if (!ctrl.signal.aborted) failures++;
      } finally {
        streamControllers.delete(ctrl);
      }
      if (ctrl.signal.aborted) continue; // a new token: reconnect at once
      setStream(name, failures > 3 ? 'down' : 'reconnecting');
      await new Promise((r) => setTimeout(r, Math.min(retry * Math.max(1, failures), 10000)));
    }
  }

  function setStream(name, st) {
    state.streams[name] = st;
    const all = Object.values(state.streams);
    const overall = all.every((x) => x === 'live') ? 'live' : all.some((x) => x === 'down') ? 'down' : 'reconnecting';
    const conn = $('#conn');
    conn.dataset.state = overall;
    $('#conn-label').textContent =
      overall === 'live' ? 'live' : overall === 'down' ? 'disconnected' : 'reconnecting…';
  }

  // ------------------------------------------------------------ refresh

  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;
  // Fetches everything again soon (coalescing bursts of events).
  function scheduleRefresh(delay = 150) {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      refreshAll();
    }, delay);
  }

  async function refreshAll() {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    try {
      const [status, queue, allocs, costs, reservations, conflicts] = await Promise.allSettled([
        api('/v1/status'),
        api('/v1/queue'),
        api('/v1/allocations?status=active,queued&limit=1000'),
        api('/v1/costs'),
        api('/v1/reservations'),
        api('/v1/conflicts'),
      ]);
      if (status.status === 'fulfilled') state.status = status.value;
      if (queue.status === 'fulfilled') state.queue = queue.value;
      if (allocs.status === 'fulfilled') state.allocations = allocs.value;
      if (costs.status === 'fulfilled') state.costs = costs.value;
      if (reservations.status === 'fulfilled') state.reservations = reservations.value;
      if (conflicts.status === 'fulfilled') state.conflicts = conflicts.value;
      const failed = [status, queue, allocs, costs].find((r) => r.status === 'rejected');
      if (failed && !(failed.reason instanceof HttpError && failed.reason.status === 401)) {
        showToast('Could not read the server: ' + failed.reason.message, true);
      }
      state.lastUpdate = Date.now();
      addSample();
      renderAll();
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        scheduleRefresh(100);
      }
    }
  }

  async function refreshHistory() {
    try {
      state.system = await api('/v1/monitor/system?time_range=' + state.range);
      state.historyMissing = false;
    } catch (e) {
      if (e instanceof HttpError && [400, 404, 501, 503].includes(e.status)) {
        state.system = null;
        state.historyMissing = true;
        state.historyStatus = e.status;
      }
    }
    renderHealth();
    renderCharts();
  }

  // ------------------------------------------------------------ events

  const EVENT_KIND = {
    granted: 'good', released: 'good', reservation_started: 'good', circuit_closed: 'good', conflict_resolved: 'good',
    queued: 'warn', requeued: 'warn', lease_expiring: 'warn', preemption_notice: 'warn', budget_alert: 'warn',
    starvation: 'warn', over_budget: 'warn', conflict_detected: 'warn', reclaim_requested: 'warn', override: 'warn',
    failed: 'bad', expired: 'bad', preempted: 'bad', circuit_tripped: 'bad', cancelled: 'bad',
  };

  function onEvent(type, raw) {
    let data = {};
    try {
      data = JSON.parse(raw);
    } catch (_) {
      return;
    }
    if (type === 'reset') {
      scheduleRefresh(0);
      return;
    }
    state.events.unshift({ type, data, at: Date.parse(data.time) || serverNow() });
    if (state.events.length > 80) state.events.length = 80;
    noteAlert(type, data);
    renderEvents();
    scheduleRefresh();
  }

  // Alerts: the monitor's `alert` events (firing / resolved), and the
  // engine's own warnings.
  function noteAlert(type, d) {
    const at = Date.parse(d.time) || serverNow();
    if (type === 'alert' && d.alert) {
      const a = d.alert;
      const key = 'alert:' + a.type + ':' + (a.resource || a.subject || '');
      state.alerts.set(key, { ...a, state: a.state || 'firing', time: at });
    } else if (type === 'budget_alert') {
      state.alerts.set('budget:' + (d.reason || ''), {
        type: 'budget_alert', severity: 'medium', message: d.reason || 'budget alert', state: 'firing', time: at,
        recommended_action: 'Check the spend by model and product below',
      });
    } else if (type === 'circuit_tripped') {
      state.alerts.set('breaker', {
        type: 'circuit_tripped', severity: 'critical', message: d.reason || 'the circuit breaker opened', state: 'firing',
        time: at, recommended_action: 'New grants are held; raise the limit or override the breaker',
      });
    } else if (type === 'circuit_closed') {
      const a = state.alerts.get('breaker');
      if (a) a.state = 'resolved';
    } else if (type === 'starvation') {
      state.alerts.set('starvation:' + d.allocation_id, {
        type: 'starvation', severity: 'medium', state: 'firing', time: at,
        message: `${d.allocation_id} (${d.agent_type || 'agent'}, ${d.priority}) waited past its level's limit`,
        recommended_action: d.reason || 'Raise capacity or the priority of the waiting work',
      });
    } else if (type === 'granted' || type === 'cancelled') {
      const a = state.alerts.get('starvation:' + d.allocation_id);
      if (a) a.state = 'resolved';
    } else if (type === 'over_budget') {
      state.alerts.set('over:' + d.allocation_id, {
        type: 'over_budget', severity: 'low', state: 'firing', time: at,
        message: `${d.allocation_id} used more tokens than its grant`, recommended_action: d.reason || '',
      });
    }
  }

  // ------------------------------------------------------------ render

  function setK(key, text, value) {
    for (const el of $$(`[data-k="${key}"]`)) {
      el.textContent = text;
      if (value !== undefined && value !== null) el.dataset.v = String(value);
      else delete el.dataset.v;
    }
  }
  function meter(el, pct) {
    el.style.width = Math.max(0, Math.min(100, pct || 0)) + '%';
    const lv = levelOf(pct);
    if (lv) el.dataset.level = lv;
    else delete el.dataset.level;
  }

  function renderAll() {
    renderHeader();
    renderKpis();
    renderHealth();
    renderGroups();
    renderQueue();
    renderAllocations();
    renderLocks();
    renderSpendLines();
    renderReservations();
    renderAlerts();
    renderCharts();
    document.body.dataset.loaded = '1';
    $('#updated').textContent = 'updated ' + fmtClock(Date.now());
  }

  function healthOf() {
    return state.status?.health || state.system?.health || null;
  }

  function renderHeader() {
    const hl = healthOf();
    const pill = $('#health-pill');
    if (hl && hl.overall_status) {
      pill.dataset.status = hl.overall_status;
      $('#health-label').textContent = hl.overall_status;
      pill.title = 'Overall health from the server';
    } else {
      pill.dataset.status = 'unknown';
      $('#health-label').textContent = state.status ? 'no health data' : 'connecting…';
      pill.title = 'This server does not report health yet';
    }
    const c = state.costs;
    const btn = $('#btn-pause');
    if (c) {
      btn.disabled = false;
      btn.dataset.action = c.paused ? 'resume' : 'pause';
      btn.textContent = c.paused ? 'Resume grants' : 'Pause grants';
      const br = c.circuit_breaker || {};
      $('#btn-breaker').hidden = !(br.open && br.allow_override && !br.overridden);
    }
    const banner = $('#banner');
    const parts = [];
    let level = 'warn';
    if (c?.paused) {
      parts.push(h('span', null, '⏸ Grants are paused', c.paused_by ? ` by ${c.paused_by}` : '',
        c.paused_reason ? h('span', { class: 'muted' }, ` — ${c.paused_reason}`) : ''));
    }
    if (c?.circuit_breaker?.open && !c.circuit_breaker.overridden) {
      level = 'crit';
      parts.push(h('span', null, (parts.length ? ' · ' : '') + '⛔ Circuit breaker open',
        h('span', { class: 'muted' }, ` — ${c.circuit_breaker.condition || 'spend limit'}`,
          c.circuit_breaker.closes_at ? `, closes ${fmtHm(Date.parse(c.circuit_breaker.closes_at))}` : '')));
    }
    banner.hidden = parts.length === 0;
    banner.className = 'banner ' + level;
    banner.dataset.k = 'banner';
    clear(banner).append(...parts);
  }

  function periodWord(c) {
    return !c || c.period === 'daily' ? 'today' : c.period === 'weekly' ? 'this week' : 'this month';
  }

  function renderKpis() {
    const st = state.status;
    if (st) {
      const agents = st.resources?.agents;
      const active = agents ? agents.allocated : st.allocations?.active;
      const limit = agents ? agents.total : null;
      setK('agents-active', fmtInt(active), active);
      setK('agents-limit', limit === null || limit === undefined ? '∞' : fmtInt(limit), limit);
      const pct = agents ? agents.utilization_percent : null;
      meter($('#agents-meter'), pct);
      $('#kpi-agents').dataset.level = levelOf(pct, 90, 100) || '';
      const foot = [`${fmtInt(st.allocations?.active)} allocations`];
      if (agents?.reserved) foot.push(`${fmtInt(agents.reserved)} reserved`);
      if (st.allocations?.preempting) foot.push(`${fmtInt(st.allocations.preempting)} preempting`);
      if (pct !== null && pct !== undefined) foot.push(fmtPct(pct));
      $('#agents-foot').textContent = foot.join(' · ');

      setK('queued', fmtInt(st.allocations?.queued), st.allocations?.queued);
      const ow = parseDuration(st.allocations?.oldest_wait);
      setK('oldest-wait', ow === null ? '—' : fmtSpan(ow));
      const lv = st.allocations?.queued_by_level || {};
      const levels = Object.entries(lv).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`);
      $('#queue-levels').textContent = levels.length ? levels.join(' · ') : ' ';
      $('#kpi-queue').dataset.level = st.allocations?.queued > 0 ? 'warn' : '';
    }
    const c = state.costs;
    if (c) {
      const word = periodWord(c);
      $('#kpi-tokens h2').textContent = 'Tokens ' + word;
      $('#kpi-cost h2').textContent = 'Cost ' + word;
      setK('tokens-today', fmtCompact(c.tokens_used), c.tokens_used);
      $('[data-k="tokens-today"]').title = fmtInt(c.tokens_used) + ' tokens';
      const tl = c.limits?.tokens;
      $('#tokens-limit-wrap').hidden = tl === null || tl === undefined;
      setK('tokens-limit', fmtCompact(tl), tl);
      const tp = c.percent_used?.tokens;
      meter($('#tokens-meter'), tp);
      $('#kpi-tokens').dataset.level = levelOf(tp) || '';
      const tf = [];
      if (tp !== null && tp !== undefined) tf.push(fmtPct(tp) + ' of limit');
      if (c.reserved?.tokens) tf.push(`${fmtCompact(c.reserved.tokens)} reserved`);
      if (c.burn_rate?.tokens_per_hour) tf.push(`${fmtCompact(c.burn_rate.tokens_per_hour)}/h`);
      $('#tokens-foot').textContent = tf.join(' · ') || ' ';

      setK('cost-today', fmtUsd(c.cost_usd), c.cost_usd);
      const cl = c.limits?.cost;
      $('#cost-limit-wrap').hidden = cl === null || cl === undefined;
      setK('cost-limit', fmtUsd(cl), cl);
      const cp = c.percent_used?.cost;
      meter($('#cost-meter'), cp);
      $('#kpi-cost').dataset.level = levelOf(cp) || '';
      const proj = c.projected_eod?.cost_usd;
      setK('cost-projected', fmtUsd(proj), proj);
      const mark = $('#cost-proj-mark');
      if (cl && proj !== undefined) {
        mark.style.display = 'block';
        mark.style.left = Math.min(100, (proj / cl) * 100) + '%';
      } else {
        mark.style.display = 'none';
      }
      const br = c.circuit_breaker || {};
      setK('breaker', br.open ? (br.overridden ? 'overridden' : 'OPEN') : 'closed');
    }
    const openConflicts = (state.conflicts?.conflicts || []).filter((x) => x.status === 'open').length;
    setK('conflicts-open', fmtInt(openConflicts), openConflicts);
    const n = activeAlerts().length;
    setK('alerts-count', fmtInt(n), n);
    $('#kpi-alerts').dataset.level = n > 0 ? 'warn' : '';
    if (state.status?.time) setK('server-time', 'server time ' + fmtClock(Date.parse(state.status.time)));
  }

  function renderHealth() {
    const hl = healthOf();
    const list = clear($('#health-list'));
    if (hl) {
      const names = [
        ['overall_status', 'overall'], ['cpu_status', 'cpu'], ['memory_status', 'memory'],
        ['storage_status', 'storage'], ['agent_pool_status', 'agent pool'],
      ];
      for (const [key, label] of names) {
        if (!(key in hl)) continue;
        const v = hl[key] || 'n/a';
        list.append(h('div', { class: 'hcell', 'data-status': v, 'data-k': 'health-' + key,
          title: hl[key] ? '' : 'not measured by this server' }, h('div', { class: 'k' }, label), h('div', { class: 'v' }, v)));
      }
    } else {
      list.append(h('div', { class: 'muted' }, 'This server reports no health checks yet; resource use below.'));
    }
    const last = lastHistoryPoint();
    const bars = clear($('#resources'));
    if (last && (last.cpu_utilization !== undefined || last.memory_utilization !== undefined)) {
      bars.append(h('h3', null, 'Machine'));
      if (last.cpu_utilization !== undefined) bars.append(barRow('CPU', last.cpu_utilization, 100, fmtPct(last.cpu_utilization)));
      if (last.memory_utilization !== undefined) {
        bars.append(barRow('Memory', last.memory_utilization, 100, fmtPct(last.memory_utilization)));
      }
      $('#health-time').textContent = last.time ? 'sampled ' + fmtClock(Date.parse(last.time)) : '';
    }
    const res = state.status?.resources || {};
    const keys = Object.keys(res);
    if (keys.length) {
      bars.append(h('h3', null, 'Resources allocated'));
      for (const k of keys) {
        const r = res[k];
        bars.append(barRow(k.replace(/_/g, ' '), r.allocated, r.total,
          h('span', null, fmtNum(r.allocated), h('small', null, ' / ' + fmtNum(r.total)))));
      }
    }
  }
  const fmtNum = (x) => (Number.isInteger(x) ? fmtInt(x) : x.toLocaleString('en-US', { maximumFractionDigits: 2 }));

  function barRow(name, value, total, valueText, extra) {
    const pct = total ? (100 * value) / total : 0;
    const fill = h('span');
    fill.style.width = Math.max(0, Math.min(100, pct)) + '%';
    // A full pool is a warning (work queues), not an error.
    const lv = pct >= 100 ? 'warn' : null;
    if (lv) fill.dataset.level = lv;
    return h('div', { class: 'bar-row' },
      h('div', { class: 'name', title: name }, name),
      h('div', { class: 'bar' }, fill),
      h('div', { class: 'val' }, valueText, extra || null));
  }

  function renderGroups() {
    const st = state.status;
    if (!st) return;
    const total = st.resources?.agents?.total || 0;
    const draw = (el, groups, kind) => {
      clear(el);
      const entries = Object.entries(groups || {});
      if (!entries.length) {
        el.append(h('div', { class: 'empty' }, 'Nothing running yet.'));
        return;
      }
      entries.sort((a, b) => b[1].running_agents - a[1].running_agents || a[0].localeCompare(b[0]));
      for (const [name, g] of entries) {
        const limit = g.limit;
        const row = barRow(name, g.running_agents, limit || total,
          h('span', { 'data-k': `${kind}-${name}` , 'data-v': g.running_agents }, fmtInt(g.running_agents),
            h('small', null, limit === null || limit === undefined ? ' / no limit' : ' / ' + fmtInt(limit))),
          g.queued ? h('span', { class: 'q', title: 'queued' }, `+${g.queued} queued`) : null);
        el.append(row);
      }
    };
    draw($('#by-type'), st.agent_types, 'type');
    draw($('#by-product'), st.products, 'product');
  }

  function allocIndex() {
    const m = new Map();
    for (const a of state.allocations?.allocations || []) m.set(a.allocation_id, a);
    return m;
  }

  function priorityTag(p) {
    return h('span', { class: 'pri ' + p }, p);
  }

  function renderQueue() {
    const q = state.queue;
    if (!q) return;
    const body = clear($('#queue-table tbody'));
    const idx = allocIndex();
    $('#queue-sub').textContent = q.queued ? `${q.queued} waiting` : '';
    if (!q.queue.length) {
      body.append(h('tr', { class: 'empty' }, h('td', { colspan: 8 }, 'Nothing queued.')));
      return;
    }
    for (const e of q.queue.slice(0, 200)) {
      const a = idx.get(e.allocation_id);
      const f = e.factors || {};
      const exp = a?.expected_start ? Date.parse(a.expected_start) : null;
      body.append(h('tr', { 'data-id': e.allocation_id },
        h('td', { class: 'num' }, e.position),
        h('td', { class: 'id' }, e.allocation_id, a?.workflow_id ? h('span', { class: 'tag' }, a.workflow_id) : null),
        h('td', null, e.product || 'default'),
        h('td', null, e.agent_type || '—'),
        h('td', null, priorityTag(e.priority)),
        h('td', { class: 'num', title: 'priority × wait × blocking × fair share' }, e.score.toFixed(3),
          h('span', { class: 'factors' },
            `p${(f.priority ?? 0).toFixed(2)} w${(f.wait ?? 0).toFixed(2)} b${(f.blocking ?? 0).toFixed(2)} f${(f.fair_share ?? 0).toFixed(2)}`)),
        h('td', null, h('span', { class: 'reason' }, e.reason_queued || '—'),
          exp ? h('span', { class: 'factors' }, 'expected start ' + fmtHm(exp)) : null),
        h('td', { class: 'num' }, fmtSpan(parseDuration(e.waited)))));
    }
  }

  function renderAllocations() {
    const list = (state.allocations?.allocations || []).filter((a) => a.status === 'active');
    const body = clear($('#alloc-table tbody'));
    $('#allocs-sub').textContent = list.length ? `${list.length} active` : '';
    if (!list.length) {
      body.append(h('tr', { class: 'empty' }, h('td', { colspan: 10 }, 'No active allocations.')));
      return;
    }
    const now = serverNow();
    list.sort((a, b) => (Date.parse(a.expires_at) || Infinity) - (Date.parse(b.expires_at) || Infinity));
    for (const a of list.slice(0, 300)) {
      const exp = a.expires_at ? Date.parse(a.expires_at) : null;
      const left = exp === null ? null : exp - now;
      const b = a.budget || {};
      const granted = a.granted_at ? Date.parse(a.granted_at) : null;
      body.append(h('tr', { 'data-id': a.allocation_id },
        h('td', { class: 'id' }, a.allocation_id,
          a.preempt_deadline ? h('span', { class: 'tag over' }, 'preempting') : null),
        h('td', null, a.workflow_id),
        h('td', null, a.requester || '—'),
        h('td', null, a.product || 'default'),
        h('td', null, a.agent_type || '—'),
        h('td', null, priorityTag(a.priority)),
        h('td', null, b.model || '—'),
        h('td', { class: 'num' }, fmtCompact(b.used_tokens || 0), b.max_tokens ? h('small', { class: 'muted' }, ' / ' + fmtCompact(b.max_tokens)) : null),
        h('td', { class: 'num', 'data-since': granted || '' }, granted ? fmtSpan(now - granted) : '—'),
        h('td', { class: 'num ' + (left !== null && left < 0 ? 'over' : left !== null && left < 60000 ? 'soon' : ''), 'data-exp': exp || '' },
          left === null ? 'no lease' : left < 0 ? 'overdue ' + fmtSpan(-left) : fmtSpan(left))));
    }
  }

  // Re-renders the relative times once a second, between refreshes.
  function tickClocks() {
    const now = serverNow();
    for (const td of $$('#alloc-table td[data-exp]')) {
      const exp = Number(td.dataset.exp);
      if (!exp) continue;
      const left = exp - now;
      td.textContent = left < 0 ? 'overdue ' + fmtSpan(-left) : fmtSpan(left);
      td.className = 'num ' + (left < 0 ? 'over' : left < 60000 ? 'soon' : '');
    }
    for (const td of $$('#alloc-table td[data-since]')) {
      const since = Number(td.dataset.since);
      if (since) td.textContent = fmtSpan(now - since);
    }
    if (state.status) setK('server-time', 'server time ' + fmtClock(now));
  }

  function renderLocks() {
    const ul = clear($('#locks'));
    const held = [];
    for (const a of state.allocations?.allocations || []) {
      if (a.status !== 'active') continue;
      for (const l of a.locks || []) held.push({ ...l, holder: a.allocation_id, workflow: a.workflow_id });
    }
    const waiting = new Map();
    for (const c of state.conflicts?.conflicts || []) {
      if (c.status === 'open' && c.subject) waiting.set(c.subject, (waiting.get(c.subject) || 0) + 1);
    }
    $('#locks-sub').textContent = held.length ? `${held.length} held` : '';
    if (!held.length) {
      ul.append(h('li', { class: 'empty' }, 'No path locks held.'));
      return;
    }
    held.sort((a, b) => a.path.localeCompare(b.path));
    for (const l of held.slice(0, 200)) {
      const w = waiting.get(l.path);
      ul.append(h('li', null,
        h('span', { class: 'mode ' + l.mode }, l.mode === 'exclusive' ? 'EX' : 'SH'),
        h('span', { class: 'p', title: l.path }, l.path),
        w ? h('span', { class: 'tag soon' }, `${w} waiting`) : null,
        h('span', { class: 'h', title: l.workflow }, l.holder)));
    }
  }

  function renderSpendLines() {
    const c = state.costs;
    if (!c) return;
    const el = clear($('#spend-lines'));
    const section = (title, lines) => {
      if (!lines || !lines.length) return;
      el.append(h('h3', null, title));
      const max = Math.max(...lines.map((l) => l.cost_usd), 1e-9);
      for (const l of lines.slice(0, 8)) {
        el.append(barRow(l.name || 'default', l.cost_usd, max,
          h('span', null, fmtUsd(l.cost_usd), h('small', null, ` · ${fmtCompact(l.tokens)} tok · ${l.tasks} tasks`))));
      }
    };
    section('By model', c.models);
    section('By product', c.by_product);
    if (!el.firstChild) el.append(h('div', { class: 'empty' }, `No spend ${periodWord(c)} yet.`));
  }

  function activeAlerts() {
    const out = [];
    const st = state.status;
    // Alerts the server says are active now (its monitor), when it says so.
    for (const a of Array.isArray(st?.alerts) ? st.alerts : []) {
      out.push({ ...a, state: a.state || 'firing', source: 'server' });
    }
    const seen = new Set(out.map((a) => a.type + '|' + a.message));
    for (const a of state.alerts.values()) {
      if (a.state === 'resolved') continue;
      if (seen.has(a.type + '|' + a.message)) continue;
      if (a.type === 'circuit_tripped' && !state.costs?.circuit_breaker?.open) continue;
      out.push(a);
    }
    for (const c of state.conflicts?.conflicts || []) {
      if (c.status === 'open') out.push({ ...c, state: 'firing' });
    }
    return out;
  }

  function renderAlerts() {
    const ul = clear($('#alerts'));
    const active = activeAlerts();
    const resolved = [...state.alerts.values()].filter((a) => a.state === 'resolved').slice(-5);
    const budget = (state.costs?.alerts_triggered || []).map((a) => ({
      type: 'budget_alert', severity: a.threshold_percent >= 100 ? 'high' : 'medium', message: a.message,
      recommended_action: `${a.budget} budget crossed ${a.threshold_percent}%`, state: 'today', time: Date.parse(a.time),
    }));
    const items = [...active, ...budget.filter((b) => !active.some((a) => a.message === b.message)), ...resolved];
    $('#alerts-sub').textContent = active.length ? `${active.length} active` : '';
    if (!items.length) {
      ul.append(h('li', { class: 'empty' }, 'No alerts.'));
      return;
    }
    for (const a of items.slice(0, 30)) {
      ul.append(h('li', { 'data-sev': a.severity || 'low', 'data-state': a.state || 'firing' },
        h('div', { class: 't' }, (a.type || 'alert').replace(/_/g, ' '),
          h('span', { class: 'tag' }, a.severity || 'info'),
          a.state && a.state !== 'firing' ? h('span', { class: 'tag' }, a.state) : null,
          a.time ? h('span', { class: 'tag' }, fmtHm(a.time)) : null),
        h('div', { class: 'm' }, a.message || ''),
        a.recommended_action ? h('div', { class: 'a' }, '→ ' + a.recommended_action) : null));
    }
  }

  function describeEvent(e) {
    const d = e.data;
    const parts = [];
    if (d.alert) parts.push(`${d.alert.severity || ''} ${d.alert.message || ''}`.trim());
    if (d.allocation_id) parts.push(d.allocation_id);
    if (d.reservation_id) parts.push(d.reservation_id);
    const who = [d.product, d.agent_type].filter(Boolean).join('/');
    if (who) parts.push(who);
    if (d.reason) parts.push(d.reason);
    if (d.actor) parts.push('by ' + d.actor);
    return parts.join(' · ');
  }

  function renderEvents() {
    const ol = clear($('#events'));
    $('#events-sub').textContent = state.events.length ? `last ${state.events.length}` : '';
    if (!state.events.length) {
      ol.append(h('li', { class: 'empty' }, 'Waiting for events…'));
      return;
    }
    for (const e of state.events.slice(0, 60)) {
      ol.append(h('li', null,
        h('span', { class: 'tm' }, fmtClock(e.at)),
        h('span', { class: 'ty', 'data-kind': EVENT_KIND[e.type] || (e.type === 'alert' ? 'warn' : '') }, e.type.replace(/_/g, ' ')),
        h('span', { class: 'de', title: describeEvent(e) }, describeEvent(e))));
    }
  }

  // ------------------------------------------------------------ reservations timeline

  function renderReservations() {
    const list = (state.reservations?.reservations || []).filter(
      (r) => !['cancelled', 'ended', 'released'].includes(r.status) || Date.parse(r.window_end || 0) > serverNow() - 3600e3);
    const svg = $('#timeline');
    clear(svg);
    $('#res-empty').hidden = list.length > 0;
    svg.style.display = list.length ? 'block' : 'none';
    $('#res-sub').textContent = list.length ? `${list.length} · next 24 h` : '';
    if (!list.length) return;
    const W = Math.max(svg.clientWidth || 800, 300);
    const rowH = 26;
    const top = 24;
    const rows = list.slice(0, 12);
    const H = top + rows.length * rowH + 8;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('height', H);
    const now = serverNow();
    const t0 = now - 3600e3;
    const t1 = now + 23 * 3600e3;
    const left = 170;
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - 8);
    const every = (W - left) / 24 >= 40 ? 2 * 3600e3 : 4 * 3600e3;
    for (let hr = Math.ceil(t0 / every) * every; hr <= t1; hr += every) {
      if (Math.abs(x(hr) - x(now)) < 30) continue; // leave room for "now"
      svg.append(s('line', { class: 'tick', x1: x(hr), x2: x(hr), y1: top - 4, y2: H }));
      svg.append(s('text', { x: x(hr), y: 12, 'text-anchor': 'middle' }, fmtHm(hr)));
    }
    svg.append(s('text', { x: x(now), y: 12, 'text-anchor': 'middle', class: 'lbl' }, 'now'));
    rows.forEach((r, i) => {
      const start = Date.parse(r.window_start || r.start_time);
      const dur = parseDuration(r.duration) || 0;
      const end = r.window_end ? Date.parse(r.window_end) : start + dur;
      const y = top + i * rowH;
      const agents = r.resources?.agents;
      const name = `${r.reservation_id} · ${r.workflow_id}`;
      svg.append(s('text', { class: 'lbl', x: 0, y: y + 16 }, name.length > 22 ? name.slice(0, 21) + '…' : name,
        s('title', null, name)));
      const xs = Math.max(left, x(start));
      const xe = Math.min(W - 8, x(end));
      if (xe > xs) {
        const rect = s('rect', { class: 'r ' + (r.status || ''), x: xs, y: y + 3, width: Math.max(3, xe - xs), height: rowH - 8, rx: 4 },
          s('title', null, `${r.reservation_id} (${r.workflow_id}) ${r.status}: ${new Date(start).toLocaleString()} for ${fmtSpan(end - start)}` +
            (agents ? `, ${agents} agents` : '') + (r.recurrence ? `, ${r.recurrence}` : '')));
        svg.append(rect);
        if (xe - xs > 70) {
          svg.append(s('text', { x: xs + 6, y: y + 16, class: 'lbl' },
            `${r.workflow_id}${agents ? ' · ' + agents + ' agents' : ''}`));
        }
      } else {
        svg.append(s('text', { x: left, y: y + 16 }, `${r.status}, ${fmtHm(start)} (outside the next 24 h)`));
      }
    });
    svg.append(s('line', { class: 'now', x1: x(now), x2: x(now), y1: top - 4, y2: H }));
  }

  // ------------------------------------------------------------ charts

  function lastHistoryPoint() {
    const hist = state.system?.history;
    return hist && hist.length ? hist[hist.length - 1] : null;
  }

  // Samples for the charts: the server's history when it keeps one, else
  // what this page has seen since it opened.
  function chartPoints() {
    const span = state.range === '24h' ? 24 * 3600e3 : 3600e3;
    const from = serverNow() - span;
    // The latest figures (from the last status and costs read) end the lines.
    const live = state.samples.length ? [state.samples[state.samples.length - 1]] : [];
    if (state.system?.history) {
      const points = state.system.history.map((p) => ({ ...p, t: Date.parse(p.time) })).filter((p) => p.t >= from);
      const lastT = points.length ? points[points.length - 1].t : -Infinity;
      return { server: true, from, points: points.concat(live.filter((p) => p.t > lastT)) };
    }
    return { server: false, from, points: state.samples.filter((p) => p.t >= from) };
  }

  function addSample() {
    const st = state.status;
    if (!st) return;
    const agents = st.resources?.agents;
    const c = state.costs;
    const t = Date.parse(st.time) || serverNow();
    const lastSample = state.samples[state.samples.length - 1];
    if (lastSample && lastSample.t > t) return; // an older snapshot, arrived late
    if (lastSample && lastSample.t === t) state.samples.pop(); // the same moment, newer figures
    state.samples.push({
      t,
      agents_active: agents ? agents.allocated : st.allocations?.active,
      agents_limit: agents ? agents.total : null,
      queued: st.allocations?.queued,
      tokens_today: c?.tokens_used,
      cost_today_usd: c?.cost_usd,
    });
    if (state.samples.length > 20000) state.samples.splice(0, state.samples.length - 20000);
  }

  // Draws `series` [{name, color, values: [[t, v]...], area}] on `svg`.
  function lineChart(svg, series, { from, to, yMax, yFmt, limit, emptyText }) {
    clear(svg);
    const W = Math.max(svg.clientWidth || 500, 200);
    const H = svg.clientHeight || 180;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const L = 44, R = 8, T = 8, B = 22;
    const x = (t) => L + ((t - from) / (to - from)) * (W - L - R);
    const y = (v) => T + (1 - v / yMax) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = (yMax * i) / 4;
      svg.append(s('line', { class: 'grid-line', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.append(s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, yFmt(v)));
    }
    // Time ticks on round minutes / hours, at least 64 px apart.
    const steps = [5, 10, 15, 30, 60, 120, 180, 360, 720].map((m) => m * 60e3);
    const step = steps.find((st) => ((W - L - R) * st) / (to - from) >= 64) || steps[steps.length - 1];
    const tz = new Date().getTimezoneOffset() * 60e3;
    for (let t = Math.ceil((from - tz) / step) * step + tz; t <= to; t += step) {
      if (x(t) < L + 16 || x(t) > W - R - 16) continue;
      svg.append(s('line', { class: 'grid-line', x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4 }));
      svg.append(s('text', { x: x(t), y: H - 6, 'text-anchor': 'middle' }, fmtHm(t)));
    }
    if (limit !== null && limit !== undefined && limit <= yMax) {
      svg.append(s('line', { class: 'limit', x1: L, x2: W - R, y1: y(limit), y2: y(limit) }));
      svg.append(s('text', { x: W - R, y: y(limit) - 4, 'text-anchor': 'end' }, 'limit ' + yFmt(limit)));
    }
    let any = false;
    for (const se of series) {
      const pts = se.values.filter(([, v]) => v !== null && v !== undefined && !Number.isNaN(v));
      if (!pts.length) continue;
      any = true;
      const d = pts.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(Math.min(v, yMax)).toFixed(1)}`).join('');
      if (se.area && pts.length > 1) {
        const area = `${d}L${x(pts[pts.length - 1][0]).toFixed(1)},${y(0)}L${x(pts[0][0]).toFixed(1)},${y(0)}Z`;
        svg.append(s('path', { d: area, fill: se.color, 'fill-opacity': 0.15, stroke: 'none' }));
      }
      svg.append(s('path', { d, fill: 'none', stroke: se.color, 'stroke-width': 2, 'stroke-linejoin': 'round', 'stroke-linecap': 'round' }));
      const [lt, lv] = pts[pts.length - 1];
      svg.append(s('circle', { cx: x(lt), cy: y(Math.min(lv, yMax)), r: 3, fill: se.color }));
    }
    if (!any) {
      svg.append(s('text', { class: 'nodata', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, emptyText || 'no data yet'));
    }
    // Hover: a vertical line and the values nearest in time.
    const hover = s('g', { visibility: 'hidden' });
    const hl = s('line', { class: 'hover-line', y1: T, y2: H - B });
    const label = s('text', { y: T + 12 });
    hover.append(hl, label);
    svg.append(hover);
    svg.onmousemove = (ev) => {
      const rect = svg.getBoundingClientRect();
      const px = ((ev.clientX - rect.left) / rect.width) * W;
      const t = from + ((px - L) / (W - L - R)) * (to - from);
      if (px < L || px > W - R) {
        hover.setAttribute('visibility', 'hidden');
        return;
      }
      const texts = [];
      for (const se of series) {
        let best = null;
        for (const p of se.values) if (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
        if (best && best[1] !== null && best[1] !== undefined) texts.push(`${se.name} ${yFmt(best[1], true)}`);
      }
      hl.setAttribute('x1', px);
      hl.setAttribute('x2', px);
      label.setAttribute('x', px > W / 2 ? px - 6 : px + 6);
      label.setAttribute('text-anchor', px > W / 2 ? 'end' : 'start');
      label.textContent = `${fmtHm(t)}  ${texts.join('  ')}`;
      hover.setAttribute('visibility', 'visible');
    };
    svg.onmouseleave = () => hover.setAttribute('visibility', 'hidden');
  }

  function legend(el, series) {
    clear(el);
    for (const se of series) {
      const i = h('i');
      i.style.background = se.color;
      el.append(h('span', null, i, se.name + (se.last !== undefined ? ' ' + se.last : '')));
    }
  }

  function renderCharts() {
    const { server, from, points } = chartPoints();
    const to = serverNow();
    const css = getComputedStyle(document.documentElement);
    const col = (v) => css.getPropertyValue(v).trim();
    const agentsPct = points.map((p) => [p.t, p.agents_limit ? (100 * p.agents_active) / p.agents_limit : null]);
    const util = [{ name: 'agents', color: col('--c1'), values: agentsPct, area: true }];
    if (points.some((p) => p.cpu_utilization !== undefined)) {
      util.push({ name: 'cpu', color: col('--c2'), values: points.map((p) => [p.t, p.cpu_utilization]) });
    }
    if (points.some((p) => p.memory_utilization !== undefined)) {
      util.push({ name: 'memory', color: col('--c3'), values: points.map((p) => [p.t, p.memory_utilization]) });
    }
    for (const se of util) {
      const last = se.values.filter(([, v]) => v !== null && v !== undefined).pop();
      se.last = last ? fmtPct(last[1]) : undefined;
    }
    const empty = server ? 'no samples in this range yet' : 'no history yet';
    lineChart($('#chart-util'), util, { from, to, yMax: 100, yFmt: (v) => Math.round(v) + '%', emptyText: empty });
    legend($('#util-legend'), util);

    const c = state.costs;
    const costVals = points.map((p) => [p.t, p.cost_today_usd]);
    const limit = c?.limits?.cost ?? null;
    const maxCost = Math.max(0, ...costVals.map(([, v]) => v || 0));
    const yMax = niceMax(Math.max(maxCost, limit && limit <= maxCost * 3 ? limit : 0, 0.01) * 1.1);
    const spend = [{ name: 'cost', color: col('--c4'), values: costVals, area: true,
      last: c ? fmtUsd(c.cost_usd) : undefined }];
    lineChart($('#chart-spend'), spend, { from, to, yMax, limit, yFmt: (v) => fmtUsd(v), emptyText: empty });
    legend($('#spend-legend'), spend);

    const note = $('#history-note');
    if (!server) {
      note.hidden = false;
      note.textContent = state.historyMissing
        ? `No history yet: this server keeps no samples (GET /v1/monitor/system answered ${state.historyStatus}). The charts show the snapshots this page has received since it opened.`
        : 'No history yet: showing the snapshots this page has received since it opened.';
      note.dataset.k = 'no-history';
    } else {
      note.hidden = true;
    }
  }

  function niceMax(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // ------------------------------------------------------------ actions

  let toastTimer = null;
  function showToast(text, error = false) {
    const t = $('#toast');
    t.textContent = text;
    t.className = 'toast' + (error ? ' error' : '');
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.hidden = true), error ? 8000 : 4000);
  }

  async function override(what, reason) {
    try {
      const r = await api('/v1/overrides/' + what, { method: 'POST', body: { reason } });
      if (state.costs && r) {
        state.costs.paused = r.paused;
        state.costs.circuit_breaker = r.circuit_breaker;
      }
      renderHeader();
      showToast(what === 'pause' ? 'Grants paused.' : what === 'resume' ? 'Grants resumed.' : 'Breaker overridden.');
      scheduleRefresh(0);
    } catch (e) {
      if (e instanceof HttpError && e.status === 403) {
        showToast('Not allowed: ' + e.message + ' (an operator or admin token can)', true);
      } else if (!(e instanceof HttpError && e.status === 401)) {
        showToast(`${what} failed: ${e.message}`, true);
      }
    }
  }

  function wire() {
    $('#btn-pause').addEventListener('click', async (ev) => {
      const btn = ev.currentTarget;
      btn.disabled = true;
      await override(btn.dataset.action === 'resume' ? 'resume' : 'pause', 'from the dashboard');
      btn.disabled = false;
    });
    $('#btn-breaker').addEventListener('click', () => {
      const br = state.costs?.circuit_breaker || {};
      $('#breaker-why').textContent = `Tripped by ${br.condition || 'a spend condition'}` +
        (br.tripped_at ? ` at ${fmtHm(Date.parse(br.tripped_at))}` : '') + '.';
      $('#breaker-dialog').showModal();
    });
    $('#breaker-dialog').addEventListener('close', () => {
      if ($('#breaker-dialog').returnValue === 'ok') override('breaker', $('#breaker-reason').value || 'from the dashboard');
    });
    $('#token-dialog').addEventListener('close', () => {
      const t = $('#token-input').value.trim();
      $('#token-input').value = '';
      if (t) setToken(t);
    });
    $('#btn-token').addEventListener('click', () => {
      $('#token-error').hidden = true;
      $('#token-dialog').showModal();
    });
    for (const b of $$('.seg button')) {
      b.addEventListener('click', () => {
        $$('.seg button').forEach((x) => x.classList.toggle('on', x === b));
        state.range = b.dataset.range;
        renderCharts();
        refreshHistory();
      });
    }
    const saved = localStorage.getItem('qm.theme');
    if (saved) document.documentElement.dataset.theme = saved;
    $('#btn-theme').addEventListener('click', () => {
      const dark = getComputedStyle(document.documentElement).colorScheme.includes('dark');
      const next = dark ? 'light' : 'dark';
      document.documentElement.dataset.theme = next;
      localStorage.setItem('qm.theme', next);
      renderCharts();
    });
    window.addEventListener('resize', () => {
      renderCharts();
      renderReservations();
    });
  }

  // ------------------------------------------------------------ start

  function start() {
    wire();
    $('#server-name').textContent = location.host;
    refreshAll();
    refreshHistory();
    stream('events', '/v1/events', onEvent, { resume: true });
    stream('monitor', '/v1/monitor?interval=5', (type, raw) => {
      if (type !== 'snapshot') return;
      try {
        state.status = JSON.parse(raw);
      } catch (_) {
        return;
      }
      addSample();
      renderKpis();
      renderHeader();
      renderHealth();
      renderGroups();
      renderCharts();
    });
    setInterval(tickClocks, 1000);
    setInterval(refreshHistory, 30000);
    setInterval(() => scheduleRefresh(0), 30000); // a safety net for missed events
    // For tests and the curious: the figures the page holds.
    window.qmDashboard = { state, refresh: refreshAll };
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
