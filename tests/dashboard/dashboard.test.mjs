// qm's dashboard (GET /) driven in headless Chromium by playwright-core
// against a real `qm serve` with a scripted workload: the figures on the
// page match GET /v1/status and /v1/costs, live updates arrive without a
// reload, the pause button pauses grants (and resumes them), and a
// screenshot is saved.
//
// Run by ctest (dashboard_browser) as `node --test dashboard.test.mjs` with
// QM_BINARY (the qm executable), CHROMIUM (default /usr/bin/chromium) and
// QM_DASHBOARD_SCREENSHOT (where to save the screenshot) in the
// environment.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

const QM = process.env.QM_BINARY;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.QM_DASHBOARD_SCREENSHOT || path.resolve('dashboard.png');

const CONFIG = `
max_concurrent:
  total: 5
  per_type:
    backend-engineer: 2
    frontend-engineer: 2
pricing:
  default_model: sonnet
  models:
    sonnet: {input_per_million: 3, output_per_million: 15}
    haiku: {input_per_million: 0.25, output_per_million: 1.25}
daily_limits:
  max_tokens_total: 2000000
  max_cost_usd: 100
  alert_at_percent: 80
`;

let stateDir;
let url;
let browser;
let page;
const pageErrors = [];

const servers = []; // every qm serve started, stopped at the end

// Starts `qm serve` on port 0 with `config` (in a state directory of its
// own) and resolves with its URL (from the line it prints: "qm serve:
// listening on http://127.0.0.1:PORT (...)").
function startServer(name, config) {
  const dir = path.join(stateDir, name);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'qm.yml'), config);
  return new Promise((resolve, reject) => {
    const proc = spawn(
      QM,
      ['serve', '--listen', '127.0.0.1:0', '--state', path.join(dir, 'state'),
        '--config', path.join(dir, 'qm.yml')],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    servers.push(proc);
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => reject(new Error(`qm serve did not say where it listens: ${out} ${err}`)),
      20000,
    );
    proc.stderr.on('data', (d) => (err += d));
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (https?:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`qm serve exited (${code}): ${err}`));
    });
  });
}

// Calls the API as a script would; resolves with the envelope's result.
async function call(method, target, body) {
  const res = await fetch(url + target, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const env = await res.json();
  assert.equal(env.status, 'success', `${method} ${target}: ${JSON.stringify(env)}`);
  return env.result;
}

const allocate = (req) => call('POST', '/v1/allocations', req);

// The number a figure of the page holds (its data-v, else its text).
async function figure(key) {
  const el = page.locator(`[data-k="${key}"]`).first();
  const v = await el.getAttribute('data-v');
  return v === null ? (await el.textContent()).trim() : Number(v);
}

// Waits until every figure named in `want` shows its value (the page
// updates from the event stream; no reload).
async function waitForFigures(want, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let seen = {};
  for (;;) {
    seen = {};
    for (const key of Object.keys(want)) seen[key] = await figure(key);
    if (Object.entries(want).every(([k, v]) => seen[k] === v)) return seen;
    if (Date.now() > deadline) {
      assert.deepEqual(seen, want, 'the page did not come to show the server\'s figures');
    }
    await page.waitForTimeout(200);
  }
}

before(async () => {
  assert.ok(QM, 'QM_BINARY (the qm executable) must be set');
  stateDir = mkdtempSync(path.join(tmpdir(), 'qm-dashboard-'));
  url = await startServer('open', CONFIG);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Headless Chromium as root (as in CI containers) needs --no-sandbox.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, colorScheme: 'dark' });
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
  for (const proc of servers) {
    if (proc.exitCode !== null) continue;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await exited;
  }
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

test('the page loads from the binary, offline, without errors', async () => {
  const res = await page.goto(url + '/');
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  assert.ok(res.headers()['etag'], 'an ETag');
  await page.waitForSelector('body[data-loaded="1"]', { timeout: 15000 });
  // Only this server was asked for anything (no CDN).
  const hosts = await page.evaluate(() =>
    performance.getEntriesByType('resource').map((e) => new URL(e.name).host));
  for (const h of hosts) assert.equal(h, new URL(url).host);
  // The streams connect.
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 15000 });
  assert.deepEqual(pageErrors, []);
});

