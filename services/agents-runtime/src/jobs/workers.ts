import { Queues } from '@aos/contracts';
import { eq } from 'drizzle-orm';
import { agents } from '../db/schema.js';
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

  const subscriber = ctx.queues.connection.duplicate();
  await subscriber.subscribe(channels(ctx).cancel);
  subscriber.on('message', (_channel, message) => running.get(Number(message))?.abort(new Error('cancelled')));
  ctx.shutdown.add('run cancel subscriber', () => subscriber.quit());
}
