import { metaFromPrincipal } from '@aos/bus';
import { conflict, unprocessable } from '@aos/core';
import { Envelope, Nullable, ok, orgOf, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, eq, gte, sql } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import type { Ctx } from '../service.js';
import { costRecords, ledgerEntries } from '../db/schema.js';
import { usedTokens } from '../domain/ledger.js';
import { LimitsSchema, Tiers, TierSlugSchema, type TierSlug } from '../domain/catalog.js';
import { balanceOf } from '../domain/ledger.js';
import { createCheckout, priceIdOf } from '../domain/payments.js';
import { callStripe, paymentsNotConfigured, stripeClient } from '../domain/stripe.js';
import { applyDuePending, applySubscription, effectiveLimits, effectiveTier, isTier, LIVE_STATUSES, monthStart, refuseManaged, usageOf, violations, type SubscriptionRow } from '../domain/subscriptions.js';
import { periodOf } from '../domain/webhook.js';
import { schedulePlanChangeSafely } from '../jobs/plan-changes.js';


export const SubscriptionSchema = Type.Object({
  org_id: Type.String(), tier: Type.String(), tier_name: Type.String(), status: Type.String(), is_default: Type.Boolean(),
  price_cents: Nullable(Type.Integer()), stripe_subscription_id: Nullable(Type.String()), stripe_customer_id: Nullable(Type.String()),
  current_period_start: Nullable(Type.String()), current_period_end: Nullable(Type.String()), cancel_at_period_end: Type.Boolean(),
  pending_tier: Nullable(Type.String()), pending_at: Nullable(Type.String()), limits: LimitsSchema,
  managed: Type.Boolean({ description: 'set by a platform admin (e.g. an Enterprise contract): self-serve changes are refused' }),
  mrr_cents: Type.Integer(), updated_at: Nullable(Type.String()),
});

export function subscriptionView(orgId: string, row: SubscriptionRow | undefined) {
  const tier = effectiveTier(row);
  return {
    org_id: orgId, tier, tier_name: Tiers[tier].name, status: row?.status ?? 'active', is_default: !row,
    price_cents: Tiers[tier].price_cents, stripe_subscription_id: row?.stripeSubscriptionId ?? null, stripe_customer_id: row?.stripeCustomerId ?? null,
    current_period_start: row?.currentPeriodStart?.toISOString() ?? null, current_period_end: row?.currentPeriodEnd?.toISOString() ?? null,
    cancel_at_period_end: row?.cancelAtPeriodEnd ?? false, pending_tier: row?.pendingTier ?? null, pending_at: row?.pendingAt?.toISOString() ?? null,
    limits: effectiveLimits(row), managed: row?.managed ?? false, mrr_cents: row?.mrrCents ?? 0, updated_at: row?.updatedAt.toISOString() ?? null,
  };
}

const ViolationSchema = Type.Object({ resource: Type.String(), current: Type.Integer(), limit: Type.Integer(), excess: Type.Integer() });
const UsageSchema = Type.Object({ agents: Type.Integer(), seats: Type.Integer(), tasks_this_month: Type.Integer() });
const TierBody = Type.Object({ tier: TierSlugSchema }, { additionalProperties: false });

