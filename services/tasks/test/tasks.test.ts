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
    for (const body of [{}, { title: '' }, { title: '   ' }, { title: 'x', priority: 'P9' }, { title: 'x'.repeat(501) }, { title: 'x', status: 'closed' }, { title: 'x', type: 'epic' }, { title: 'x', blocked_by: ['a'] },
      { title: 'x', due_date: '2024-02-30' }, { title: 'x', estimated_minutes: -1 }, { title: 'x', max_duration_seconds: 0 }, { title: 'x', assignee: '' }, { title: { text: 'x' } }]) {
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

  it('an unknown product, parent or blocker is a 404 naming the field; nothing is created or dropped', async () => {
    const before = (await api.get('/tasks?limit=1')).json().meta.total;
    const cases: [object, string][] = [
      [{ title: 'Orphan', product_slug: 'nope' }, 'product_slug'],
      [{ title: 'Orphan 2', parent_task_id: 987654 }, 'parent_task_id'],
      [{ title: 'Orphan 3', blocked_by: [987654] }, 'blocked_by'],
    ];
    for (const [body, field] of cases) {
      const res = await api.post('/tasks', body);
      expect(res.statusCode, field).toBe(404);
      expect(res.json().error).toMatchObject({ code: 'NOT_FOUND', details: [{ field }] });
    }
    expect((await api.post('/v1/public/tasks', { title: 'Orphan 4', product_id: 987654 })).json().error).toMatchObject({ code: 'NOT_FOUND', details: [{ field: 'product_id' }] });
    expect((await api.get('/tasks?limit=1')).json().meta.total).toBe(before);
  });

  it('keeps every field of the reference Task plus type, parent, resolution, limits and timestamps', async () => {
    const c = client(svc);
    await c.post('/products', { name: 'Field Product' });
    const parent = await c.task({ title: 'Field parent' });
    const res = await c.post('/tasks', {
      title: 'All fields', description: 'desc', status: 'in_progress', priority: 'P1', type: 'research', assignee: 'felix',
      product_slug: 'field-product', category: 'backend', tags: 'a,b', estimated_minutes: 90, due_date: '2030-01-31',
      parent_task_id: parent.id, max_duration_seconds: 3600, resolution: 'n/a',
    });
    expect(res.statusCode).toBe(201);
    const t = (await c.get(`/tasks/${res.json().data.id}`)).json().data;
    expect(t).toMatchObject({
      title: 'All fields', description: 'desc', status: 'in_progress', priority: 'P1', type: 'research', assignee: 'felix',
      product: 'field-product', category: 'backend', tags: 'a,b', estimated_minutes: 90, due_date: '2030-01-31',
      parent_task_id: parent.id, derivation_rule_id: null, max_duration_seconds: 3600, resolution: 'n/a', created_by: c.principal.userId,
      completed_at: null, blocked_by: [], blocks: [],
    });
    expect(Date.parse(t.created_at)).toBeLessThanOrEqual(Date.parse(t.updated_at));
    const patched = (await c.patch(`/tasks/${t.id}`, { product_slug: null, category: null, estimated_minutes: 5, due_date: null, tags: null })).json().data;
    expect(patched).toMatchObject({ product: null, product_id: null, category: null, estimated_minutes: 5, due_date: null, tags: null });
    expect(Date.parse(patched.updated_at)).toBeGreaterThan(Date.parse(t.updated_at));
    expect((await c.patch(`/tasks/${t.id}`, { product_slug: 'nope' })).statusCode).toBe(404);
  });

  it('accepts the reference\'s "archived" as the cancelled status', async () => {
    const c = client(svc);
    const t = await c.task({ title: 'Archive me', status: 'archived' });
    expect(t.status).toBe('cancelled');
    const u = await c.task({ title: 'Archive me later' });
    expect((await c.patch(`/tasks/${u.id}`, { status: 'archived' })).json().data.status).toBe('cancelled');
    expect((await c.get('/tasks?status=archived')).json().data.map((x: { id: number }) => x.id)).toEqual([u.id, t.id]);
  });
});

