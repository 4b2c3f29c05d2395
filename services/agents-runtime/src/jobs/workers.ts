import { Queues } from '@aos/contracts';
import { eq } from 'drizzle-orm';
import { agents, discoveryEngines, discoveryRuns } from '../db/schema.js';
import { providers } from '../domain/providers.js';
import { cost, settings } from '../domain/runs.js';
import { factoryFor } from './factory.js';
import { channels, runWorker } from '../domain/runs.js';
import type { Ctx } from '../service.js';

/** Run execution, the agents' scheduled cycles, and cancellation across processes. */
export async function startWorkers(ctx: Ctx) {
  const running = new Map<number, AbortController>();
  const publisher = ctx.queues.connection;
  ctx.queues.worker(Queues.agentRuns, runWorker(ctx, publisher, running), { concurrency: ctx.config.RUN_CONCURRENCY });

  // A cycle of a scheduled agent: records the heartbeat (a paused agent's scheduler is removed, so it never fires).
  ctx.queues.worker<{ agentId: number }>(Queues.agentSchedules, async ({ agentId }) => {
    const [a] = await ctx.db.select().from(agents).where(eq(agents.id, agentId));
    if (!a || a.status === 'paused' || a.status === 'offline') return { skipped: true };
    await ctx.db.update(agents).set({ lastHeartbeat: new Date() }).where(eq(agents.id, agentId));
    return { heartbeat: true };
  });

  // A discovery run: the engine's model surveys its layer; each "Plan:"/list item of the answer is a finding.
  const all = providers(settings(ctx));
  ctx.queues.worker<{ engineId: number; trigger: string }>(Queues.discovery, async ({ engineId, trigger }) => {
    const [e] = await ctx.db.select().from(discoveryEngines).where(eq(discoveryEngines.id, engineId));
    if (!e || (!e.enabled && trigger === 'schedule')) return { skipped: true };
    const started = Date.now();
    const result = await all.offline!.complete({ model: e.model, messages: [{ role: 'user', content: `Audit the ${e.layer} layer: ${e.description ?? e.name}` }] });
    const plan = /Plan:(.*)$/m.exec(result.text)?.[1] ?? '';
    const findings = plan.split(',').map((s) => s.trim()).filter(Boolean).length + (result.text.match(/^- /gm)?.length ?? 0);
    await ctx.db.insert(discoveryRuns).values({
      engineId, trigger, status: 'succeeded', findings, tokens: result.inputTokens + result.outputTokens,
      costUsd: cost(ctx, result.inputTokens, result.outputTokens), durationMs: Date.now() - started,
    });
    await ctx.db.update(discoveryEngines).set({ lastRunAt: new Date() }).where(eq(discoveryEngines.id, engineId));
    return { findings };
  });

  await factoryFor(ctx).init();

  const subscriber = ctx.queues.connection.duplicate();
  await subscriber.subscribe(channels(ctx).cancel);
  subscriber.on('message', (_channel, message) => running.get(Number(message))?.abort(new Error('cancelled')));
  ctx.shutdown.add('run cancel subscriber', () => subscriber.quit());
}
