import { subjectFor } from '@aos/bus';
import type { EventEnvelope } from '@aos/contracts';
import { lockWaits, waitFor } from '@aos/testkit';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, deadLetters, settled, startTasks, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startTasks(); });
afterAll(async () => {
  if (svc) expect(await deadLetters(svc)).toEqual([]);
  await svc?.close();
});

type Api = ReturnType<typeof client>;
/** What a hold needs of its connection. */
type Held = Pick<Svc['ctx']['pool'], 'query'>;
const count = async (sql: string, params: unknown[] = []) => Number((await svc.ctx.pool.query(sql, params)).rows[0].n);
const status = async (api: Api, id: number) => (await api.get(`/tasks/${id}`)).json().data.status as string;
/** Takes, in `c`'s open transaction, the plan-limit lock a task creation waits for after reading its product, parent and blockers. */
const holdPlanLimit = async (c: Held, orgId: string) => { await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`aos:plan-limit:tasks_per_month:${orgId}`]); };

/** Publishes an envelope straight to the stream, as another service (or a redelivery) would. */
async function publish(envelope: { id: string; type: string; data?: unknown }, msgID = envelope.id) {
  const bus = await svc.ctx.bus;
  await bus.js.publish(subjectFor(bus.names, envelope.type as never), JSON.stringify(envelope), { msgID });
}

function derivation(api: Api, data: Record<string, unknown>, orgId = api.principal.orgId) {
  return {
    id: uuidv7(), type: 'agents.task.derivation_requested', version: 1, source: 'agents-runtime', occurredAt: new Date().toISOString(),
    tenantId: api.principal.tenantId, orgId, actor: { type: 'agent', id: 'felix' },
    data: { ruleId: 'qa-after-feature', agentName: 'felix', title: 'QA it', description: null, priority: 'P2', type: 'research', assignee: 'qa-bot', productSlug: null, ...data },
  };
}

const children = async (api: Api, parentId: number) => (await api.get(`/tasks?parent_task_id=${parentId}`)).json().data;

