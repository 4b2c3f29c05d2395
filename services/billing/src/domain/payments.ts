import { conflict, unprocessable } from '@aos/core';
import { eq } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { customers } from '../db/schema.js';
import { findPackage, Tiers, type Package, type TierSlug } from './catalog.js';
import { callStripe, stripeClient, type Stripe } from './stripe.js';
import { effectiveTier, findSubscription, LIVE_STATUSES, refuseManaged } from './subscriptions.js';

export interface Account { orgId: string; tenantId: string | null }

/** The org's Stripe customer, created once (idempotency key per org, unique row as the backstop). */
export async function ensureCustomer(ctx: Ctx, account: Account): Promise<string> {
  const [existing] = await ctx.db.select().from(customers).where(eq(customers.orgId, account.orgId));
  if (existing) return existing.stripeCustomerId;
  const stripe = stripeClient(ctx);
  const customer = await callStripe(() => stripe.customers.create(
    { metadata: { org_id: account.orgId, ...(account.tenantId ? { tenant_id: account.tenantId } : {}) } },
    { idempotencyKey: `aos-customer-${account.orgId}` },
  ));
  await ctx.db.insert(customers).values({ orgId: account.orgId, tenantId: account.tenantId, stripeCustomerId: customer.id }).onConflictDoNothing();
  const [row] = await ctx.db.select().from(customers).where(eq(customers.orgId, account.orgId));
  return row!.stripeCustomerId;
}

export function priceIdOf(ctx: Ctx, tier: TierSlug): string | undefined {
  if (tier === 'pro') return ctx.config.STRIPE_PRICE_PRO;
  if (tier === 'teams') return ctx.config.STRIPE_PRICE_TEAMS;
  return undefined;
}

function lineItem(ctx: Ctx, tier: TierSlug): Stripe.Checkout.SessionCreateParams.LineItem {
  const price = priceIdOf(ctx, tier);
  if (price) return { price, quantity: 1 };
  const t = Tiers[tier];
  return {
    quantity: 1,
    price_data: { currency: ctx.config.BILLING_CURRENCY, unit_amount: t.price_cents!, recurring: { interval: 'month' }, product_data: { name: `AOS ${t.name}`, metadata: { tier } } },
  };
}

export interface UrlOptions { success_url?: string; cancel_url?: string; return_url?: string }

export async function createCheckout(ctx: Ctx, account: Account, tier: TierSlug, urls: UrlOptions = {}) {
  const t = Tiers[tier];
  if (!t.self_serve || !t.price_cents) throw unprocessable(`The ${t.name} plan cannot be bought through checkout`, [{ tier }]);
  const stripe = stripeClient(ctx);
  // A second checkout would start a second subscription billed alongside the first.
  const live = await findSubscription(ctx.db, account.orgId);
  refuseManaged(live);
  if (live?.stripeSubscriptionId && LIVE_STATUSES.has(live.status)) {
    throw conflict(`The organization already has a ${Tiers[effectiveTier(live)].name} subscription; change it with POST /billing/change-plan or the customer portal`, [{ tier: live.tier, status: live.status }]);
  }
  const customer = await ensureCustomer(ctx, account);
  const base = ctx.config.BILLING_APP_URL.replace(/\/$/, '');
  const metadata = { org_id: account.orgId, tier, ...(account.tenantId ? { tenant_id: account.tenantId } : {}) };
  const session = await callStripe(() => stripe.checkout.sessions.create({
    mode: 'subscription',
    customer,
    client_reference_id: account.orgId,
    line_items: [lineItem(ctx, tier)],
    metadata,
    subscription_data: { metadata },
    success_url: urls.success_url ?? `${base}/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}`,
    cancel_url: urls.cancel_url ?? `${base}/billing?checkout=cancelled`,
  }));
  return { session_id: session.id, url: session.url ?? null, tier };
}

export async function createPortal(ctx: Ctx, account: Account, returnUrl?: string) {
  const stripe = stripeClient(ctx);
  const customer = await ensureCustomer(ctx, account);
  const session = await callStripe(() => stripe.billingPortal.sessions.create({
    customer, return_url: returnUrl ?? `${ctx.config.BILLING_APP_URL.replace(/\/$/, '')}/billing`,
  }));
  return { url: session.url };
}

/**
 * One-time purchase of a token (or credit) package. The card is saved for off-session use
 * so auto top-up can charge it later. Stripe's idempotency key is namespaced by org so two
 * organizations can never collide on a client-chosen key.
 */
export async function createPackageIntent(ctx: Ctx, account: Account, pkg: Package, idempotencyKey?: string) {
  const stripe = stripeClient(ctx);
  const customer = await ensureCustomer(ctx, account);
  const intent = await callStripe(() => stripe.paymentIntents.create({
    amount: pkg.price_cents,
    currency: ctx.config.BILLING_CURRENCY,
    customer,
    setup_future_usage: 'off_session',
    automatic_payment_methods: { enabled: true },
    description: `AOS ${pkg.name}`,
    metadata: {
      org_id: account.orgId, ...(account.tenantId ? { tenant_id: account.tenantId } : {}),
      kind: 'package', ledger: pkg.ledger, package_slug: pkg.slug, amount: String(pkg.amount),
    },
  }, idempotencyKey ? { idempotencyKey: `aos-pi-${account.orgId}-${idempotencyKey}` } : {}));
  return {
    payment_intent_id: intent.id, client_secret: intent.client_secret ?? null, status: intent.status,
    amount_cents: intent.amount, currency: intent.currency, package_slug: pkg.slug, ledger: pkg.ledger, amount: pkg.amount,
  };
}

export { findPackage };
