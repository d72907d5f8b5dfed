// qm's MCP server driven by the official TypeScript SDK's Client over
// stdio, against a real `qm serve`: initialize, list the tools and check
// their schemas, allocate, see the allocation in resource_monitor, release,
// invalid arguments as tool errors, resources and a subscription. Then the
// same through the Streamable HTTP transport (/mcp on a second `qm serve`
// that has auth tokens) with the SDK's StreamableHTTPClientTransport and a
// bearer token: an agent token confined to its product.
//
// Run by ctest (mcp_sdk) as `node --test sdk.test.mjs` with QM_BINARY (the
// qm executable, for `qm serve`) and QM_MCP_BINARY (the MCP stdio server:
// qm-mcp, or `qm` with QM_MCP_ARGS=mcp) in the environment. The SDK checks
// every structuredContent against the tool's outputSchema itself.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  ErrorCode,
  McpError,
  ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

const QM = process.env.QM_BINARY;
const QM_MCP = process.env.QM_MCP_BINARY;
const QM_MCP_ARGS = (process.env.QM_MCP_ARGS ?? '').split(' ').filter(Boolean);

const TOOLS = [
  'resource_allocate',
  'resource_release',
  'resource_renew',
  'resource_monitor',
  'resource_check_conflicts',
  'resource_reserve',
  'resource_optimize',
  'resource_analytics',
];

let stateDir;
let server; // the qm serve child process
let url;
let client;
let transport;
let negotiated;
let mcpStderr = '';
const updates = [];

// Starts `qm serve` on port 0 with its state in `dir` (and `args`);
// resolves with the child process and its URL (from the line it prints:
// "qm serve: listening on http://127.0.0.1:PORT (...)").
function startQm(dir, args = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(QM, ['serve', '--listen', '127.0.0.1:0', '--state', dir, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => reject(new Error(`qm serve did not say where it listens: ${out} ${err}`)),
      20000,
    );
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (https?:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1] });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`qm serve exited (${code}): ${err}`));
    });
  });
}

async function startServer() {
  const started = await startQm(stateDir);
  server = started.child;
  return started.url;
}

async function stopQm(child) {
  if (child && child.exitCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
}

function structured(result) {
  assert.ok(result.structuredContent, JSON.stringify(result));
  return result.structuredContent;
}

function text(result) {
  return result.content.map((c) => c.text).join('\n');
}

async function monitor(args = {}) {
  const r = await client.callTool({ name: 'resource_monitor', arguments: args });
  assert.equal(r.isError, false, text(r));
  return structured(r);
}

before(async () => {
  assert.ok(QM, 'QM_BINARY (the qm executable) must be set');
  assert.ok(QM_MCP, 'QM_MCP_BINARY (the MCP stdio server) must be set');
  stateDir = mkdtempSync(path.join(tmpdir(), 'qm-mcp-sdk-'));
  url = await startServer();

  transport = new StdioClientTransport({
    command: QM_MCP,
    args: QM_MCP_ARGS,
    env: { PATH: process.env.PATH ?? '', QM_SERVER: url },
    stderr: 'pipe',
  });
  transport.stderr.on('data', (d) => (mcpStderr += d));
  // The client tells the transport the version the server agreed.
  transport.setProtocolVersion = (v) => {
    negotiated = v;
  };
  client = new Client({ name: 'qm-sdk-test', version: '1.0.0' });
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    updates.push(n.params.uri);
  });
  await client.connect(transport);
});

after(async () => {
  await client?.close();
  await stopQm(server);
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
});

test('initialize: server info, capabilities, version', () => {
  assert.equal(client.getServerVersion().name, 'qm');
  const caps = client.getServerCapabilities();
  assert.equal(caps.tools.listChanged, false);
  assert.equal(caps.resources.subscribe, true);
  // The SDK asks for a newer revision; qm answers its latest, which the
  // SDK accepts.
  assert.equal(negotiated, '2025-06-18');
  assert.match(client.getInstructions(), /resource_allocate/);
  // Only protocol messages went to stdout (the SDK would have failed to
  // parse anything else); the log went to stderr.
  assert.match(mcpStderr, /serving MCP on stdio/);
});

