import { adminPrincipal, apiKeyPrincipal, userPrincipal, sleep, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anonymous, count, outboxEvents, owner, publish, startBilling, type Billing, expectLedgersConsistent } from './helpers.js';

let svc: Billing;
beforeAll(async () => { svc = await startBilling({ SIGNUP_BONUS_TOKENS: '500' }); });
afterAll(async () => { if (svc) expect(await expectLedgersConsistent(svc)).toBeGreaterThan(0); await svc?.close(); });

/** Grants tokens the way the service itself does: a signup bonus for a fresh personal org. */
async function fund(orgId: string, amount: number) {
  await svc.ctx.pool.query(`INSERT INTO billing_ledger_entries (org_id, ledger, type, amount, reference_id) VALUES ($1, 'tokens', 'admin_grant', $2, $3)`, [orgId, amount, `grant-${crypto.randomUUID()}`]);
}
const balance = async (orgId: string) => count(svc, `SELECT balance AS n FROM billing_ledger_accounts WHERE org_id = $1 AND ledger = 'tokens'`, [orgId]);
const journal = async (orgId: string) => count(svc, `SELECT COALESCE(sum(amount),0) AS n FROM billing_ledger_entries WHERE org_id = $1 AND ledger = 'tokens'`, [orgId]);

describe('signup bonus', () => {
  it('credits the personal organization once, even when identity.user.registered is delivered again', async () => {
    const orgId = crypto.randomUUID();
    const userId = crypto.randomUUID();
    const data = { userId, email: 'a@example.com', username: 'a', tenantId: crypto.randomUUID(), personalOrgId: orgId, platformRoles: [] };
    const ev = await publish(svc, 'identity.user.registered', data, { orgId, tenantId: data.tenantId });
    await waitFor(async () => (await balance(orgId)) === 500, { message: 'signup bonus' });
    // Past the broker's de-dupe (new msg id): the inbox stops the same event; a new event id for the same user hits the ledger reference.
    await publish(svc, 'identity.user.registered', data, { orgId, id: ev.id, msgId: `again-${ev.id}` });
    const third = await publish(svc, 'identity.user.registered', data, { orgId });
    await waitFor(async () => (await count(svc, 'SELECT count(*) AS n FROM aos_inbox WHERE event_id = $1', [third.id])) === 1, { message: 'second event handled' });
    await sleep(500);
    expect(await balance(orgId)).toBe(500);
    const res = await svc.inject(owner(orgId), { method: 'GET', url: '/tokens/transactions?type=signup_bonus' });
    expect(res.json().meta.total).toBe(1);
    expect(res.json().data[0]).toMatchObject({ type: 'signup_bonus', amount: 500, balance_after: 500, user_id: userId });
    expect((await outboxEvents(svc, 'billing.tokens.credited', orgId)).length).toBe(1);
  });
});

