import { apiKeyPrincipal, userPrincipal, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeStripe, outboxEvents, subscribeThroughWebhooks, owner, postWebhook, publish, signedEvent, startBilling, stripeEnv, type Billing, type FakeStripe, expectLedgersConsistent } from './helpers.js';

let stripe: FakeStripe;
let svc: Billing;
beforeAll(async () => {
  stripe = await fakeStripe();
  svc = await startBilling(stripeEnv(stripe));
});
afterAll(async () => { if (svc) expect(await expectLedgersConsistent(svc)).toBeGreaterThan(0); await svc?.close(); await stripe?.close(); });

const since = () => stripe.requests.length;
const after = (mark: number) => stripe.requests.slice(mark);

const subscribe = (orgId: string, tier: string, periodEnd?: number) => subscribeThroughWebhooks(svc, stripe, orgId, tier, periodEnd);

describe('POST /billing/checkout', () => {
  it('creates the customer once and a subscription checkout session with the org and tier attached', async () => {
    const p = owner();
    const mark = since();
    const res = await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'pro', success_url: 'https://app.example.com/ok', cancel_url: 'https://app.example.com/no' } });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ session_id: expect.stringMatching(/^cs_test_/), url: expect.stringContaining('checkout.stripe.test'), tier: 'pro' });
    const [customer, session] = after(mark);
    expect(customer).toMatchObject({ method: 'POST', path: '/v1/customers' });
    expect(customer!.form['metadata[org_id]']).toBe(p.orgId);
    expect(customer!.headers['idempotency-key']).toBe(`aos-customer-${p.orgId}`);
    expect(customer!.headers.authorization).toBe('Bearer sk_test_local');
    expect(session).toMatchObject({ method: 'POST', path: '/v1/checkout/sessions' });
    expect(session!.form).toMatchObject({
      mode: 'subscription', customer: expect.stringMatching(/^cus_test/), client_reference_id: p.orgId,
      'line_items[0][price]': 'price_pro', 'line_items[0][quantity]': '1',
      'metadata[org_id]': p.orgId, 'metadata[tier]': 'pro', 'subscription_data[metadata][org_id]': p.orgId, 'subscription_data[metadata][tier]': 'pro',
      success_url: 'https://app.example.com/ok', cancel_url: 'https://app.example.com/no',
    });
    const mark2 = since();
    await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'teams' } });
    expect(after(mark2).map((r) => r.path)).toEqual(['/v1/checkout/sessions']);
    expect(after(mark2)[0]!.form['line_items[0][price]']).toBe('price_teams');
  });

  it('refuses Free and Enterprise (422), unknown tiers (400), members (403) and keys without billing:write (403)', async () => {
    const p = owner();
    expect((await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'free' } })).statusCode).toBe(422);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'enterprise' } })).statusCode).toBe(422);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'gold' } })).statusCode).toBe(400);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'pro', success_url: 'not a url' } })).statusCode).toBe(400);
    expect((await svc.inject(userPrincipal({ orgRole: 'member' }), { method: 'POST', url: '/billing/checkout', payload: { tier: 'pro' } })).statusCode).toBe(403);
    expect((await svc.inject(apiKeyPrincipal(['billing:read'], { orgRole: 'admin' }), { method: 'POST', url: '/billing/checkout', payload: { tier: 'pro' } })).json().error.code).toBe('SCOPE_REQUIRED');
    expect((await svc.inject(null, { method: 'POST', url: '/billing/checkout', payload: { tier: 'pro' } })).statusCode).toBe(401);
  });
});

describe('POST /billing/checkout with a live subscription', () => {
  it('refuses a second subscription (409) and points to change-plan; a cancelled one may check out again', async () => {
    const p = owner();
    await subscribe(p.orgId!, 'pro');
    const mark = since();
    const res = await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'teams' } });
    expect(res.statusCode).toBe(409);
    expect(res.json().error.message).toContain('change-plan');
    expect(after(mark).filter((r) => r.path === '/v1/checkout/sessions')).toHaveLength(0);
    await svc.ctx.pool.query("UPDATE billing_subscriptions SET status = 'canceled', tier = 'free' WHERE org_id = $1", [p.orgId]);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'teams' } })).statusCode).toBe(200);
  });
});