export async function subscriptionRoutes(app: App, ctx: Ctx) {
  const current = async (request: FastifyRequest) => {
    const orgId = orgOf(request);
    const row = await ctx.db.transaction((tx) => applyDuePending(ctx, tx, orgId, metaFromPrincipal(request.principal)));
    return { orgId, row };
  };

  app.get('/billing/subscription', {
    config: { scope: 'billing:read' },
    schema: { tags: ['Billing'], summary: "The organization's subscription (Free when it never subscribed)", response: { 200: Envelope(SubscriptionSchema) } },
  }, async (request) => {
    const { orgId, row } = await current(request);
    return ok(subscriptionView(orgId, row));
  });

  app.post('/billing/validate-downgrade', {
    config: { scope: 'billing:read' },
    schema: {
      tags: ['Billing'], summary: "Whether current usage fits the target tier's limits", body: TierBody,
      response: { 200: Envelope(Type.Object({ current_tier: Type.String(), target_tier: Type.String(), is_downgrade: Type.Boolean(), allowed: Type.Boolean(), violations: Type.Array(ViolationSchema), usage: UsageSchema, limits: LimitsSchema })) },
    },
  }, async (request) => {
    const { orgId, row } = await current(request);
    const target = request.body.tier as TierSlug;
    const cur = effectiveTier(row);
    const usage = await usageOf(ctx.db, orgId);
    const v = violations(usage, Tiers[target].limits);
    return ok({ current_tier: cur, target_tier: target, is_downgrade: Tiers[target].rank < Tiers[cur].rank, allowed: v.length === 0, violations: v, usage, limits: Tiers[target].limits });
  });

  app.post('/billing/change-plan', {
    config: { scope: 'billing:write', minRole: 'admin' },
    schema: {
      tags: ['Billing'], summary: 'Upgrade now (or start checkout), downgrade at period end (422 when usage exceeds the target limits)',
      body: Type.Object({ tier: TierSlugSchema, success_url: Type.Optional(Type.String({ format: 'uri', maxLength: 2000 })), cancel_url: Type.Optional(Type.String({ format: 'uri', maxLength: 2000 })) }, { additionalProperties: false }),
      response: {
        200: Envelope(Type.Object({
          action: Type.Union([Type.Literal('upgraded'), Type.Literal('upgrade_pending_payment'), Type.Literal('checkout_required'), Type.Literal('downgrade_scheduled'), Type.Literal('downgraded'), Type.Literal('pending_change_cancelled')]),
          effective_at: Nullable(Type.String()), checkout: Nullable(Type.Object({ session_id: Type.String(), url: Nullable(Type.String()) })), subscription: SubscriptionSchema,
        })),
      },
    },
  }, async (request) => {
    const { orgId, row } = await current(request);
    const meta = metaFromPrincipal(request.principal);
    const target = request.body.tier as TierSlug;
    const cur = effectiveTier(row);
    refuseManaged(row);
    if (target === 'enterprise') throw unprocessable('The Enterprise plan is arranged with sales', [{ tier: target }]);
    if (target === cur) {
      if (row?.pendingTier) {
        const updated = await ctx.db.transaction(async (tx) => {
          const stripeSub = row.stripeSubscriptionId && LIVE_STATUSES.has(row.status) ? row.stripeSubscriptionId : null;
          if (stripeSub) await restorePrice(ctx, stripeSub, cur, orgId);
          return applySubscription(ctx, tx, orgId, { tier: cur, status: row.status, pendingTier: null, pendingAt: null, cancelAtPeriodEnd: false }, meta);
        });
        return ok({ action: 'pending_change_cancelled' as const, effective_at: null, checkout: null, subscription: subscriptionView(orgId, updated) });
      }
      throw conflict(`The organization is already on the ${Tiers[cur].name} plan`, [{ tier: cur }]);
    }
    const stripeSub = row?.stripeSubscriptionId && LIVE_STATUSES.has(row.status) ? row.stripeSubscriptionId : null;
    const upgrade = Tiers[target].rank > Tiers[cur].rank;

    if (upgrade) {
      if (!stripeSub) {
        const checkout = await createCheckout(ctx, { orgId, tenantId: request.principal.tenantId }, target, request.body);
        return ok({ action: 'checkout_required' as const, effective_at: null, checkout: { session_id: checkout.session_id, url: checkout.url }, subscription: subscriptionView(orgId, row) });
      }
      const stripe = stripeClient(ctx);
      const price = requirePrice(ctx, target);
      const sub = await callStripe(() => stripe.subscriptions.retrieve(stripeSub));
      // The new price applies only once its prorated invoice is paid: a declined card leaves the
      // plan as it is (Stripe keeps the change in `pending_update`, the webhook applies it if paid).
      const changed = await callStripe(() => stripe.subscriptions.update(stripeSub, {
        items: [{ id: sub.items.data[0]!.id, price }], proration_behavior: 'always_invoice', payment_behavior: 'pending_if_incomplete',
      }));
      if (changed.pending_update) {
        return ok({ action: 'upgrade_pending_payment' as const, effective_at: null, checkout: null, subscription: subscriptionView(orgId, row) });
      }
      // pending_if_incomplete accepts no other parameters: metadata and a withdrawn cancellation follow separately.
      await callStripe(() => stripe.subscriptions.update(stripeSub, { cancel_at_period_end: false, metadata: { ...sub.metadata, org_id: orgId, tier: target } }));
      const updated = await ctx.db.transaction((tx) => applySubscription(ctx, tx, orgId, { tier: target, status: row!.status, pendingTier: null, pendingAt: null, cancelAtPeriodEnd: false }, meta));
      return ok({ action: 'upgraded' as const, effective_at: new Date().toISOString(), checkout: null, subscription: subscriptionView(orgId, updated) });
    }

    const usage = await usageOf(ctx.db, orgId);
    const v = violations(usage, Tiers[target].limits);
    if (v.length > 0) throw unprocessable(`Current usage exceeds the ${Tiers[target].name} plan's limits`, v);
    if (!stripeSub) {
      const updated = await ctx.db.transaction((tx) => applySubscription(ctx, tx, orgId, { tier: target, status: target === 'free' ? 'canceled' : row?.status ?? 'active', pendingTier: null, pendingAt: null }, meta));
      return ok({ action: 'downgraded' as const, effective_at: new Date().toISOString(), checkout: null, subscription: subscriptionView(orgId, updated) });
    }
    const stripe = stripeClient(ctx);
    const price = target === 'free' ? null : requirePrice(ctx, target);
    // Stripe knows the period end even when no subscription event has told us yet.
    const sub = await callStripe(() => stripe.subscriptions.retrieve(stripeSub));
    const periodEnd = row!.currentPeriodEnd ?? periodOf(sub).end;
    const effectiveAt = periodEnd && periodEnd > new Date() ? periodEnd : new Date();
    // The intent is recorded before Stripe is told, so the webhook echoing the new price finds it
    // pending (and does not apply it at once); a Stripe failure restores the previous state.
    const updated = await ctx.db.transaction((tx) => applySubscription(ctx, tx, orgId, {
      tier: cur, status: row!.status, pendingTier: target, pendingAt: effectiveAt, pendingRequestedAt: Math.floor(Date.now() / 1000), cancelAtPeriodEnd: target === 'free',
    }, meta));
    try {
      if (target === 'free') {
        await callStripe(() => stripe.subscriptions.update(stripeSub, { cancel_at_period_end: true }));
      } else {
        await callStripe(() => stripe.subscriptions.update(stripeSub, {
          items: [{ id: sub.items.data[0]!.id, price: price! }], proration_behavior: 'none', cancel_at_period_end: false, metadata: { ...sub.metadata, org_id: orgId, tier: target },
        }));
      }
    } catch (err) {
      await ctx.db.transaction((tx) => applySubscription(ctx, tx, orgId, {
        tier: cur, status: row!.status, pendingTier: isTier(row!.pendingTier) ? row!.pendingTier : null, pendingAt: row!.pendingAt, pendingRequestedAt: row!.pendingRequestedAt, cancelAtPeriodEnd: row!.cancelAtPeriodEnd,
      }, meta));
      throw err;
    }
    await schedulePlanChangeSafely(ctx, orgId, effectiveAt);
    return ok({ action: 'downgrade_scheduled' as const, effective_at: effectiveAt.toISOString(), checkout: null, subscription: subscriptionView(orgId, updated) });
  });

  app.get('/billing/usage', {
    config: { scope: 'billing:read' },
    schema: {
      tags: ['Billing'], summary: 'Current period usage, tier and limits',
      response: {
        200: Envelope(Type.Object({
          tier: Type.String(), period_start: Type.String(), period_end: Nullable(Type.String()), limits: LimitsSchema,
          usage: Type.Object({ agents: Type.Integer(), seats: Type.Integer(), tasks_this_month: Type.Integer(), tokens_consumed: Type.Integer(), agent_runs: Type.Integer(), ai_cost_usd: Type.Number() }),
        })),
      },
    },
  }, async (request) => {
    const { orgId, row } = await current(request);
    const from = row?.currentPeriodStart && row.currentPeriodStart > monthStart() ? row.currentPeriodStart : monthStart();
    const [usage, consumed, runs] = await Promise.all([usageOf(ctx.db, orgId), tokensConsumedSince(ctx, orgId, from), runsSince(ctx, orgId, from)]);
    const tier = effectiveTier(row);
    return ok({
      tier, period_start: from.toISOString(), period_end: row?.currentPeriodEnd?.toISOString() ?? null, limits: effectiveLimits(row),
      usage: { ...usage, tokens_consumed: consumed, agent_runs: runs.n, ai_cost_usd: runs.cost },
    });
  });

  const Metric = Type.Object({ used: Type.Integer(), limit: Nullable(Type.Integer()), remaining: Nullable(Type.Integer()), percent: Nullable(Type.Number()) });
  app.get('/billing/plan-summary', {
    config: { scope: 'billing:read' },
    schema: {
      tags: ['Billing'], summary: 'Plan limits with current usage',
      response: {
        200: Envelope(Type.Object({
          subscription: SubscriptionSchema,
          metrics: Type.Object({ agents: Metric, seats: Metric, tasks_per_month: Metric }),
          rate_limits: Type.Object({ requests_per_minute: Nullable(Type.Integer()), requests_per_hour: Nullable(Type.Integer()) }),
          tokens: Type.Object({ balance: Type.Integer(), owed: Type.Integer(), included_per_period: Nullable(Type.Integer()), consumed_this_month: Type.Integer() }),
          credits: Type.Object({ balance_cents: Type.Integer(), owed_cents: Type.Integer() }),
        })),
      },
    },
  }, async (request) => {
    const { orgId, row } = await current(request);
    const limits = effectiveLimits(row);
    const [usage, balance, credits, owed, creditsOwed, consumed] = await Promise.all([
      usageOf(ctx.db, orgId), balanceOf(ctx.db, orgId, 'tokens'), balanceOf(ctx.db, orgId, 'credits'),
      balanceOf(ctx.db, orgId, 'tokens_owed'), balanceOf(ctx.db, orgId, 'credits_owed'), tokensConsumedSince(ctx, orgId, monthStart()),
    ]);
    const metric = (used: number, limit: number | null) => ({
      used, limit, remaining: limit === null ? null : Math.max(0, limit - used), percent: limit === null || limit === 0 ? null : Math.round((used / limit) * 1000) / 10,
    });
    return ok({
      subscription: subscriptionView(orgId, row),
      metrics: { agents: metric(usage.agents, limits.agents), seats: metric(usage.seats, limits.seats), tasks_per_month: metric(usage.tasks_this_month, limits.tasks_per_month) },
      rate_limits: { requests_per_minute: limits.requests_per_minute, requests_per_hour: limits.requests_per_hour },
      tokens: { balance, owed, included_per_period: limits.included_tokens, consumed_this_month: consumed },
      credits: { balance_cents: credits, owed_cents: creditsOwed },
    });
  });
}

