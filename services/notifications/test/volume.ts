import { startTestService, waitFor, sleep } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { service } from '../src/service.js';
import { count, envelope, publish } from './helpers.js';

/**
 * Publishes `n` events of mixed types (plus 5% re-published with new broker message ids)
 * and waits for the activity log; returns what a caller asserts on and the rate.
 */
export async function activityVolume(n: number, opts: { timeoutMs?: number } = {}) {
  const svc = await startTestService(service, { env: { DATABASE_POOL_MAX: '20' } });
  try {
    const orgs = [randomUUID(), randomUUID(), randomUUID()];
    const events = Array.from({ length: n }, (_, i) => i % 3 === 0
      ? envelope('tasks.task.updated', {
        taskId: i, title: `t${i}`, status: 'in_progress', priority: 'low', type: 'chore', assignee: null, productId: null, productSlug: null,
        parentTaskId: null, createdBy: null, changes: ['status'], previousStatus: 'todo', previousAssignee: null,
      }, { orgId: orgs[i % orgs.length]!, actor: { type: 'user', id: `u${i % 7}` } })
      : i % 3 === 1
        ? envelope('agents.run.started', { runId: i, agentId: i % 5, agentName: 'a' }, { orgId: orgs[i % orgs.length]!, actor: { type: 'agent', id: String(i % 5) } })
        : envelope('billing.tokens.consumed', { amount: 1, balance: 1_000 - i, action: 'run', referenceId: null, userId: null }, { orgId: orgs[i % orgs.length]! }));
    const started = Date.now();
    for (let i = 0; i < events.length; i += 250) await Promise.all(events.slice(i, i + 250).map((e) => publish(svc.ctx, e)));
    const replays = events.filter((_, i) => i % 20 === 0);
    await Promise.all(replays.map((e) => publish(svc.ctx, e, `replay-${e.id}`)));
    const publishedMs = Date.now() - started;
    await waitFor(async () => (await count(svc.ctx.pool, 'SELECT count(*) AS n FROM activity_log')) >= n,
      { timeoutMs: opts.timeoutMs ?? 60_000, intervalMs: 200, message: `${n} activity rows` });
    const elapsedMs = Date.now() - started;
    await sleep(1_000); // let replays that are still in flight land (they must not add rows)
    const { rows } = await svc.ctx.pool.query('SELECT count(*)::int AS total, count(DISTINCT event_id)::int AS distinct_events FROM activity_log');
    const { rows: missing } = await svc.ctx.pool.query('SELECT count(*)::int AS n FROM unnest($1::uuid[]) AS e(id) WHERE NOT EXISTS (SELECT 1 FROM activity_log a WHERE a.event_id = e.id)', [events.map((e) => e.id)]);
    const rate = Math.round(n / (elapsedMs / 1000));
    return { total: rows[0].total as number, distinct: rows[0].distinct_events as number, missing: missing[0].n as number, elapsedMs, publishedMs, rate, svc };
  } catch (err) {
    await svc.close();
    throw err;
  }
}
