import { Queues, type QueueName } from '@aos/contracts';
import type { Ctx } from '../service.js';
import { emailJobId, enqueueEmail } from '../domain/email.js';
import { deliveryJobId, enqueueDelivery } from './webhook-delivery.js';

/** States in which a job will still run: its row is in good hands. */
const LIVE = new Set(['waiting', 'delayed', 'active', 'prioritized', 'waiting-children']);

/**
 * True when the job was (re-)added. A job that finished while its row is still unfinished
 * (its bookkeeping was lost) is removed first: BullMQ ignores an add whose id still exists.
 * The row is read again once the job is known not to be live: a job that completed between the
 * caller's read and this check has finished its row, and must not run a second time.
 */
async function ensureJob(ctx: Ctx, queue: QueueName, jobId: string, stillUnfinished: () => Promise<boolean>, add: () => Promise<unknown>): Promise<boolean> {
  const job = await ctx.queues.queue(queue).getJob(jobId);
  if (job && LIVE.has(await job.getState())) return false;
  if (!(await stillUnfinished())) return false;
  if (job) await job.remove();
  await add();
  return true;
}

/**
 * Jobs are added after their rows commit; a crash in between, or a job that ran out of
 * attempts without recording it (database down), leaves a row that nothing will move.
 * This finds deliveries and e-mails unfinished for longer than `olderThanMs` without a live
 * job and queues them again (same job ids, so a concurrent add is a no-op).
 */
export async function recoverLostJobs(ctx: Ctx, olderThanMs: number): Promise<{ deliveries: number; emails: number }> {
  let deliveries = 0;
  let emails = 0;
  const age = olderThanMs / 1000;
  // A disabled webhook gets nothing more: what it still owed is closed, as its job would have.
  await ctx.pool.query(
    `UPDATE webhook_deliveries d SET status = 'failed', error = 'webhook disabled' FROM webhooks w
     WHERE w.id = d.webhook_id AND NOT w.active AND d.status IN ('pending', 'retrying')
       AND coalesce(d.last_attempt_at, d.created_at) < now() - make_interval(secs => $1)`, [age]);
  const { rows: stuck } = await ctx.pool.query<{ webhook_id: number; event_id: string; event_type: string; redeliveries: number }>(
    `SELECT d.webhook_id, d.event_id, d.event_type, d.redeliveries FROM webhook_deliveries d
     JOIN webhooks w ON w.id = d.webhook_id AND w.active
     WHERE d.status IN ('pending', 'retrying') AND coalesce(d.last_attempt_at, d.created_at) < now() - make_interval(secs => $1)
     ORDER BY d.id LIMIT 1000`, [age]);
  for (const d of stuck) {
    const unfinished = async () => (await ctx.pool.query(
      `SELECT 1 FROM webhook_deliveries WHERE webhook_id = $1 AND event_id = $2 AND redeliveries = $3 AND status IN ('pending', 'retrying')`,
      [d.webhook_id, d.event_id, d.redeliveries])).rowCount! > 0;
    const added = await ensureJob(ctx, Queues.webhookDelivery, deliveryJobId(d.webhook_id, d.event_id, d.redeliveries), unfinished, () =>
      enqueueDelivery(ctx, { webhookId: d.webhook_id, eventId: d.event_id, eventType: d.event_type, redeliveries: d.redeliveries }));
    if (added) deliveries++;
  }
  if (ctx.config.SMTP_URL) {
    const { rows: queued } = await ctx.pool.query<{ id: number; template: string }>(
      `SELECT id, template FROM emails WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT 1000`,
      [age]);
    for (const e of queued) {
      const unfinished = async () => (await ctx.pool.query(`SELECT 1 FROM emails WHERE id = $1 AND status = 'queued'`, [e.id])).rowCount! > 0;
      if (await ensureJob(ctx, Queues.email, emailJobId(e.id), unfinished, () => enqueueEmail(ctx, e.id, e.template))) emails++;
    }
  }
  if (deliveries + emails > 0) ctx.log.warn({ deliveries, emails }, 're-queued jobs that were lost');
  return { deliveries, emails };
}

export function scheduleRecovery(ctx: Ctx): void {
  const every = ctx.config.JOB_RECOVERY_INTERVAL_MS;
  const timer = setInterval(() => {
    recoverLostJobs(ctx, every).catch((err: Error) => ctx.log.warn({ err: err.message }, 'job recovery failed'));
  }, every);
  timer.unref();
  ctx.shutdown.add('job recovery', () => clearInterval(timer));
}
