import { startTestService } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service } from '../src/service.js';
import { count, outboxEvents, owner, postWebhook, signedEvent, startBilling, type Billing, expectLedgersConsistent } from './helpers.js';

let svc: Billing;
beforeAll(async () => { svc = await startBilling(); });
afterAll(async () => { if (svc) expect(await expectLedgersConsistent(svc)).toBeGreaterThan(0); await svc?.close(); });

const now = () => Math.floor(Date.now() / 1000);
const subscription = async (orgId: string) => (await svc.inject(owner(orgId), { method: 'GET', url: '/billing/subscription' })).json().data;

function checkoutCompleted(orgId: string, tier: string, extra: { created?: number; customer?: string; sub?: string } = {}) {
  return signedEvent({
    type: 'checkout.session.completed', created: extra.created,
    object: { id: `cs_${crypto.randomUUID()}`, object: 'checkout.session', mode: 'subscription', client_reference_id: orgId, customer: extra.customer ?? `cus_${orgId.slice(0, 8)}`, subscription: extra.sub ?? `sub_${orgId.slice(0, 8)}`, metadata: { org_id: orgId, tier } },
  });
}

function subscriptionEvent(type: string, orgId: string, fields: { tier?: string; status?: string; created: number; sub?: string; id?: string; periodEnd?: number }) {
  return signedEvent({
    id: fields.id, type, created: fields.created,
    object: {
      id: fields.sub ?? `sub_${orgId.slice(0, 8)}`, object: 'subscription', customer: `cus_${orgId.slice(0, 8)}`, status: fields.status ?? 'active', cancel_at_period_end: false,
      metadata: { org_id: orgId, ...(fields.tier ? { tier: fields.tier } : {}) },
      items: { object: 'list', data: [{ id: 'si_1', price: { id: 'price_x' }, current_period_start: fields.created, current_period_end: fields.periodEnd ?? fields.created + 30 * 86400 }] },
    },
  });
}

describe('POST /billing/webhook: signature', () => {
  it('accepts a correctly signed event and verifies the raw bytes (whitespace and unicode intact)', async () => {
    const orgId = crypto.randomUUID();
    const { body, signature } = signedEvent({ type: 'customer.created', object: { id: 'cus_x', object: 'customer', name: 'Zoë — ünïcode' } }, { pretty: true });
    const res = await postWebhook(svc, body, signature);
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ received: true, duplicate: false, outcome: 'ignored: unhandled type' });
    expect(orgId).toBeTruthy();
  });

  it('rejects a missing, forged, stale or tampered signature with 400 and applies nothing', async () => {
    const orgId = crypto.randomUUID();
    const good = checkoutCompleted(orgId, 'pro');
    const missing = await postWebhook(svc, good.body);
    expect(missing.statusCode).toBe(400);
    expect(missing.json().error).toMatchObject({ code: 'VALIDATION_ERROR', message: 'Missing Stripe-Signature header' });

    const forged = checkoutCompleted(orgId, 'pro');
    const wrongSecret = signedEvent({ type: 'checkout.session.completed', object: JSON.parse(forged.body).data.object }, { secret: 'whsec_attacker' });
    expect((await postWebhook(svc, wrongSecret.body, wrongSecret.signature)).statusCode).toBe(400);

    const stale = signedEvent({ type: 'checkout.session.completed', object: JSON.parse(good.body).data.object }, { timestamp: now() - 301 });
    const staleRes = await postWebhook(svc, stale.body, stale.signature);
    expect(staleRes.statusCode).toBe(400);
    expect(staleRes.json().error.message).toMatch(/Invalid Stripe signature/);

    const tampered = good.body.replace('"pro"', '"teams"');
    expect((await postWebhook(svc, tampered, good.signature)).statusCode).toBe(400);
    expect((await postWebhook(svc, good.body, 't=123,v1=deadbeef')).statusCode).toBe(400);
    expect((await postWebhook(svc, good.body, 'garbage')).statusCode).toBe(400);

    expect(await count(svc, 'SELECT count(*) AS n FROM billing_subscriptions WHERE org_id = $1', [orgId])).toBe(0);
    expect(await count(svc, 'SELECT count(*) AS n FROM billing_stripe_events WHERE id = $1', [JSON.parse(good.body).id])).toBe(0);
    // The genuine one still works afterwards.
    expect((await postWebhook(svc, good.body, good.signature)).statusCode).toBe(200);
  });

  it('answers 503 naming the setting when STRIPE_WEBHOOK_SECRET is not configured', async () => {
    const bare = await startTestService(service, { background: false });
    try {
      const { body, signature } = signedEvent({ type: 'customer.created', object: { id: 'cus_y' } });
      const res = await postWebhook(bare as unknown as Billing, body, signature);
      expect(res.statusCode).toBe(503);
      expect(res.json().error).toMatchObject({ code: 'PAYMENTS_NOT_CONFIGURED', details: [{ setting: 'STRIPE_WEBHOOK_SECRET' }] });
      expect(res.json().error.message).toContain('STRIPE_WEBHOOK_SECRET');
    } finally {
      await bare.close();
    }
  });
});