describe('POST /billing/portal', () => {
  it("opens a portal session for the org's customer", async () => {
    const p = owner();
    const mark = since();
    const res = await svc.inject(p, { method: 'POST', url: '/billing/portal', payload: { return_url: 'https://app.example.com/billing' } });
    expect(res.statusCode).toBe(200);
    expect(res.json().data.url).toContain('billing.stripe.test');
    const portal = after(mark).find((r) => r.path === '/v1/billing_portal/sessions')!;
    expect(portal.form).toEqual({ customer: expect.stringMatching(/^cus_test/), return_url: 'https://app.example.com/billing' });
  });
});

describe('POST /billing/create-payment-intent', () => {
  it('creates a payment intent for the package with the org-scoped idempotency key; a retry returns the same intent', async () => {
    const p = owner();
    const mark = since();
    const res = await svc.inject(p, { method: 'POST', url: '/billing/create-payment-intent', payload: { package_slug: 'tokens-50k', idempotency_key: 'order-1' } });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ payment_intent_id: expect.stringMatching(/^pi_test/), client_secret: expect.stringContaining('_secret_'), amount_cents: 4500, currency: 'usd', package_slug: 'tokens-50k', ledger: 'tokens', amount: 50_000 });
    const pi = after(mark).find((r) => r.path === '/v1/payment_intents')!;
    expect(pi.headers['idempotency-key']).toBe(`aos-pi-${p.orgId}-order-1`);
    expect(pi.form).toMatchObject({
      amount: '4500', currency: 'usd', setup_future_usage: 'off_session', 'automatic_payment_methods[enabled]': 'true',
      'metadata[org_id]': p.orgId, 'metadata[ledger]': 'tokens', 'metadata[package_slug]': 'tokens-50k', 'metadata[amount]': '50000',
    });
    const again = await svc.inject(p, { method: 'POST', url: '/billing/create-payment-intent', payload: { package_slug: 'tokens-50k', idempotency_key: 'order-1' } });
    expect(again.json().data.payment_intent_id).toBe(res.json().data.payment_intent_id);
    // Another org using the same client key gets its own intent.
    const other = await svc.inject(owner(), { method: 'POST', url: '/billing/create-payment-intent', payload: { package_slug: 'tokens-50k', idempotency_key: 'order-1' } });
    expect(other.json().data.payment_intent_id).not.toBe(res.json().data.payment_intent_id);
  });

  it('validates the package and maps a Stripe rejection to 422 without leaking the response', async () => {
    const p = owner();
    expect((await svc.inject(p, { method: 'POST', url: '/billing/create-payment-intent', payload: { package_slug: 'nope' } })).statusCode).toBe(400);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/create-payment-intent', payload: {} })).statusCode).toBe(400);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/create-payment-intent', payload: { package_slug: 'tokens-10k', idempotency_key: 'has spaces' } })).statusCode).toBe(400);
    stripe.failNext((r) => r.path === '/v1/payment_intents', 400, { error: { type: 'invalid_request_error', message: 'Amount must be at least 50 cents', param: 'amount' } });
    const res = await svc.inject(p, { method: 'POST', url: '/billing/create-payment-intent', payload: { package_slug: 'credits-10' } });
    expect(res.statusCode).toBe(422);
    expect(res.json().error.message).toContain('Amount must be at least 50 cents');
  });
});

