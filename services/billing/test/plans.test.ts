import { ANONYMOUS } from '@aos/contracts';
import { adminPrincipal, apiKeyPrincipal, startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service } from '../src/service.js';
import { outboxEvents, owner, publish, type Billing, expectLedgersConsistent } from './helpers.js';

// No Stripe settings at all: the catalogue, plans, usage and ledgers must still work.
let svc: Billing;
beforeAll(async () => { svc = (await startTestService(service)) as unknown as Billing; });
afterAll(async () => { if (svc) expect(await expectLedgersConsistent(svc)).toBeGreaterThan(0); await svc?.close(); });

describe('public catalogue', () => {
  it('GET /billing/tiers lists the four tiers with the reference rate limits, for anonymous callers', async () => {
    const res = await svc.inject(ANONYMOUS, { method: 'GET', url: '/billing/tiers' });
    expect(res.statusCode).toBe(200);
    const tiers = res.json().data;
    expect(tiers.map((t: { slug: string }) => t.slug)).toEqual(['free', 'pro', 'teams', 'enterprise']);
    const rate = Object.fromEntries(tiers.map((t: { slug: string; limits: { requests_per_minute: number; requests_per_hour: number } }) => [t.slug, [t.limits.requests_per_minute, t.limits.requests_per_hour]]));
    expect(rate).toEqual({ free: [100, 1_000], pro: [600, 10_000], teams: [2_000, 50_000], enterprise: [null, null] });
    expect(tiers[1]).toMatchObject({ name: 'Pro', price_cents: 2900, currency: 'usd', interval: 'month', limits: { agents: 10, tasks_per_month: 1_000, seats: 3, included_tokens: 50_000 } });
    expect(res.json().meta).toEqual({ total: 4, limit: 50, offset: 0 });
    const paged = await svc.inject(ANONYMOUS, { method: 'GET', url: '/billing/tiers?limit=2&offset=1' });
    expect(paged.json()).toMatchObject({ data: [{ slug: 'pro' }, { slug: 'teams' }], meta: { total: 4, limit: 2, offset: 1 } });
    const selfServe = await svc.inject(ANONYMOUS, { method: 'GET', url: '/billing/tiers?self_serve=false' });
    expect(selfServe.json().data.map((t: { slug: string }) => t.slug)).toEqual(['enterprise']);
  });

  it('GET /billing/pricing has tiers, token and credit packages and economics', async () => {
    const res = await svc.inject(ANONYMOUS, { method: 'GET', url: '/billing/pricing' });
    expect(res.statusCode).toBe(200);
    const d = res.json().data;
    expect(d.token_packages.map((p: { slug: string }) => p.slug)).toEqual(['tokens-10k', 'tokens-50k', 'tokens-200k']);
    expect(d.credit_packages).toHaveLength(3);
    expect(d.economics).toMatchObject({ signup_bonus_tokens: 1_000, cents_per_1k_tokens: [{ package_slug: 'tokens-10k', cents: 100 }, { package_slug: 'tokens-50k', cents: 90 }, { package_slug: 'tokens-200k', cents: 80 }] });
  });

  it('still needs the gateway: a call without the internal token is 401', async () => {
    expect((await svc.inject(null, { method: 'GET', url: '/billing/tiers' })).statusCode).toBe(401);
  });
});

describe('without Stripe keys', () => {
  it('Stripe-backed routes answer 503 PAYMENTS_NOT_CONFIGURED naming the missing setting', async () => {
    const p = owner();
    for (const [url, payload] of [['/billing/checkout', { tier: 'pro' }], ['/billing/portal', {}], ['/billing/create-payment-intent', { package_slug: 'tokens-10k' }], ['/billing/change-plan', { tier: 'pro' }]] as const) {
      const res = await svc.inject(p, { method: 'POST', url, payload });
      expect(res.statusCode, url).toBe(503);
      expect(res.json().error).toMatchObject({ code: 'PAYMENTS_NOT_CONFIGURED', details: [{ setting: 'STRIPE_SECRET_KEY' }] });
      expect(res.json().error.message).toContain('STRIPE_SECRET_KEY');
    }
  });

  it('the ledger and everything else still work', async () => {
    const p = owner();
    expect((await svc.inject(p, { method: 'GET', url: '/tokens/balance' })).json().data.balance).toBe(0);
    expect((await svc.inject(p, { method: 'GET', url: '/billing/plan-summary' })).statusCode).toBe(200);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 10, package_slug: 'tokens-10k' } })).statusCode).toBe(201);
  });
});

