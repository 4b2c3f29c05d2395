import { systemMeta, type EventMeta } from '@aos/bus';
import type { Executor } from '@aos/db';
import { and, eq, inArray, sql } from 'drizzle-orm';
import type Stripe from 'stripe';
import type { Ctx } from '../service.js';
import { autoTopupRuns, customers, ledgerEntries } from '../db/schema.js';
import { findPackage, Tiers, type Ledger, type TierSlug } from './catalog.js';
import { bookUsage, lockAccount, post, REVERSAL_ACTION } from './ledger.js';
import { applySubscription, findSubscription, isTier, type SubscriptionRow } from './subscriptions.js';

type Deps = Pick<Ctx, 'outbox' | 'config'>;
type Outcome = string;

const idOf = (v: string | { id: string } | null | undefined): string | null => (typeof v === 'string' ? v : v?.id ?? null);

async function orgOfCustomer(tx: Executor, customerId: string | null): Promise<{ orgId: string; tenantId: string | null } | null> {
  if (!customerId) return null;
  const [row] = await tx.select().from(customers).where(eq(customers.stripeCustomerId, customerId));
  return row ? { orgId: row.orgId, tenantId: row.tenantId } : null;
}

export async function rememberCustomer(tx: Executor, orgId: string, tenantId: string | null, stripeCustomerId: string) {
  await tx.insert(customers).values({ orgId, tenantId, stripeCustomerId }).onConflictDoNothing();
}

/**
 * Tier of a Stripe subscription: its price when it is one of the configured plan prices (a
 * plan switched in the customer portal changes only the price), else our metadata.
 */
function tierOfSubscription(deps: Deps, sub: Stripe.Subscription): TierSlug | null {
  const priceId = sub.items?.data?.[0]?.price?.id;
  if (priceId && priceId === deps.config.STRIPE_PRICE_PRO) return 'pro';
  if (priceId && priceId === deps.config.STRIPE_PRICE_TEAMS) return 'teams';
  const fromMeta = sub.metadata?.tier;
  return isTier(fromMeta) ? fromMeta : null;
}

/** A new billing period that starts this close to the scheduled time counts as the period end. */
const PERIOD_SLACK_MS = 60_000;

interface PendingOutcome { tier: TierSlug; pendingTier: TierSlug | null; pendingAt: Date | null }

/**
 * What a subscription update means for a downgrade scheduled at period end. Stripe is the
 * truth for what the customer pays, so a change made there after the request (the cancellation
 * withdrawn, another plan picked in the portal) withdraws it; an older state never does.
 */
function resolvePending(row: SubscriptionRow, stripeTier: TierSlug, sub: Stripe.Subscription, eventCreated: number, periodStart: Date | null): PendingOutcome {
  const pendingTier = row.pendingTier as TierSlug;
  const pendingAt = row.pendingAt!;
  const current = row.tier as TierSlug;
  const newerThanRequest = eventCreated > row.pendingRequestedAt;
  const due = pendingAt.getTime() <= Date.now() || (periodStart !== null && periodStart.getTime() >= pendingAt.getTime() - PERIOD_SLACK_MS);
  const keep = { tier: current, pendingTier, pendingAt };
  if (pendingTier === 'free') {
    // Stripe ends the subscription at period end (customer.subscription.deleted) unless the cancellation is withdrawn.
    if (!sub.cancel_at_period_end && newerThanRequest) return { tier: stripeTier, pendingTier: null, pendingAt: null };
    return keep;
  }
  if (stripeTier === pendingTier) return due ? { tier: pendingTier, pendingTier: null, pendingAt: null } : keep;
  if (newerThanRequest) return { tier: stripeTier, pendingTier: null, pendingAt: null };
  return keep;
}

export function periodOf(sub: Stripe.Subscription): { start: Date | null; end: Date | null } {
  const s = sub as unknown as { current_period_start?: number; current_period_end?: number };
  const item = sub.items?.data?.[0] as unknown as { current_period_start?: number; current_period_end?: number } | undefined;
  const start = s.current_period_start ?? item?.current_period_start;
  const end = s.current_period_end ?? item?.current_period_end;
  return { start: start ? new Date(start * 1000) : null, end: end ? new Date(end * 1000) : null };
}

