import { adminPrincipal, apiKeyPrincipal, userPrincipal, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grantIncludedTokensForAll } from '../src/domain/managed-plans.js';
import {
  count, expectLedgersConsistent, fakeStripe, outboxEvents, owner, postWebhook, publish, signedEvent, startBilling, stripeEnv, subscribeThroughWebhooks,
  type Billing, type FakeStripe,
} from './helpers.js';

let stripe: FakeStripe;
let svc: Billing;
beforeAll(async () => {
  stripe = await fakeStripe();
  svc = await startBilling(stripeEnv(stripe));
});
afterAll(async () => { if (svc) expect(await expectLedgersConsistent(svc)).toBeGreaterThan(0); await svc?.close(); await stripe?.close(); });

const admin = adminPrincipal();
const plan = (orgId: string) => `/billing/admin/orgs/${orgId}/plan`;
const setPlan = (orgId: string, payload: Record<string, unknown>, as = admin) => svc.inject(as, { method: 'PUT', url: plan(orgId), payload });
const tokens = (orgId: string) => count(svc, `SELECT balance AS n FROM billing_ledger_accounts WHERE org_id = $1 AND ledger = 'tokens'`, [orgId]);
const contract = { requests_per_minute: 5_000, requests_per_hour: 200_000, agents: 500, seats: 120, included_tokens: 1_000_000 };

