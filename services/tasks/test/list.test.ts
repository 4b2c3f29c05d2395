import { userPrincipal } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tasks } from '../src/db/schema.js';
import { taskListQuery } from '../src/domain/task-list.js';
import { client, startTasks, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startTasks(); });
afterAll(() => svc?.close());

const ids = (res: { json: () => { data: { id: number }[] } }) => res.json().data.map((t) => t.id);

describe('GET /tasks filters', () => {
  let api: ReturnType<typeof client>;
  const t: Record<string, number> = {};

  beforeAll(async () => {
    api = client(svc);
    await api.post('/products', { name: 'Alpha' });
    await api.post('/products', { name: 'Beta' });
    const me = api.principal.userId!;
    const rows: [string, Record<string, unknown>][] = [
      ['A', { title: 'Refactor billing ledger', description: 'double entry accounting', priority: 'P0', assignee: me, product_slug: 'alpha', type: 'feature' }],
      ['B', { title: 'Tune postgres vacuum', priority: 'P3', status: 'in_progress', assignee: 'ops-bot', type: 'ops' }],
      ['C', { title: 'Write onboarding docs', priority: 'P1', status: 'review', assignee: 'nova', product_slug: 'beta', type: 'content' }],
      ['D', { title: 'Fix crash on LOGIN', priority: 'P1', status: 'blocked', assignee: 'nova', product_slug: 'alpha', type: 'bug' }],
      ['E', { title: 'Research vector search', priority: 'P2', status: 'done', assignee: me, product_slug: 'beta', type: 'research' }],
      ['F', { title: 'Drop the old cluster', priority: 'P2', status: 'cancelled', assignee: 'ops-bot', product_slug: 'alpha', type: 'infra' }],
    ];
    for (const [name, body] of rows) t[name] = (await api.task(body)).id;
    // Another org's twin of A must never show up.
    await client(svc).task({ title: 'Refactor billing ledger', description: 'double entry accounting', priority: 'P0' });
  });

  const cases: [string, string[]][] = [
    ['', ['F', 'E', 'D', 'C', 'B', 'A']],
    ['status=todo', ['A']],
    ['status=todo,in_progress', ['B', 'A']],
    ['status= review , blocked ', ['D', 'C']],
    ['status=archived', ['F']],
    ['priority=P1', ['D', 'C']],
    ['priority=P0,P3', ['B', 'A']],
    ['assignee=me', ['E', 'A']],
    ['assignee=nova,ops-bot', ['F', 'D', 'C', 'B']],
    ['assignee=me,nova', ['E', 'D', 'C', 'A']],
    ['assignee=nobody', []],
    ['product=alpha', ['F', 'D', 'A']],
    ['product=alpha,beta', ['F', 'E', 'D', 'C', 'A']],
    ['product=no-such-product', []],
    ['type=bug,research', ['E', 'D']],
    ['q=accounting', ['A']],
    ['q=postgres%20vacuum', ['B']],
    ['q=vacuum%20postgres', ['B']],
    ['q=login', ['D']],
    ['q=%22vector%20search%22', ['E']],
    ['q=search%20vector%20-research', []],
    ['q=refactor%20OR%20tune', ['B', 'A']],
    ['status=todo,blocked&product=alpha&priority=P1', ['D']],
    ['assignee=me&status=done&product=beta&type=research&q=vector', ['E']],
  ];
  it.each(cases)('?%s', async (query, expected) => {
    const res = await api.get(`/tasks?${query}&limit=200`);
    expect(res.statusCode).toBe(200);
    expect(ids(res)).toEqual(expected.map((n) => t[n]));
    expect(res.json().meta).toEqual({ total: expected.length, limit: 200, offset: 0 });
  });

  it.each(['status=nope', 'status=todo,nope', 'priority=P5', 'type=epic', 'next=yes', 'limit=0', 'limit=-1', 'offset=-1', 'limit=abc', 'parent_task_id=0'])('?%s is a 400', async (query) => {
    const res = await api.get(`/tasks?${query}`);
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('VALIDATION_ERROR');
  });

  it('the error names the unknown values and the allowed ones', async () => {
    expect((await api.get('/tasks?status=todo,nope,bad')).json().error).toMatchObject({
      message: 'Unknown status: nope, bad', details: [{ field: 'status', allowed: expect.arrayContaining(['todo', 'archived']) }],
    });
  });
});