test('ping', async () => {
  assert.deepEqual(await client.ping(), {});
});

test('tools/list: every tool with its schemas', async () => {
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOLS].sort());
  for (const t of tools) {
    assert.ok(t.description.length > 20, t.name);
    assert.equal(t.inputSchema.type, 'object', t.name);
    assert.equal(t.inputSchema.additionalProperties, false, t.name);
    assert.equal(t.outputSchema.type, 'object', t.name);
    assert.ok(t.outputSchema.properties.error, t.name);
  }
  const allocate = tools.find((t) => t.name === 'resource_allocate');
  assert.deepEqual(allocate.inputSchema.required, ['requirements']);
  const req = allocate.inputSchema.properties.requirements;
  assert.deepEqual(req.required, ['workflow_id', 'agent_type']);
  assert.equal(req.additionalProperties, false);
  for (const field of ['product', 'resources', 'estimated_tokens', 'ttl_seconds']) {
    assert.ok(req.properties[field], field);
  }
  assert.ok(allocate.inputSchema.properties.priority);
  assert.equal(allocate.inputSchema.properties.timeout.type, 'number');
  const release = tools.find((t) => t.name === 'resource_release');
  assert.deepEqual(release.inputSchema.required, ['allocation_id']);
  const mon = tools.find((t) => t.name === 'resource_monitor');
  assert.deepEqual(mon.inputSchema.properties.format.enum, ['json', 'metrics', 'dashboard']);
});

test('allocate, see it in resource_monitor, release', async () => {
  const a = await client.callTool({
    name: 'resource_allocate',
    arguments: {
      requirements: {
        workflow_id: 'sdk-w1',
        agent_type: 'coder',
        product: 'web',
        estimated_tokens: 2000,
        ttl_seconds: 600,
      },
      priority: 'high',
      timeout: 10,
    },
  });
  assert.equal(a.isError, false, text(a));
  const alloc = structured(a);
  assert.equal(alloc.status, 'active');
  assert.equal(alloc.priority, 'high');
  assert.match(alloc.allocation_id, /^alloc_/);
  assert.match(text(a), new RegExp(`${alloc.allocation_id} is active`));

  const m = await monitor();
  assert.ok(
    m.allocations.some((x) => x.allocation_id === alloc.allocation_id && x.status === 'active'),
    JSON.stringify(m.allocations),
  );
  assert.equal(m.status.resources.agents.allocated, 1);
  const mine = await monitor({ filters: { workflow_id: 'sdk-w1' } });
  assert.equal(mine.count, 1);
  const dash = await client.callTool({ name: 'resource_monitor', arguments: { format: 'dashboard' } });
  assert.match(text(dash), new RegExp(`${alloc.allocation_id} active coder sdk-w1`));

  const r = await client.callTool({
    name: 'resource_release',
    arguments: {
      allocation_id: alloc.allocation_id,
      usage: { input_tokens: 1500, output_tokens: 500, outcome: 'success' },
    },
  });
  assert.equal(r.isError, false, text(r));
  assert.equal(structured(r).status, 'released');
  const after = await monitor();
  assert.ok(!after.allocations.some((x) => x.allocation_id === alloc.allocation_id));
  assert.equal(after.status.resources.agents.allocated, 0);

  const analytics = await client.callTool({ name: 'resource_analytics', arguments: {} });
  assert.equal(analytics.isError, false, text(analytics));
  assert.equal(structured(analytics).usage.tokens_used, 2000);
});

test('invalid arguments are tool errors', async () => {
  const cases = [
    [{ requirements: { workflow_id: 'w' } }, /agent_type: required/],
    [{ requirements: { workflow_id: 'w', agent_type: 'coder' }, priority: 'asap' }, /priority/],
    [{ requirements: { workflow_id: 'w', agent_type: 'coder', gpus: 1 } }, /gpus: unknown field/],
    [{}, /requirements: required/],
  ];
  for (const [args, message] of cases) {
    const r = await client.callTool({ name: 'resource_allocate', arguments: args });
    assert.equal(r.isError, true, JSON.stringify(args));
    assert.equal(structured(r).error.code, 'INVALID_REQUEST');
    assert.match(structured(r).error.message, message);
    assert.match(text(r), /^INVALID_REQUEST: /);
  }
  const gone = await client.callTool({ name: 'resource_release', arguments: { allocation_id: 'alloc_999' } });
  assert.equal(gone.isError, true);
  assert.equal(structured(gone).error.code, 'NOT_FOUND');
  const apply = await client.callTool({ name: 'resource_optimize', arguments: { apply: true } });
  assert.equal(apply.isError, true);
  assert.equal(structured(apply).error.code, 'UNIMPLEMENTED');
});