describe('POST /tokens/consume', () => {
  it('debits, returns the entry and the new balance, and emits billing.tokens.consumed', async () => {
    const p = owner();
    await fund(p.orgId!, 100);
    const res = await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount: 30, action: 'chat', metadata: { model: 'x' } } });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ balance: 70, replayed: false, transaction: { type: 'consume', amount: -30, balance_after: 70, action: 'chat', user_id: p.userId } });
    const bal = await svc.inject(p, { method: 'GET', url: '/tokens/balance' });
    expect(bal.json().data).toMatchObject({ org_id: p.orgId, balance: 70 });
    const events = await outboxEvents(svc, 'billing.tokens.consumed', p.orgId!);
    expect(events.map((e) => e.data)).toEqual([{ amount: 30, balance: 70, action: 'chat', referenceId: null, userId: p.userId }]);
  });

  it('answers 402 INSUFFICIENT_BALANCE and books nothing when the balance is short', async () => {
    const p = owner();
    await fund(p.orgId!, 10);
    const res = await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount: 11, action: 'chat' } });
    expect(res.statusCode).toBe(402);
    expect(res.json().error).toMatchObject({ code: 'INSUFFICIENT_BALANCE', details: [{ balance: 10, required: 11 }] });
    expect(await balance(p.orgId!)).toBe(10);
    const empty = await svc.inject(owner(), { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'chat' } });
    expect(empty.statusCode).toBe(402);
  });

  it('is idempotent by reference_id: a retry returns the first entry and debits once', async () => {
    const p = owner();
    await fund(p.orgId!, 100);
    const body = { amount: 40, action: 'export', reference_id: 'job-77' };
    const first = await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: body });
    const again = await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: body });
    expect(first.statusCode).toBe(200);
    expect(again.json().data).toMatchObject({ replayed: true, balance: 60, transaction: { id: first.json().data.transaction.id } });
    // Concurrent first-time requests with one reference: still one debit.
    const burst = await Promise.all(Array.from({ length: 10 }, () => svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { ...body, reference_id: 'job-78' } })));
    expect(burst.every((r) => r.statusCode === 200)).toBe(true);
    expect(new Set(burst.map((r) => r.json().data.transaction.id)).size).toBe(1);
    expect(await balance(p.orgId!)).toBe(20);
    // The reference reused for another amount or action is a client bug, not a retry: 409, nothing booked.
    const reused = await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { ...body, amount: 41 } });
    expect(reused.statusCode).toBe(409);
    expect(reused.json().error).toMatchObject({ code: 'CONFLICT', details: [{ field: 'reference_id', amount: 40, action: 'export' }] });
    expect((await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { ...body, action: 'import' } })).statusCode).toBe(409);
    expect(await balance(p.orgId!)).toBe(20);
    // The same reference in another org is another consume.
    const other = owner();
    await fund(other.orgId!, 50);
    expect((await svc.inject(other, { method: 'POST', url: '/tokens/consume', payload: body })).json().data.replayed).toBe(false);
  });

  it('never overdraws: 100 parallel consumes of 1 against a balance of 50 → exactly 50 succeed, balance 0', async () => {
    const p = owner();
    await fund(p.orgId!, 50);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) =>
      svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'burst', reference_id: `burst-${i}` } })));
    const codes = results.map((r) => r.statusCode);
    expect(codes.filter((c) => c === 200)).toHaveLength(50);
    expect(codes.filter((c) => c === 402)).toHaveLength(50);
    expect(await balance(p.orgId!)).toBe(0);
    expect(await journal(p.orgId!)).toBe(0);
    expect(await count(svc, `SELECT count(*) AS n FROM billing_ledger_entries WHERE org_id = $1 AND type = 'consume'`, [p.orgId])).toBe(50);
    const check = await svc.inject(p, { method: 'GET', url: '/tokens/ledger-check' });
    expect(check.json().data).toEqual({ balance: 0, ledger_sum: 0, owed: 0, owed_sum: 0, consistent: true });
  });

  it('rejects bad input with 400 and reserves the aos: reference prefix', async () => {
    const p = owner();
    for (const payload of [{ amount: 0, action: 'x' }, { amount: -5, action: 'x' }, { amount: 1.5, action: 'x' }, { amount: 1 }, { amount: 1, action: '' }, { amount: 1, action: 'x', reference_id: 'aos:run:1' }]) {
      const res = await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload });
      expect(res.statusCode, JSON.stringify(payload)).toBe(400);
      expect(res.json().error.code).toBe('VALIDATION_ERROR');
    }
  });

  it('keeps the journal append-only', async () => {
    const p = owner();
    await fund(p.orgId!, 5);
    await expect(svc.ctx.pool.query(`UPDATE billing_ledger_entries SET amount = 1000 WHERE org_id = $1`, [p.orgId])).rejects.toThrow(/append-only/);
    await expect(svc.ctx.pool.query(`DELETE FROM billing_ledger_entries WHERE org_id = $1`, [p.orgId])).rejects.toThrow(/append-only/);
  });
});

describe('POST /tokens/grant', () => {
  it('lets platform admins credit an org once per reference, and nobody else', async () => {
    const target = owner();
    const admin = adminPrincipal();
    const body = { org_id: target.orgId, amount: 250, type: 'refund', reference_id: 'ticket-9', note: 'goodwill' };
    const first = await svc.inject(admin, { method: 'POST', url: '/tokens/grant', payload: body });
    expect(first.statusCode).toBe(200);
    expect(first.json().data).toMatchObject({ balance: 250, replayed: false, transaction: { type: 'refund', amount: 250, metadata: { note: 'goodwill' } } });
    expect((await svc.inject(admin, { method: 'POST', url: '/tokens/grant', payload: body })).json().data).toMatchObject({ balance: 250, replayed: true });
    expect((await outboxEvents(svc, 'billing.tokens.credited', target.orgId!))[0]!.data).toMatchObject({ amount: 250, kind: 'refund' });
    expect((await svc.inject(target, { method: 'POST', url: '/tokens/grant', payload: body })).statusCode).toBe(403);
    expect((await svc.inject(admin, { method: 'POST', url: '/tokens/grant', payload: { ...body, type: 'consume' } })).statusCode).toBe(400);
    expect((await svc.inject(admin, { method: 'POST', url: '/tokens/grant', payload: { ...body, org_id: 'not-a-uuid' } })).statusCode).toBe(400);
  });
});