describe('POST /billing/change-plan with Stripe', () => {
  it('sends a Free org to checkout for an upgrade', async () => {
    const res = await svc.inject(owner(), { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ action: 'checkout_required', checkout: { session_id: expect.stringMatching(/^cs_test_/) }, subscription: { tier: 'free' } });
  });

  it('upgrades now (prorated) and emits billing.subscription.changed', async () => {
    const p = owner();
    await subscribe(p.orgId!, 'pro');
    const mark = since();
    const res = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'teams' } });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ action: 'upgraded', subscription: { tier: 'teams', pending_tier: null } });
    const [get, update, metadata] = after(mark);
    expect(get).toMatchObject({ method: 'GET', path: `/v1/subscriptions/sub_${p.orgId!.slice(0, 8)}` });
    expect(update!.form).toEqual({ 'items[0][id]': 'si_test1', 'items[0][price]': 'price_teams', proration_behavior: 'always_invoice', payment_behavior: 'pending_if_incomplete' });
    expect(metadata!.form).toMatchObject({ cancel_at_period_end: 'false', 'metadata[tier]': 'teams', 'metadata[org_id]': p.orgId });
    const changed = await outboxEvents(svc, 'billing.subscription.changed', p.orgId!);
    expect(changed.at(-1)!.data).toMatchObject({ tier: 'teams', previousTier: 'pro', userId: p.userId });
  });

  it('keeps the plan when the upgrade invoice is not paid; Stripe applying it later (webhook) upgrades', async () => {
    const p = owner();
    const orgId = p.orgId!;
    const id = `sub_${orgId.slice(0, 8)}`;
    await subscribe(orgId, 'pro');
    const stored = stripe.subscriptions.get(id)! as { items: { data: { id: string }[] } };
    // Card declined on the prorated invoice: Stripe keeps the old price and reports the change as pending.
    stripe.failNext((r) => r.method === 'POST' && r.path === `/v1/subscriptions/${id}`, 200, { ...stored, pending_update: { subscription_items: [{ id: 'si_test1', price: { id: 'price_teams' } }], expires_at: Math.floor(Date.now() / 1000) + 82_800 } });
    const mark = since();
    const res = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'teams' } });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ action: 'upgrade_pending_payment', effective_at: null, subscription: { tier: 'pro' } });
    expect(after(mark).filter((r) => r.method === 'POST')).toHaveLength(1);
    expect((await outboxEvents(svc, 'billing.subscription.changed', orgId)).at(-1)!.data).toMatchObject({ tier: 'pro' });
    // The customer pays the invoice; Stripe applies the new price and says so.
    stripe.subscriptions.set(id, { ...stored, items: { object: 'list', data: [{ ...stored.items.data[0]!, price: { id: 'price_teams' } }] } });
    const applied = signedEvent({ type: 'customer.subscription.updated', object: stripe.subscriptions.get(id)! });
    await postWebhook(svc, applied.body, applied.signature);
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'teams' });
  });

  it('schedules a downgrade for the period end, keeps the plan until then, and a same-tier request cancels it', async () => {
    const p = owner();
    const periodEnd = Math.floor(Date.now() / 1000) + 10 * 86400;
    await subscribe(p.orgId!, 'teams', periodEnd);
    const mark = since();
    const res = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } });
    expect(res.json().data).toMatchObject({ action: 'downgrade_scheduled', effective_at: new Date(periodEnd * 1000).toISOString(), subscription: { tier: 'teams', pending_tier: 'pro' } });
    expect(after(mark).at(-1)!.form).toMatchObject({ 'items[0][price]': 'price_pro', proration_behavior: 'none' });
    // Stripe echoes the new price at once: the plan still changes only at period end.
    const echo = signedEvent({ type: 'customer.subscription.updated', object: { id: `sub_${p.orgId!.slice(0, 8)}`, object: 'subscription', customer: `cus_${p.orgId!.slice(0, 8)}`, status: 'active', cancel_at_period_end: false, metadata: { org_id: p.orgId, tier: 'pro' }, items: { object: 'list', data: [{ id: 'si_1', price: { id: 'price_pro' }, current_period_end: periodEnd }] } } });
    await postWebhook(svc, echo.body, echo.signature);
    const sub = (await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data;
    expect(sub).toMatchObject({ tier: 'teams', pending_tier: 'pro' });
    const cancel = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'teams' } });
    expect(cancel.json().data).toMatchObject({ action: 'pending_change_cancelled', subscription: { tier: 'teams', pending_tier: null } });
    expect((await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'teams' } })).statusCode).toBe(409);
  });

  it('applies a scheduled downgrade at the period end by itself (delayed job), with no read and no webhook', async () => {
    const p = owner();
    const orgId = p.orgId!;
    const periodEnd = Math.floor(Date.now() / 1000) + 2;
    await subscribe(orgId, 'teams', periodEnd);
    const res = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } });
    expect(res.json().data).toMatchObject({ action: 'downgrade_scheduled', effective_at: new Date(periodEnd * 1000).toISOString() });
    const tierInDb = async () => (await svc.ctx.pool.query('SELECT tier, pending_tier FROM billing_subscriptions WHERE org_id = $1', [orgId])).rows[0];
    expect(await tierInDb()).toEqual({ tier: 'teams', pending_tier: 'pro' });
    await waitFor(async () => (await tierInDb()).tier === 'pro', { timeoutMs: 10_000, message: 'downgrade applied at period end' });
    expect(await tierInDb()).toEqual({ tier: 'pro', pending_tier: null });
    expect(Date.now()).toBeGreaterThanOrEqual(periodEnd * 1000);
    const changed = await outboxEvents(svc, 'billing.subscription.changed', orgId);
    expect(changed.at(-1)!.data).toMatchObject({ tier: 'pro', previousTier: 'teams', userId: null });
  });

  it("applies the downgrade on Stripe's renewal (a new period started), even a little before our clock reaches it", async () => {
    const p = owner();
    const orgId = p.orgId!;
    const periodEnd = Math.floor(Date.now() / 1000) + 30;
    await subscribe(orgId, 'teams', periodEnd);
    await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } });
    const id = `sub_${orgId.slice(0, 8)}`;
    const renewed = { ...stripe.subscriptions.get(id)!, items: { object: 'list', data: [{ id: 'si_test1', price: { id: 'price_pro' }, current_period_start: periodEnd - 20, current_period_end: periodEnd + 30 * 86400 }] } };
    stripe.subscriptions.set(id, renewed);
    const ev = signedEvent({ type: 'customer.subscription.updated', object: renewed });
    await postWebhook(svc, ev.body, ev.signature);
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'pro', pending_tier: null });
  });

  it('a cancellation withdrawn in the customer portal keeps the plan; a plan picked there replaces the scheduled one', async () => {
    const p = owner();
    const orgId = p.orgId!;
    const id = `sub_${orgId.slice(0, 8)}`;
    await subscribe(orgId, 'pro');
    await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'free' } });
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'pro', pending_tier: 'free', cancel_at_period_end: true });
    // The customer clicks "renew" in the portal a moment later.
    const later = Math.floor(Date.now() / 1000) + 2;
    stripe.subscriptions.set(id, { ...stripe.subscriptions.get(id)!, cancel_at_period_end: false });
    const renew = signedEvent({ type: 'customer.subscription.updated', created: later, object: stripe.subscriptions.get(id)! });
    await postWebhook(svc, renew.body, renew.signature);
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'pro', pending_tier: null, cancel_at_period_end: false });

    // Teams → Pro scheduled, then the customer switches to Teams again in the portal (price only).
    const q = owner();
    const qid = `sub_${q.orgId!.slice(0, 8)}`;
    await subscribe(q.orgId!, 'teams');
    await svc.inject(q, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } });
    const current = stripe.subscriptions.get(qid)! as { items: { data: { id: string }[] } };
    stripe.subscriptions.set(qid, { ...current, items: { object: 'list', data: [{ ...current.items.data[0]!, price: { id: 'price_teams' } }] } });
    const portal = signedEvent({ type: 'customer.subscription.updated', created: later, object: stripe.subscriptions.get(qid)! });
    await postWebhook(svc, portal.body, portal.signature);
    expect((await svc.inject(q, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'teams', pending_tier: null });
  });

  it("takes the period end from Stripe when no subscription event has told us yet", async () => {
    const p = owner();
    const orgId = p.orgId!;
    const periodEnd = Math.floor(Date.now() / 1000) + 12 * 86400;
    const cs = signedEvent({ type: 'checkout.session.completed', object: { id: `cs_${orgId}`, object: 'checkout.session', mode: 'subscription', client_reference_id: orgId, customer: `cus_${orgId.slice(0, 8)}`, subscription: `sub_${orgId.slice(0, 8)}`, metadata: { org_id: orgId, tier: 'teams' } } });
    await postWebhook(svc, cs.body, cs.signature);
    stripe.subscriptions.set(`sub_${orgId.slice(0, 8)}`, { id: `sub_${orgId.slice(0, 8)}`, object: 'subscription', customer: `cus_${orgId.slice(0, 8)}`, status: 'active', cancel_at_period_end: false, metadata: { org_id: orgId, tier: 'teams' }, items: { object: 'list', data: [{ id: 'si_test1', price: { id: 'price_teams' }, current_period_start: periodEnd - 30 * 86400, current_period_end: periodEnd }] } });
    const res = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'free' } });
    expect(res.json().data).toMatchObject({ action: 'downgrade_scheduled', effective_at: new Date(periodEnd * 1000).toISOString(), subscription: { tier: 'teams', pending_tier: 'free' } });
  });

  it('restores the previous state when Stripe refuses the downgrade', async () => {
    const p = owner();
    await subscribe(p.orgId!, 'teams');
    stripe.failNext((r) => r.method === 'POST' && r.path === `/v1/subscriptions/sub_${p.orgId!.slice(0, 8)}`, 400, { error: { type: 'invalid_request_error', message: 'No such price' } });
    const res = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } });
    expect(res.statusCode).toBe(422);
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'teams', pending_tier: null });
  });

  it('applies a due downgrade when the period has ended', async () => {
    const p = owner();
    await subscribe(p.orgId!, 'teams');
    await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } });
    await svc.ctx.pool.query("UPDATE billing_subscriptions SET pending_at = now() - interval '1 minute' WHERE org_id = $1", [p.orgId]);
    const sub = (await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data;
    expect(sub).toMatchObject({ tier: 'pro', pending_tier: null });
    expect((await outboxEvents(svc, 'billing.subscription.changed', p.orgId!)).at(-1)!.data).toMatchObject({ tier: 'pro', previousTier: 'teams' });
  });

  it('refuses a downgrade that usage does not fit (422 listing violations), cancels at period end for Free', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await subscribe(orgId, 'pro');
    for (let i = 1; i <= 4; i++) await publish(svc, 'agents.agent.created', { agentId: i, name: `a${i}`, status: 'idle' }, { orgId });
    await publish(svc, 'identity.member.added', { orgId, tenantId: 't', userId: 'u1', role: 'owner' }, { orgId });
    await publish(svc, 'identity.member.added', { orgId, tenantId: 't', userId: 'u2', role: 'member' }, { orgId });
    await waitFor(async () => (await svc.inject(p, { method: 'GET', url: '/billing/plan-summary' })).json().data.metrics.seats.used === 2, { message: 'usage counted' });
    await waitFor(async () => (await svc.inject(p, { method: 'GET', url: '/billing/plan-summary' })).json().data.metrics.agents.used === 4, { message: 'agents counted' });
    const check = await svc.inject(p, { method: 'POST', url: '/billing/validate-downgrade', payload: { tier: 'free' } });
    expect(check.json().data).toMatchObject({ current_tier: 'pro', target_tier: 'free', is_downgrade: true, allowed: false });
    expect(check.json().data.violations).toEqual([{ resource: 'agents', current: 4, limit: 3, excess: 1 }, { resource: 'seats', current: 2, limit: 1, excess: 1 }]);
    const refused = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'free' } });
    expect(refused.statusCode).toBe(422);
    expect(refused.json().error.details).toHaveLength(2);

    await publish(svc, 'agents.agent.deleted', { agentId: 4, name: 'a4', status: 'deleted' }, { orgId });
    await publish(svc, 'identity.member.removed', { orgId, tenantId: 't', userId: 'u2' }, { orgId });
    await waitFor(async () => (await svc.inject(p, { method: 'POST', url: '/billing/validate-downgrade', payload: { tier: 'free' } })).json().data.allowed, { message: 'usage fits' });
    const mark = since();
    const ok = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'free' } });
    expect(ok.json().data).toMatchObject({ action: 'downgrade_scheduled', subscription: { tier: 'pro', pending_tier: 'free', cancel_at_period_end: true } });
    expect(after(mark).at(-1)!.form).toEqual({ cancel_at_period_end: 'true' });
  });
});