describe('subscription and usage', () => {
  it('an org that never subscribed is on Free', async () => {
    const p = owner();
    const res = await svc.inject(p, { method: 'GET', url: '/billing/subscription' });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ org_id: p.orgId, tier: 'free', status: 'active', is_default: true, stripe_subscription_id: null, limits: { requests_per_minute: 100 } });
  });

  it('counts agents, seats and tasks from other services\' events, newest state winning', async () => {
    const p = owner();
    const orgId = p.orgId!;
    const t0 = Date.now() - 60_000;
    const at = (s: number) => new Date(t0 + s * 1000).toISOString();
    await publish(svc, 'agents.agent.created', { agentId: 1, name: 'a', status: 'idle' }, { orgId, occurredAt: at(1) });
    await publish(svc, 'agents.agent.created', { agentId: 2, name: 'b', status: 'idle' }, { orgId, occurredAt: at(2) });
    // Deleted arrives before its created: agent 3 must not be counted.
    await publish(svc, 'agents.agent.deleted', { agentId: 3, name: 'c', status: 'deleted' }, { orgId, occurredAt: at(5) });
    await publish(svc, 'agents.agent.created', { agentId: 3, name: 'c', status: 'idle' }, { orgId, occurredAt: at(3) });
    for (let i = 1; i <= 3; i++) await publish(svc, 'tasks.task.created', { taskId: i, title: `t${i}`, status: 'todo', priority: 'medium', type: 'feature', assignee: null, productId: null, productSlug: null, parentTaskId: null, createdBy: null }, { orgId, occurredAt: at(i) });
    await publish(svc, 'identity.member.added', { orgId, tenantId: 't', userId: 'u1', role: 'owner' }, { orgId, occurredAt: at(1) });
    await waitFor(async () => {
      const d = (await svc.inject(p, { method: 'GET', url: '/billing/usage' })).json().data;
      return d.usage.tasks_this_month === 3 && d.usage.seats === 1 && d.usage.agents === 2;
    }, { message: 'usage from events' });
    const summary = (await svc.inject(p, { method: 'GET', url: '/billing/plan-summary' })).json().data;
    expect(summary.metrics).toEqual({
      agents: { used: 2, limit: 3, remaining: 1, percent: 66.7 }, seats: { used: 1, limit: 1, remaining: 0, percent: 100 }, tasks_per_month: { used: 3, limit: 100, remaining: 97, percent: 3 },
    });
    expect(summary.rate_limits).toEqual({ requests_per_minute: 100, requests_per_hour: 1_000 });
    const v = await svc.inject(p, { method: 'POST', url: '/billing/validate-downgrade', payload: { tier: 'pro' } });
    expect(v.json().data).toMatchObject({ is_downgrade: false, allowed: true, violations: [] });
  });

  it('a deactivated agent (status offline) stops counting against the plan and counts again once reactivated', async () => {
    const p = owner();
    const orgId = p.orgId!;
    const t0 = Date.now() - 60_000;
    const at = (s: number) => new Date(t0 + s * 1000).toISOString();
    const agents = async () => (await svc.inject(p, { method: 'GET', url: '/billing/usage' })).json().data.usage.agents;
    await publish(svc, 'agents.agent.created', { agentId: 1, name: 'a', status: 'active' }, { orgId, occurredAt: at(1) });
    await publish(svc, 'agents.agent.created', { agentId: 2, name: 'b', status: 'active' }, { orgId, occurredAt: at(2) });
    await publish(svc, 'agents.agent.stopped', { agentId: 2, name: 'b', status: 'paused', note: null }, { orgId, occurredAt: at(3) });
    await waitFor(async () => (await agents()) === 2, { message: 'a paused agent still counts' });
    await publish(svc, 'agents.agent.stopped', { agentId: 1, name: 'a', status: 'offline', note: 'deactivated' }, { orgId, occurredAt: at(4) });
    await waitFor(async () => (await agents()) === 1, { message: 'deactivation frees the slot' });
    await publish(svc, 'agents.agent.updated', { agentId: 1, name: 'a', status: 'active', changes: ['status'] }, { orgId, occurredAt: at(5) });
    await waitFor(async () => (await agents()) === 2, { message: 'reactivation counts again' });
  });

  it('counts tasks created this calendar month against tasks_per_month (older ones do not count)', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await svc.ctx.pool.query("INSERT INTO billing_subscriptions (org_id, tier, status) VALUES ($1, 'pro', 'active')", [orgId]);
    const task = (taskId: number) => ({ taskId, title: `t${taskId}`, status: 'todo', priority: 'medium', type: 'feature', assignee: null, productId: null, productSlug: null, parentTaskId: null, createdBy: null });
    const lastMonth = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), 1) - 86_400_000).toISOString();
    await publish(svc, 'tasks.task.created', task(1), { orgId, occurredAt: lastMonth });
    await Promise.all(Array.from({ length: 101 }, (_, i) => publish(svc, 'tasks.task.created', task(i + 2), { orgId })));
    await waitFor(async () => (await svc.inject(p, { method: 'GET', url: '/billing/usage' })).json().data.usage.tasks_this_month === 101, { message: '101 tasks this month' });
    const check = (await svc.inject(p, { method: 'POST', url: '/billing/validate-downgrade', payload: { tier: 'free' } })).json().data;
    expect(check).toMatchObject({ current_tier: 'pro', is_downgrade: true, allowed: false, usage: { tasks_this_month: 101 } });
    expect(check.violations).toEqual([{ resource: 'tasks_per_month', current: 101, limit: 100, excess: 1 }]);
    const refused = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'free' } });
    expect(refused.statusCode).toBe(422);
    expect(refused.json().error.details).toEqual(check.violations);
  });

  it('frees the seats of an erased account in every organization (identity.user.deleted)', async () => {
    const a = owner();
    const b = owner();
    const userId = crypto.randomUUID();
    for (const org of [a.orgId!, b.orgId!]) {
      await publish(svc, 'identity.member.added', { orgId: org, tenantId: 't', userId, role: 'member' }, { orgId: org });
      await publish(svc, 'identity.member.added', { orgId: org, tenantId: 't', userId: crypto.randomUUID(), role: 'owner' }, { orgId: org });
    }
    const seats = async (p: typeof a) => (await svc.inject(p, { method: 'GET', url: '/billing/usage' })).json().data.usage.seats;
    await waitFor(async () => (await seats(a)) === 2 && (await seats(b)) === 2, { message: 'seats counted' });
    await publish(svc, 'identity.user.deleted', { userId, tenantId: null }, { orgId: null });
    await waitFor(async () => (await seats(a)) === 1 && (await seats(b)) === 1, { message: 'seats freed' });
    // A late "added" from before the erasure does not bring the seat back.
    await publish(svc, 'identity.member.added', { orgId: a.orgId!, tenantId: 't', userId, role: 'member' }, { orgId: a.orgId!, occurredAt: new Date(Date.now() - 60_000).toISOString() });
    // The same consumer handles events in stream order: once a later one shows, the late one was handled.
    await publish(svc, 'identity.member.added', { orgId: b.orgId!, tenantId: 't', userId: crypto.randomUUID(), role: 'member' }, { orgId: b.orgId! });
    await waitFor(async () => (await seats(b)) === 2, { message: 'later event handled' });
    expect(await seats(a)).toBe(1);
  });

  it('a downgrade of a plan without a Stripe subscription applies at once and emits billing.subscription.changed', async () => {
    const p = owner();
    await svc.ctx.pool.query("INSERT INTO billing_subscriptions (org_id, tier, status) VALUES ($1, 'teams', 'active')", [p.orgId]);
    const res = await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } });
    expect(res.json().data).toMatchObject({ action: 'downgraded', subscription: { tier: 'pro' } });
    expect((await outboxEvents(svc, 'billing.subscription.changed', p.orgId!))[0]!.data).toMatchObject({ tier: 'pro', previousTier: 'teams' });
    expect((await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'enterprise' } })).statusCode).toBe(422);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro' } })).statusCode).toBe(409);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/change-plan', payload: { tier: 'pro', extra: 1 } })).statusCode).toBe(409);
    expect((await svc.inject(p, { method: 'POST', url: '/billing/validate-downgrade', payload: {} })).statusCode).toBe(400);
  });

  it('keeps organizations apart and enforces scopes and roles', async () => {
    const a = owner();
    await svc.ctx.pool.query("INSERT INTO billing_subscriptions (org_id, tier, status) VALUES ($1, 'pro', 'active')", [a.orgId]);
    const b = userPrincipal();
    expect((await svc.inject(b, { method: 'GET', url: '/billing/subscription' })).json().data.tier).toBe('free');
    expect((await svc.inject(apiKeyPrincipal(['tasks:read'], { orgId: a.orgId }), { method: 'GET', url: '/billing/subscription' })).statusCode).toBe(403);
    expect((await svc.inject(apiKeyPrincipal(['billing:read'], { orgId: a.orgId }), { method: 'GET', url: '/billing/subscription' })).json().data.tier).toBe('pro');
    expect((await svc.inject(userPrincipal({ orgId: a.orgId, orgRole: 'viewer' }), { method: 'POST', url: '/billing/change-plan', payload: { tier: 'free' } })).statusCode).toBe(403);
    expect((await svc.inject(null, { method: 'GET', url: '/billing/usage' })).statusCode).toBe(401);
    expect((await svc.inject(ANONYMOUS, { method: 'GET', url: '/billing/plan-summary' })).statusCode).toBe(401);
    expect((await svc.inject(userPrincipal({ orgId: null }), { method: 'GET', url: '/billing/subscription' })).statusCode).toBe(403);
  });
});