describe('GET /tokens/transactions', () => {
  it('filters by type and paginates newest first with a stable order', async () => {
    const p = owner();
    await fund(p.orgId!, 100);
    for (let i = 0; i < 5; i++) await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: `a${i}` } });
    const page1 = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=consume&limit=2' });
    expect(page1.json().meta).toEqual({ total: 5, limit: 2, offset: 0 });
    expect(page1.json().data.map((t: { action: string }) => t.action)).toEqual(['a4', 'a3']);
    const page3 = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=consume&limit=2&offset=4' });
    expect(page3.json().data.map((t: { action: string }) => t.action)).toEqual(['a0']);
    const all = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?limit=500' });
    expect(all.json().meta).toMatchObject({ total: 6, limit: 200 });
    expect((await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=bogus' })).statusCode).toBe(400);
    expect((await svc.inject(p, { method: 'GET', url: '/tokens/transactions?action=a2' })).json().data.map((t: { action: string }) => t.action)).toEqual(['a2']);
    const future = new Date(Date.now() + 60_000).toISOString();
    const past = new Date(Date.now() - 60_000).toISOString();
    expect((await svc.inject(p, { method: 'GET', url: `/tokens/transactions?from=${future}` })).json().meta.total).toBe(0);
    expect((await svc.inject(p, { method: 'GET', url: `/tokens/transactions?from=${past}&to=${future}` })).json().meta.total).toBe(6);
    expect((await svc.inject(p, { method: 'GET', url: '/tokens/transactions?from=yesterday' })).statusCode).toBe(400);
  });
});