function requirePrice(ctx: Ctx, tier: TierSlug): string {
  const price = priceIdOf(ctx, tier);
  if (!price) throw paymentsNotConfigured(`STRIPE_PRICE_${tier.toUpperCase()}`, 'Changing a Stripe subscription needs the plan\'s price id');
  return price;
}

async function restorePrice(ctx: Ctx, subId: string, tier: TierSlug, orgId: string) {
  const stripe = stripeClient(ctx);
  if (tier === 'free') return;
  const sub = await callStripe(() => stripe.subscriptions.retrieve(subId));
  await callStripe(() => stripe.subscriptions.update(subId, {
    items: [{ id: sub.items.data[0]!.id, price: requirePrice(ctx, tier) }], proration_behavior: 'none', cancel_at_period_end: false,
    metadata: { ...sub.metadata, org_id: orgId, tier },
  }));
}

/** Tokens used since `from`: what the balance covered plus what runs left owing. */
async function tokensConsumedSince(ctx: Ctx, orgId: string, from: Date): Promise<number> {
  const [r] = await ctx.db.select({ s: sql<string>`COALESCE(sum(abs(${ledgerEntries.amount})), 0)::text` }).from(ledgerEntries)
    .where(and(eq(ledgerEntries.orgId, orgId), usedTokens, gte(ledgerEntries.createdAt, from)));
  return Number(r?.s ?? 0);
}

async function runsSince(ctx: Ctx, orgId: string, from: Date): Promise<{ n: number; cost: number }> {
  const [r] = await ctx.db.select({ n: sql<string>`count(*)::text`, cost: sql<string>`COALESCE(sum(${costRecords.amountUsd}), 0)::text` }).from(costRecords)
    .where(and(eq(costRecords.orgId, orgId), eq(costRecords.kind, 'ai'), gte(costRecords.occurredAt, from)));
  return { n: Number(r?.n ?? 0), cost: Number(r?.cost ?? 0) };
}