describe('webhook with the Stripe API reachable', () => {
  it("applies the subscription's current state read from Stripe, not the event's snapshot", async () => {
    const p = owner();
    const orgId = p.orgId!;
    await subscribe(orgId, 'pro');
    const id = `sub_${orgId.slice(0, 8)}`;
    const stored = stripe.subscriptions.get(id)! as { items: { data: { id: string }[] } };
    stripe.subscriptions.set(id, { ...stored, status: 'past_due', metadata: { org_id: orgId, tier: 'teams' }, items: { object: 'list', data: [{ ...stored.items.data[0]!, price: { id: 'price_teams' } }] } });
    const mark = since();
    // A delayed event whose snapshot says "active, pro".
    const late = signedEvent({ type: 'customer.subscription.updated', object: { id, object: 'subscription', customer: `cus_${orgId.slice(0, 8)}`, status: 'active', cancel_at_period_end: false, metadata: { org_id: orgId, tier: 'pro' }, items: { object: 'list', data: [] } } });
    expect((await postWebhook(svc, late.body, late.signature)).json().data.outcome).toBe('subscription past_due');
    expect(after(mark).map((r) => `${r.method} ${r.path}`)).toEqual([`GET /v1/subscriptions/${id}`]);
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'teams', status: 'past_due' });
    // Stripe redelivers it: answered from the record, without reading the subscription again.
    const replayMark = since();
    expect((await postWebhook(svc, late.body, late.signature)).json().data).toMatchObject({ duplicate: true, outcome: 'subscription past_due' });
    expect(after(replayMark)).toHaveLength(0);
  });
});

