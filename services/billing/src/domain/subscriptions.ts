import type { EventMeta } from '@aos/bus';
import type { Executor } from '@aos/db';
import { and, count, eq, gte, sql } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { subscriptions, usageEntities } from '../db/schema.js';
import { Tiers, TierSlugs, type Limits, type TierSlug } from './catalog.js';
import Stripe from 'stripe';
import { stripeClient, stripeConfigured } from './stripe.js';

export type SubscriptionRow = typeof subscriptions.$inferSelect;
type Deps = Pick<Ctx, 'outbox'>;

/** Stripe subscription statuses that still bill the customer. */
export const LIVE_STATUSES = new Set(['active', 'trialing', 'past_due', 'unpaid', 'incomplete']);

export const isTier = (v: unknown): v is TierSlug => typeof v === 'string' && (TierSlugs as readonly string[]).includes(v);

export async function findSubscription(tx: Executor, orgId: string, lock = false): Promise<SubscriptionRow | undefined> {
  const q = tx.select().from(subscriptions).where(eq(subscriptions.orgId, orgId));
  const [row] = lock ? await q.for('update') : await q;
  return row;
}

/** The organization's effective plan: its row, or Free when it never subscribed. */
export function effectiveTier(row: SubscriptionRow | undefined): TierSlug {
  if (!row || !isTier(row.tier)) return 'free';
  return row.tier;
}

export interface TierChange {
  tier: TierSlug;
  status: string;
  stripeSubscriptionId?: string | null;
  stripeCustomerId?: string | null;
  currentPeriodStart?: Date | null;
  currentPeriodEnd?: Date | null;
  cancelAtPeriodEnd?: boolean;
  pendingTier?: TierSlug | null;
  pendingAt?: Date | null;
  pendingRequestedAt?: number;
  stripeStateAt?: number;
  tenantId?: string | null;
}

/**
 * Writes the organization's subscription state and, when tier or status changed, emits
 * `billing.subscription.changed` in the same transaction (the gateway's rate-limit tier follows).
 */
export async function applySubscription(deps: Deps, tx: Executor, orgId: string, change: TierChange, meta: EventMeta): Promise<SubscriptionRow> {
  const before = await findSubscription(tx, orgId, true);
  const previousTier = effectiveTier(before);
  const previousStatus = before?.status ?? 'active';
  const values = {
    tier: change.tier,
    status: change.status,
    mrrCents: change.status === 'active' || change.status === 'trialing' || change.status === 'past_due' ? Tiers[change.tier].price_cents ?? 0 : 0,
    updatedAt: new Date(),
    ...(change.stripeSubscriptionId !== undefined ? { stripeSubscriptionId: change.stripeSubscriptionId } : {}),
    ...(change.stripeCustomerId !== undefined ? { stripeCustomerId: change.stripeCustomerId } : {}),
    ...(change.currentPeriodStart !== undefined ? { currentPeriodStart: change.currentPeriodStart } : {}),
    ...(change.currentPeriodEnd !== undefined ? { currentPeriodEnd: change.currentPeriodEnd } : {}),
    ...(change.cancelAtPeriodEnd !== undefined ? { cancelAtPeriodEnd: change.cancelAtPeriodEnd } : {}),
    ...(change.pendingTier !== undefined ? { pendingTier: change.pendingTier } : {}),
    ...(change.pendingAt !== undefined ? { pendingAt: change.pendingAt } : {}),
    ...(change.pendingRequestedAt !== undefined ? { pendingRequestedAt: change.pendingRequestedAt } : {}),
    ...(change.stripeStateAt !== undefined ? { stripeStateAt: change.stripeStateAt } : {}),
  };
  const [row] = before
    ? await tx.update(subscriptions).set(values).where(eq(subscriptions.orgId, orgId)).returning()
    : await tx.insert(subscriptions).values({ orgId, tenantId: change.tenantId ?? meta.tenantId, ...values }).returning();
  if (!before || previousTier !== change.tier || previousStatus !== change.status) {
    await deps.outbox.enqueue(tx, 'billing.subscription.changed', {
      subscriptionId: row!.stripeSubscriptionId, tier: change.tier, previousTier: before ? previousTier : 'free',
      status: change.status, userId: meta.actor.type === 'user' ? meta.actor.id : null, effectiveAt: new Date().toISOString(),
    }, { ...meta, tenantId: meta.tenantId ?? row!.tenantId, orgId });
  }
  return row!;
}

