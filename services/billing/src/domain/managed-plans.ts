import { systemMeta, type EventMeta } from '@aos/bus';
import { conflict } from '@aos/core';
import type { Executor } from '@aos/db';
import { and, eq, like, sql } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { ledgerEntries, subscriptions } from '../db/schema.js';
import { Tiers, type Limits, type TierSlug } from './catalog.js';
import { post } from './ledger.js';
import { callStripe, paymentsNotConfigured, stripeConfigured } from './stripe.js';
import { applySubscription, cancelStripeSubscription, effectiveLimits, findSubscription, LIVE_STATUSES, type SubscriptionRow } from './subscriptions.js';

/**
 * Plans a platform admin sets (an Enterprise contract with negotiated limits, a comped plan):
 * no Stripe subscription behind them, billed outside Stripe (`mrr_cents` for the overview),
 * left alone by Stripe events and refused to self-serve checkout and change-plan.
 */
export interface ManagedPlan {
  tier: TierSlug;
  /** Enterprise only: over the catalogue's (null = unlimited). */
  limits?: Partial<Limits>;
  mrrCents?: number;
  note?: string | null;
  /** Cancel a live self-serve Stripe subscription now instead of refusing (409). */
  cancelStripeSubscription?: boolean;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

export async function setManagedPlan(ctx: Ctx, orgId: string, plan: ManagedPlan, adminMeta: EventMeta): Promise<SubscriptionRow> {
  return ctx.db.transaction(async (tx) => {
    const row = await findSubscription(tx, orgId, true);
    const meta = { ...adminMeta, tenantId: row?.tenantId ?? null, orgId };
    const liveStripe = row && !row.managed && row.stripeSubscriptionId && LIVE_STATUSES.has(row.status) ? row.stripeSubscriptionId : null;
    if (liveStripe) {
      if (!plan.cancelStripeSubscription) {
        throw conflict(`The organization pays for ${Tiers[row!.tier as TierSlug]?.name ?? row!.tier} through Stripe; pass cancel_stripe_subscription: true to cancel that subscription now`, [
          { field: 'cancel_stripe_subscription', stripe_subscription_id: liveStripe, tier: row!.tier },
        ]);
      }
      if (!stripeConfigured(ctx)) throw paymentsNotConfigured('STRIPE_SECRET_KEY', 'Cancelling the Stripe subscription needs Stripe');
      await callStripe(() => cancelStripeSubscription(ctx, liveStripe, `aos-managed-plan-${orgId}-${liveStripe}`));
    }
    const updated = await applySubscription(ctx, tx, orgId, {
      tier: plan.tier, status: 'active', managed: true, managedBy: adminMeta.actor.id, managedNote: plan.note ?? null,
      customLimits: plan.tier === 'enterprise' ? plan.limits ?? null : null, mrrCents: plan.mrrCents ?? 0,
      // A calendar-month plan: no Stripe period, nothing pending; older Stripe events stay stale.
      stripeSubscriptionId: null, currentPeriodStart: null, currentPeriodEnd: null, cancelAtPeriodEnd: false,
      pendingTier: null, pendingAt: null, stripeStateAt: Math.max(nowSeconds(), row?.stripeStateAt ?? 0),
    }, meta);
    await grantIncludedTokens(ctx, tx, updated, meta);
    return updated;
  });
}

/** Hands the organization back to self-serve: Free, catalogue limits. */
export async function releaseManagedPlan(ctx: Ctx, orgId: string, adminMeta: EventMeta): Promise<SubscriptionRow | null> {
  return ctx.db.transaction(async (tx) => {
    const row = await findSubscription(tx, orgId, true);
    if (!row?.managed) return null;
    return applySubscription(ctx, tx, orgId, {
      tier: 'free', status: 'canceled', managed: false, managedBy: adminMeta.actor.id, managedNote: null, customLimits: null, mrrCents: 0,
      stripeStateAt: Math.max(nowSeconds(), row.stripeStateAt),
    }, { ...adminMeta, tenantId: row.tenantId, orgId });
  });
}

const INCLUDED_TOKENS = 'included_tokens';

/**
 * A managed plan's included tokens for the calendar month, topped up to the plan's amount:
 * once per (month, amount) reference, so setting the plan again grants nothing twice and a
 * raised amount grants only the difference.
 */
export async function grantIncludedTokens(deps: Pick<Ctx, 'outbox'>, tx: Executor, row: SubscriptionRow, meta: EventMeta, now = new Date()) {
  if (!row.managed || row.status !== 'active') return;
  const included = effectiveLimits(row).included_tokens;
  if (!included) return;
  const month = now.toISOString().slice(0, 7);
  const prefix = `aos:included:${month}:`;
  const [granted] = await tx.select({ s: sql<string>`COALESCE(sum(${ledgerEntries.amount}), 0)::text` }).from(ledgerEntries).where(and(
    eq(ledgerEntries.orgId, row.orgId), eq(ledgerEntries.ledger, 'tokens'), eq(ledgerEntries.type, 'bonus'), like(ledgerEntries.referenceId, `${prefix}%`),
  ));
  const grant = included - Number(granted?.s ?? 0);
  if (grant <= 0) return;
  await post(deps, tx, {
    orgId: row.orgId, ledger: 'tokens', type: 'bonus', amount: grant, referenceId: `${prefix}${included}`, action: INCLUDED_TOKENS,
    metadata: { tier: row.tier, month, managed: true },
  }, meta);
}

/** The monthly grant for every managed plan (the job on the 1st, and a catch-up at start). */
export async function grantIncludedTokensForAll(ctx: Ctx, now = new Date()): Promise<number> {
  const rows = await ctx.db.select({ orgId: subscriptions.orgId }).from(subscriptions).where(and(eq(subscriptions.managed, true), eq(subscriptions.status, 'active')));
  for (const { orgId } of rows) {
    await ctx.db.transaction(async (tx) => {
      const row = await findSubscription(tx, orgId, true);
      if (row) await grantIncludedTokens(ctx, tx, row, systemMeta(row.tenantId, orgId), now);
    });
  }
  return rows.length;
}
