import { adminPrincipal, apiKeyPrincipal, userPrincipal, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, handled, publish, startAgents, task, type Api, type Svc } from './helpers.js';

let svc: Svc;
let owner: Api;
/** Ids of one of each resource of organization A. */
const ids: Record<string, number | string> = {};

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';
interface Operation { method: Method; path: string; params: string[]; query: { name: string; required: boolean }[]; body: { properties?: Record<string, { type?: string }>; required?: string[] } | null; list: boolean }
let operations: Operation[] = [];

beforeAll(async () => {
  svc = await startAgents();
  owner = client(svc);
  const agent = (await owner.call('POST', '/agents', { name: 'victim' })).json().data.agent;
  ids.agent = agent.id;
  const run = (await owner.call('POST', '/agents/victim/runs', { input: 'secret plans' })).json().data;
  ids.run = run.id;
  await owner.finished(run.id);
  ids.conversation = (await owner.call('POST', '/agents/victim/messages', { message: 'hello' })).json().data.conversation_id;
  ids.template = (await owner.call('POST', '/v1/public/templates', { name: 'T', slug: 'tpl' })).json().data.id;
  ids.rule = (await owner.call('POST', '/rules', { rule: 'Be kind' })).json().data.id;
  ids.file = (await owner.call('POST', '/files', { path: 'secret/plan.md', content: 'the plan' })).json().data.id;
  ids.automation = (await owner.call('POST', '/automations', { name: 'a', agent_name: 'victim', type: 'script', path: 'run.sh' })).json().data.id;
  await owner.call('POST', '/discovery-engines', { name: 'Eng', slug: 'eng', layer: 'api', enabled: false });

  const spec = svc.app.swagger() as { paths: Record<string, Record<string, { parameters?: { in: string; name: string; required?: boolean }[]; requestBody?: { content: Record<string, { schema: Operation['body'] }> }; responses?: Record<string, { content?: Record<string, { schema?: { properties?: Record<string, unknown> } }> }> }>> };
  operations = Object.entries(spec.paths).flatMap(([path, methods]) => Object.entries(methods).map(([m, op]) => ({
    method: m.toUpperCase() as Method, path,
    params: (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name),
    query: (op.parameters ?? []).filter((p) => p.in === 'query').map((p) => ({ name: p.name, required: !!p.required })),
    body: op.requestBody?.content['application/json']?.schema ?? null,
    list: !!op.responses?.['200']?.content?.['application/json']?.schema?.properties?.meta,
  })));
});
afterAll(() => svc?.close());

/** Organization A's id for each path parameter. */
const realParam = (path: string, param: string) => {
  if (param === 'name') return 'victim';
  if (param === 'slug') return 'eng';
  if (param === 'queue') return 'factory';
  if (path.startsWith('/bull-queue')) return 'admin-x';
  const kind = path.startsWith('/agent-runs') ? 'run' : path.startsWith('/v1/public/templates') ? 'template' : path.startsWith('/v1/public/agents') ? 'agent'
    : path.startsWith('/rules') ? 'rule' : path.startsWith('/files') ? 'file' : path.startsWith('/automations') ? 'automation' : 'agent';
  return String(ids[kind]);
};
const fill = (op: Operation, value: (param: string) => string) => op.params.reduce((p, name) => p.replace(`{${name}}`, encodeURIComponent(value(name))), op.path);
/** Query parameters a route cannot do without. */
const requiredQuery = (name: string) => ({ conversation_id: String(ids.conversation), agent_name: 'victim', q: 'plan' } as Record<string, string>)[name] ?? 'x';
const minimalBody = (op: Operation) => Object.fromEntries((op.body?.required ?? []).map((k) => [k, op.body!.properties?.[k]?.type === 'integer' ? 1 : op.body!.properties?.[k]?.type === 'object' ? {} : k === 'name' && op.path === '/agents' ? 'new-agent' : 'x']));

const HOSTILE = ['../../etc/passwd', '..%2F..%2F', "' OR '1'='1' --", '"; DROP TABLE agents; --', '\u0000', '<script>alert(1)</script>', 'x'.repeat(5_000), '99999999999999999999', '-1', '0', '1e309', 'NaN', '🙂', '{}', '[]', 'null', '%', '\\', '$ne'];
const WRONG = [null, true, -1, 1e308, 'x'.repeat(200_000), [], {}, { $gt: '' }, [1, 2, 3], '../../etc'];

function assertClientError(res: { statusCode: number; body: string }, label: string) {
  expect(res.statusCode, `${label} → ${res.statusCode} ${res.body.slice(0, 200)}`).toBeLessThan(500);
  if (res.statusCode >= 400) {
    const body = JSON.parse(res.body);
    expect(body.error?.code, label).toEqual(expect.any(String));
    expect(res.body, label).not.toMatch(/\bat .+\.(ts|js):\d+|SELECT |INSERT |syntax error|node_modules/);
  }
}