describe('GET /billing/overview', () => {
  it('shows the org\'s MRR by product and AI spend from run events; scope=platform is for platform admins', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await svc.ctx.pool.query("INSERT INTO billing_subscriptions (org_id, tier, status, mrr_cents) VALUES ($1, 'teams', 'active', 9900)", [orgId]);
    const run = (runId: number, costUsd: number, model: string) => publish(svc, 'agents.run.completed', { runId, agentId: 1, agentName: 'a', status: 'succeeded', taskId: null, model, provider: 'p', usage: { inputTokens: 1, outputTokens: 1, totalTokens: 2 }, costUsd, userId: null, durationMs: 1, error: null }, { orgId });
    await run(1, 0.25, 'big');
    await run(2, 0.05, 'small');
    await run(3, 0.25, 'big');
    await waitFor(async () => (await svc.inject(p, { method: 'GET', url: '/billing/overview' })).json().data.ai_spend.total_usd === 0.55, { message: 'the three runs\' costs recorded' });
    const d = (await svc.inject(p, { method: 'GET', url: '/billing/overview' })).json().data;
    expect(d).toMatchObject({ scope: 'org', mrr_cents: 9900, active_subscriptions: 1, mrr_by_product: [{ product: 'teams', mrr_cents: 9900, subscriptions: 1 }], ai_spend: { total_usd: 0.55, this_month_usd: 0.55 }, infra_spend: { total_usd: 0 }, total_spend_usd: 0.55 });
    expect(d.ai_spend.by_model).toEqual([{ model: 'big', usd: 0.5, tokens: 4, runs: 2 }, { model: 'small', usd: 0.05, tokens: 2, runs: 1 }]);
    expect((await svc.inject(owner(), { method: 'GET', url: '/billing/overview' })).json().data).toMatchObject({ mrr_cents: 0, ai_spend: { total_usd: 0 } });
    expect((await svc.inject(p, { method: 'GET', url: '/billing/overview?scope=platform' })).statusCode).toBe(403);
    const platform = await svc.inject(adminPrincipal(), { method: 'GET', url: '/billing/overview?scope=platform' });
    expect(platform.json().data.scope).toBe('platform');
    expect(platform.json().data.mrr_cents).toBeGreaterThanOrEqual(9900);
  });
});