describe('agents.run.completed', () => {
  it("consumes the run's totalTokens exactly once under redelivery and records the AI cost", async () => {
    const p = owner();
    await fund(p.orgId!, 1_000);
    const data = { runId: 4242, agentId: 7, agentName: 'writer', status: 'succeeded', taskId: null, model: 'gpt-x', provider: 'openai', usage: { inputTokens: 200, outputTokens: 100, totalTokens: 300 }, costUsd: 0.0123, userId: null, durationMs: 10, error: null };
    const ev = await publish(svc, 'agents.run.completed', data, { orgId: p.orgId });
    await waitFor(async () => (await balance(p.orgId!)) === 700, { message: 'run consumption' });
    await publish(svc, 'agents.run.completed', data, { orgId: p.orgId, id: ev.id, msgId: `redeliver-${ev.id}` });
    await publish(svc, 'agents.run.completed', data, { orgId: p.orgId }); // same run, new event id
    await sleep(1_000);
    expect(await balance(p.orgId!)).toBe(700);
    const tx = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=consume' });
    expect(tx.json().data).toHaveLength(1);
    expect(tx.json().data[0]).toMatchObject({ amount: -300, action: 'agent_run', reference_id: 'aos:run:4242', metadata: { run_id: 4242, model: 'gpt-x' } });
    const usage = await svc.inject(p, { method: 'GET', url: '/billing/usage' });
    expect(usage.json().data.usage).toMatchObject({ tokens_consumed: 300, agent_runs: 1, ai_cost_usd: 0.0123 });
  });

  const run = (runId: number, totalTokens: number, costUsd = 0) => ({
    runId, agentId: 1, agentName: 'a', status: 'succeeded', taskId: null, model: 'm', provider: 'p',
    usage: { inputTokens: totalTokens, outputTokens: 0, totalTokens }, costUsd, userId: null, durationMs: 1, error: null,
  });
  const owedOf = async (orgId: string, ledger = 'tokens_owed') => count(svc, 'SELECT balance AS n FROM billing_ledger_accounts WHERE org_id = $1 AND ledger = $2', [orgId, ledger]);
  const handled = async (eventId: string) => waitFor(async () => (await count(svc, 'SELECT count(*) AS n FROM aos_inbox WHERE event_id = $1', [eventId])) === 1, { message: `event ${eventId} handled` });

  it('consumes what the balance covers and records the rest as owed, once per run, settled first by the next credit', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await fund(orgId, 100);
    const ev = await publish(svc, 'agents.run.completed', run(9, 150), { orgId });
    await waitFor(async () => (await owedOf(orgId)) === 50, { message: 'shortfall owed' });
    expect(await balance(orgId)).toBe(0);
    const tx = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=consume' });
    expect(tx.json().data[0]).toMatchObject({ amount: -100, balance_after: 0, reference_id: 'aos:run:9', metadata: { requested: 150, shortfall: 50 } });
    const debt = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?ledger=tokens_owed' });
    expect(debt.json().data).toMatchObject([{ type: 'overdraft', amount: 50, balance_after: 50, reference_id: 'aos:run:9', action: 'agent_run' }]);
    expect((await svc.inject(p, { method: 'GET', url: '/tokens/balance' })).json().data).toMatchObject({ balance: 0, owed: 50 });

    // Entering debt is announced once (notifications, auto top-up), with what is owed.
    const low = await outboxEvents(svc, 'billing.balance.low', orgId);
    expect(low.map((e) => e.data)).toEqual([{ ledger: 'tokens', balance: 0, threshold: 1, userId: null, owed: 50 }]);

    // A run finding the balance at 0 is owed in full; a redelivered run books nothing more.
    const second = await publish(svc, 'agents.run.completed', run(10, 70), { orgId });
    await waitFor(async () => (await owedOf(orgId)) === 120, { message: 'second run owed' });
    await publish(svc, 'agents.run.completed', run(10, 70), { orgId, id: second.id, msgId: `again-${second.id}` });
    const third = await publish(svc, 'agents.run.completed', run(9, 150), { orgId }); // run 9 under a new event id
    await handled(third.id);
    await handled(ev.id);
    expect(await owedOf(orgId)).toBe(120);
    expect(await balance(orgId)).toBe(0);
    expect(await count(svc, `SELECT count(*) AS n FROM billing_ledger_entries WHERE org_id = $1 AND type = 'overdraft'`, [orgId])).toBe(2);
    expect(await outboxEvents(svc, 'billing.balance.low', orgId)).toHaveLength(1); // still the same episode of debt

    // Nothing asked for in advance may overdraw: /tokens/consume stays 402 while the org owes.
    expect((await svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'x' } })).statusCode).toBe(402);
    const usage = await svc.inject(p, { method: 'GET', url: '/billing/usage' });
    expect(usage.json().data.usage.tokens_consumed).toBe(220); // everything the runs used, paid or owed

    // A credit smaller than the debt goes to the debt entirely.
    const admin = adminPrincipal();
    const partial = await svc.inject(admin, { method: 'POST', url: '/tokens/grant', payload: { org_id: orgId, amount: 100 } });
    expect(partial.json().data).toMatchObject({ balance: 0, transaction: { type: 'admin_grant', amount: 100, balance_after: 100 } });
    expect(await owedOf(orgId)).toBe(20);
    // The next one settles the rest; what remains is spendable.
    const full = await svc.inject(admin, { method: 'POST', url: '/tokens/grant', payload: { org_id: orgId, amount: 500 } });
    expect(full.json().data.balance).toBe(480);
    expect(await owedOf(orgId)).toBe(0);
    const settlements = (await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=settlement' })).json().data;
    expect(settlements.map((e: { amount: number }) => e.amount)).toEqual([-20, -100]);
    const owedSettled = (await svc.inject(p, { method: 'GET', url: '/tokens/transactions?ledger=tokens_owed&type=settlement' })).json().data;
    expect(owedSettled.map((e: { amount: number; reference_id: string }) => [e.amount, e.reference_id])).toEqual(settlements.map((e: { amount: number; reference_id: string }) => [e.amount, e.reference_id]));
    const credited = (await outboxEvents(svc, 'billing.tokens.credited', orgId)).map((e) => e.data);
    expect(credited.slice(-2)).toEqual([
      { amount: 100, balance: 0, kind: 'admin_grant', userId: admin.userId, settled: 100 },
      { amount: 500, balance: 480, kind: 'admin_grant', userId: admin.userId, settled: 20 },
    ]);
    expect((await svc.inject(p, { method: 'GET', url: '/tokens/ledger-check' })).json().data).toEqual({ balance: 480, ledger_sum: 480, owed: 0, owed_sum: 0, consistent: true });

    // Debt paid off: the next shortfall is a new episode and announced again.
    await publish(svc, 'agents.run.completed', run(11, 500), { orgId });
    await waitFor(async () => (await owedOf(orgId)) === 20, { message: 'new debt' });
    expect((await outboxEvents(svc, 'billing.balance.low', orgId)).map((e) => e.data.owed)).toEqual([50, 20]);
  });

  it('owes credits too: the AI cost beyond the credit balance is settled by the next credit purchase', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await svc.ctx.pool.query(`INSERT INTO billing_ledger_entries (org_id, ledger, type, amount, reference_id) VALUES ($1, 'credits', 'admin_grant', 30, 'c-1')`, [orgId]);
    await publish(svc, 'agents.run.completed', run(77, 0, 0.5), { orgId }); // 50 cents against 30
    await waitFor(async () => (await owedOf(orgId, 'credits_owed')) === 20, { message: 'credits owed' });
    expect(await owedOf(orgId, 'credits')).toBe(0);
    expect((await svc.inject(p, { method: 'GET', url: '/tokens/balance' })).json().data).toMatchObject({ credit_balance_cents: 0, credit_owed_cents: 20, owed: 0 });
    expect((await outboxEvents(svc, 'billing.balance.low', orgId)).map((e) => e.data)).toEqual([{ ledger: 'credits', balance: 0, threshold: 1, userId: null, owed: 20 }]);
    const grant = await svc.inject(adminPrincipal(), { method: 'POST', url: '/tokens/grant', payload: { org_id: orgId, amount: 1_000, ledger: 'credits' } });
    expect(grant.json().data.balance).toBe(980);
    expect(await owedOf(orgId, 'credits_owed')).toBe(0);
  });

  it('keeps every account consistent when runs, consumes and credits race on one organization', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await fund(orgId, 300);
    const admin = adminPrincipal();
    const work = [
      ...Array.from({ length: 20 }, (_, i) => () => publish(svc, 'agents.run.completed', run(5_000 + i, 40), { orgId })),
      ...Array.from({ length: 20 }, (_, i) => () => svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount: 10, action: 'race', reference_id: `race-${i}` } })),
      ...Array.from({ length: 5 }, (_, i) => () => svc.inject(admin, { method: 'POST', url: '/tokens/grant', payload: { org_id: orgId, amount: 50, reference_id: `race-grant-${i}` } })),
    ];
    const results = await Promise.all(work.map((w) => w()));
    const consumed = results.filter((r) => 'statusCode' in r && r.statusCode === 200 && r.json().data.transaction.type === 'consume').length;
    await waitFor(async () => (await count(svc, `SELECT count(DISTINCT reference_id) AS n FROM billing_ledger_entries WHERE org_id = $1 AND reference_id LIKE 'aos:run:%' AND type IN ('consume', 'overdraft')`, [orgId])) === 20, { message: 'all runs booked' });
    // Money in = money out: 300 + 250 credited = what is left + consumes + (run usage - what is still owed).
    const [bal, owed] = [await balance(orgId), await owedOf(orgId)];
    expect(300 + 250).toBe(bal + consumed * 10 + (20 * 40 - owed));
    expect(bal === 0 || owed === 0).toBe(true);
    expect((await svc.inject(p, { method: 'GET', url: '/tokens/ledger-check' })).json().data.consistent).toBe(true);
  });
});