describe('GET /tasks pagination', () => {
  it('walks every task exactly once in a stable order; limit is capped at 200', async () => {
    const api = client(svc);
    for (let i = 0; i < 23; i++) await api.task({ title: `Paged task ${i}`, priority: i % 2 ? 'P1' : 'P2' });
    const seen: number[] = [];
    for (let offset = 0; ; offset += 5) {
      const res = (await api.get(`/tasks?limit=5&offset=${offset}`)).json();
      expect(res.meta).toMatchObject({ total: 23, limit: 5, offset });
      if (res.data.length === 0) break;
      seen.push(...res.data.map((x: { id: number }) => x.id));
    }
    expect(seen).toHaveLength(23);
    expect(new Set(seen).size).toBe(23);
    expect(seen).toEqual([...seen].sort((a, b) => b - a));
    expect(ids(await api.get('/tasks?limit=200'))).toEqual(seen);
    expect((await api.get('/tasks?limit=100000')).json().meta.limit).toBe(200);
    expect((await api.get('/tasks?offset=1000')).json()).toEqual({ data: [], meta: { total: 23, limit: 50, offset: 1000 } });
  });

  it('full-text results rank better matches first, ties broken by id', async () => {
    const api = client(svc);
    const weak = await api.task({ title: 'Kiwi import', description: 'one mention' });
    const strong = await api.task({ title: 'Kiwi kiwi kiwi', description: 'kiwi everywhere, kiwi' });
    const tieA = await api.task({ title: 'Mango one' });
    const tieB = await api.task({ title: 'Mango two' });
    expect(ids(await api.get('/tasks?q=kiwi'))).toEqual([strong.id, weak.id]);
    expect(ids(await api.get('/tasks?q=mango'))).toEqual([tieB.id, tieA.id]);
  });
});

describe('GET /tasks?next=true', () => {
  it('is the highest-priority, oldest, ready todo of the assignee', async () => {
    const api = client(svc);
    const next = async (query = 'assignee=nova') => ids(await api.get(`/tasks?next=true&${query}`));
    expect(await next()).toEqual([]);
    const blocker = await api.task({ title: 'Blocker', priority: 'P3', assignee: 'nova' });
    const blocked = await api.task({ title: 'Blocked P0', priority: 'P0', assignee: 'nova', blocked_by: [blocker.id] });
    // Put back to todo by hand while its blocker is open: still not ready.
    await api.patch(`/tasks/${blocked.id}`, { status: 'todo' });
    await api.task({ title: 'Busy P0', priority: 'P0', assignee: 'nova', status: 'in_progress' });
    await api.task({ title: 'Other agent P0', priority: 'P0', assignee: 'zed' });
    const olderP1 = await api.task({ title: 'Ready P1 older', priority: 'P1', assignee: 'nova' });
    await api.task({ title: 'Ready P1 newer', priority: 'P1', assignee: 'nova' });
    const res = (await api.get('/tasks?next=true&assignee=nova&limit=50')).json();
    expect(res.data.map((x: { id: number }) => x.id)).toEqual([olderP1.id]);
    expect(res.meta).toMatchObject({ total: 1, limit: 1 });
    for (const status of ['in_progress', 'review', 'done']) await api.patch(`/tasks/${blocker.id}`, { status });
    expect(await next()).toEqual([blocked.id]);
    const mine = client(svc, userPrincipal({ orgId: api.principal.orgId, tenantId: api.principal.tenantId }));
    const own = await mine.task({ title: 'Mine', priority: 'P3', assignee: mine.principal.userId });
    expect(ids(await mine.get('/tasks?next=true&assignee=me'))).toEqual([own.id]);
  });
});

describe('full-text search index', () => {
  it('the migration has a GIN index on the search vector and the q query uses it', async () => {
    const { rows: idx } = await svc.ctx.pool.query(`SELECT indexdef FROM pg_indexes WHERE tablename = 'tasks' AND indexname = 'tasks_search_idx'`);
    expect(idx[0]?.indexdef).toMatch(/USING gin \(search\)/);
    const orgId = client(svc).principal.orgId!;
    await svc.ctx.pool.query(
      `INSERT INTO tasks (org_id, title, title_key, description)
       SELECT $1, 'filler task ' || g, 'filler task ' || g, 'lorem ipsum dolor ' || (g % 97) FROM generate_series(1, 20000) g`, [orgId]);
    await svc.ctx.pool.query(`INSERT INTO tasks (org_id, title, title_key) VALUES ($1, 'zebra crossing', 'zebra crossing')`, [orgId]);
    // As autovacuum would: statistics, and the GIN pending list flushed.
    await svc.ctx.pool.query('VACUUM ANALYZE tasks');
    const { where, orderBy } = taskListQuery(orgId, { q: 'zebra' });
    const query = svc.ctx.db.select().from(tasks).where(where).orderBy(...orderBy).limit(50).toSQL();
    const { rows } = await svc.ctx.pool.query(`EXPLAIN (FORMAT JSON) ${query.sql}`, query.params);
    expect(JSON.stringify(rows[0]['QUERY PLAN'])).toContain('"Index Name":"tasks_search_idx"');
  });
});
