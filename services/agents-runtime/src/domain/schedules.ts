import { Queues } from '@aos/contracts';
import { and, eq, isNotNull, notInArray } from 'drizzle-orm';
import { agents, discoveryEngines } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { schedule, STOPPED } from './agents.js';

type Engine = typeof discoveryEngines.$inferSelect;
export const engineScheduler = (e: Pick<Engine, 'id'>) => `discovery-${e.id}`;

/** An enabled engine has its job scheduler (every `schedule_interval_ms`); a disabled one has none. */
export async function syncEngine(ctx: Ctx, e: Engine) {
  const q = ctx.queues.queue(Queues.discovery);
  if (e.enabled) await q.upsertJobScheduler(engineScheduler(e), { every: e.scheduleIntervalMs }, { name: 'scheduled', data: { payload: { engineId: e.id, trigger: 'schedule' }, trace: {} } });
  else await q.removeJobScheduler(engineScheduler(e));
}

const schedulerIds = async (ctx: Ctx, queue: (typeof Queues)[keyof typeof Queues]) =>
  new Set((await ctx.queues.queue(queue).getJobSchedulers(0, -1)).map((s) => s.id ?? s.key));

/**
 * Restores the job schedulers Postgres says should exist (running, bootstrapped agents; enabled
 * engines) when Redis lost them (data loss, a failed upsert). Extra schedulers are left alone:
 * removing them is the route's job, and a stopped agent's cycle skips itself anyway.
 */
export async function reconcileSchedules(ctx: Ctx): Promise<{ restored: number }> {
  let restored = 0;
  const agentIds = await schedulerIds(ctx, Queues.agentSchedules);
  const running = await ctx.db.select().from(agents).where(and(isNotNull(agents.bootstrappedAt), notInArray(agents.status, [...STOPPED])));
  for (const candidate of running.filter((x) => !agentIds.has(`agent-${x.id}`))) {
    // Under the row lock: a stop (which updates the row, then removes the scheduler) is either fully before or after.
    await ctx.db.transaction(async (tx) => {
      const [a] = await tx.select().from(agents).where(eq(agents.id, candidate.id)).for('update');
      if (!a?.bootstrappedAt || STOPPED.includes(a.status)) return;
      await schedule(ctx, a);
      restored++;
    });
  }
  const engineIds = await schedulerIds(ctx, Queues.discovery);
  const enabled = await ctx.db.select().from(discoveryEngines).where(eq(discoveryEngines.enabled, true));
  for (const e of enabled.filter((x) => !engineIds.has(engineScheduler(x)))) {
    await syncEngine(ctx, e);
    restored++;
  }
  if (restored) ctx.log.warn({ restored }, 'missing job schedulers restored');
  return { restored };
}