describe('security', () => {
  it('needs authentication, the billing scopes, and never shows another org', async () => {
    expect((await svc.inject(null, { method: 'GET', url: '/tokens/balance' })).statusCode).toBe(401);
    expect((await svc.inject(anonymous, { method: 'GET', url: '/tokens/balance' })).statusCode).toBe(401);
    const a = owner();
    await fund(a.orgId!, 10);
    const noScope = apiKeyPrincipal(['tasks:read'], { orgId: a.orgId });
    expect((await svc.inject(noScope, { method: 'GET', url: '/tokens/balance' })).json().error.code).toBe('SCOPE_REQUIRED');
    const readOnly = apiKeyPrincipal(['billing:read'], { orgId: a.orgId });
    expect((await svc.inject(readOnly, { method: 'GET', url: '/tokens/balance' })).json().data.balance).toBe(10);
    expect((await svc.inject(readOnly, { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'x' } })).statusCode).toBe(403);
    const writer = apiKeyPrincipal(['billing:write'], { orgId: a.orgId });
    expect((await svc.inject(writer, { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'x' } })).statusCode).toBe(200);
    const other = userPrincipal();
    expect((await svc.inject(other, { method: 'GET', url: '/tokens/balance' })).json().data.balance).toBe(0);
    expect((await svc.inject(other, { method: 'GET', url: '/tokens/transactions' })).json().meta.total).toBe(0);
    expect((await svc.inject(other, { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'x' } })).statusCode).toBe(402);
    // Viewers read the balance but cannot spend it.
    const viewer = userPrincipal({ orgId: a.orgId, orgRole: 'viewer' });
    expect((await svc.inject(viewer, { method: 'GET', url: '/tokens/balance' })).statusCode).toBe(200);
    expect((await svc.inject(viewer, { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'x' } })).statusCode).toBe(403);
    expect((await svc.inject(userPrincipal({ orgId: a.orgId, orgRole: 'member' }), { method: 'POST', url: '/tokens/consume', payload: { amount: 1, action: 'x' } })).statusCode).toBe(200);
  });
});