describe('de-duplication', () => {
  it('is per product and per org, ignores case and spacing, and frees the title once the task is done or cancelled', async () => {
    const c = client(svc);
    await c.post('/products', { name: 'Dedup One' });
    await c.post('/products', { name: 'Dedup Two' });
    const one = await c.task({ title: 'Add SSO', product_slug: 'dedup-one' });
    expect((await c.post('/tasks', { title: 'add  sso', product_slug: 'dedup-one' })).json().error.details).toEqual([{ existing_id: one.id }]);
    expect((await c.post('/tasks', { title: 'Add SSO', product_slug: 'dedup-two' })).statusCode).toBe(201);
    expect((await c.post('/tasks', { title: 'Add SSO' })).statusCode).toBe(201);
    expect((await client(svc).post('/tasks', { title: 'Add SSO', product_slug: undefined })).statusCode).toBe(201);
    for (const status of ['in_progress', 'review', 'done']) await c.patch(`/tasks/${one.id}`, { status });
    expect((await c.post('/tasks', { title: 'ADD SSO', product_slug: 'dedup-one' })).statusCode).toBe(201);
  });

  it('a rename or a move onto an open title is a 409 with the existing id', async () => {
    const c = client(svc);
    const a = await c.task({ title: 'Rename target' });
    const b = await c.task({ title: 'Rename source' });
    const res = await c.patch(`/tasks/${b.id}`, { title: 'RENAME target' });
    expect(res.statusCode).toBe(409);
    expect(res.json().error.details).toEqual([{ existing_id: a.id }]);
    await c.post('/products', { name: 'Move Target' });
    const inProduct = await c.task({ title: 'Movable', product_slug: 'move-target' });
    const loose = await c.task({ title: 'movable' });
    const moved = await c.patch(`/tasks/${loose.id}`, { product_slug: 'move-target' });
    expect(moved.statusCode).toBe(409);
    expect(moved.json().error.details).toEqual([{ existing_id: inProduct.id }]);
  });

  it('concurrent creates of one title make exactly one task', async () => {
    const c = client(svc);
    const results = await Promise.all(Array.from({ length: 8 }, () => c.post('/tasks', { title: 'Race for the title' })));
    const created = results.filter((r) => r.statusCode === 201);
    expect(created).toHaveLength(1);
    const id = created[0]!.json().data.id;
    for (const r of results.filter((x) => x.statusCode !== 201)) {
      expect(r.statusCode).toBe(409);
      expect(r.json().error.details).toEqual([{ existing_id: id }]);
    }
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

  it('enforces the status machine: every (from, to) pair', async () => {
    const c = client(svc);
    const legal: Record<string, string[]> = {
      todo: ['todo', 'in_progress', 'blocked', 'cancelled'],
      in_progress: ['in_progress', 'todo', 'review', 'blocked', 'cancelled'],
      review: ['review', 'in_progress', 'done', 'blocked', 'cancelled'],
      blocked: ['blocked', 'todo', 'in_progress', 'cancelled'],
      done: ['done'],
      cancelled: ['cancelled'],
    };
    const statuses = Object.keys(legal);
    let n = 0;
    for (const from of statuses) {
      for (const to of statuses) {
        const t = await c.task({ title: `machine ${n++}`, status: from });
        const res = await c.patch(`/tasks/${t.id}`, { status: to });
        const expected = legal[from]!.includes(to) ? 200 : 422;
        expect(res.statusCode, `${from} → ${to}`).toBe(expected);
        if (expected === 422) {
          const allowed = legal[from]!.filter((s) => s !== from);
          expect(res.json().error).toMatchObject({ code: 'UNPROCESSABLE', details: [{ from, to }] });
          expect([...res.json().error.details[0].allowed].sort()).toEqual(allowed.sort());
          expect((await c.get(`/tasks/${t.id}`)).json().data.status).toBe(from);
        } else {
          expect(res.json().data.status).toBe(to);
        }
      }
    }
  });

  it('walks todo → in_progress → review → done, stamps completed_at and emits completed once', async () => {
    const c = client(svc);
    const t = await c.task({ title: 'Ship it' });
    for (const status of ['in_progress', 'review', 'done']) expect((await c.patch(`/tasks/${t.id}`, { status })).statusCode).toBe(200);
    const done = (await c.get(`/tasks/${t.id}`)).json().data;
    expect(Date.parse(done.completed_at)).toBeGreaterThanOrEqual(Date.parse(done.created_at));
    expect((await c.patch(`/tasks/${t.id}`, { status: 'done', title: 'Shipped it' })).json().data.completed_at).toBe(done.completed_at);
    const { rows } = await svc.ctx.pool.query(`SELECT count(*)::int AS n FROM aos_outbox WHERE type = 'tasks.task.completed' AND (envelope->'data'->>'taskId')::int = $1`, [t.id]);
    expect(rows[0].n).toBe(1);
  });

  it('DELETE needs the admin role; 404 for unknown ids; 400 for bad ids', async () => {
    const owner = client(svc);
    const t = await owner.task({ title: 'Delete me' });
    const member = client(svc, userPrincipal({ orgId: owner.principal.orgId, orgRole: 'member' }));
    expect((await member.del(`/tasks/${t.id}`)).statusCode).toBe(403);
    const key = client(svc, apiKeyPrincipal(['tasks:write'], { orgId: owner.principal.orgId }));
    expect((await key.del(`/tasks/${t.id}`)).statusCode).toBe(403);
    const admin = client(svc, userPrincipal({ orgId: owner.principal.orgId, orgRole: 'admin' }));
    const res = await admin.del(`/tasks/${t.id}`);
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toEqual({ id: t.id, deleted: true });
    const { rows: deleted } = await svc.ctx.pool.query("SELECT envelope FROM aos_outbox WHERE type = 'tasks.task.deleted' AND (envelope->'data'->>'taskId')::int = $1", [t.id]);
    expect(deleted).toHaveLength(1);
    expect(deleted[0].envelope).toMatchObject({ orgId: owner.principal.orgId, data: { taskId: t.id, title: 'Delete me', status: 'todo' } });
    expect((await owner.get(`/tasks/${t.id}`)).statusCode).toBe(404);
    expect((await owner.del(`/tasks/${t.id}`)).statusCode).toBe(404);
    expect((await owner.get('/tasks/abc')).statusCode).toBe(400);
    expect((await owner.get('/tasks/99999999999')).statusCode).toBe(400);
  });

  it('deleting a blocker resumes dependents with no open blocker left; children lose their parent', async () => {
    const c = client(svc);
    const blocker = await c.task({ title: 'Doomed blocker' });
    const other = await c.task({ title: 'Other blocker' });
    const solo = await c.task({ title: 'Only blocked by doomed', blocked_by: [blocker.id] });
    const both = await c.task({ title: 'Blocked by both', blocked_by: [blocker.id, other.id] });
    const child = await c.task({ title: 'Child of doomed', parent_task_id: blocker.id });
    expect((await c.del(`/tasks/${blocker.id}`)).statusCode).toBe(200);
    expect((await c.get(`/tasks/${solo.id}`)).json().data).toMatchObject({ status: 'todo', blocked_by: [] });
    expect((await c.get(`/tasks/${both.id}`)).json().data).toMatchObject({ status: 'blocked', blocked_by: [{ id: other.id }] });
    expect((await c.get(`/tasks/${child.id}`)).json().data.parent_task_id).toBeNull();
  });

  it('removing the last open blocker resumes the task; adding an open blocker blocks a todo task', async () => {
    const c = client(svc);
    const a = await c.task({ title: 'Dep A' });
    const t = await c.task({ title: 'Dep target' });
    const added = await c.post(`/tasks/${t.id}/dependencies`, { blocked_by: a.id });
    expect(added.statusCode).toBe(201);
    expect(added.json().data.blocked_by).toEqual([{ id: a.id, title: 'Dep A', status: 'todo' }]);
    expect((await c.get(`/tasks/${t.id}`)).json().data.status).toBe('blocked');
    expect((await c.get(`/tasks/${t.id}/dependencies`)).json().data).toEqual({ blocked_by: [{ id: a.id, title: 'Dep A', status: 'todo' }], blocks: [] });
    expect((await c.get(`/tasks/${a.id}/dependencies`)).json().data.blocks).toEqual([{ id: t.id, title: 'Dep target', status: 'blocked' }]);
    const removed = await c.del(`/tasks/${t.id}/dependencies/${a.id}`);
    expect(removed.json().data).toEqual({ blocked_by: [], blocks: [] });
    expect((await c.get(`/tasks/${t.id}`)).json().data.status).toBe('todo');
    // A blocker the task does not have (any more, or never: another task, an unknown id) is 404.
    for (const blocker of [a.id, t.id, 987654]) expect((await c.del(`/tasks/${t.id}/dependencies/${blocker}`)).json().error.code).toBe('NOT_FOUND');
    expect((await c.post(`/tasks/${t.id}/dependencies`, { blocked_by: 987654 })).json().error).toMatchObject({ code: 'NOT_FOUND', details: [{ field: 'blocked_by' }] });
  });

  it('refuses dependency cycles, direct and transitive', async () => {
    const c = client(svc);
    const a = await c.task({ title: 'Cycle A' });
    const b = await c.task({ title: 'Cycle B', blocked_by: [a.id] });
    const d = await c.task({ title: 'Cycle C', blocked_by: [b.id] });
    for (const [task, blocker] of [[a.id, b.id], [a.id, d.id], [a.id, a.id]]) {
      const res = await c.post(`/tasks/${task}/dependencies`, { blocked_by: blocker });
      expect(res.statusCode, `${task} ← ${blocker}`).toBe(422);
      expect(res.json().error.code).toBe('UNPROCESSABLE');
    }
    expect((await c.get(`/tasks/${a.id}`)).json().data.blocked_by).toEqual([]);
  });

  it('two opposite dependencies added at once: one wins, never a cycle', async () => {
    const c = client(svc);
    for (let round = 0; round < 5; round++) {
      const a = await c.task({ title: `Race A ${round}` });
      const b = await c.task({ title: `Race B ${round}` });
      const [ab, ba] = await Promise.all([c.post(`/tasks/${a.id}/dependencies`, { blocked_by: b.id }), c.post(`/tasks/${b.id}/dependencies`, { blocked_by: a.id })]);
      expect([ab.statusCode, ba.statusCode].sort()).toEqual([201, 422]);
    }
    const { rows } = await svc.ctx.pool.query('SELECT count(*)::int AS n FROM task_dependencies x JOIN task_dependencies y ON x.task_id = y.blocked_by_id AND x.blocked_by_id = y.task_id');
    expect(rows[0].n).toBe(0);
  });
});

describe('scopes', () => {
  it('API keys need the tasks scopes', async () => {
    const orgId = api.principal.orgId!;
    const reader = client(svc, apiKeyPrincipal(['tasks:read'], { orgId }));
    expect((await reader.get('/tasks')).statusCode).toBe(200);
    const res = await reader.post('/tasks', { title: 'Not allowed' });
    expect(res.statusCode).toBe(403);
    expect(res.json().error).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: 'tasks:write' }] });
  });
});