/** Applies a downgrade whose period has ended (called on reads, webhooks and plan changes). */
export async function applyDuePending(deps: Deps, tx: Executor, orgId: string, meta: EventMeta, now = new Date()): Promise<SubscriptionRow | undefined> {
  const row = await findSubscription(tx, orgId, true);
  if (!row?.pendingTier || !row.pendingAt || row.pendingAt > now || !isTier(row.pendingTier)) return row;
  return applySubscription(deps, tx, orgId, {
    tier: row.pendingTier, status: row.pendingTier === 'free' ? 'canceled' : row.status, pendingTier: null, pendingAt: null,
    ...(row.pendingTier === 'free' ? { stripeSubscriptionId: null, cancelAtPeriodEnd: false } : {}),
  }, meta);
}

export interface Usage { agents: number; seats: number; tasks_this_month: number }

export const monthStart = (d = new Date()) => new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));

export async function usageOf(tx: Executor, orgId: string): Promise<Usage> {
  const rows = await tx.select({ kind: usageEntities.kind, n: count() }).from(usageEntities)
    .where(and(eq(usageEntities.orgId, orgId), eq(usageEntities.present, true), sql`${usageEntities.kind} IN ('agent','member')`))
    .groupBy(usageEntities.kind);
  const [tasks] = await tx.select({ n: count() }).from(usageEntities)
    .where(and(eq(usageEntities.orgId, orgId), eq(usageEntities.kind, 'task'), gte(usageEntities.createdAt, monthStart())));
  const of = (k: string) => Number(rows.find((r) => r.kind === k)?.n ?? 0);
  return { agents: of('agent'), seats: of('member'), tasks_this_month: Number(tasks?.n ?? 0) };
}

export interface Violation { resource: 'agents' | 'seats' | 'tasks_per_month'; current: number; limit: number; excess: number }

export function violations(usage: Usage, limits: Limits): Violation[] {
  const out: Violation[] = [];
  const checkOne = (resource: Violation['resource'], current: number, limit: number | null) => {
    if (limit !== null && current > limit) out.push({ resource, current, limit, excess: current - limit });
  };
  checkOne('agents', usage.agents, limits.agents);
  checkOne('seats', usage.seats, limits.seats);
  checkOne('tasks_per_month', usage.tasks_this_month, limits.tasks_per_month);
  return out;
}

/**
 * A deleted organization must never be billed again: its Stripe subscription is cancelled now
 * (idempotency key per org, so a redelivered event sends the same request) and the plan is Free.
 */
export async function endPlanOfDeletedOrg(deps: Pick<Ctx, 'outbox' | 'config'>, tx: Executor, orgId: string, meta: EventMeta) {
  const row = await findSubscription(tx, orgId, true);
  if (!row || (row.tier === 'free' && row.status === 'canceled')) return;
  if (row.stripeSubscriptionId && LIVE_STATUSES.has(row.status) && stripeConfigured(deps)) {
    try {
      await stripeClient(deps).subscriptions.cancel(row.stripeSubscriptionId, {}, { idempotencyKey: `aos-org-deleted-${orgId}` });
    } catch (err) {
      // Already cancelled or unknown to Stripe: nothing left to stop. Anything else is retried.
      if (!(err instanceof Stripe.errors.StripeInvalidRequestError)) throw err;
    }
  }
  await applySubscription(deps, tx, orgId, { tier: 'free', status: 'canceled', pendingTier: null, pendingAt: null, cancelAtPeriodEnd: false }, meta);
}