describe('completion', () => {
  it('writes exactly one changelog entry and unblocks dependents whose blockers are all done', async () => {
    const api = client(svc);
    const a = await api.task({ title: 'Blocker A', assignee: 'felix', type: 'infra' });
    const b = await api.task({ title: 'Blocker B' });
    const dep = await api.task({ title: 'Needs A and B', blocked_by: [a.id, b.id] });
    const other = await api.task({ title: 'Needs only A', blocked_by: [a.id] });
    expect(dep.status).toBe('blocked');

    await api.complete(a.id, 'migrated');
    await settled(svc);
    expect(await status(api, dep.id)).toBe('blocked'); // B still open
    expect(await status(api, other.id)).toBe('todo');
    const entries = (await api.get(`/changelog?task_id=${a.id}`)).json();
    expect(entries.meta.total).toBe(1);
    expect(entries.data[0]).toMatchObject({ title: 'Blocker A', agent: 'felix', area: 'infra', summary: 'Blocker A: migrated' });

    await api.complete(b.id);
    await settled(svc);
    expect(await status(api, dep.id)).toBe('todo');
    expect(await count('SELECT count(*) AS n FROM changelog WHERE task_id = ANY($1)', [[a.id, b.id]])).toBe(2);
  });

  /**
   * Runs `edge` (a request that makes a task depend on `blockerId`) while `hold` keeps it waiting after it has
   * read the blocker, and completes the blocker meanwhile: the task must end up unblocked either way.
   */
  async function completeDuring(api: Api, blockerId: number, hold: (c: Held) => Promise<void>, edge: () => Promise<{ statusCode: number }>) {
    const held = await svc.ctx.pool.connect();
    try {
      await held.query('BEGIN');
      await hold(held);
      const adding = edge();
      await waitFor(async () => (await lockWaits(svc.ctx.pool)) === 1, { message: 'edge waiting' });
      let completed = false;
      const completing = api.patch(`/tasks/${blockerId}`, { status: 'done' }).then((r) => { completed = true; return r; });
      // Either the completion (and its cascade) goes through while the edge waits, or it waits for the edge.
      await waitFor(async () => completed || (await lockWaits(svc.ctx.pool)) === 2, { message: 'completion done or waiting' });
      if (completed) await settled(svc);
      await held.query('ROLLBACK');
      expect((await completing).statusCode).toBe(200);
      expect((await adding).statusCode).toBe(201);
    } finally {
      held.release();
    }
    await settled(svc);
  }

  it('a task created blocked by a task that completes meanwhile is not left blocked', async () => {
    const api = client(svc);
    const blocker = await api.task({ title: 'Finishing now', status: 'review' });
    let created = 0;
    await completeDuring(api, blocker.id,
      // The plan-limit lock the creation takes after reading its blockers is held here.
      (c) => holdPlanLimit(c, api.principal.orgId!),
      async () => {
        const res = await api.post('/tasks', { title: 'Waits for the finisher', blocked_by: [blocker.id] });
        created = res.json().data.id;
        return res;
      });
    expect(await status(api, created)).toBe('todo');
  });

  it('a blocker added while it completes does not leave the task blocked', async () => {
    const api = client(svc);
    const blocker = await api.task({ title: 'Also finishing now', status: 'review' });
    const t = await api.task({ title: 'Gets a blocker' });
    await completeDuring(api, blocker.id,
      // The same edge, uncommitted: the request's insert waits for it after reading the blocker. (Without its foreign
      // key check, which would lock the blocker itself.)
      async (c) => {
        await c.query('SET LOCAL session_replication_role = replica');
        await c.query('INSERT INTO task_dependencies (org_id, task_id, blocked_by_id) VALUES ($1, $2, $3)', [api.principal.orgId, t.id, blocker.id]);
      },
      () => api.post(`/tasks/${t.id}/dependencies`, { blocked_by: blocker.id }));
    expect(await status(api, t.id)).toBe('todo');
  });

  it('a redelivered completion event (past the broker de-dupe) adds no second entry and no second unblock', async () => {
    const api = client(svc);
    const t = await api.task({ title: 'Complete once' });
    const dep = await api.task({ title: 'Dependent once', blocked_by: [t.id] });
    await api.complete(t.id);
    await settled(svc);
    const { rows } = await svc.ctx.pool.query(`SELECT envelope FROM aos_outbox WHERE type = 'tasks.task.completed' AND (envelope->'data'->>'taskId')::int = $1`, [t.id]);
    expect(rows).toHaveLength(1);
    const updatesBefore = await count(`SELECT count(*) AS n FROM aos_outbox WHERE type = 'tasks.task.updated' AND (envelope->'data'->>'taskId')::int = $1`, [dep.id]);
    await publish(rows[0].envelope as EventEnvelope, `${rows[0].envelope.id}-again`);
    await publish(rows[0].envelope as EventEnvelope, `${rows[0].envelope.id}-and-again`);
    await settled(svc);
    expect(await count('SELECT count(*) AS n FROM changelog WHERE task_id = $1', [t.id])).toBe(1);
    expect(await count(`SELECT count(*) AS n FROM aos_outbox WHERE type = 'tasks.task.updated' AND (envelope->'data'->>'taskId')::int = $1`, [dep.id])).toBe(updatesBefore);
  });

  it('a task created as done is completed too: one entry', async () => {
    const api = client(svc);
    const t = await api.task({ title: 'Born done', status: 'done', resolution: 'imported' });
    await waitFor(async () => (await api.get(`/changelog?task_id=${t.id}`)).json().data[0], { message: 'entry' });
    await settled(svc);
    expect((await api.get(`/changelog?task_id=${t.id}`)).json().data).toMatchObject([{ summary: 'Born done: imported' }]);
  });
});