test('an unknown tool is a protocol error', async () => {
  await assert.rejects(
    client.callTool({ name: 'resource_teleport', arguments: {} }),
    (e) => e instanceof McpError && e.code === ErrorCode.InvalidParams,
  );
});

test('resources: list, read, subscribe', async () => {
  const { resources } = await client.listResources();
  assert.deepEqual(resources.map((r) => r.uri).sort(), ['qm://config', 'qm://costs/today', 'qm://status']);
  const read = await client.readResource({ uri: 'qm://status' });
  const doc = JSON.parse(read.contents[0].text);
  assert.equal(read.contents[0].mimeType, 'application/json');
  assert.ok(doc.resources.agents.total > 0);
  const costs = JSON.parse((await client.readResource({ uri: 'qm://costs/today' })).contents[0].text);
  assert.equal(costs.tokens_used, 2000);

  await client.subscribeResource({ uri: 'qm://status' });
  const a = await client.callTool({
    name: 'resource_allocate',
    arguments: { requirements: { workflow_id: 'sdk-w2', agent_type: 'reviewer' } },
  });
  assert.equal(a.isError, false, text(a));
  const deadline = Date.now() + 10000;
  while (!updates.includes('qm://status') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(updates.includes('qm://status'), 'no notifications/resources/updated');
  await client.unsubscribeResource({ uri: 'qm://status' });
  await client.callTool({
    name: 'resource_release',
    arguments: { allocation_id: structured(a).allocation_id },
  });
});

// ---------------------------------------------------------------- over HTTP

// A second server with auth tokens: an agent token for product `web` and an
// admin token, their SHA-256 in the config file (never the tokens).
async function startServerWithTokens() {
  const dir = mkdtempSync(path.join(tmpdir(), 'qm-mcp-sdk-http-'));
  const agent = `qm_${randomBytes(24).toString('hex')}`;
  const admin = `qm_${randomBytes(24).toString('hex')}`;
  const sha = (t) => createHash('sha256').update(t).digest('hex');
  const config = path.join(dir, 'qm.yml');
  writeFileSync(
    config,
    [
      'max_concurrent:',
      '  total: 4',
      'server:',
      '  auth:',
      '    tokens:',
      `      - {name: sdk-agent, sha256: ${sha(agent)}, role: agent, products: [web]}`,
      `      - {name: sdk-admin, sha256: ${sha(admin)}, role: admin}`,
      '',
    ].join('\n'),
  );
  const { child, url: base } = await startQm(path.join(dir, 'state'), ['--config', config]);
  return { dir, child, base, agent, admin };
}

test('Streamable HTTP at /mcp with a bearer token', async (t) => {
  const qm = await startServerWithTokens();
  const endpoint = new URL(`${qm.base}/mcp`);
  const bearer = (token) => ({ requestInit: { headers: { Authorization: `Bearer ${token}` } } });
  const api = async (method, target, body, token = qm.admin) => {
    const r = await fetch(`${qm.base}${target}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return r.json();
  };
  const httpUpdates = [];
  let http;
  t.after(async () => {
    await http?.close();
    await stopQm(qm.child);
    rmSync(qm.dir, { recursive: true, force: true });
  });

  // Without a token the server refuses the connection (401, as on /v1).
  const anonymous = new Client({ name: 'qm-sdk-anon', version: '1.0.0' });
  await assert.rejects(anonymous.connect(new StreamableHTTPClientTransport(endpoint)), (e) =>
    /401|UNAUTHENTICATED/.test(`${e.code} ${e.message}`),
  );

  const transport = new StreamableHTTPClientTransport(endpoint, bearer(qm.agent));
  http = new Client({ name: 'qm-sdk-http', version: '1.0.0' });
  http.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    httpUpdates.push(n.params.uri);
  });
  await http.connect(transport);
  const session = transport.sessionId;
  assert.match(session, /^[\x21-\x7e]+$/);
  assert.equal(transport.protocolVersion, '2025-06-18');
  assert.equal(http.getServerVersion().name, 'qm');

  const { tools } = await http.listTools();
  assert.deepEqual(tools.map((x) => x.name).sort(), [...TOOLS].sort());

  // Allocate in the token's product, see it, release it.
  const a = await http.callTool({
    name: 'resource_allocate',
    arguments: { requirements: { workflow_id: 'http-w1', agent_type: 'coder', product: 'web' }, timeout: 10 },
  });
  assert.equal(a.isError, false, text(a));
  const alloc = structured(a);
  assert.equal(alloc.status, 'active');
  const seen = structured(await http.callTool({ name: 'resource_monitor', arguments: {} }));
  assert.ok(seen.allocations.some((x) => x.allocation_id === alloc.allocation_id), JSON.stringify(seen));

  // Another product's allocation (the admin's) is invisible and untouchable.
  const other = await api('POST', '/v1/allocations', { workflow_id: 'api-w', agent_type: 'coder', product: 'api' });
  assert.equal(other.status, 'success', JSON.stringify(other));
  const otherId = other.result.allocation_id;
  const seen2 = structured(await http.callTool({ name: 'resource_monitor', arguments: {} }));
  assert.ok(!seen2.allocations.some((x) => x.allocation_id === otherId), JSON.stringify(seen2));
  const steal = await http.callTool({ name: 'resource_release', arguments: { allocation_id: otherId } });
  assert.equal(steal.isError, true);
  assert.equal(structured(steal).error.code, 'NOT_FOUND');
  const cross = await http.callTool({
    name: 'resource_allocate',
    arguments: { requirements: { workflow_id: 'x', agent_type: 'coder', product: 'api' } },
  });
  assert.equal(cross.isError, true);
  assert.equal(structured(cross).error.code, 'PERMISSION_DENIED');

  // Invalid arguments are tool errors.
  const invalid = await http.callTool({ name: 'resource_allocate', arguments: { requirements: { workflow_id: 'w' } } });
  assert.equal(invalid.isError, true);
  assert.equal(structured(invalid).error.code, 'INVALID_REQUEST');

  // A subscription notifies over the session's GET stream.
  await http.subscribeResource({ uri: 'qm://status' });
  const b = await http.callTool({
    name: 'resource_allocate',
    arguments: { requirements: { workflow_id: 'http-w2', agent_type: 'coder', product: 'web' } },
  });
  assert.equal(b.isError, false, text(b));
  const deadline = Date.now() + 10000;
  while (!httpUpdates.includes('qm://status') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(httpUpdates.includes('qm://status'), 'no notifications/resources/updated over HTTP');

  const r = await http.callTool({ name: 'resource_release', arguments: { allocation_id: alloc.allocation_id } });
  assert.equal(r.isError, false, text(r));
  assert.equal(structured(r).status, 'released');

  // A browser page from another origin is refused (DNS rebinding).
  const evil = await fetch(endpoint, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${qm.agent}`,
      Origin: 'http://evil.example',
      'Content-Type': 'application/json',
      Accept: 'application/json, text/event-stream',
      'Mcp-Session-Id': session,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'ping' }),
  });
  assert.equal(evil.status, 403);

  // Ending the session gives back what it still holds (http-w2).
  await transport.terminateSession();
  assert.equal(transport.sessionId, undefined);
  const after = await api('GET', `/v1/allocations/${structured(b).allocation_id}`);
  assert.equal(after.result.status, 'released', JSON.stringify(after));
  const gone = await fetch(endpoint, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${qm.agent}`,
      'Content-Type': 'application/json',
      Accept: 'application/json, text/event-stream',
      'Mcp-Session-Id': session,
      'MCP-Protocol-Version': '2025-06-18',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 100, method: 'ping' }),
  });
  assert.equal(gone.status, 404);
  assert.equal((await api('GET', `/v1/allocations/${otherId}`)).result.status, 'active');
});
