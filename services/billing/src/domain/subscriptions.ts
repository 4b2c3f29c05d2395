import type { EventMeta } from '@aos/bus';
import { limitsPayload } from '@aos/contracts';
import { conflict } from '@aos/core';
import type { Executor } from '@aos/db';
import { and, count, eq, gte, sql } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { subscriptions, usageEntities } from '../db/schema.js';
import { limitsOf, Tiers, TierSlugs, type Limits, type TierSlug } from './catalog.js';
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

/** The limits that apply to the organization: its tier's, with a managed plan's negotiated ones. */
export const effectiveLimits = (row: SubscriptionRow | undefined): Limits => limitsOf(effectiveTier(row), row?.customLimits as Partial<Limits> | null);

/** A plan a platform admin manages is changed only by them (409), not through checkout or change-plan. */
export function refuseManaged(row: SubscriptionRow | undefined) {
  if (row?.managed) {
    throw conflict(`The organization's ${Tiers[effectiveTier(row)].name} plan is managed by the AOS team; contact support to change it`, [{ tier: row.tier, managed: true }]);
  }
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
  /** A platform admin's plan (see `managed` on the row); false hands the organization back to self-serve. */
  managed?: boolean;
  managedBy?: string | null;
  managedNote?: string | null;
  customLimits?: Partial<Limits> | null;
  /** Monthly revenue of the plan when it is not the catalogue price (a managed contract). */
  mrrCents?: number;
}

/**
 * Writes the organization's subscription state and, when tier, status or limits changed, emits
 * `billing.subscription.changed` in the same transaction (the gateway's rate-limit tier follows).
 */
export async function applySubscription(deps: Deps, tx: Executor, orgId: string, change: TierChange, meta: EventMeta): Promise<SubscriptionRow> {
  const before = await findSubscription(tx, orgId, true);
  const previousTier = effectiveTier(before);
  const previousStatus = before?.status ?? 'active';
  const billing = change.status === 'active' || change.status === 'trialing' || change.status === 'past_due';
  const managed = change.managed ?? before?.managed ?? false;
  const values = {
    tier: change.tier,
    status: change.status,
    mrrCents: !billing ? 0 : change.mrrCents ?? (managed ? before?.mrrCents ?? 0 : Tiers[change.tier].price_cents ?? 0),
    updatedAt: new Date(),
    ...(change.managed !== undefined ? { managed: change.managed } : {}),
    ...(change.managedBy !== undefined ? { managedBy: change.managedBy } : {}),
    ...(change.managedNote !== undefined ? { managedNote: change.managedNote } : {}),
    ...(change.customLimits !== undefined ? { customLimits: change.customLimits } : {}),
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
  const limits = effectiveLimits(row);
  const limitsChanged = JSON.stringify(limits) !== JSON.stringify(effectiveLimits(before));
  if (!before || previousTier !== change.tier || previousStatus !== change.status || limitsChanged) {
    await announcePlan(deps, tx, row!, before ? previousTier : 'free', meta);
  }
  return row!;
}

/** `billing.subscription.changed` with the plan `row` now has: the gateway and the enforcing services follow it. */
async function announcePlan(deps: Deps, tx: Executor, row: SubscriptionRow, previousTier: TierSlug, meta: EventMeta) {
  await deps.outbox.enqueue(tx, 'billing.subscription.changed', {
    subscriptionId: row.stripeSubscriptionId, tier: effectiveTier(row), previousTier,
    status: row.status, userId: meta.actor.type === 'user' ? meta.actor.id : null, effectiveAt: new Date().toISOString(),
    limits: limitsPayload(effectiveLimits(row)),
  }, { ...meta, tenantId: meta.tenantId ?? row.tenantId, orgId: row.orgId });
}

/**
 * Announces every organization's current plan again (an operator's action): services that start
 * enforcing plan limits, or lost their projection, learn plans decided longer ago than the
 * stream keeps events. Harmless to repeat: each is the current state, and the newest wins.
 */
export async function announceAllPlans(deps: Deps, tx: Executor, meta: EventMeta): Promise<number> {
  const rows = await tx.select().from(subscriptions);
  for (const row of rows) await announcePlan(deps, tx, row, effectiveTier(row), meta);
  return rows.length;
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
    await cancelStripeSubscription(deps, row.stripeSubscriptionId, `aos-org-deleted-${orgId}`);
  }
  await applySubscription(deps, tx, orgId, {
    tier: 'free', status: 'canceled', pendingTier: null, pendingAt: null, cancelAtPeriodEnd: false, managed: false, customLimits: null,
  }, meta);
}

/** Cancels a Stripe subscription now; one already cancelled or unknown to Stripe has nothing left to stop. */
export async function cancelStripeSubscription(deps: Pick<Ctx, 'config'>, subscriptionId: string, idempotencyKey: string) {
  try {
    await stripeClient(deps).subscriptions.cancel(subscriptionId, {}, { idempotencyKey });
  } catch (err) {
    if (!(err instanceof Stripe.errors.StripeInvalidRequestError)) throw err;
  }
}