test('figures match /v1/status and /v1/costs under a scripted workload', async () => {
  // Two backend engineers (the type's limit), a third queued behind them,
  // a frontend engineer on another product, an architect; usage reported.
  const a1 = await allocate({ workflow_id: 'feature-a', product: 'web', agent_type: 'backend-engineer',
    requester: 'orchestrator-1', exclusive_access: ['src/api/server.ts'] });
  await allocate({ workflow_id: 'feature-b', product: 'web', agent_type: 'backend-engineer' });
  const q = await allocate({ workflow_id: 'feature-c', product: 'web', agent_type: 'backend-engineer' });
  assert.equal(q.status, 'queued');
  await allocate({ workflow_id: 'ui', product: 'mobile', agent_type: 'frontend-engineer' });
  await allocate({ workflow_id: 'design', product: 'mobile', agent_type: 'architect' });
  await call('POST', `/v1/allocations/${a1.allocation_id}/usage`,
    { report_id: 'r1', input_tokens: 200000, output_tokens: 40000 });
  await call('POST', '/v1/reservations',
    { workflow_id: 'nightly', start_time: '+2h', duration: '3h', resources: { agents: 2 } });

  const status = await call('GET', '/v1/status');
  const costs = await call('GET', '/v1/costs');
  const agents = status.resources.agents;
  assert.equal(agents.allocated, 4);
  assert.equal(status.allocations.queued, 1);

  await waitForFigures({
    'agents-active': agents.allocated,
    'agents-limit': agents.total,
    queued: status.allocations.queued,
    'tokens-today': costs.tokens_used,
    'tokens-limit': costs.limits.tokens,
    'cost-today': costs.cost_usd,
    'cost-limit': costs.limits.cost,
  });
  // What a reader sees: the big numbers as text.
  assert.equal((await page.textContent('[data-k="agents-active"]')).trim(), String(agents.allocated));
  assert.equal((await page.textContent('[data-k="agents-limit"]')).trim(), String(agents.total));
  assert.equal((await page.textContent('[data-k="queued"]')).trim(), String(status.allocations.queued));
  assert.equal((await page.textContent('[data-k="cost-today"]')).trim(), '$' + costs.cost_usd.toFixed(2));
  // The projection moves with the clock (spend so far over the time
  // elapsed): the page read it a moment apart from the test, so within a
  // cent.
  const projected = await figure('cost-projected');
  assert.ok(Math.abs(projected - costs.projected_eod.cost_usd) <= 0.01,
    `projected ${projected} against ${costs.projected_eod.cost_usd}`);

  // Per agent type and per product: running agents as /v1/status has them.
  for (const [name, g] of Object.entries(status.agent_types)) {
    assert.equal(await figure(`type-${name}`), g.running_agents, `type ${name}`);
  }
  for (const [name, g] of Object.entries(status.products)) {
    assert.equal(await figure(`product-${name}`), g.running_agents, `product ${name}`);
  }

  // The queue with its score and reason, as /v1/queue has it.
  const queue = await call('GET', '/v1/queue');
  const row = page.locator(`#queue-table tr[data-id="${q.allocation_id}"]`);
  await row.waitFor();
  const rowText = await row.textContent();
  assert.ok(rowText.includes(queue.queue[0].reason_queued), rowText);
  assert.ok(rowText.includes(queue.queue[0].score.toFixed(3)), rowText);

  // The active allocations with their holder; the lock; the reservation.
  assert.equal(await page.locator('#alloc-table tbody tr[data-id]').count(), status.allocations.active);
  assert.ok((await page.textContent(`#alloc-table tr[data-id="${a1.allocation_id}"]`)).includes('orchestrator-1'));
  assert.ok((await page.textContent('#locks')).includes('src/api/server.ts'));
  await page.waitForSelector('#timeline rect.r');

  // Health, as /v1/status reports it (when it does).
  if (status.health?.overall_status) {
    assert.equal(await page.getAttribute('#health-pill', 'data-status'), status.health.overall_status);
  }
});

test('live: a release shows without a reload', async () => {
  const before = await call('GET', '/v1/status');
  const list = await call('GET', '/v1/allocations?status=active&product=mobile');
  const victim = list.allocations.find((a) => a.agent_type === 'architect');
  await call('POST', `/v1/allocations/${victim.allocation_id}/release`, {});
  const afterStatus = await call('GET', '/v1/status');
  assert.equal(afterStatus.resources.agents.allocated, before.resources.agents.allocated - 1);
  await waitForFigures({ 'agents-active': afterStatus.resources.agents.allocated });
  await page.waitForSelector('#events li .ty:text("released")', { timeout: 10000 });
});