const ENDED = new Set(['canceled', 'incomplete_expired']);

/** A platform admin's plan is not Stripe's to change (self-serve checkout and change-plan are refused too). */
const MANAGED = 'ignored: plan managed by a platform admin';

const INCLUDED_TOKENS = 'included_tokens';

/** Included tokens granted since the current period's own grant (itself included). */
async function includedThisPeriod(tx: Executor, orgId: string): Promise<number> {
  const res = await tx.execute<{ s: string }>(sql`
    SELECT COALESCE(sum(amount), 0)::text AS s FROM billing_ledger_entries
    WHERE org_id = ${orgId} AND ledger = 'tokens' AND type = 'bonus' AND action = ${INCLUDED_TOKENS}
      AND id >= COALESCE((
        SELECT max(id) FROM billing_ledger_entries
        WHERE org_id = ${orgId} AND ledger = 'tokens' AND type = 'bonus' AND action = ${INCLUDED_TOKENS}
          AND COALESCE(metadata->>'billing_reason', '') <> 'subscription_update'), 0)`);
  return Number(res.rows[0]?.s ?? 0);
}

/**
 * Applies one verified Stripe event inside the caller's transaction (which also records the
 * event id). Never trusts delivery order: subscription state carries the `created` time of
 * the event that set it, and an older event never overwrites a newer state.
 */
