import { apiKeyPrincipal, userPrincipal, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectLedgersConsistent, owner, publish, startBilling, type Billing } from './helpers.js';

let svc: Billing;
beforeAll(async () => { svc = await startBilling(); });
afterAll(async () => { if (svc) expect(await expectLedgersConsistent(svc)).toBeGreaterThan(0); await svc?.close(); });

const record = (p: ReturnType<typeof owner>, payload: Record<string, unknown>) => svc.inject(p, { method: 'POST', url: '/billing/costs', payload });

describe('POST /billing/costs', () => {
  it('records an infrastructure cost once per (source, reference_id)', async () => {
    const p = owner();
    const body = { source: 'aws', reference_id: 'inv-2024-07:ec2', amount_usd: 12.345678, product: 'shop', description: 'EC2 July' };
    const first = await record(p, body);
    expect(first.statusCode).toBe(201);
    expect(first.json().data).toMatchObject({ replayed: false, cost: { kind: 'infra', source: 'aws', amount_usd: 12.345678, product: 'shop', tokens: 0, task_id: null } });
    const again = await record(p, body);
    expect(again.statusCode).toBe(200);
    expect(again.json().data).toMatchObject({ replayed: true, cost: { id: first.json().data.cost.id } });
    const changed = await record(p, { ...body, amount_usd: 13 });
    expect(changed.statusCode).toBe(409);
    expect(changed.json().error.code).toBe('CONFLICT');
    // Another source may use the same reference; another org is another ledger.
    expect((await record(p, { ...body, source: 'gcp' })).statusCode).toBe(201);
    expect((await record(owner(), body)).statusCode).toBe(201);
  });

  it('validates input: amounts, reserved source, dates, unknown fields; only admins record', async () => {
    const p = owner();
    const ok = { source: 'vercel', reference_id: 'r1', amount_usd: 1 };
    for (const bad of [
      { ...ok, amount_usd: 0 }, { ...ok, amount_usd: -3 }, { ...ok, amount_usd: 'five' }, { ...ok, amount_usd: 1e12 }, { ...ok, amount_usd: 1e8 },
      { ...ok, source: 'agents.run.completed' }, { ...ok, source: "x'; DROP TABLE billing_cost_records; --" }, { ...ok, source: 'a'.repeat(101) },
      { ...ok, kind: 'salary' }, { ...ok, occurred_at: 'yesterday' }, { ...ok, occurred_at: new Date(Date.now() + 3 * 86400_000).toISOString() },
      { source: 'vercel', amount_usd: 1 }, { ...ok, reference_id: '' }, { ...ok, tokens: -1 },
    ]) {
      const res = await record(p, bad);
      expect(res.statusCode, JSON.stringify(bad).slice(0, 120)).toBe(400);
      expect(res.json().error.code).toBe('VALIDATION_ERROR');
    }
    expect((await record(userPrincipal({ orgId: p.orgId, orgRole: 'member' }), ok)).statusCode).toBe(403);
    expect((await record(apiKeyPrincipal(['billing:read'], { orgId: p.orgId, orgRole: 'admin' }), ok)).json().error.code).toBe('SCOPE_REQUIRED');
  });
});

describe('GET /billing/costs and the overview', () => {
  it('lists costs (filters, pagination, org scoping) and attributes run costs to their task\'s product', async () => {
    const p = owner();
    const orgId = p.orgId!;
    const task = { taskId: 501, title: 't', status: 'todo', priority: 'medium', type: 'feature', assignee: null, productId: 3, productSlug: 'shop', parentTaskId: null, createdBy: null };
    await publish(svc, 'tasks.task.created', task, { orgId });
    const run = (runId: number, taskId: number | null, costUsd: number) => publish(svc, 'agents.run.completed', {
      runId, agentId: 1, agentName: 'a', status: 'succeeded', taskId, model: 'm1', provider: 'p', usage: { inputTokens: 0, outputTokens: 0, totalTokens: 0 }, costUsd, userId: null, durationMs: 1, error: null,
    }, { orgId });
    await run(1, 501, 0.4);
    await run(2, null, 0.1);
    // Earlier this month (never before its start, so the monthly figures stay exact).
    const now = new Date();
    const earlier = new Date(Math.max(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) + 1_000, now.getTime() - 300_000));
    await record(p, { source: 'aws', reference_id: 'a1', amount_usd: 20, product: 'shop', occurred_at: earlier.toISOString() });
    await record(p, { source: 'aws', reference_id: 'a2', amount_usd: 5 });
    await record(p, { source: 'postmark', reference_id: 'p1', amount_usd: 1.5, product: 'blog' });
    await waitFor(async () => (await svc.inject(p, { method: 'GET', url: '/billing/costs?kind=ai' })).json().meta.total === 2, { message: 'run costs recorded' });

    const all = await svc.inject(p, { method: 'GET', url: '/billing/costs?limit=2' });
    expect(all.json().meta).toEqual({ total: 5, limit: 2, offset: 0 });
    const ai = (await svc.inject(p, { method: 'GET', url: '/billing/costs?kind=ai' })).json().data;
    expect(ai.find((c: { reference_id: string }) => c.reference_id === '1')).toMatchObject({ source: 'agents.run.completed', task_id: '501', product: 'shop', amount_usd: 0.4 });
    const shop = (await svc.inject(p, { method: 'GET', url: '/billing/costs?product=shop' })).json();
    expect(shop.meta.total).toBe(2);
    expect((await svc.inject(p, { method: 'GET', url: '/billing/costs?source=aws' })).json().meta.total).toBe(2);
    expect((await svc.inject(p, { method: 'GET', url: `/billing/costs?from=${new Date(earlier.getTime() + 1).toISOString()}&kind=infra` })).json().meta.total).toBe(2);
    for (const q of ['kind=salary', 'limit=-1', 'offset=-5', 'limit=abc', 'from=never']) {
      expect((await svc.inject(p, { method: 'GET', url: `/billing/costs?${q}` })).statusCode, q).toBe(400);
    }
    expect((await svc.inject(owner(), { method: 'GET', url: '/billing/costs' })).json().meta.total).toBe(0);

    const d = (await svc.inject(p, { method: 'GET', url: '/billing/overview' })).json().data;
    expect(d.infra_spend).toMatchObject({ total_usd: 26.5, this_month_usd: 26.5 });
    expect(d.infra_spend.by_source).toEqual([{ source: 'aws', usd: 25 }, { source: 'postmark', usd: 1.5 }]);
    expect(d.ai_spend).toMatchObject({ total_usd: 0.5 });
    expect(d.total_spend_usd).toBe(27);
    expect(d.spend_by_product).toEqual([
      { product: 'blog', ai_usd: 0, infra_usd: 1.5 },
      { product: 'shop', ai_usd: 0.4, infra_usd: 20 },
      { product: null, ai_usd: 0.1, infra_usd: 5 },
    ]);
  });
});
