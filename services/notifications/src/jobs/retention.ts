import type { Pool } from '@aos/db';
import type { Ctx } from '../service.js';

const LOCK_KEY = 0x6e6f7466; // one sweeper across instances

/** Deletes in batches so a large backlog never holds long locks. */
async function sweep(pool: Pool, table: string, where: string, days: number): Promise<number> {
  if (days <= 0) return 0;
  let total = 0;
  for (;;) {
    const { rowCount } = await pool.query(
      `DELETE FROM ${table} WHERE id IN (SELECT id FROM ${table} WHERE ${where} AND created_at < now() - make_interval(days => $1) LIMIT 5000)`, [days]);
    total += rowCount ?? 0;
    if (!rowCount || rowCount < 5_000) return total;
  }
}

/** Removes old activity rows, delivery logs, e-mails (their bodies may hold one-time links) and read notifications. */
export async function runRetention(ctx: Ctx): Promise<Record<string, number> | null> {
  const client = await ctx.pool.connect();
  try {
    const { rows } = await client.query('SELECT pg_try_advisory_lock($1) AS ok', [LOCK_KEY]);
    if (!rows[0].ok) return null;
    try {
      const c = ctx.config;
      const result = {
        activity_log: await sweep(ctx.pool, 'activity_log', 'true', c.ACTIVITY_RETENTION_DAYS),
        webhook_deliveries: await sweep(ctx.pool, 'webhook_deliveries', "status IN ('succeeded', 'failed')", c.DELIVERY_RETENTION_DAYS),
        emails: await sweep(ctx.pool, 'emails', "status IN ('sent', 'failed', 'stored')", c.EMAIL_RETENTION_DAYS),
        notifications: await sweep(ctx.pool, 'notifications', '(read OR user_id IS NULL)', c.READ_NOTIFICATION_RETENTION_DAYS),
      };
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