export async function applyStripeEvent(deps: Deps, tx: Executor, event: Stripe.Event): Promise<{ orgId: string | null; outcome: Outcome }> {
  switch (event.type) {
    case 'checkout.session.completed': {
      const session = event.data.object;
      const orgId = session.client_reference_id ?? session.metadata?.org_id ?? null;
      if (!orgId) return { orgId: null, outcome: 'ignored: no organization' };
      const tenantId = session.metadata?.tenant_id ?? null;
      const customerId = idOf(session.customer);
      if (customerId) await rememberCustomer(tx, orgId, tenantId, customerId);
      if (session.mode !== 'subscription') return { orgId, outcome: 'ignored: not a subscription checkout' };
      const tier = session.metadata?.tier;
      if (!isTier(tier)) return { orgId, outcome: 'ignored: no tier' };
      const meta = systemMeta(tenantId, orgId);
      const row = await findSubscription(tx, orgId, true);
      const subId = idOf(session.subscription);
      if (row?.managed) return { orgId, outcome: MANAGED };
      if (row && row.stripeStateAt > event.created) {
        if (!row.stripeSubscriptionId && subId) await applySubscription(deps, tx, orgId, { tier: row.tier as TierSlug, status: row.status, stripeSubscriptionId: subId }, meta);
        return { orgId, outcome: 'stale: newer subscription state kept' };
      }
      await applySubscription(deps, tx, orgId, {
        tier, status: 'active', stripeSubscriptionId: subId, stripeCustomerId: customerId, stripeStateAt: event.created,
        pendingTier: null, pendingAt: null, cancelAtPeriodEnd: false, tenantId,
      }, meta);
      return { orgId, outcome: 'subscription activated' };
    }
    case 'customer.subscription.created':
    case 'customer.subscription.updated':
    case 'customer.subscription.deleted': {
      const sub = event.data.object;
      const owner = sub.metadata?.org_id
        ? { orgId: sub.metadata.org_id, tenantId: sub.metadata.tenant_id ?? null }
        : await orgOfCustomer(tx, idOf(sub.customer));
      if (!owner) return { orgId: null, outcome: 'ignored: unknown customer' };
      const { orgId, tenantId } = owner;
      const meta = systemMeta(tenantId, orgId);
      const row = await findSubscription(tx, orgId, true);
      if (row?.managed) return { orgId, outcome: MANAGED };
      if (row && row.stripeStateAt > event.created) return { orgId, outcome: 'stale: newer subscription state kept' };
      if (row?.stripeSubscriptionId && row.stripeSubscriptionId !== sub.id && !ENDED.has(row.status)) {
        return { orgId, outcome: 'ignored: not the current subscription' };
      }
      const customerId = idOf(sub.customer);
      if (customerId) await rememberCustomer(tx, orgId, tenantId, customerId);
      const { start, end } = periodOf(sub);
      if (event.type === 'customer.subscription.deleted' || ENDED.has(sub.status)) {
        await applySubscription(deps, tx, orgId, {
          tier: 'free', status: 'canceled', stripeSubscriptionId: sub.id, stripeCustomerId: customerId,
          stripeStateAt: event.created, pendingTier: null, pendingAt: null, cancelAtPeriodEnd: false, tenantId,
        }, meta);
        return { orgId, outcome: 'subscription ended' };
      }
      const stripeTier = tierOfSubscription(deps, sub) ?? (row && isTier(row.tier) ? row.tier : null);
      if (!stripeTier) return { orgId, outcome: 'ignored: no tier' };
      // A scheduled downgrade is already priced in Stripe; the plan itself changes at period end.
      const { tier, pendingTier, pendingAt } = row?.pendingTier && row.pendingAt && isTier(row.pendingTier) && isTier(row.tier)
        ? resolvePending(row, stripeTier, sub, event.created, start)
        : { tier: stripeTier, pendingTier: null, pendingAt: null };
      await applySubscription(deps, tx, orgId, {
        tier, status: sub.status, stripeSubscriptionId: sub.id, stripeCustomerId: customerId,
        currentPeriodStart: start, currentPeriodEnd: end, cancelAtPeriodEnd: sub.cancel_at_period_end,
        stripeStateAt: event.created, pendingTier, pendingAt, tenantId,
      }, meta);
      return { orgId, outcome: `subscription ${sub.status}` };
    }
    case 'invoice.paid':
    case 'invoice.payment_failed': {
      const invoice = event.data.object;
      // The first invoice is often paid before checkout.session.completed arrives: the
      // subscription's metadata (ours) names org and tier either way.
      const details = invoice as unknown as { subscription_details?: { metadata?: Record<string, string> | null }; parent?: { subscription_details?: { metadata?: Record<string, string> | null } | null } | null };
      const subMeta = details.parent?.subscription_details?.metadata ?? details.subscription_details?.metadata ?? {};
      const owner = await orgOfCustomer(tx, idOf(invoice.customer))
        ?? (subMeta.org_id ? { orgId: subMeta.org_id, tenantId: subMeta.tenant_id ?? null } : null);
      if (!owner) return { orgId: null, outcome: 'ignored: unknown customer' };
      const { orgId, tenantId } = owner;
      const meta = systemMeta(tenantId, orgId);
      const row = await findSubscription(tx, orgId, true);
      if (event.type === 'invoice.paid') {
        await deps.outbox.enqueue(tx, 'billing.payment.succeeded', { stripeObjectId: invoice.id!, amountCents: invoice.amount_paid, currency: invoice.currency, userId: null }, meta);
        if (row?.managed) return { orgId, outcome: `invoice paid; ${MANAGED}` };
        const tier = isTier(subMeta.tier) ? subMeta.tier : row && isTier(row.tier) ? row.tier : null;
        const included = tier ? Tiers[tier].limits.included_tokens : null;
        if (included && invoice.amount_paid > 0) {
          // A new period (create, cycle) grants the tier's tokens; a mid-period upgrade tops the period up to the new tier's amount.
          const billingReason = invoice.billing_reason ?? null;
          const grant = billingReason === 'subscription_update' ? included - await includedThisPeriod(tx, orgId) : included;
          if (grant > 0) {
            await post(deps, tx, { orgId, ledger: 'tokens', type: 'bonus', amount: grant, referenceId: `invoice:${invoice.id}`, action: INCLUDED_TOKENS, metadata: { tier, billing_reason: billingReason } }, meta);
          }
        }
        if (row && isTier(row.tier)) {
          if (row.status === 'past_due' && row.stripeStateAt <= event.created) {
            await applySubscription(deps, tx, orgId, { tier: row.tier, status: 'active', stripeStateAt: event.created }, meta);
          }
        }
        return { orgId, outcome: 'invoice paid' };
      }
      await deps.outbox.enqueue(tx, 'billing.payment.failed', {
        stripeObjectId: invoice.id!, amountCents: invoice.amount_due, currency: invoice.currency,
        reason: invoice.last_finalization_error?.message ?? null, userId: null, email: invoice.customer_email ?? null,
      }, meta);
      if (row && !row.managed && isTier(row.tier) && row.status !== 'canceled' && row.stripeStateAt <= event.created) {
        await applySubscription(deps, tx, orgId, { tier: row.tier, status: 'past_due', stripeStateAt: event.created }, meta);
      }
      return { orgId, outcome: 'invoice payment failed' };
    }
    case 'payment_intent.succeeded': {
      const pi = event.data.object;
      const orgId = pi.metadata?.org_id;
      if (!orgId) return { orgId: null, outcome: 'ignored: no organization' };
      const meta: EventMeta = systemMeta(pi.metadata.tenant_id ?? null, orgId);
      const result = await creditPaymentIntent(deps, tx, pi, meta);
      return { orgId, outcome: result };
    }
    case 'payment_intent.payment_failed': {
      // An off-session top-up that needed the customer (3-D Secure) and then failed, or a package payment that failed.
      const pi = event.data.object;
      const orgId = pi.metadata?.org_id;
      if (!orgId) return { orgId: null, outcome: 'ignored: no organization' };
      const reason = pi.last_payment_error?.message ?? 'payment failed';
      const crossingId = pi.metadata?.crossing_id;
      if (crossingId) {
        const failed = await tx.update(autoTopupRuns).set({ status: 'failed', reason, paymentIntentId: pi.id, updatedAt: new Date() })
          .where(and(eq(autoTopupRuns.crossingId, crossingId), eq(autoTopupRuns.orgId, orgId), inArray(autoTopupRuns.status, ['pending', 'processing']))).returning({ id: autoTopupRuns.id });
        if (failed.length === 0) return { orgId, outcome: 'ignored: top-up already settled' };
      }
      await deps.outbox.enqueue(tx, 'billing.payment.failed', {
        stripeObjectId: pi.id, amountCents: pi.amount, currency: pi.currency, reason, userId: null, email: pi.receipt_email ?? null,
      }, systemMeta(pi.metadata.tenant_id ?? null, orgId));
      return { orgId, outcome: crossingId ? 'auto top-up failed' : 'payment failed' };
    }
    case 'charge.refunded':
      return reversePurchase(deps, tx, event.data.object);
    default:
      return { orgId: null, outcome: 'ignored: unhandled type' };
  }
}