describe('cancellation', () => {
  it('archiving a product cancels its open tasks (done ones stay) and, through them, their children', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Sunset App' });
    const open1 = await api.task({ title: 'Open one', product_slug: 'sunset-app' });
    const open2 = await api.task({ title: 'Open two', product_slug: 'sunset-app', status: 'in_progress' });
    const blocked = await api.task({ title: 'Blocked one', product_slug: 'sunset-app', blocked_by: [open1.id] });
    const child = await api.task({ title: 'Child outside the product', parent_task_id: open2.id });
    const done = await api.task({ title: 'Done one', product_slug: 'sunset-app' });
    await api.complete(done.id);
    const other = await api.task({ title: 'Unrelated' });
    const res = await api.patch('/products/sunset-app', { status: 'archived' });
    expect(res.statusCode).toBe(200);
    await settled(svc);
    for (const t of [open1, open2, blocked, child]) expect(await status(api, t.id), t.title).toBe('cancelled');
    expect((await api.get(`/tasks/${open1.id}`)).json().data.resolution).toBe('product sunset-app archived');
    expect(await status(api, done.id)).toBe('done');
    expect(await status(api, other.id)).toBe('todo');
    expect((await api.get('/products/sunset-app')).json().data.stats).toEqual({ open_tasks: 0, done_tasks: 1, total_tasks: 4 });
    const refused = await api.post('/tasks', { title: 'New in archived', product_slug: 'sunset-app' });
    expect(refused.statusCode).toBe(422);
    expect(refused.json().error.code).toBe('UNPROCESSABLE');
  });

  it('a task created while its product is being archived is refused or cancelled, never left open', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Racing App' });
    // Hold the creation after it has looked at the product: the plan-limit lock it takes next is ours.
    const hold = await svc.ctx.pool.connect();
    try {
      await hold.query('BEGIN');
      await holdPlanLimit(hold, api.principal.orgId!);
      const creating = api.post('/tasks', { title: 'Born during the archive', product_slug: 'racing-app' });
      await waitFor(async () => (await lockWaits(svc.ctx.pool)) === 1, { message: 'creation waiting' });
      let archived = false;
      const archiving = api.patch('/products/racing-app', { status: 'archived' }).then((r) => { archived = true; return r; });
      // Either the archive goes through (and its cascade runs) while the creation waits, or it waits for the creation.
      await waitFor(async () => archived || (await lockWaits(svc.ctx.pool)) === 2, { message: 'archive done or waiting' });
      if (archived) await settled(svc);
      await hold.query('COMMIT');
      expect((await archiving).statusCode).toBe(200);
      expect([201, 422]).toContain((await creating).statusCode);
    } finally {
      hold.release();
    }
    await settled(svc);
    expect((await api.get('/products/racing-app')).json().data.stats.open_tasks).toBe(0);
  });

  it('a product status change other than archived cancels nothing', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Live App' });
    const t = await api.task({ title: 'Keeps going', product_slug: 'live-app' });
    await api.patch('/products/live-app', { status: 'live' });
    await settled(svc);
    expect(await status(api, t.id)).toBe('todo');
  });

  it('cancelling a task cancels its open derived children, recursively; done children stay', async () => {
    const api = client(svc);
    const parent = await api.task({ title: 'Parent' });
    const child = await api.task({ title: 'Child', parent_task_id: parent.id });
    const grandchild = await api.task({ title: 'Grandchild', parent_task_id: child.id, status: 'in_progress' });
    const doneChild = await api.task({ title: 'Done child', parent_task_id: parent.id, status: 'done' });
    await api.patch(`/tasks/${parent.id}`, { status: 'cancelled' });
    await settled(svc);
    expect(await status(api, child.id)).toBe('cancelled');
    expect(await status(api, grandchild.id)).toBe('cancelled');
    expect(await status(api, doneChild.id)).toBe('done');
    expect((await api.get(`/tasks/${grandchild.id}`)).json().data.resolution).toBe(`parent task ${child.id} cancelled`);
  });
});

