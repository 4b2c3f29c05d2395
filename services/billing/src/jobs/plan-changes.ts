import { systemMeta } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { isNotNull } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { subscriptions } from '../db/schema.js';
import type { JobEnvelope } from '@aos/queue';
import { grantIncludedTokensForAll } from '../domain/managed-plans.js';
import { applyDuePending, findSubscription } from '../domain/subscriptions.js';

export interface PlanChangeJob { orgId: string }

/**
 * A downgrade scheduled for the period end is applied by a delayed job at that time, so the
 * plan (and the gateway's rate-limit tier, through billing.subscription.changed) follows even
 * when no webhook arrives and nobody reads the subscription. One job per (org, due time).
 */
export function schedulePlanChange(ctx: Ctx, orgId: string, dueAt: Date) {
  return ctx.queues.add<PlanChangeJob>(Queues.planChanges, 'apply-downgrade', { orgId }, {
    jobId: `downgrade.${orgId}.${dueAt.getTime()}`, delay: Math.max(0, dueAt.getTime() - Date.now()),
    attempts: 8, backoff: { type: 'exponential', delay: 1_000 },
  });
}

/** Queues the job after the change committed; a Redis outage is covered by the sweep at start and by reads. */
export async function schedulePlanChangeSafely(ctx: Ctx, orgId: string, dueAt: Date | null) {
  if (!dueAt) return;
  await schedulePlanChange(ctx, orgId, dueAt).catch((err: Error) => ctx.log.warn({ err: err.message, orgId }, 'could not schedule the downgrade job'));
}

export async function applyScheduledDowngrade(ctx: Ctx, { orgId }: PlanChangeJob): Promise<string> {
  return ctx.db.transaction(async (tx) => {
    const row = await findSubscription(tx, orgId, true);
    if (!row?.pendingTier || !row.pendingAt) return 'nothing pending';
    // A rescheduled change has its own job; this one is done.
    if (row.pendingAt.getTime() > Date.now() + 1_000) return 'not due';
    const applied = await applyDuePending(ctx, tx, orgId, systemMeta(row.tenantId, orgId));
    if (applied?.pendingTier) throw new Error('downgrade not due yet'); // clock skew: retried with backoff
    return `applied ${applied?.tier}`;
  });
}

const INCLUDED_TOKENS_SCHEDULER_ID = 'managed-included-tokens';
const includedTokens = (ctx: Ctx) => grantIncludedTokensForAll(ctx);

export async function startPlanChangeJobs(ctx: Ctx) {
  ctx.queues.worker<PlanChangeJob | Record<string, never>>(Queues.planChanges, (payload, job) =>
    job.name === 'included-tokens' ? includedTokens(ctx) : applyScheduledDowngrade(ctx, payload as PlanChangeJob), { concurrency: 2 });
  // Managed plans (no Stripe invoice) get their included tokens each calendar month; the grant is
  // idempotent per month, so the catch-up at start covers a month the job missed.
  await includedTokens(ctx).catch((err: Error) => ctx.log.warn({ err: err.message }, 'included tokens of managed plans not granted at start'));
  await ctx.queues.queue(Queues.planChanges).upsertJobScheduler(INCLUDED_TOKENS_SCHEDULER_ID, { pattern: '0 0 1 * *', tz: 'UTC' }, {
    name: 'included-tokens', data: { payload: {}, trace: {} } satisfies JobEnvelope<Record<string, never>>, opts: { attempts: 5, backoff: { type: 'exponential', delay: 60_000 } },
  }).catch((err: Error) => ctx.log.warn({ err: err.message }, 'could not schedule the monthly included tokens'));
  // Downgrades scheduled while Redis was unreachable (same job ids: no duplicates).
  const pending = await ctx.db.select({ orgId: subscriptions.orgId, pendingAt: subscriptions.pendingAt }).from(subscriptions).where(isNotNull(subscriptions.pendingTier));
  for (const row of pending) await schedulePlanChangeSafely(ctx, row.orgId, row.pendingAt);
}