describe('identity.org.deleted', () => {
  it('cancels the live Stripe subscription once, stops auto top-ups and puts the org on Free', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await subscribe(orgId, 'teams');
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 10, package_slug: 'tokens-10k' } });
    const ev = await publish(svc, 'identity.org.deleted', { orgId, tenantId: crypto.randomUUID() }, { orgId });
    await waitFor(async () => (await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data.tier === 'free', { message: 'plan ended' });
    // Redelivered past the broker's de-dupe: the same cancel request, answered from Stripe's idempotency store.
    await publish(svc, 'identity.org.deleted', { orgId, tenantId: crypto.randomUUID() }, { orgId, id: ev.id, msgId: `again-${ev.id}` });
    const cancels = stripe.find('DELETE', `/v1/subscriptions/sub_${orgId.slice(0, 8)}`);
    expect(cancels).toHaveLength(1);
    expect(cancels[0]!.headers['idempotency-key']).toBe(`aos-org-deleted-${orgId}`);
    expect(stripe.subscriptions.get(`sub_${orgId.slice(0, 8)}`)!.status).toBe('canceled');
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'free', status: 'canceled' });
    expect((await svc.inject(p, { method: 'GET', url: '/billing/auto-topup' })).json().data.enabled).toBe(false);
    expect((await outboxEvents(svc, 'billing.subscription.changed', orgId)).at(-1)!.data).toMatchObject({ tier: 'free', previousTier: 'teams' });
  });
});