test('the pause button pauses grants, and resumes them', async () => {
  const btn = page.locator('#btn-pause');
  await assert.doesNotReject(btn.waitFor());
  assert.equal(await btn.getAttribute('data-action'), 'pause');
  await btn.click();
  await page.waitForSelector('#btn-pause[data-action="resume"]', { timeout: 10000 });
  // The server says paused (GET /v1/status when it reports it, else
  // /v1/costs), and a new request queues instead of being granted.
  const st = await call('GET', '/v1/status');
  const paused = 'paused' in st ? st.paused : (await call('GET', '/v1/costs')).paused;
  assert.equal(paused, true);
  const held = await allocate({ workflow_id: 'while-paused', product: 'mobile', agent_type: 'frontend-engineer' });
  assert.equal(held.status, 'queued', JSON.stringify(held));
  assert.ok(!(await page.locator('#banner').isHidden()));
  assert.match(await page.textContent('#banner'), /paused/i);
  await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, '-paused.png'), fullPage: true });

  await page.locator('#btn-pause').click();
  await page.waitForSelector('#btn-pause[data-action="pause"]', { timeout: 10000 });
  const st2 = await call('GET', '/v1/status');
  const paused2 = 'paused' in st2 ? st2.paused : (await call('GET', '/v1/costs')).paused;
  assert.equal(paused2, false);
  // The held request is granted once grants resume.
  const got = await call('GET', `/v1/allocations/${held.allocation_id}?wait=5`);
  assert.equal(got.status, 'active');
  assert.ok(await page.locator('#banner').isHidden());
});

test('screenshot', async () => {
  const status = await call('GET', '/v1/status');
  await waitForFigures({ 'agents-active': status.resources.agents.allocated, queued: status.allocations.queued });
  await page.waitForTimeout(500);
  await page.evaluate(() => { document.querySelector('#toast').hidden = true; }); // a passing notice
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(statSync(SCREENSHOT).size > 10000);
  assert.deepEqual(pageErrors, []);
});

test('with tokens: the page asks for one, keeps it in the tab, and sends it as a header', async () => {
  const ops = 'qm_' + randomBytes(24).toString('hex');
  const bot = 'qm_' + randomBytes(24).toString('hex');
  const sha = (t) => createHash('sha256').update(t).digest('hex');
  const url2 = await startServer('tokens', CONFIG + `
server:
  auth:
    tokens:
      - {name: ops, sha256: ${sha(ops)}, role: operator}
      - {name: bot, sha256: ${sha(bot)}, role: agent, products: [web]}
`);
  const call2 = async (method, target, token, body) => {
    const res = await fetch(url2 + target, {
      method,
      headers: { Authorization: 'Bearer ' + token, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, env: await res.json() };
  };
  const p2 = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  p2.on('pageerror', (e) => errors.push(e.message));
  // The page itself needs no token; the API does, so it asks for one.
  const res = await p2.goto(url2 + '/');
  assert.equal(res.status(), 200);
  await p2.waitForSelector('#token-dialog[open]', { timeout: 10000 });
  // A wrong token: asked again, saying why.
  await p2.fill('#token-input', 'qm_wrong');
  await p2.click('#token-ok');
  await p2.waitForSelector('#token-dialog[open] #token-error:not([hidden])', { timeout: 10000 });
  // The operator's token: figures and live streams.
  await p2.fill('#token-input', ops);
  await p2.click('#token-ok');
  await p2.waitForSelector('#conn[data-state="live"]', { timeout: 15000 });
  const a = await call2('POST', '/v1/allocations', ops, { workflow_id: 'w', product: 'web', agent_type: 'backend-engineer' });
  assert.equal(a.status, 200, JSON.stringify(a.env));
  const st = (await call2('GET', '/v1/status', ops)).env.result;
  await p2.waitForFunction((n) => document.querySelector('[data-k="agents-active"]')?.dataset.v === String(n),
    st.resources.agents.allocated, { timeout: 15000 });
  assert.equal(await p2.evaluate(() => sessionStorage.getItem('qm.token')), ops);
  // Never in a URL (those end up in logs and history).
  const urls = await p2.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name));
  assert.ok(urls.every((u) => !u.includes(ops)), urls.join(' '));
  // An operator may pause.
  await p2.click('#btn-pause');
  await p2.waitForSelector('#btn-pause[data-action="resume"]', { timeout: 10000 });
  assert.equal((await call2('GET', '/v1/costs', ops)).env.result.paused, true);
  await p2.click('#btn-pause');
  await p2.waitForSelector('#btn-pause[data-action="pause"]', { timeout: 10000 });
  // An agent's token may watch but not pause: the server's 403 is shown.
  await p2.click('#btn-token');
  await p2.fill('#token-input', bot);
  await p2.click('#token-ok');
  await p2.waitForSelector('#conn[data-state="live"]', { timeout: 15000 });
  await p2.click('#btn-pause');
  await p2.waitForSelector('#toast.error:not([hidden])', { timeout: 10000 });
  assert.match(await p2.textContent('#toast'), /operator/);
  assert.equal((await call2('GET', '/v1/costs', ops)).env.result.paused, false);
  assert.deepEqual(errors, []);
  await p2.close();
});