describe('organization isolation', () => {
  it('every id-bearing route answers 404 to another organization, and changes nothing', async () => {
    const other = client(svc, userPrincipal({ orgRole: 'owner' }));
    const idBearing = operations.filter((op) => op.params.length > 0 && !op.path.startsWith('/bull-queue'));
    expect(idBearing.length).toBeGreaterThanOrEqual(25);
    for (const op of idBearing) {
      const url = fill(op, (p) => realParam(op.path, p)) + (op.query.some((q) => q.name === 'conversation_id') ? `?conversation_id=${ids.conversation}` : '');
      const patch = op.path.includes('agents') ? { role: 'x' } : op.path.startsWith('/rules') ? { title: 'x' } : { name: 'renamed' };
      const body = op.method === 'GET' || op.method === 'DELETE' ? undefined : op.method === 'PATCH' ? patch : { input: 'x', message: 'x' };
      const res = await other.call(op.method, url, body);
      expect(res.statusCode, `${op.method} ${url} → ${res.body.slice(0, 200)}`).toBe(404);
      expect(res.json().error.code).toBe('NOT_FOUND');
    }
    // Nothing of A moved.
    expect((await owner.call('GET', '/agents/victim')).json().data).toMatchObject({ status: 'idle', role: 'engineer' });
    expect((await owner.call('GET', `/rules?limit=200`)).json().data.map((r: { id: number }) => r.id)).toContain(ids.rule);
    expect((await owner.call('GET', `/v1/public/templates/${ids.template}`)).statusCode).toBe(200);
    expect((await owner.call('GET', `/automations/${ids.automation}`)).statusCode).toBe(200);
    expect((await owner.call('GET', '/discovery-engines/eng')).statusCode).toBe(200);
    expect((await owner.call('GET', `/agent-runs/${ids.run}`)).json().data.status).toBe('succeeded');
  });

  it("another organization's agent or task named in a body is 404 naming the field, and nothing is created", async () => {
    const other = client(svc, userPrincipal({ orgRole: 'owner' }));
    await other.call('POST', '/agents', { name: 'mine' });
    // A task of A (the projection knows it from tasks' events), and one of the other organization.
    const theirs = await publish(svc, 'tasks.task.created', owner.principal.orgId!, task({ taskId: 9_001, title: 'Secret task' }));
    const ours = await publish(svc, 'tasks.task.created', other.principal.orgId!, task({ taskId: 9_002, title: 'Our task' }));
    await waitFor(async () => (await handled(svc, theirs.id, 'agent-queues')) && handled(svc, ours.id, 'agent-queues'), { message: 'task events handled' });
    const refused: [string, string, unknown, string][] = [
      ['POST', '/automations', { name: 'a', agent_name: 'victim', type: 'script', path: 'run.sh' }, 'agent_name'],
      ['POST', '/automations', { name: 'a', agent_name: 'nobody-at-all', type: 'script', path: 'run.sh' }, 'agent_name'],
      ['POST', '/agents/mine/runs', { input: 'x', task_id: 9_001 }, 'task_id'],
      ['POST', '/agents/mine/runs', { task_id: 9_001 }, 'task_id'],
      ['POST', '/agents/mine/runs', { task_id: 123_456 }, 'task_id'],
    ];
    for (const [method, url, body, field] of refused) {
      const res = await other.call(method as Method, url, body);
      expect(res.statusCode, `${url} ${JSON.stringify(body)}`).toBe(404);
      expect(res.json().error).toMatchObject({ code: 'NOT_FOUND', details: [{ field }] });
      expect(res.body).not.toContain('Secret');
    }
    expect((await other.call('GET', '/automations')).json().meta.total).toBe(0);
    expect((await other.call('GET', '/agent-runs')).json().meta.total).toBe(0);
    const run = await other.call('POST', '/agents/mine/runs', { task_id: 9_002 });
    expect(run.statusCode).toBe(202);
    expect(run.json().data).toMatchObject({ task_id: 9_002, input: 'Work on task #9002: Our task' });
    expect((await other.call('POST', '/automations', { name: 'a', agent_name: 'mine', type: 'script', path: 'run.sh' })).statusCode).toBe(201);
  });

  it('every list is scoped: another organization sees totals of zero', async () => {
    const other = client(svc);
    for (const op of operations.filter((o) => o.method === 'GET' && o.list && o.params.length === 0)) {
      const qs = op.query.filter((q) => q.required).map((q) => `${q.name}=${requiredQuery(q.name)}`).join('&') || (op.path === '/files/search' ? 'q=plan' : '');
      const res = await other.call('GET', `${op.path}${qs ? `?${qs}` : ''}`);
      if (op.path.startsWith('/factory-workers')) continue;
      expect(res.statusCode, op.path).toBe(200);
      expect(res.json().meta.total, op.path).toBe(0);
    }
  });
});