describe('POST /billing/webhook: effects', () => {
  it('checkout.session.completed activates the plan once and emits billing.subscription.changed; a replay changes nothing', async () => {
    const orgId = crypto.randomUUID();
    const ev = checkoutCompleted(orgId, 'pro');
    const first = await postWebhook(svc, ev.body, ev.signature);
    expect(first.json().data).toMatchObject({ duplicate: false, outcome: 'subscription activated' });
    expect(await subscription(orgId)).toMatchObject({ tier: 'pro', status: 'active', is_default: false, stripe_subscription_id: `sub_${orgId.slice(0, 8)}`, limits: { requests_per_minute: 600, requests_per_hour: 10_000 } });
    const replay = await postWebhook(svc, ev.body, ev.signature);
    expect(replay.statusCode).toBe(200);
    expect(replay.json().data).toMatchObject({ duplicate: true, outcome: 'subscription activated' });
    const changed = await outboxEvents(svc, 'billing.subscription.changed', orgId);
    expect(changed).toHaveLength(1);
    expect(changed[0]!.data).toMatchObject({ tier: 'pro', previousTier: 'free', status: 'active', subscriptionId: `sub_${orgId.slice(0, 8)}` });
  });

  it('keeps the newest subscription state when events arrive out of order', async () => {
    const orgId = crypto.randomUUID();
    const t = now() - 100;
    await postWebhook(svc, ...Object.values(checkoutCompleted(orgId, 'pro', { created: t })) as [string, string]);
    const newer = subscriptionEvent('customer.subscription.updated', orgId, { tier: 'teams', created: t + 20 });
    const older = subscriptionEvent('customer.subscription.updated', orgId, { tier: 'pro', status: 'past_due', created: t + 10 });
    expect((await postWebhook(svc, newer.body, newer.signature)).json().data.outcome).toBe('subscription active');
    expect((await postWebhook(svc, older.body, older.signature)).json().data.outcome).toBe('stale: newer subscription state kept');
    expect(await subscription(orgId)).toMatchObject({ tier: 'teams', status: 'active' });

    const deleted = subscriptionEvent('customer.subscription.deleted', orgId, { tier: 'teams', status: 'canceled', created: t + 40 });
    const lateUpdate = subscriptionEvent('customer.subscription.updated', orgId, { tier: 'teams', created: t + 30 });
    await postWebhook(svc, deleted.body, deleted.signature);
    expect((await postWebhook(svc, lateUpdate.body, lateUpdate.signature)).json().data.outcome).toBe('stale: newer subscription state kept');
    expect(await subscription(orgId)).toMatchObject({ tier: 'free', status: 'canceled' });
    // A checkout completed before everything else, delivered last, does not resurrect the plan.
    const lateCheckout = checkoutCompleted(orgId, 'pro', { created: t - 5 });
    expect((await postWebhook(svc, lateCheckout.body, lateCheckout.signature)).json().data.outcome).toBe('stale: newer subscription state kept');
    expect((await subscription(orgId)).tier).toBe('free');
    const tiers = (await outboxEvents(svc, 'billing.subscription.changed', orgId)).map((e) => e.data.tier);
    expect(tiers).toEqual(['pro', 'teams', 'free']);
  });

  it('invoice.paid grants the included tokens once per invoice; invoice.payment_failed marks past_due', async () => {
    const orgId = crypto.randomUUID();
    await postWebhook(svc, ...Object.values(checkoutCompleted(orgId, 'pro', { created: now() - 50 })) as [string, string]);
    const invoice = { id: `in_${crypto.randomUUID().slice(0, 8)}`, object: 'invoice', customer: `cus_${orgId.slice(0, 8)}`, amount_paid: 2900, amount_due: 2900, currency: 'usd', customer_email: 'billing@example.com' };
    const failed = signedEvent({ type: 'invoice.payment_failed', created: now() - 40, object: { ...invoice, amount_paid: 0 } });
    expect((await postWebhook(svc, failed.body, failed.signature)).json().data.outcome).toBe('invoice payment failed');
    expect((await subscription(orgId)).status).toBe('past_due');
    expect((await outboxEvents(svc, 'billing.payment.failed', orgId))[0]!.data).toMatchObject({ stripeObjectId: invoice.id, amountCents: 2900, email: 'billing@example.com' });

    const paid = signedEvent({ type: 'invoice.paid', created: now() - 30, object: invoice });
    const paidAgain = signedEvent({ type: 'invoice.paid', created: now() - 30, object: invoice }); // Stripe resends with a new event id
    await postWebhook(svc, paid.body, paid.signature);
    await postWebhook(svc, paidAgain.body, paidAgain.signature);
    expect((await subscription(orgId)).status).toBe('active');
    const bal = await svc.inject(owner(orgId), { method: 'GET', url: '/tokens/balance' });
    expect(bal.json().data.balance).toBe(50_000);
    expect((await outboxEvents(svc, 'billing.payment.succeeded', orgId))).toHaveLength(2);
  });

  it('an upgrade invoice tops the period up to the new tier\'s included tokens; the next cycle grants them in full', async () => {
    const orgId = crypto.randomUUID();
    await postWebhook(svc, ...Object.values(checkoutCompleted(orgId, 'pro', { created: now() - 50 })) as [string, string]);
    const invoice = (id: string, tier: string, billing_reason: string) => signedEvent({ type: 'invoice.paid', object: {
      id, object: 'invoice', customer: `cus_${orgId.slice(0, 8)}`, amount_paid: 1000, amount_due: 1000, currency: 'usd', billing_reason,
      parent: { type: 'subscription_details', subscription_details: { metadata: { org_id: orgId, tier } } },
    } });
    const pay = async (ev: ReturnType<typeof invoice>) => expect((await postWebhook(svc, ev.body, ev.signature)).statusCode).toBe(200);
    const bal = async () => (await svc.inject(owner(orgId), { method: 'GET', url: '/tokens/balance' })).json().data.balance;
    await pay(invoice('in_create', 'pro', 'subscription_create'));
    expect(await bal()).toBe(50_000);
    await pay(invoice('in_upgrade', 'teams', 'subscription_update')); // pro → teams mid-period
    expect(await bal()).toBe(250_000);
    await pay(invoice('in_update_again', 'teams', 'subscription_update')); // e.g. a quantity change: nothing more
    expect(await bal()).toBe(250_000);
    await pay(invoice('in_cycle', 'teams', 'subscription_cycle'));
    expect(await bal()).toBe(500_000);
    const grants = (await svc.inject(owner(orgId), { method: 'GET', url: '/tokens/transactions?type=bonus' })).json().data.map((e: { amount: number; reference_id: string }) => [e.reference_id, e.amount]);
    expect(grants).toEqual([['invoice:in_cycle', 250_000], ['invoice:in_upgrade', 200_000], ['invoice:in_create', 50_000]]);
  });

  it('grants the first invoice\'s tokens even when invoice.paid arrives before the checkout', async () => {
    const orgId = crypto.randomUUID();
    const invoice = { id: `in_${crypto.randomUUID().slice(0, 8)}`, object: 'invoice', customer: `cus_new_${orgId.slice(0, 8)}`, amount_paid: 9900, amount_due: 9900, currency: 'usd', parent: { type: 'subscription_details', subscription_details: { subscription: 'sub_new', metadata: { org_id: orgId, tier: 'teams' } } } };
    const paid = signedEvent({ type: 'invoice.paid', object: invoice });
    expect((await postWebhook(svc, paid.body, paid.signature)).json().data.outcome).toBe('invoice paid');
    expect((await svc.inject(owner(orgId), { method: 'GET', url: '/tokens/balance' })).json().data.balance).toBe(250_000);
  });

  it('payment_intent.succeeded credits the package once and remembers the card', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await svc.ctx.pool.query('INSERT INTO billing_customers (org_id, stripe_customer_id) VALUES ($1, $2)', [orgId, `cus_pi_${orgId.slice(0, 8)}`]);
    const pi = { id: `pi_${orgId.slice(0, 8)}`, object: 'payment_intent', amount: 1000, currency: 'usd', status: 'succeeded', customer: `cus_pi_${orgId.slice(0, 8)}`, payment_method: 'pm_card_visa', metadata: { org_id: orgId, ledger: 'tokens', package_slug: 'tokens-10k', amount: '10000' } };
    const a = signedEvent({ type: 'payment_intent.succeeded', object: pi });
    const b = signedEvent({ type: 'payment_intent.succeeded', object: pi });
    expect((await postWebhook(svc, a.body, a.signature)).json().data.outcome).toBe('credited 10000 tokens');
    expect((await postWebhook(svc, b.body, b.signature)).json().data.outcome).toBe('already credited');
    const tx = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=purchase' });
    expect(tx.json().data).toHaveLength(1);
    expect(tx.json().data[0]).toMatchObject({ amount: 10_000, reference_id: pi.id, balance_after: 10_000 });
    expect(await count(svc, "SELECT count(*) AS n FROM billing_customers WHERE org_id = $1 AND default_payment_method_id = 'pm_card_visa'", [orgId])).toBe(1);
  });

  it('ignores events for unknown customers without failing (Stripe must not retry forever)', async () => {
    const ev = signedEvent({ type: 'invoice.paid', object: { id: 'in_unknown', object: 'invoice', customer: 'cus_nobody', amount_paid: 100, currency: 'usd' } });
    const res = await postWebhook(svc, ev.body, ev.signature);
    expect(res.statusCode).toBe(200);
    expect(res.json().data.outcome).toBe('ignored: unknown customer');
  });

  it('charge.refunded takes a refunded package back in proportion, once per refund total; tokens already spent are owed', async () => {
    const p = owner();
    const orgId = p.orgId!;
    const pi = { id: `pi_refund_${orgId.slice(0, 8)}`, object: 'payment_intent', amount: 1000, currency: 'usd', status: 'succeeded', metadata: { org_id: orgId, ledger: 'tokens', package_slug: 'tokens-10k', amount: '10000' } };
    const bought = signedEvent({ type: 'payment_intent.succeeded', object: pi });
    await postWebhook(svc, bought.body, bought.signature);
    expect((await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount: 2_000, action: 'work' } })).statusCode).toBe(200);
    const balance = async () => (await svc.inject(p, { method: 'GET', url: '/tokens/balance' })).json().data as { balance: number; owed: number };
    const charge = (refunded: number, created = now()) => signedEvent({ type: 'charge.refunded', created, object: { id: `ch_${orgId.slice(0, 8)}`, object: 'charge', amount: 1000, amount_refunded: refunded, refunded: refunded === 1000, currency: 'usd', payment_intent: pi.id, metadata: {} } });

    const quarter = charge(250, now() - 10);
    expect((await postWebhook(svc, quarter.body, quarter.signature)).json().data.outcome).toBe('reversed 2500 tokens');
    expect(await balance()).toMatchObject({ balance: 5_500, owed: 0 });
    const same = charge(250); // the same refund total under another event id
    expect((await postWebhook(svc, same.body, same.signature)).json().data.outcome).toBe('refund already reversed');

    const full = charge(1000);
    expect((await postWebhook(svc, full.body, full.signature)).json().data.outcome).toBe('reversed 7500 tokens (2000 owed)');
    expect(await balance()).toMatchObject({ balance: 0, owed: 2_000 });
    expect((await postWebhook(svc, quarter.body, quarter.signature)).json().data).toMatchObject({ duplicate: true });
    const late = charge(250, now() - 20); // an older partial refund arriving last
    expect((await postWebhook(svc, late.body, late.signature)).json().data.outcome).toBe('refund already reversed');

    const reversals = (await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=reversal' })).json().data;
    expect(reversals.map((e: { amount: number; reference_id: string }) => [e.amount, e.reference_id])).toEqual([[-5_500, `refund:${pi.id}:10000`], [-2_500, `refund:${pi.id}:2500`]]);
    // Taking back a purchase is not usage: only the 2,000 consumed count.
    expect((await svc.inject(p, { method: 'GET', url: '/billing/usage' })).json().data.usage.tokens_consumed).toBe(2_000);
    expect((await outboxEvents(svc, 'billing.balance.low', orgId)).map((e) => e.data)).toEqual([{ ledger: 'tokens', balance: 0, threshold: 1, userId: null, owed: 2_000 }]);

    const unknown = signedEvent({ type: 'charge.refunded', object: { id: 'ch_x', object: 'charge', amount: 500, amount_refunded: 500, payment_intent: 'pi_never_credited', metadata: {} } });
    expect((await postWebhook(svc, unknown.body, unknown.signature)).json().data.outcome).toBe('ignored: not a credited package purchase');
  });
});