/**
 * Credits a succeeded package payment once (reference = payment intent id); shared by the
 * webhook and the off-session top-up job, whichever sees the success first.
 */
export async function creditPaymentIntent(deps: Deps, tx: Executor, pi: Stripe.PaymentIntent, meta: EventMeta): Promise<string> {
  const orgId = meta.orgId!;
  const ledger = pi.metadata?.ledger as Ledger | undefined;
  const pkg = pi.metadata?.package_slug ? findPackage(pi.metadata.package_slug, ledger) : undefined;
  if (!pkg) return 'ignored: not a package purchase';
  const pm = idOf(pi.payment_method as string | { id: string } | null);
  const customerId = idOf(pi.customer as string | { id: string } | null);
  if (pm && customerId) {
    await tx.update(customers).set({ defaultPaymentMethodId: pm }).where(and(eq(customers.orgId, orgId), eq(customers.stripeCustomerId, customerId)));
  }
  const crossingId = pi.metadata?.crossing_id;
  const res = await post(deps, tx, {
    orgId, ledger: pkg.ledger, type: 'purchase', amount: pkg.amount, referenceId: pi.id, action: crossingId ? 'auto_topup' : 'package_purchase',
    metadata: { package_slug: pkg.slug, price_cents: pi.amount, ...(crossingId ? { crossing_id: crossingId } : {}) },
  }, meta);
  if (res?.replayed) return 'already credited';
  await deps.outbox.enqueue(tx, 'billing.payment.succeeded', { stripeObjectId: pi.id, amountCents: pi.amount, currency: pi.currency, userId: null }, meta);
  if (crossingId) {
    await tx.update(autoTopupRuns).set({ status: 'succeeded', paymentIntentId: pi.id, updatedAt: new Date() }).where(eq(autoTopupRuns.crossingId, crossingId));
    await deps.outbox.enqueue(tx, 'billing.topup.completed', { ledger: pkg.ledger, amount: pkg.amount, paymentIntentId: pi.id }, meta);
  }
  return `credited ${pkg.amount} ${pkg.ledger}`;
}

