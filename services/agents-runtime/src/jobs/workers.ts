import { Queues } from '@aos/contracts';
import type { Job } from '@aos/queue';
import { and, asc, eq, inArray } from 'drizzle-orm';
import { agentRuns, agents, assignedTasks, discoveryEngines, discoveryRuns } from '../db/schema.js';
import { STOPPED } from '../domain/agents.js';
import { idleCheck, readyTask } from '../domain/idle.js';
import { providers, type Provider } from '../domain/providers.js';
import { cancelChannel, cost, createRun, runWorker, settings } from '../domain/runs.js';
import type { Ctx } from '../service.js';
import { startCleanup } from './cleanup.js';
import { factoryFor } from './factory.js';

/**
 * One cycle of a scheduled agent: the idle check decides; when there is work, the oldest
 * ready task gets a run (one at a time per agent). A stopped agent's scheduler is removed,
 * so its cycles do not fire at all; the status check covers a cycle already in flight.
 */
export async function agentCycle(ctx: Ctx, agentId: number) {
  const [a] = await ctx.db.select().from(agents).where(eq(agents.id, agentId));
  if (!a || STOPPED.includes(a.status)) return { skipped: true };
  const decision = await idleCheck(ctx, a.orgId, a.name);
  let result = decision.should_skip ? `skipped: ${decision.reason}` : decision.reason;
  if (!decision.should_skip) {
    const [busy] = await ctx.db.select({ id: agentRuns.id }).from(agentRuns).where(and(eq(agentRuns.agentId, a.id), inArray(agentRuns.status, ['queued', 'running']))).limit(1);
    const [task] = busy ? [] : await ctx.db.select().from(assignedTasks).where(readyTask(a.id, a.orgId, a.name))
      .orderBy(asc(assignedTasks.queuedSince), asc(assignedTasks.taskId)).limit(1);
    if (busy) result = `busy: run ${busy.id} open`;
    else if (task) {
      const run = await createRun(ctx, a, `Work on task #${task.taskId}: ${task.title}`, task.taskId, null, { byCycle: true });
      result = `run ${run.id} queued for task #${task.taskId}`;
    }
  }
  await ctx.db.update(agents).set({ lastHeartbeat: new Date(), lastCycleAt: new Date(), lastCycleResult: result.slice(0, 300) }).where(eq(agents.id, agentId));
  return { result };
}

/** A discovery run: the engine's model surveys its layer; each "Plan:" item or list line of the answer is a finding. */
async function discoveryRun(ctx: Ctx, all: Record<string, Provider>, { engineId, trigger }: { engineId: number; trigger: string }, job: Job<unknown>) {
  const [e] = await ctx.db.select().from(discoveryEngines).where(eq(discoveryEngines.id, engineId));
  if (!e || (!e.enabled && trigger === 'schedule')) return { skipped: true };
  const started = Date.now();
  const provider = all[e.provider] ?? all.offline!;
  try {
    const result = await provider.complete({ model: e.model, messages: [{ role: 'user', content: `Audit the ${e.layer} layer: ${e.description ?? e.name}` }] });
    const plan = /Plan:(.*)$/m.exec(result.text)?.[1] ?? '';
    const findings = plan.split(',').map((s) => s.trim()).filter(Boolean).length + (result.text.match(/^- /gm)?.length ?? 0);
    await ctx.db.insert(discoveryRuns).values({
      engineId, trigger, status: 'succeeded', findings, tokens: result.inputTokens + result.outputTokens,
      costUsd: cost(ctx, result.inputTokens, result.outputTokens), durationMs: Date.now() - started,
    });
    await ctx.db.update(discoveryEngines).set({ lastRunAt: new Date() }).where(eq(discoveryEngines.id, engineId));
    return { findings };
  } catch (err) {
    // Only the last attempt is recorded: the efficiency stats count runs, not retries.
    if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
      await ctx.db.insert(discoveryRuns).values({ engineId, trigger, status: 'failed', error: (err as Error).message.slice(0, 500), durationMs: Date.now() - started });
      await ctx.db.update(discoveryEngines).set({ lastRunAt: new Date() }).where(eq(discoveryEngines.id, engineId));
    }
    throw err;
  }
}

/** Run execution and its reconciler, the agents' scheduled cycles, discovery engines, the factory pool, retention cleanup, and cancellation across processes. */
export async function startWorkers(ctx: Ctx) {
  const running = new Map<number, AbortController>();
  const redis = ctx.queues.connection;
  ctx.queues.worker(Queues.agentRuns, runWorker(ctx, redis, running), { concurrency: ctx.config.RUN_CONCURRENCY });
  await ctx.queues.queue(Queues.agentRuns).upsertJobScheduler('runs-reconciler', { every: ctx.config.RUN_RECONCILE_INTERVAL_MS }, { name: 'reconcile', data: { payload: {}, trace: {} } });

  ctx.queues.worker<{ agentId: number }>(Queues.agentSchedules, ({ agentId }) => agentCycle(ctx, agentId));
  const all = providers(settings(ctx));
  ctx.queues.worker<{ engineId: number; trigger: string }>(Queues.discovery, (payload, job) => discoveryRun(ctx, all, payload, job));

  await factoryFor(ctx).init();
  await startCleanup(ctx);

  const subscriber = redis.duplicate();
  subscriber.on('error', (err: Error) => ctx.log.warn({ err: err.message }, 'run cancel subscriber: redis error'));
  await subscriber.subscribe(cancelChannel(ctx));
  subscriber.on('message', (_channel, message) => running.get(Number(message))?.abort(new Error('cancelled')));
  ctx.shutdown.add('run cancel subscriber', () => subscriber.quit());
}