describe('authentication and scopes', () => {
  it('every route needs a principal (except the idle check), and API keys need the route scope', async () => {
    const noScopes = client(svc, apiKeyPrincipal([], { orgId: owner.principal.orgId }));
    let checked = 0;
    for (const op of operations) {
      const url = fill(op, (p) => realParam(op.path, p));
      const anonymous = await svc.inject(null, { method: op.method, url });
      if (op.path === '/agent-runs/idle-check') continue;
      expect(anonymous.statusCode, `${op.method} ${url}`).toBe(401);
      const qs = op.query.filter((q) => q.required).map((q) => `${q.name}=${requiredQuery(q.name)}`).join('&');
      const res = await noScopes.call(op.method, `${url}${qs ? `?${qs}` : ''}`, op.method === 'GET' || op.method === 'DELETE' ? undefined : minimalBody(op));
      // Platform-admin routes refuse the key whatever its scopes; the others name the scope.
      expect([403], `${op.method} ${url} → ${res.body.slice(0, 120)}`).toContain(res.statusCode);
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(60);
  });
});

describe('hostile input', () => {
  it('hostile path parameters are 4xx with the error envelope, never 500', async () => {
    const admin = client(svc, adminPrincipal());
    for (const op of operations.filter((o) => o.params.length > 0)) {
      for (const value of HOSTILE) {
        const url = fill(op, () => value);
        const res = await admin.call(op.method, url, op.method === 'GET' || op.method === 'DELETE' ? undefined : minimalBody(op));
        assertClientError(res, `${op.method} ${url.slice(0, 80)}`);
      }
    }
  });

  it('hostile query strings are 4xx or ignored, never 500', async () => {
    const admin = client(svc, adminPrincipal({ orgId: owner.principal.orgId }));
    for (const op of operations.filter((o) => o.method === 'GET')) {
      const base = fill(op, (p) => realParam(op.path, p));
      for (const q of [...op.query, { name: 'limit', required: false }, { name: 'offset', required: false }]) {
        for (const value of HOSTILE) {
          const others = op.query.filter((o) => o.required && o.name !== q.name).map((o) => `${o.name}=${requiredQuery(o.name)}`);
          const url = `${base}?${[...others, `${q.name}=${encodeURIComponent(value)}`].join('&')}`;
          if (op.path.endsWith('/stream')) continue;
          assertClientError(await admin.call('GET', url), `GET ${url.slice(0, 100)}`);
        }
      }
    }
  });

  it('bodies of the wrong shape or with wrong field types are 4xx, never 500', async () => {
    const admin = client(svc, adminPrincipal({ orgId: owner.principal.orgId }));
    for (const op of operations.filter((o) => o.body)) {
      const url = fill(op, (p) => realParam(op.path, p));
      for (const body of [[], 'just a string', 42, { nested: { deeper: { deepest: Array(50).fill({ x: 1 }) } } }]) {
        assertClientError(await admin.call(op.method, url, body), `${op.method} ${url} body ${JSON.stringify(body).slice(0, 40)}`);
      }
      for (const field of Object.keys(op.body!.properties ?? {})) {
        for (const value of WRONG) {
          const res = await admin.call(op.method, url, { ...minimalBody(op), [field]: value });
          assertClientError(res, `${op.method} ${url} ${field}=${JSON.stringify(value).slice(0, 30)}`);
        }
      }
    }
    const raw = await svc.inject(owner.principal, { method: 'POST', url: '/agents', payload: '{"name": "broken', headers: { 'content-type': 'application/json' } });
    assertClientError(raw, 'malformed JSON');
    expect(raw.statusCode).toBe(400);
  });

  it('every list is paginated: limit capped at 200, bad limits and offsets rejected', async () => {
    const admin = client(svc, adminPrincipal({ orgId: owner.principal.orgId }));
    const lists = operations.filter((o) => o.method === 'GET' && o.list);
    expect(lists.length).toBeGreaterThanOrEqual(18);
    for (const op of lists) {
      const base = fill(op, (p) => realParam(op.path, p));
      const required = op.query.filter((q) => q.required).map((q) => `${q.name}=${requiredQuery(q.name)}`);
      const query = (extra: string) => `${base}?${[...required, ...(op.path === '/files/search' ? ['q=plan'] : []), extra].join('&')}`;
      const one = await admin.call('GET', query('limit=1'));
      expect(one.statusCode, op.path).toBe(200);
      expect(one.json().meta, op.path).toMatchObject({ limit: 1, offset: 0, total: expect.any(Number) });
      expect(one.json().data.length, op.path).toBeLessThanOrEqual(1);
      expect((await admin.call('GET', query('limit=100000'))).json().meta.limit, op.path).toBeLessThanOrEqual(200);
      for (const bad of ['limit=0', 'limit=-1', 'limit=abc', 'offset=-1']) expect((await admin.call('GET', query(bad))).statusCode, `${op.path} ${bad}`).toBe(400);
    }
  });
});