describe('identity.user.deleted', () => {
  it("closes the erased user's personal organization too (identity removes it without an org event)", async () => {
    const p = owner();
    const orgId = p.orgId!;
    const userId = crypto.randomUUID();
    const tenantId = crypto.randomUUID();
    await publish(svc, 'identity.user.registered', { userId, email: 'e@example.com', username: 'e', tenantId, personalOrgId: orgId, platformRoles: [] }, { orgId, tenantId });
    await subscribe(orgId, 'pro');
    await waitFor(async () => (await svc.inject(p, { method: 'GET', url: '/billing/usage' })).json().data.usage.seats === 1, { message: 'registered' });
    await publish(svc, 'identity.user.deleted', { userId, tenantId }, { orgId: null, tenantId });
    await waitFor(async () => (await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data.tier === 'free', { message: 'personal org closed' });
    expect(stripe.find('DELETE', `/v1/subscriptions/sub_${orgId.slice(0, 8)}`)).toHaveLength(1);
    expect((await svc.inject(p, { method: 'GET', url: '/billing/usage' })).json().data.usage.seats).toBe(0);
  });
});

describe('the Stripe stand-in', () => {
  it('saw only requests shaped like the real API: secret key, API version, form-encoded bodies', () => {
    expect(stripe.requests.length).toBeGreaterThan(20);
    for (const r of stripe.requests) {
      expect(r.headers.authorization, r.path).toBe('Bearer sk_test_local');
      expect(r.headers['stripe-version'], r.path).toMatch(/^\d{4}-\d{2}-\d{2}/);
      expect(r.headers['user-agent'], r.path).toMatch(/^Stripe\/v1 NodeBindings\//);
      if (r.method === 'POST' && r.raw) expect(r.headers['content-type'], r.path).toMatch(/^application\/x-www-form-urlencoded/);
    }
  });

  it('answers like Stripe: 401 without a key, 400 for JSON bodies and missing params, 404 resource_missing, idempotency replays', async () => {
    const call = (path: string, init: RequestInit) => fetch(`${stripe.url}${path}`, init).then(async (r) => ({ status: r.status, headers: r.headers, body: await r.json() as { error?: { type: string; code?: string; param?: string } } & Record<string, unknown> }));
    const form = { authorization: 'Bearer sk_test_x', 'content-type': 'application/x-www-form-urlencoded' };
    expect((await call('/v1/customers', { method: 'POST' })).status).toBe(401);
    expect((await call('/v1/customers', { method: 'POST', headers: { ...form, 'content-type': 'application/json' }, body: '{"email":"a@b.c"}' })).status).toBe(400);
    expect((await call('/v1/payment_intents', { method: 'POST', headers: form, body: 'currency=usd' })).body.error).toMatchObject({ code: 'parameter_missing', param: 'amount' });
    expect((await call('/v1/subscriptions/sub_nope', { method: 'GET', headers: form })).body.error).toMatchObject({ code: 'resource_missing' });
    const first = await call('/v1/customers', { method: 'POST', headers: { ...form, 'idempotency-key': 'k1' }, body: 'email=a%40b.c' });
    const again = await call('/v1/customers', { method: 'POST', headers: { ...form, 'idempotency-key': 'k1' }, body: 'email=a%40b.c' });
    expect(again.body.id).toBe(first.body.id);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect((await call('/v1/customers', { method: 'POST', headers: { ...form, 'idempotency-key': 'k1' }, body: 'email=other%40b.c' })).body.error).toMatchObject({ type: 'idempotency_error' });
  });
});