describe('PUT /billing/admin/orgs/{orgId}/plan', () => {
  it('sets Enterprise with negotiated limits, tells the gateway (limits in billing.subscription.changed) and grants the included tokens once', async () => {
    const p = owner();
    const orgId = p.orgId!;
    const res = await setPlan(orgId, { tier: 'enterprise', limits: contract, mrr_cents: 150_000, note: 'Contract ACME-42' });
    expect(res.statusCode, res.body).toBe(200);
    const limits = { requests_per_minute: 5_000, requests_per_hour: 200_000, agents: 500, seats: 120, tasks_per_month: null, included_tokens: 1_000_000 };
    expect(res.json().data).toMatchObject({ subscription: { tier: 'enterprise', status: 'active', managed: true, mrr_cents: 150_000, limits }, managed_by: admin.userId, note: 'Contract ACME-42' });

    const changed = await outboxEvents(svc, 'billing.subscription.changed', orgId);
    expect(changed.map((e) => e.data)).toEqual([expect.objectContaining({
      tier: 'enterprise', previousTier: 'free', status: 'active', userId: admin.userId,
      limits: { requestsPerMinute: 5_000, requestsPerHour: 200_000, agents: 500, seats: 120, tasksPerMonth: null, includedTokens: 1_000_000 },
    })]);
    // The org sees its plan and limits everywhere.
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'enterprise', managed: true, limits });
    const summary = (await svc.inject(p, { method: 'GET', url: '/billing/plan-summary' })).json().data;
    expect(summary).toMatchObject({
      rate_limits: { requests_per_minute: 5_000, requests_per_hour: 200_000 },
      metrics: { agents: { limit: 500 }, seats: { limit: 120 }, tasks_per_month: { limit: null } },
      tokens: { balance: 1_000_000, included_per_period: 1_000_000 },
    });
    expect((await svc.inject(p, { method: 'GET', url: '/billing/usage' })).json().data.limits).toEqual(limits);
    const overview = (await svc.inject(admin, { method: 'GET', url: '/billing/overview?scope=platform' })).json().data;
    expect(overview.mrr_by_product).toContainEqual(expect.objectContaining({ product: 'enterprise', mrr_cents: 150_000 }));

    // Setting the same plan again changes nothing: no event, no second grant.
    expect((await setPlan(orgId, { tier: 'enterprise', limits: contract, mrr_cents: 150_000, note: 'Contract ACME-42' })).statusCode).toBe(200);
    expect(await outboxEvents(svc, 'billing.subscription.changed', orgId)).toHaveLength(1);
    expect(await tokens(orgId)).toBe(1_000_000);
    // New limits are a change the gateway hears about; more included tokens grant only the difference.
    await setPlan(orgId, { tier: 'enterprise', limits: { ...contract, requests_per_minute: 8_000, included_tokens: 1_500_000 } });
    const latest = (await outboxEvents(svc, 'billing.subscription.changed', orgId)).at(-1)!.data;
    expect(latest).toMatchObject({ tier: 'enterprise', previousTier: 'enterprise', limits: { requestsPerMinute: 8_000, includedTokens: 1_500_000 } });
    expect(await tokens(orgId)).toBe(1_500_000);
    const grants = (await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=bonus' })).json().data;
    expect(grants.map((e: { amount: number; action: string }) => [e.amount, e.action])).toEqual([[500_000, 'included_tokens'], [1_000_000, 'included_tokens']]);

    // Each calendar month the included tokens come again (once, however often the job runs).
    const nextMonth = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 1, 0, 5));
    await grantIncludedTokensForAll(svc.ctx, nextMonth);
    await grantIncludedTokensForAll(svc.ctx, nextMonth);
    expect(await tokens(orgId)).toBe(3_000_000);
  });

  it('a managed plan is not changed by self-serve checkout, change-plan or Stripe events', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await setPlan(orgId, { tier: 'enterprise' });
    for (const [url, payload] of [['/billing/change-plan', { tier: 'pro' }], ['/billing/checkout', { tier: 'teams' }]] as const) {
      const res = await svc.inject(p, { method: 'POST', url, payload });
      expect(res.statusCode, url).toBe(409);
      expect(res.json().error.details).toEqual([{ tier: 'enterprise', managed: true }]);
    }
    const object = { id: `sub_late_${orgId.slice(0, 8)}`, object: 'subscription', customer: 'cus_x', status: 'active', cancel_at_period_end: false, metadata: { org_id: orgId, tier: 'pro' }, items: { object: 'list', data: [{ id: 'si_1', price: { id: 'price_pro' } }] } };
    const ev = signedEvent({ type: 'customer.subscription.updated', created: Math.floor(Date.now() / 1000) + 5, object });
    expect((await postWebhook(svc, ev.body, ev.signature)).json().data.outcome).toBe('ignored: plan managed by a platform admin');
    const cs = signedEvent({ type: 'checkout.session.completed', created: Math.floor(Date.now() / 1000) + 5, object: { id: 'cs_late', object: 'checkout.session', mode: 'subscription', client_reference_id: orgId, customer: 'cus_x', subscription: object.id, metadata: { org_id: orgId, tier: 'pro' } } });
    expect((await postWebhook(svc, cs.body, cs.signature)).json().data.outcome).toBe('ignored: plan managed by a platform admin');
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data).toMatchObject({ tier: 'enterprise', managed: true });
    // Enterprise limits left out are the catalogue's: unlimited.
    expect((await svc.inject(p, { method: 'GET', url: '/billing/subscription' })).json().data.limits).toEqual({ requests_per_minute: null, requests_per_hour: null, agents: null, tasks_per_month: null, seats: null, included_tokens: null });
  });

  it('refuses to leave a live Stripe subscription billing (409) unless told to cancel it, which it does once', async () => {
    const orgId = crypto.randomUUID();
    await subscribeThroughWebhooks(svc, stripe, orgId, 'pro');
    const refused = await setPlan(orgId, { tier: 'enterprise' });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.details).toEqual([{ field: 'cancel_stripe_subscription', stripe_subscription_id: `sub_${orgId.slice(0, 8)}`, tier: 'pro' }]);
    const res = await setPlan(orgId, { tier: 'enterprise', limits: { seats: 40 }, cancel_stripe_subscription: true });
    expect(res.statusCode, res.body).toBe(200);
    const cancels = stripe.find('DELETE', `/v1/subscriptions/sub_${orgId.slice(0, 8)}`);
    expect(cancels).toHaveLength(1);
    expect(cancels[0]!.headers['idempotency-key']).toBe(`aos-managed-plan-${orgId}-sub_${orgId.slice(0, 8)}`);
    expect(res.json().data.subscription).toMatchObject({ tier: 'enterprise', stripe_subscription_id: null, pending_tier: null, limits: { seats: 40 } });
    // Stripe's deletion webhook for the cancelled subscription does not undo it.
    const deleted = signedEvent({ type: 'customer.subscription.deleted', object: { ...stripe.subscriptions.get(`sub_${orgId.slice(0, 8)}`)!, status: 'canceled' } });
    await postWebhook(svc, deleted.body, deleted.signature);
    expect((await svc.inject(admin, { method: 'GET', url: plan(orgId) })).json().data.subscription).toMatchObject({ tier: 'enterprise', managed: true });
  });

  it('DELETE hands the organization back to self-serve Free; an older Stripe event does not resurrect the old plan', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await setPlan(orgId, { tier: 'teams', note: 'comped for the launch' });
    expect((await svc.inject(admin, { method: 'GET', url: plan(orgId) })).json().data).toMatchObject({ subscription: { tier: 'teams', managed: true, mrr_cents: 0 }, note: 'comped for the launch' });
    const released = await svc.inject(admin, { method: 'DELETE', url: plan(orgId) });
    expect(released.statusCode).toBe(200);
    expect(released.json().data.subscription).toMatchObject({ tier: 'free', managed: false, limits: { requests_per_minute: 100 } });
    expect((await outboxEvents(svc, 'billing.subscription.changed', orgId)).at(-1)!.data).toMatchObject({ tier: 'free', previousTier: 'teams', limits: { requestsPerMinute: 100, requestsPerHour: 1_000 } });
    expect((await svc.inject(admin, { method: 'DELETE', url: plan(orgId) })).statusCode).toBe(404);
    const old = signedEvent({ type: 'customer.subscription.updated', created: Math.floor(Date.now() / 1000) - 3_600, object: { id: 'sub_old', object: 'subscription', customer: 'cus_old', status: 'active', cancel_at_period_end: false, metadata: { org_id: orgId, tier: 'pro' }, items: { object: 'list', data: [{ id: 'si_1', price: { id: 'price_pro' } }] } } });
    expect((await postWebhook(svc, old.body, old.signature)).json().data.outcome).toBe('stale: newer subscription state kept');
    // Self-serve again: change-plan works.
    expect((await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } })).json().data.action).toBe('checkout_required');
  });

  it('ends with the organization: a deleted org is back on Free, unmanaged', async () => {
    const orgId = crypto.randomUUID();
    await setPlan(orgId, { tier: 'enterprise', limits: { agents: 1_000 } });
    await publish(svc, 'identity.org.deleted', { orgId, tenantId: crypto.randomUUID() }, { orgId });
    await waitFor(async () => (await svc.inject(admin, { method: 'GET', url: plan(orgId) })).json().data.subscription.tier === 'free', { message: 'plan ended' });
    expect((await svc.inject(admin, { method: 'GET', url: plan(orgId) })).json().data.subscription).toMatchObject({ managed: false, limits: { agents: 3 } });
  });

  it('is for platform admins only, and validates what it is given', async () => {
    const orgId = crypto.randomUUID();
    expect((await setPlan(orgId, { tier: 'enterprise' }, owner(orgId))).statusCode).toBe(403);
    expect((await svc.inject(apiKeyPrincipal(['billing:write'], { orgId, orgRole: 'owner' }), { method: 'PUT', url: plan(orgId), payload: { tier: 'enterprise' } })).statusCode).toBe(403);
    expect((await svc.inject(null, { method: 'PUT', url: plan(orgId), payload: { tier: 'enterprise' } })).statusCode).toBe(401);
    expect((await svc.inject(userPrincipal({ orgId }), { method: 'GET', url: plan(orgId) })).statusCode).toBe(403);
    expect((await svc.inject(owner(orgId), { method: 'DELETE', url: plan(orgId) })).statusCode).toBe(403);
    for (const [payload, status] of [
      [{ tier: 'gold' }, 400], [{}, 400], [{ tier: 'enterprise', limits: { agents: -1 } }, 400], [{ tier: 'enterprise', limits: { agents: 'many' } }, 400],
      [{ tier: 'enterprise', limits: { requests_per_minute: 0 } }, 400],
      [{ tier: 'enterprise', limits: { requests_per_minute: 100, requests_per_hour: 50 } }, 400], [{ tier: 'enterprise', mrr_cents: -1 }, 400],
      [{ tier: 'enterprise', note: 'x'.repeat(501) }, 400], [{ tier: 'pro', limits: { agents: 20 } }, 422],
    ] as const) {
      const res = await setPlan(orgId, payload);
      expect(res.statusCode, JSON.stringify(payload)).toBe(status);
      expect(res.json().error.code).toBe(status === 400 ? 'VALIDATION_ERROR' : 'UNPROCESSABLE');
    }
    expect((await svc.inject(admin, { method: 'PUT', url: '/billing/admin/orgs/not-a-uuid/plan', payload: { tier: 'enterprise' } })).statusCode).toBe(400);
    expect((await svc.inject(admin, { method: 'GET', url: plan(orgId) })).json().data.subscription).toMatchObject({ tier: 'free', managed: false, is_default: true });
  });
});