describe('derivation', () => {
  it('a derivation request creates one linked child, however often it is delivered', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Landing' });
    const parent = await api.task({ title: 'Launch landing page', priority: 'P1', product_slug: 'landing' });
    const envelope = derivation(api, { parentTaskId: parent.id, title: 'QA the landing page' });
    await publish(envelope);
    // Redelivered as a new message (past the broker's dedupe), and as new events for the same (parent, rule).
    await publish(envelope, `${envelope.id}-again`);
    await Promise.all([publish({ ...envelope, id: uuidv7() }), publish({ ...envelope, id: uuidv7(), data: { ...envelope.data, title: 'Another title, same rule' } })]);
    await settled(svc);
    const kids = await children(api, parent.id);
    expect(kids).toHaveLength(1);
    expect(kids[0]).toMatchObject({
      title: 'QA the landing page', parent_task_id: parent.id, derivation_rule_id: 'qa-after-feature', assignee: 'qa-bot', type: 'research',
      priority: 'P2', product: 'landing', created_by: 'agent:felix',
    });
    // Another rule is another child.
    await publish(derivation(api, { parentTaskId: parent.id, ruleId: 'docs-after-feature', title: 'Document the landing page', priority: 'nonsense', type: 'nonsense' }));
    await settled(svc);
    const two = await children(api, parent.id);
    expect(two).toHaveLength(2);
    expect(two[0]).toMatchObject({ derivation_rule_id: 'docs-after-feature', priority: 'P1', type: 'feature' });
  });

  it('a derivation racing the cancellation of its parent leaves no open child', async () => {
    const api = client(svc);
    const parent = await api.task({ title: 'Cancelled while deriving' });
    const hold = await svc.ctx.pool.connect();
    try {
      await hold.query('BEGIN');
      // The derivation waits here (the plan-limit lock of its creation) after it has read the parent.
      await holdPlanLimit(hold, api.principal.orgId!);
      await publish(derivation(api, { parentTaskId: parent.id, title: 'Derived during the cancel' }));
      await waitFor(async () => (await lockWaits(svc.ctx.pool)) === 1, { message: 'derivation waiting' });
      let cancelled = false;
      const cancelling = api.patch(`/tasks/${parent.id}`, { status: 'cancelled' }).then((r) => { cancelled = true; return r; });
      // Either the cancellation (and its cascade to the children) goes through meanwhile, or it waits for the derivation.
      await waitFor(async () => cancelled || (await lockWaits(svc.ctx.pool)) === 2, { message: 'cancel done or waiting' });
      if (cancelled) {
        const event = (await svc.ctx.pool.query(`SELECT id FROM aos_outbox WHERE type = 'tasks.task.cancelled' AND (envelope->'data'->>'taskId')::int = $1`, [parent.id])).rows[0]!;
        await waitFor(async () => (await count(`SELECT count(*) AS n FROM aos_inbox WHERE consumer = 'tasks:cancel-derived-children' AND event_id = $1`, [event.id])) === 1, { message: 'cascade ran' });
      }
      await hold.query('COMMIT');
      expect((await cancelling).statusCode).toBe(200);
    } finally {
      hold.release();
    }
    await settled(svc);
    expect((await children(api, parent.id)).filter((c: { status: string }) => c.status !== 'cancelled')).toEqual([]);
  });

  it('is skipped, not retried or dead-lettered, for a missing, foreign or cancelled parent, an archived product or a taken title', async () => {
    const api = client(svc);
    const cancelled = await api.task({ title: 'Cancelled parent', status: 'cancelled' });
    const foreign = await client(svc).task({ title: 'Foreign parent' });
    await api.post('/products', { name: 'Gone Product' });
    const inArchived = await api.task({ title: 'Parent in archived product', product_slug: 'gone-product', status: 'done' });
    await api.patch('/products/gone-product', { status: 'archived' });
    const taken = await api.task({ title: 'Parent with taken title' });
    await api.task({ title: 'Already there' });
    await settled(svc);
    const events = [
      derivation(api, { parentTaskId: 987654 }),
      derivation(api, { parentTaskId: foreign.id }),
      derivation(api, { parentTaskId: cancelled.id }),
      derivation(api, { parentTaskId: inArchived.id }),
      derivation(api, { parentTaskId: taken.id, title: 'already   THERE' }),
    ];
    for (const e of events) await publish(e);
    await settled(svc);
    const { rows } = await svc.ctx.pool.query(`SELECT event_id FROM aos_inbox WHERE consumer = 'tasks:derive-task' AND event_id = ANY($1::uuid[])`, [events.map((e) => e.id)]);
    expect(rows).toHaveLength(events.length);
    for (const id of [cancelled.id, foreign.id, inArchived.id, taken.id]) expect(await count('SELECT count(*) AS n FROM tasks WHERE parent_task_id = $1', [id])).toBe(0);
  });
});

describe('events', () => {
  it('task and product changes reach NATS through the outbox', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Evented' });
    const t = await api.task({ title: 'Evented task', product_slug: 'evented' });
    await api.patch(`/tasks/${t.id}`, { status: 'cancelled' });
    await api.patch('/products/evented', { status: 'archived' });
    await settled(svc);
    const { rows } = await svc.ctx.pool.query<{ type: string; published: boolean }>(
      `SELECT type, bool_and(published_at IS NOT NULL) AS published FROM aos_outbox WHERE envelope->>'orgId' = $1 GROUP BY type ORDER BY type`, [api.principal.orgId]);
    expect(rows).toEqual(['tasks.product.created', 'tasks.product.status_changed', 'tasks.product.updated', 'tasks.task.cancelled', 'tasks.task.created', 'tasks.task.updated']
      .map((type) => ({ type, published: true })));
  });
});
