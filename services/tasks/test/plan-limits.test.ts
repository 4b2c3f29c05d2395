import { subjectFor } from '@aos/bus';
import { putOnPlan } from '@aos/testkit';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, deadLetters, outboxTypes, settled, startTasks, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startTasks(); });
afterAll(async () => {
  // A refused derivation is said so, never dead-lettered.
  if (svc) expect(await deadLetters(svc)).toEqual([]);
  await svc?.close();
});

type Api = ReturnType<typeof client>;
const orgOf = (api: Api) => api.principal.orgId!;
const refusal = (used: number, max: number, tier: string) => ({ code: 'PLAN_LIMIT_REACHED', details: [{ limit: 'tasks_per_month', used, max, tier }] });
/** An organization on Enterprise with `max` tasks a month: small limits keep the tests quick. */
async function orgWithLimit(max: number | null) {
  const api = client(svc);
  await putOnPlan(svc, orgOf(api), 'enterprise', { limits: { tasks_per_month: max } });
  return api;
}
async function tasks(api: Api, n: number, prefix = 'Task') {
  for (let i = 1; i <= n; i++) await api.task({ title: `${prefix} ${i}` });
}

describe('tasks per month', () => {
  it('Free: the 101st task of the month is refused on both create routes; other orgs are not affected', async () => {
    const api = client(svc);
    await tasks(api, 100);
    const refused = await api.post('/tasks', { title: 'One too many' });
    expect(refused.statusCode).toBe(402);
    expect(refused.json().error).toMatchObject(refusal(100, 100, 'free'));
    expect(refused.json().error.message).toMatch(/Free plan allows 100 tasks a month/);
    const pub = await api.post('/v1/public/tasks', { title: 'Through the public API' });
    expect(pub.statusCode).toBe(402);
    expect((await api.get('/tasks?limit=1')).json().meta.total).toBe(100);
    expect((await client(svc).post('/tasks', { title: 'One too many' })).statusCode).toBe(201);
  });

  it('counts creations, not surviving rows: a deleted task still used its place; a refused or duplicate one did not', async () => {
    const api = await orgWithLimit(3);
    const first = await api.task({ title: 'Keep' });
    await api.task({ title: 'Delete me' });
    expect((await api.post('/tasks', { title: 'keep' })).statusCode).toBe(409); // a duplicate takes no place
    const gone = (await api.get('/tasks?q=Delete')).json().data[0];
    expect((await api.del(`/tasks/${gone.id}`)).statusCode).toBe(200);
    await api.task({ title: 'Third' });
    expect((await api.post('/tasks', { title: 'Fourth' })).json().error).toMatchObject(refusal(3, 3, 'enterprise'));
    // Updates are not creations.
    expect((await api.patch(`/tasks/${first.id}`, { status: 'in_progress' })).statusCode).toBe(200);
  });

  it('is the current UTC calendar month: last month\'s tasks do not count', async () => {
    const api = await orgWithLimit(2);
    await tasks(api, 2);
    expect((await api.post('/tasks', { title: 'Over' })).statusCode).toBe(402);
    // As if those two had been created last month.
    await svc.ctx.pool.query("UPDATE task_monthly_usage SET month = (month - interval '1 month')::date WHERE org_id = $1", [orgOf(api)]);
    expect((await api.post('/tasks', { title: 'Over' })).statusCode).toBe(201);
  });

  it('follows billing.subscription.changed: an upgrade lets more in, Enterprise null is unlimited, an older event changes nothing', async () => {
    const api = await orgWithLimit(2);
    await tasks(api, 2);
    expect((await api.post('/tasks', { title: 'Extra 1' })).statusCode).toBe(402);
    const unlimited = await putOnPlan(svc, orgOf(api), 'enterprise');
    await tasks(api, 5, 'Extra');
    await putOnPlan(svc, orgOf(api), 'free', { occurredAt: new Date(Date.parse(unlimited.occurredAt) - 1_000).toISOString() });
    expect((await api.post('/tasks', { title: 'Still unlimited' })).statusCode).toBe(201);
    await putOnPlan(svc, orgOf(api), 'enterprise', { limits: { tasks_per_month: 8 } });
    expect((await api.post('/tasks', { title: 'Now limited' })).json().error).toMatchObject(refusal(8, 8, 'enterprise'));
  });

  it('concurrent creations at the limit: exactly the free places are taken', async () => {
    const api = await orgWithLimit(3);
    await tasks(api, 2);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => api.post('/tasks', { title: `Racer ${i}` })));
    expect(results.map((r) => r.statusCode).sort()).toEqual([201, 402, 402, 402, 402, 402, 402, 402, 402, 402]);
    expect((await api.get('/tasks?limit=1')).json().meta.total).toBe(3);
    const { rows } = await svc.ctx.pool.query('SELECT sum(created)::int AS n FROM task_monthly_usage WHERE org_id = $1', [orgOf(api)]);
    expect(rows[0].n).toBe(3);
  });

  it('a derived task past the limit is not created, is announced as refused, and is not dead-lettered', async () => {
    const api = await orgWithLimit(1);
    const parent = await api.task({ title: 'Ship the landing page', assignee: 'felix' });
    const envelope = {
      id: uuidv7(), type: 'agents.task.derivation_requested', version: 1, source: 'agents-runtime', occurredAt: new Date().toISOString(),
      tenantId: api.principal.tenantId, orgId: orgOf(api), actor: { type: 'agent', id: 'felix' },
      data: { parentTaskId: parent.id, ruleId: 'qa', agentName: 'felix', title: 'QA the landing page', description: null, priority: 'P2', type: 'research', assignee: null, productSlug: null },
    };
    const bus = await svc.ctx.bus;
    await bus.js.publish(subjectFor(bus.names, 'agents.task.derivation_requested'), JSON.stringify(envelope), { msgID: envelope.id });
    await settled(svc);
    expect((await api.get(`/tasks?parent_task_id=${parent.id}`)).json().data).toEqual([]);
    expect(await outboxTypes(svc)).toContain('tasks.task.derivation_refused');
    const { rows } = await svc.ctx.pool.query("SELECT envelope FROM aos_outbox WHERE type = 'tasks.task.derivation_refused' AND envelope->>'orgId' = $1", [orgOf(api)]);
    expect(rows.map((r) => r.envelope.data)).toEqual([{
      parentTaskId: parent.id, ruleId: 'qa', agentName: 'felix', title: 'QA the landing page', reason: 'plan_limit', limit: 'tasks_per_month', used: 1, max: 1, tier: 'enterprise',
    }]);
    expect(rows[0].envelope.actor).toEqual({ type: 'agent', id: 'felix' });
  });
});
