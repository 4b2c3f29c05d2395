import { runSweeps, type Sweep } from '@aos/runtime';
import type { Ctx } from '../service.js';

const LOCK_KEY = 0x6e6f7466; // one sweeper across instances
const BATCH = 5_000;

type Config = Ctx['config'];

/** Deletes one batch of `table` rows matching `where` and older than the retention (0 keeps them forever). */
const sweep = (table: string, where: string, days: (c: Config) => number): Sweep<Config> => [
  `DELETE FROM ${table} WHERE id IN (SELECT id FROM ${table} WHERE $1::int > 0 AND ${where} AND created_at < now() - make_interval(days => $1) LIMIT ${BATCH})`, days];

/** Old activity rows, delivery logs, e-mails (their bodies may hold one-time links) and read notifications. */
const SWEEPS = {
  activity_log: sweep('activity_log', 'true', (c) => c.ACTIVITY_RETENTION_DAYS),
  webhook_deliveries: sweep('webhook_deliveries', "status IN ('succeeded', 'failed')", (c) => c.DELIVERY_RETENTION_DAYS),
  emails: sweep('emails', "status IN ('sent', 'failed', 'stored')", (c) => c.EMAIL_RETENTION_DAYS),
  notifications: sweep('notifications', '(read OR user_id IS NULL)', (c) => c.READ_NOTIFICATION_RETENTION_DAYS),
} satisfies Record<string, Sweep<Config>>;

/** Runs the sweeps in batches (a large backlog never holds long locks), one instance at a time; null when another holds the lock. */
export async function runRetention(ctx: Ctx): Promise<Record<keyof typeof SWEEPS, number> | null> {
  const client = await ctx.pool.connect();
  try {
    const { rows } = await client.query('SELECT pg_try_advisory_lock($1) AS ok', [LOCK_KEY]);
    if (!rows[0].ok) return null;
    try {
      const result = await runSweeps(ctx, SWEEPS);
      if (Object.values(result).some((n) => n > 0)) ctx.log.info(result, 'retention sweep');
      return result;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [LOCK_KEY]);
    }
  } finally {
    client.release();
  }
}

export function scheduleRetention(ctx: Ctx): void {
  const timer = setInterval(() => {
    runRetention(ctx).catch((err: Error) => ctx.log.warn({ err: err.message }, 'retention sweep failed'));
  }, ctx.config.RETENTION_INTERVAL_MS);
  timer.unref();
  ctx.shutdown.add('retention', () => clearInterval(timer));
}
