import { apiKeyPrincipal, userPrincipal } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, outboxTypes, startTasks, type Svc } from './helpers.js';

let svc: Svc;
let api: ReturnType<typeof client>;

beforeAll(async () => {
  svc = await startTasks();
  api = client(svc);
});
afterAll(() => svc?.close());

describe('POST /tasks', () => {
  it('creates a task with defaults and emits tasks.task.created', async () => {
    const res = await api.post('/tasks', { title: 'Fix login bug', description: 'Users cannot log in', priority: 'P1', assignee: 'felix' });
    expect(res.statusCode).toBe(201);
    const t = res.json().data;
    expect(t).toMatchObject({ title: 'Fix login bug', status: 'todo', priority: 'P1', type: 'feature', assignee: 'felix', product: null, blocked_by: [], blocks: [] });
    expect(t.created_by).toBe(api.principal.userId);
    expect(await outboxTypes(svc)).toContain('tasks.task.created');
  });

  it('rejects an open duplicate title (normalised) with 409 and the existing id', async () => {
    const first = await api.task({ title: 'Write the docs' });
    const res = await api.post('/tasks', { title: '  write   THE docs ' });
    expect(res.statusCode).toBe(409);
    expect(res.json().error).toMatchObject({ code: 'CONFLICT', details: [{ existing_id: first.id }] });
    await api.patch(`/tasks/${first.id}`, { status: 'cancelled' });
    expect((await api.post('/tasks', { title: 'Write the docs' })).statusCode).toBe(201);
  });

  it('validates input with 400 and changes nothing', async () => {
    const before = (await api.get('/tasks?limit=1')).json().meta.total;
    for (const body of [{}, { title: '' }, { title: '   ' }, { title: 'x', priority: 'P9' }, { title: 'x'.repeat(501) }, { title: 'x', status: 'archived' }, { title: 'x', blocked_by: ['a'] }]) {
      const res = await api.post('/tasks', body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json().error.code).toBe('VALIDATION_ERROR');
    }
    expect((await api.get('/tasks?limit=1')).json().meta.total).toBe(before);
  });

  it('ignores mass-assigned fields', async () => {
    const res = await api.post('/tasks', { title: 'Mass assignment', org_id: 'someone-else', id: 999999, created_by: 'mallory' });
    expect(res.statusCode).toBe(201);
    expect(res.json().data.id).not.toBe(999999);
    expect(res.json().data.created_by).toBe(api.principal.userId);
  });

  it('422 for an unknown product or parent', async () => {
    expect((await api.post('/tasks', { title: 'Orphan', product_slug: 'nope' })).statusCode).toBe(422);
    expect((await api.post('/tasks', { title: 'Orphan 2', parent_task_id: 987654 })).statusCode).toBe(422);
  });
});

describe('GET /tasks', () => {
  it('filters by status, priority, assignee (me), product and full text; paginates with a stable order', async () => {
    const me = client(svc, userPrincipal({ orgId: api.principal.orgId, tenantId: api.principal.tenantId }));
    await api.post('/products', { name: 'Search Product' });
    const a = await me.task({ title: 'Refactor billing ledger', description: 'double entry accounting', priority: 'P0', assignee: me.principal.userId, product_slug: 'search-product' });
    const b = await me.task({ title: 'Tune postgres vacuum', priority: 'P3', assignee: 'ops-bot' });
    const byStatus = (await me.get('/tasks?status=todo,in_progress&priority=P0,P3&limit=200')).json();
    expect(byStatus.data.map((t: { id: number }) => t.id)).toEqual(expect.arrayContaining([a.id, b.id]));
    expect((await me.get('/tasks?assignee=me')).json().data.map((t: { id: number }) => t.id)).toEqual([a.id]);
    expect((await me.get('/tasks?product=search-product')).json().data.map((t: { id: number }) => t.id)).toEqual([a.id]);
    expect((await me.get('/tasks?q=accounting')).json().data.map((t: { id: number }) => t.id)).toEqual([a.id]);
    expect((await me.get('/tasks?q=vacuum%20postgres')).json().data.map((t: { id: number }) => t.id)).toEqual([b.id]);
    const p1 = (await me.get('/tasks?limit=2&offset=0')).json();
    const p2 = (await me.get('/tasks?limit=2&offset=2')).json();
    expect(p1.meta).toMatchObject({ limit: 2, offset: 0 });
    expect(p1.data.map((t: { id: number }) => t.id)).not.toEqual(expect.arrayContaining(p2.data.map((t: { id: number }) => t.id)));
    expect((await me.get('/tasks?limit=1000')).json().meta.limit).toBe(200);
    expect((await me.get('/tasks?status=nope')).statusCode).toBe(400);
  });

  it('next=true returns the highest-priority ready todo for the assignee', async () => {
    const c = client(svc);
    const blocker = await c.task({ title: 'Blocker', priority: 'P3', assignee: 'nova' });
    await c.task({ title: 'Blocked P0', priority: 'P0', assignee: 'nova', blocked_by: [blocker.id] });
    const p1 = await c.task({ title: 'Ready P1', priority: 'P1', assignee: 'nova' });
    await c.task({ title: 'Other agent P0', priority: 'P0', assignee: 'zed' });
    const res = (await c.get('/tasks?assignee=nova&next=true')).json();
    expect(res.data.map((t: { id: number }) => t.id)).toEqual([p1.id]);
  });
});

