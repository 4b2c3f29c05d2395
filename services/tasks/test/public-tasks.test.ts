import { apiKeyPrincipal } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, outboxTypes, startTasks, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startTasks(); });
afterAll(() => svc?.close());

const PUBLIC_KEYS = ['assigned_to', 'completed_at', 'created_at', 'description', 'id', 'max_duration_seconds', 'parent_task_id', 'priority',
  'product_id', 'resolution', 'status', 'title', 'type', 'updated_at'];

describe('/v1/public/tasks', () => {
  it('POST speaks its own shape and maps low|medium|high|critical to P3..P0', async () => {
    const c = client(svc);
    const product = (await c.post('/products', { name: 'Public Product' })).json().data;
    const res = await c.post('/v1/public/tasks', {
      title: 'Public task', description: 'd', type: 'bug', priority: 'critical', status: 'in_progress', assigned_to: 'felix',
      product_id: product.id, max_duration_seconds: 600,
    });
    expect(res.statusCode).toBe(201);
    const t = res.json().data;
    expect(Object.keys(t).sort()).toEqual(PUBLIC_KEYS);
    expect(t).toMatchObject({ title: 'Public task', description: 'd', type: 'bug', priority: 'critical', status: 'in_progress', assigned_to: 'felix', product_id: product.id, max_duration_seconds: 600 });
    expect((await c.get(`/tasks/${t.id}`)).json().data).toMatchObject({ priority: 'P0', assignee: 'felix', product: 'public-product' });
    for (const [pub, internal] of [['high', 'P1'], ['medium', 'P2'], ['low', 'P3']]) {
      const made = (await c.post('/v1/public/tasks', { title: `Prio ${pub}`, priority: pub })).json().data;
      expect(made.priority).toBe(pub);
      expect((await c.get(`/tasks/${made.id}`)).json().data.priority).toBe(internal);
    }
    expect((await c.post('/v1/public/tasks', { title: 'Default prio' })).json().data).toMatchObject({ priority: 'medium', type: 'feature', status: 'todo', assigned_to: null, product_id: null });
  });

  it('POST validates (400), de-duplicates (409 with the existing id) and refuses unknown products (404)', async () => {
    const c = client(svc);
    for (const body of [{}, { title: '' }, { title: 'x', priority: 'P0' }, { title: 'x', type: 'epic' }, { title: 'x', status: 'closed' }, { title: 'x', product_id: 'abc' }, { title: 'x', max_duration_seconds: -5 }]) {
      const res = await c.post('/v1/public/tasks', body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
    }
    const first = (await c.post('/v1/public/tasks', { title: 'Only once' })).json().data;
    const dup = await c.post('/v1/public/tasks', { title: 'ONLY  once' });
    expect(dup.statusCode).toBe(409);
    expect(dup.json().error.details).toEqual([{ existing_id: first.id }]);
    const foreign = (await client(svc).post('/products', { name: 'Foreign' })).json().data;
    expect((await c.post('/v1/public/tasks', { title: 'Into a foreign product', product_id: foreign.id })).statusCode).toBe(404);
  });

  it('GET lists with status, priority, assigned_to, product_id filters and pagination', async () => {
    const c = client(svc);
    const p = (await c.post('/products', { name: 'List Product' })).json().data;
    const a = (await c.post('/v1/public/tasks', { title: 'L a', priority: 'high', assigned_to: 'nova', product_id: p.id })).json().data;
    const b = (await c.post('/v1/public/tasks', { title: 'L b', priority: 'low', assigned_to: 'zed', status: 'review' })).json().data;
    const d = (await c.post('/v1/public/tasks', { title: 'L d', priority: 'high', assigned_to: 'nova', status: 'blocked' })).json().data;
    const list = async (q: string) => (await c.get(`/v1/public/tasks?${q}`)).json();
    expect((await list('')).data.map((x: { id: number }) => x.id)).toEqual([d.id, b.id, a.id]);
    expect(Object.keys((await list('')).data[0]).sort()).toEqual(PUBLIC_KEYS);
    expect((await list('priority=high')).data.map((x: { id: number }) => x.id)).toEqual([d.id, a.id]);
    expect((await list('priority=high,low&status=review')).data.map((x: { id: number }) => x.id)).toEqual([b.id]);
    expect((await list('status=todo,blocked&assigned_to=nova')).data.map((x: { id: number }) => x.id)).toEqual([d.id, a.id]);
    expect((await list(`product_id=${p.id}`)).data.map((x: { id: number }) => x.id)).toEqual([a.id]);
    expect(await list('limit=1&offset=1')).toMatchObject({ data: [{ id: b.id }], meta: { total: 3, limit: 1, offset: 1 } });
    for (const q of ['priority=P0', 'status=nope', 'product_id=abc', 'limit=0']) expect((await c.get(`/v1/public/tasks?${q}`)).statusCode, q).toBe(400);
  });

  it('GET /{id}, PATCH under the status machine, DELETE cancels (idempotent)', async () => {
    const c = client(svc);
    const p = (await c.post('/products', { name: 'Patch Product' })).json().data;
    const t = (await c.post('/v1/public/tasks', { title: 'Patch me', product_id: p.id, assigned_to: 'nova' })).json().data;
    expect((await c.get(`/v1/public/tasks/${t.id}`)).json().data).toEqual(t);
    const patched = (await c.patch(`/v1/public/tasks/${t.id}`, {
      title: 'Patched', description: 'now described', type: 'ops', priority: 'low', status: 'in_progress', assigned_to: null, product_id: null,
      resolution: 'half way', max_duration_seconds: 120,
    })).json().data;
    expect(patched).toMatchObject({ title: 'Patched', description: 'now described', type: 'ops', priority: 'low', status: 'in_progress', assigned_to: null, product_id: null, resolution: 'half way', max_duration_seconds: 120 });
    expect((await c.patch(`/v1/public/tasks/${t.id}`, { status: 'done' })).statusCode).toBe(422);
    expect((await c.patch(`/v1/public/tasks/${t.id}`, {})).statusCode).toBe(400);
    expect((await c.patch(`/v1/public/tasks/${t.id}`, { priority: 'urgent' })).statusCode).toBe(400);
    expect((await c.patch(`/v1/public/tasks/${t.id}`, { product_id: 987654 })).statusCode).toBe(404);
    const del = await c.del(`/v1/public/tasks/${t.id}`);
    expect(del.statusCode).toBe(200);
    expect(del.json().data.status).toBe('cancelled');
    expect((await outboxTypes(svc)).filter((x) => x === 'tasks.task.cancelled')).toHaveLength(1);
    expect((await c.del(`/v1/public/tasks/${t.id}`)).json().data.status).toBe('cancelled');
    expect((await outboxTypes(svc)).filter((x) => x === 'tasks.task.cancelled')).toHaveLength(1);
    expect((await c.get(`/v1/public/tasks/${t.id}`)).json().data.status).toBe('cancelled');
    expect((await c.get('/v1/public/tasks/987654')).statusCode).toBe(404);
    expect((await c.del('/v1/public/tasks/987654')).statusCode).toBe(404);
    expect((await c.get('/v1/public/tasks/abc')).statusCode).toBe(400);
  });

  it('API keys need tasks:read to read and tasks:write to change', async () => {
    const owner = client(svc);
    const t = (await owner.post('/v1/public/tasks', { title: 'Scoped' })).json().data;
    const reader = client(svc, apiKeyPrincipal(['tasks:read'], { orgId: owner.principal.orgId }));
    expect((await reader.get('/v1/public/tasks')).statusCode).toBe(200);
    expect((await reader.get(`/v1/public/tasks/${t.id}`)).statusCode).toBe(200);
    for (const res of [await reader.post('/v1/public/tasks', { title: 'no' }), await reader.patch(`/v1/public/tasks/${t.id}`, { title: 'no' }), await reader.del(`/v1/public/tasks/${t.id}`)]) {
      expect(res.statusCode).toBe(403);
      expect(res.json().error).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: 'tasks:write' }] });
    }
    const none = client(svc, apiKeyPrincipal(['products:read'], { orgId: owner.principal.orgId }));
    expect((await none.get('/v1/public/tasks')).json().error).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: 'tasks:read' }] });
  });
});