describe('POST /billing/admin/plans/announce', () => {
  it('emits every organization\'s current plan again (tier, status, limits), for platform admins only', async () => {
    const enterprise = crypto.randomUUID();
    const comped = crypto.randomUUID();
    await setPlan(enterprise, { tier: 'enterprise', limits: { agents: 7, seats: null } });
    await setPlan(comped, { tier: 'teams' });
    const before = (await outboxEvents(svc, 'billing.subscription.changed')).length;
    expect((await svc.inject(owner(enterprise), { method: 'POST', url: '/billing/admin/plans/announce' })).statusCode).toBe(403);
    const res = await svc.inject(admin, { method: 'POST', url: '/billing/admin/plans/announce' });
    expect(res.statusCode, res.body).toBe(200);
    const all = await outboxEvents(svc, 'billing.subscription.changed');
    expect(all.length - before).toBe(res.json().data.announced);
    const latest = (orgId: string) => all.filter((e) => e.orgId === orgId).at(-1)!.data;
    expect(latest(enterprise)).toMatchObject({ tier: 'enterprise', previousTier: 'enterprise', status: 'active', limits: { agents: 7, seats: null, tasksPerMonth: null } });
    expect(latest(comped)).toMatchObject({ tier: 'teams', previousTier: 'teams', limits: { agents: 50, seats: 20, tasksPerMonth: 10_000 } });
  });
});