/**
 * A refunded package purchase takes its tokens (or credits) back in proportion to what was
 * refunded (all of them for a full refund). `amount_refunded` is cumulative, so each event
 * reverses up to its total (reference `refund:<payment intent>:<total>`): replays and older
 * partial refunds arriving late take nothing more. Tokens already spent are owed, like usage
 * beyond the balance, and the next credit settles them.
 */
async function reversePurchase(deps: Deps, tx: Executor, charge: Stripe.Charge): Promise<{ orgId: string | null; outcome: Outcome }> {
  const paymentIntent = idOf(charge.payment_intent as string | { id: string } | null);
  if (!paymentIntent) return { orgId: null, outcome: 'ignored: not a payment intent charge' };
  const [purchase] = await tx.select().from(ledgerEntries)
    .where(and(eq(ledgerEntries.type, 'purchase'), eq(ledgerEntries.referenceId, paymentIntent), inArray(ledgerEntries.ledger, ['tokens', 'credits'])));
  if (!purchase) return { orgId: null, outcome: 'ignored: not a credited package purchase' };
  const { orgId } = purchase;
  const total = charge.amount;
  const refunded = charge.amount_refunded;
  if (!Number.isSafeInteger(total) || !Number.isSafeInteger(refunded) || total <= 0 || refunded < 0 || refunded > total) {
    return { orgId, outcome: 'ignored: invalid refund amounts' };
  }
  const target = refunded === total ? purchase.amount : Math.floor((purchase.amount * refunded) / total);
  const prefix = `refund:${paymentIntent}:`;
  // Two refund events of one charge serialise here, so what is already reversed is current.
  await lockAccount(tx, orgId, purchase.ledger as Ledger);
  const [done] = await tx.select({ s: sql<string>`COALESCE(sum(abs(${ledgerEntries.amount})), 0)::text` }).from(ledgerEntries).where(and(
    eq(ledgerEntries.orgId, orgId), eq(ledgerEntries.action, REVERSAL_ACTION), sql`${ledgerEntries.type} IN ('reversal', 'overdraft')`,
    sql`starts_with(${ledgerEntries.referenceId}, ${prefix})`,
  ));
  const amount = target - Number(done?.s ?? 0);
  if (amount <= 0) return { orgId, outcome: 'refund already reversed' };
  const meta = systemMeta(charge.metadata?.tenant_id ?? null, orgId);
  const res = await bookUsage(deps, tx, {
    orgId, ledger: purchase.ledger as Ledger, type: 'reversal', amount, referenceId: `${prefix}${target}`, action: REVERSAL_ACTION,
    metadata: { charge_id: charge.id, payment_intent_id: paymentIntent, refunded_cents: refunded, charged_cents: total, purchase_entry_id: purchase.id },
  }, meta);
  return { orgId, outcome: `reversed ${amount} ${purchase.ledger}${res.shortfall > 0 ? ` (${res.shortfall} owed)` : ''}` };
}
