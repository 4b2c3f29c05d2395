import type { QueueName } from '@aos/contracts';
import type { JobEnvelope } from '@aos/queue';
import type { ServiceContext } from './service.js';

/**
 * One retention sweep: a DELETE of at most one batch (its `$1` is the retention), repeated until
 * nothing is left, so a backlog never holds long locks; and the setting that gives `$1`.
 */
export type Sweep<C> = readonly [statement: string, retention: (config: C) => number];

/** Runs every sweep to the end; returns the rows each removed. */
export async function runSweeps<C, K extends string>(ctx: Pick<ServiceContext, 'pool'> & { config: C }, sweeps: Record<K, Sweep<C>>): Promise<Record<K, number>> {
  const removed = {} as Record<K, number>;
  for (const [name, [statement, retention]] of Object.entries(sweeps) as [K, Sweep<C>][]) {
    let total = 0;
    for (;;) {
      const { rowCount } = await ctx.pool.query(statement, [retention(ctx.config)]);
      total += rowCount ?? 0;
      if (!rowCount) break;
    }
    removed[name] = total;
  }
  return removed;
}

/**
 * A worker plus one BullMQ job scheduler (`schedulerId`, shared by every replica: one run per
 * interval in all) that runs `sweep`. The next interval is the retry.
 */
export async function scheduleSweeps(
  ctx: Pick<ServiceContext, 'queues' | 'log'>, queue: QueueName, schedulerId: string, everySeconds: number, sweep: () => Promise<Record<string, number>>,
): Promise<void> {
  ctx.queues.worker(queue, async () => {
    const removed = await sweep();
    if (Object.values(removed).some((n) => n > 0)) ctx.log.info(removed, `${schedulerId} removed rows past their retention`);
    return removed;
  });
  await ctx.queues.queue(queue).upsertJobScheduler(schedulerId, { every: everySeconds * 1_000 }, {
    name: 'cleanup',
    data: { payload: {}, trace: {} } satisfies JobEnvelope<Record<string, never>>,
    opts: { attempts: 1 },
  });
}