describe('GET/PATCH/DELETE /tasks/{id}', () => {
  it('embeds blockers and dependents', async () => {
    const c = client(svc);
    const blocker = await c.task({ title: 'Design schema' });
    const dependent = await c.task({ title: 'Implement schema', blocked_by: [blocker.id] });
    expect(dependent.status).toBe('blocked');
    const got = (await c.get(`/tasks/${blocker.id}`)).json().data;
    expect(got.blocks).toEqual([{ id: dependent.id, title: 'Implement schema', status: 'blocked' }]);
    expect((await c.get(`/tasks/${dependent.id}`)).json().data.blocked_by).toEqual([{ id: blocker.id, title: 'Design schema', status: 'todo' }]);
  });

  it('enforces the status machine (422 on illegal transitions) and records completion', async () => {
    const c = client(svc);
    const t = await c.task({ title: 'Ship it' });
    const illegal = await c.patch(`/tasks/${t.id}`, { status: 'done' });
    expect(illegal.statusCode).toBe(422);
    expect(illegal.json().error.code).toBe('UNPROCESSABLE');
    for (const status of ['in_progress', 'review', 'done']) expect((await c.patch(`/tasks/${t.id}`, { status })).statusCode).toBe(200);
    const done = (await c.get(`/tasks/${t.id}`)).json().data;
    expect(done.completed_at).not.toBeNull();
    expect((await c.patch(`/tasks/${t.id}`, { status: 'todo' })).statusCode).toBe(422);
    const types = await outboxTypes(svc);
    expect(types).toContain('tasks.task.completed');
  });

  it('DELETE needs the admin role; 404 for unknown ids; 400 for bad ids', async () => {
    const owner = client(svc);
    const t = await owner.task({ title: 'Delete me' });
    const member = client(svc, userPrincipal({ orgId: owner.principal.orgId, orgRole: 'member' }));
    expect((await member.del(`/tasks/${t.id}`)).statusCode).toBe(403);
    expect((await owner.del(`/tasks/${t.id}`)).statusCode).toBe(200);
    expect((await owner.get(`/tasks/${t.id}`)).statusCode).toBe(404);
    expect((await owner.get('/tasks/abc')).statusCode).toBe(400);
    expect((await owner.get('/tasks/99999999999')).statusCode).toBe(400);
  });

  it('refuses dependency cycles', async () => {
    const c = client(svc);
    const a = await c.task({ title: 'Cycle A' });
    const b = await c.task({ title: 'Cycle B', blocked_by: [a.id] });
    const res = await c.post(`/tasks/${a.id}/dependencies`, { blocked_by: b.id });
    expect(res.statusCode).toBe(422);
    expect((await c.post(`/tasks/${a.id}/dependencies`, { blocked_by: a.id })).statusCode).toBe(422);
  });
});

describe('security', () => {
  it('another organization gets 404 for every task id and sees none in lists', async () => {
    const owner = client(svc);
    const t = await owner.task({ title: 'Secret plan' });
    const other = client(svc);
    expect((await other.get(`/tasks/${t.id}`)).statusCode).toBe(404);
    expect((await other.patch(`/tasks/${t.id}`, { title: 'pwned' })).statusCode).toBe(404);
    expect((await other.del(`/tasks/${t.id}`)).statusCode).toBe(404);
    expect((await other.post(`/tasks/${t.id}/dependencies`, { blocked_by: t.id })).statusCode).toBe(404);
    expect((await other.get(`/v1/public/tasks/${t.id}`)).statusCode).toBe(404);
    expect((await other.del(`/v1/public/tasks/${t.id}`)).statusCode).toBe(404);
    expect((await other.get('/tasks?q=secret')).json().data).toEqual([]);
    expect((await other.post('/tasks', { title: 'Mine', blocked_by: [t.id] })).statusCode).toBe(422);
  });

  it('API keys need the tasks scopes', async () => {
    const orgId = api.principal.orgId!;
    const reader = client(svc, apiKeyPrincipal(['tasks:read'], { orgId }));
    expect((await reader.get('/tasks')).statusCode).toBe(200);
    const res = await reader.post('/tasks', { title: 'Not allowed' });
    expect(res.statusCode).toBe(403);
    expect(res.json().error).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: 'tasks:write' }] });
  });

  it('rejects calls without the gateway token', async () => {
    expect((await svc.inject(null, { method: 'GET', url: '/tasks' })).statusCode).toBe(401);
  });

  it('SQL-ish and oversized input never causes a 500', async () => {
    for (const url of ["/tasks?q=%27%3B%20DROP%20TABLE%20tasks%3B--", '/tasks?q=%22%22%22(((', `/tasks?assignee=${'a'.repeat(600)}`, "/tasks?product=x'or'1'='1"]) {
      const res = await api.get(url);
      expect(res.statusCode, url).toBeLessThan(500);
    }
    expect((await api.post('/tasks', { title: "Robert'); DROP TABLE tasks;--" })).statusCode).toBe(201);
  });
});

describe('/v1/public/tasks', () => {
  it('speaks its own shape: priorities, assigned_to, product_id; DELETE cancels', async () => {
    const c = client(svc);
    const product = (await c.post('/products', { name: 'Public Product' })).json().data;
    const res = await c.post('/v1/public/tasks', { title: 'Public task', priority: 'critical', assigned_to: 'felix', product_id: product.id, type: 'bug' });
    expect(res.statusCode).toBe(201);
    const t = res.json().data;
    expect(t).toMatchObject({ priority: 'critical', assigned_to: 'felix', product_id: product.id, type: 'bug', status: 'todo' });
    expect((await c.get(`/tasks/${t.id}`)).json().data.priority).toBe('P0');
    expect((await c.get('/v1/public/tasks?priority=critical')).json().data.map((x: { id: number }) => x.id)).toEqual([t.id]);
    expect((await c.patch(`/v1/public/tasks/${t.id}`, { priority: 'low' })).json().data.priority).toBe('low');
    const del = await c.del(`/v1/public/tasks/${t.id}`);
    expect(del.json().data.status).toBe('cancelled');
  });
});
