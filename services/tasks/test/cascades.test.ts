import { subjectFor } from '@aos/bus';
import { sleep, waitFor } from '@aos/testkit';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, startTasks, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startTasks(); });
afterAll(() => svc?.close());

const count = async (sql: string, params: unknown[] = []) => Number((await svc.ctx.pool.query(sql, params)).rows[0].n);
const status = async (api: ReturnType<typeof client>, id: number) => (await api.get(`/tasks/${id}`)).json().data.status as string;

async function complete(api: ReturnType<typeof client>, id: number, resolution?: string) {
  for (const s of ['in_progress', 'review']) await api.patch(`/tasks/${id}`, { status: s });
  const res = await api.patch(`/tasks/${id}`, { status: 'done', ...(resolution ? { resolution } : {}) });
  expect(res.statusCode).toBe(200);
}

describe('cascades over NATS', () => {
  it('completion writes exactly one changelog entry and unblocks dependents whose blockers are all done', async () => {
    const api = client(svc);
    const a = await api.task({ title: 'Blocker A', assignee: 'felix', type: 'infra' });
    const b = await api.task({ title: 'Blocker B' });
    const dep = await api.task({ title: 'Needs A and B', blocked_by: [a.id, b.id] });
    expect(dep.status).toBe('blocked');

    await complete(api, a.id, 'migrated');
    await waitFor(async () => (await api.get(`/changelog?task_id=${a.id}`)).json().meta.total === 1);
    await sleep(300);
    expect(await status(api, dep.id)).toBe('blocked'); // B still open
    const entry = (await api.get(`/changelog?task_id=${a.id}`)).json().data[0];
    expect(entry).toMatchObject({ title: 'Blocker A', agent: 'felix', area: 'infra', summary: 'Blocker A: migrated' });

    await complete(api, b.id);
    await waitFor(async () => (await status(api, dep.id)) === 'todo', { message: 'dependent unblocked' });
    expect(await count('SELECT count(*) AS n FROM changelog WHERE task_id = ANY($1)', [[a.id, b.id]])).toBe(2);
  });

  it('archiving a product cancels its open tasks (done ones stay)', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Sunset App' });
    const open1 = await api.task({ title: 'Open one', product_slug: 'sunset-app' });
    const open2 = await api.task({ title: 'Open two', product_slug: 'sunset-app', status: 'in_progress' });
    const done = await api.task({ title: 'Done one', product_slug: 'sunset-app' });
    await complete(api, done.id);
    const other = await api.task({ title: 'Unrelated' });
    const res = await api.patch('/products/sunset-app', { status: 'archived' });
    expect(res.statusCode).toBe(200);
    await waitFor(async () => (await status(api, open1.id)) === 'cancelled' && (await status(api, open2.id)) === 'cancelled', { message: 'product tasks cancelled' });
    expect(await status(api, done.id)).toBe('done');
    expect(await status(api, other.id)).toBe('todo');
    expect((await api.post('/tasks', { title: 'New in archived', product_slug: 'sunset-app' })).statusCode).toBe(422);
  });

  it('cancelling a task cancels its open derived children, recursively', async () => {
    const api = client(svc);
    const parent = await api.task({ title: 'Parent' });
    const child = await api.task({ title: 'Child', parent_task_id: parent.id });
    const grandchild = await api.task({ title: 'Grandchild', parent_task_id: child.id });
    await api.patch(`/tasks/${parent.id}`, { status: 'cancelled' });
    await waitFor(async () => (await status(api, grandchild.id)) === 'cancelled', { message: 'grandchild cancelled' });
    expect(await status(api, child.id)).toBe('cancelled');
  });

  it('a derivation request creates one linked child, however often it is delivered', async () => {
    const api = client(svc);
    const parent = await api.task({ title: 'Launch landing page', priority: 'P1' });
    const bus = await svc.ctx.bus;
    const envelope = {
      id: uuidv7(), type: 'agents.task.derivation_requested', version: 1, source: 'agents-runtime', occurredAt: new Date().toISOString(),
      tenantId: api.principal.tenantId, orgId: api.principal.orgId, actor: { type: 'agent', id: 'felix' },
      data: { parentTaskId: parent.id, ruleId: 'qa-after-feature', agentName: 'felix', title: 'QA the landing page', description: null, priority: 'P2', type: 'research', assignee: 'qa-bot', productSlug: null },
    };
    const subject = subjectFor(bus.names, 'agents.task.derivation_requested');
    await bus.js.publish(subject, JSON.stringify(envelope), { msgID: envelope.id });
    // Redelivered as a new message (past the broker's dedupe), and as a new event for the same (parent, rule).
    await bus.js.publish(subject, JSON.stringify(envelope), { msgID: `${envelope.id}-again` });
    await bus.js.publish(subject, JSON.stringify({ ...envelope, id: uuidv7() }));
    await waitFor(async () => (await api.get(`/tasks?parent_task_id=${parent.id}`)).json().meta.total >= 1, { message: 'derived task' });
    await sleep(700);
    const children = (await api.get(`/tasks?parent_task_id=${parent.id}`)).json().data;
    expect(children).toHaveLength(1);
    expect(children[0]).toMatchObject({ title: 'QA the landing page', parent_task_id: parent.id, derivation_rule_id: 'qa-after-feature', assignee: 'qa-bot', type: 'research' });
  });
});

describe('changelog summary and RSS', () => {
  it('groups by day, product and area, and serves valid escaped RSS 2.0', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Feed Product' });
    const t = await api.task({ title: 'Fix <script>alert("x")</script> & stuff', assignee: 'nova', product_slug: 'feed-product', type: 'bug' });
    await complete(api, t.id);
    await waitFor(async () => (await api.get('/changelog')).json().meta.total >= 1);
    const summary = (await api.get('/changelog/summary')).json().data;
    const today = new Date().toISOString().slice(0, 10);
    expect(summary.dates[0].date).toBe(today);
    expect(summary.dates[0].groups).toContainEqual(expect.objectContaining({ product: 'feed-product', area: 'bug', count: 1, lines: ['Fix <script>alert("x")</script> & stuff (nova)'] }));
    const feed = await api.get('/changelog/feed?product=feed-product');
    expect(feed.headers['content-type']).toContain('application/rss+xml');
    expect(feed.body).toContain('<rss version="2.0">');
    expect(feed.body).toContain('Fix &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; stuff');
    expect(feed.body).not.toContain('<script>');
    const items = feed.body.match(/<item>/g) ?? [];
    expect(items).toHaveLength(1);
    expect((await client(svc).get('/changelog')).json().meta.total).toBe(0);
  });
});
