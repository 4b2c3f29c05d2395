import { subjectFor } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { startBackground } from '@aos/runtime';
import { sleep, startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { autoTopupRuns } from '../src/db/schema.js';
import { stripeOptions } from '../src/domain/stripe.js';
import { processTopup, recoverTopups, topupIntent } from '../src/jobs/autotopup.js';
import { service } from '../src/service.js';
import { WEBHOOK_SECRET, count, fakeStripe, outboxEvents, owner, postWebhook, publish, signedEvent, startBilling, type Billing, type FakeStripe, expectLedgersConsistent } from './helpers.js';

let stripe: FakeStripe;
let svc: Billing;
beforeAll(async () => {
  stripe = await fakeStripe();
  svc = await startBilling({ STRIPE_SECRET_KEY: 'sk_test_local', STRIPE_API_BASE: stripe.url });
});
afterAll(async () => { if (svc) expect(await expectLedgersConsistent(svc)).toBeGreaterThan(0); await svc?.close(); await stripe?.close(); });

async function grant(orgId: string, ledger: 'tokens' | 'credits', amount: number) {
  await svc.ctx.pool.query(`INSERT INTO billing_ledger_entries (org_id, ledger, type, amount, reference_id) VALUES ($1, $2, 'admin_grant', $3, $4)`, [orgId, ledger, amount, crypto.randomUUID()]);
}
async function withCard(orgId: string) {
  await svc.ctx.pool.query('INSERT INTO billing_customers (org_id, stripe_customer_id, default_payment_method_id) VALUES ($1, $2, $3)', [orgId, `cus_${orgId.slice(0, 8)}`, 'pm_saved']);
}
const balance = async (orgId: string, ledger = 'tokens') => count(svc, 'SELECT balance AS n FROM billing_ledger_accounts WHERE org_id = $1 AND ledger = $2', [orgId, ledger]);
const charges = (orgId: string) => stripe.find('POST', '/v1/payment_intents').filter((r) => r.form['metadata[org_id]'] === orgId);
const runs = async (orgId: string) => (await svc.ctx.pool.query('SELECT crossing_id, status, reason FROM billing_auto_topup_runs WHERE org_id = $1 ORDER BY id', [orgId])).rows;
const consume = (p: ReturnType<typeof owner>, amount: number) => svc.inject(p, { method: 'POST', url: '/tokens/consume', payload: { amount, action: 'work' } });

describe('auto top-up configuration', () => {
  it('GET shows packages, POST configures (201) then 409, PUT updates, validation and roles hold', async () => {
    const p = owner();
    const empty = await svc.inject(p, { method: 'GET', url: '/billing/auto-topup' });
    expect(empty.json().data).toMatchObject({ configured: false, enabled: false, threshold_tokens: null, balance: 0 });
    expect(empty.json().data.available_packages.map((x: { slug: string }) => x.slug)).toEqual(['tokens-10k', 'tokens-50k', 'tokens-200k']);

    await grant(p.orgId!, 'tokens', 5_000);
    const created = await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 1_000, package_id: 'tokens-10k', max_monthly_topups: 2, stripe_payment_method_id: 'pm_card_visa' } });
    expect(created.statusCode).toBe(201);
    expect(created.json().data).toMatchObject({ configured: true, enabled: true, threshold_tokens: 1_000, package_slug: 'tokens-10k', max_monthly_topups: 2, stripe_payment_method_id: 'pm_card_visa', balance: 5_000 });
    const dup = await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 5, package_slug: 'tokens-10k' } });
    expect(dup.statusCode).toBe(409);
    expect(dup.json().error.code).toBe('CONFLICT');

    const updated = await svc.inject(p, { method: 'PUT', url: '/billing/auto-topup', payload: { enabled: false, package_slug: 'tokens-50k' } });
    expect(updated.json().data).toMatchObject({ enabled: false, package_slug: 'tokens-50k', threshold_tokens: 1_000 });

    expect((await svc.inject(p, { method: 'PUT', url: '/billing/auto-topup', payload: { package_slug: 'credits-10' } })).statusCode).toBe(400);
    expect((await svc.inject(p, { method: 'PUT', url: '/billing/auto-topup', payload: {} })).statusCode).toBe(400);
    expect((await svc.inject(owner(), { method: 'PUT', url: '/billing/auto-topup', payload: { enabled: true } })).statusCode).toBe(404);
    expect((await svc.inject(owner(), { method: 'POST', url: '/billing/auto-topup', payload: { package_slug: 'tokens-10k' } })).statusCode).toBe(400);
    expect((await svc.inject(owner(), { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 10, package_slug: 'tokens-10k', max_monthly_topups: 0 } })).statusCode).toBe(400);
    expect((await svc.inject(userPrincipal({ orgId: p.orgId, orgRole: 'member' }), { method: 'PUT', url: '/billing/auto-topup', payload: { enabled: true } })).statusCode).toBe(403);
    // Credits have their own configuration (and wire names).
    const credits = await svc.inject(p, { method: 'POST', url: '/billing/credit-auto-topup', payload: { threshold_cents: 500, package_slug: 'credits-10' } });
    expect(credits.statusCode).toBe(201);
    expect(credits.json().data).toMatchObject({ threshold_cents: 500, package_slug: 'credits-10', max_monthly_topups: 3 });
    expect((await svc.inject(p, { method: 'POST', url: '/billing/credit-auto-topup', payload: { threshold_cents: 500, package_slug: 'tokens-10k' } })).statusCode).toBe(400);
    // Another org sees nothing of it.
    expect((await svc.inject(owner(), { method: 'GET', url: '/billing/auto-topup' })).json().data.configured).toBe(false);
  });
});

describe('auto top-up charging', () => {
  it('charges the saved card off-session once per threshold crossing, even under redelivery', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await withCard(orgId);
    await grant(orgId, 'tokens', 1_000);
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 500, package_slug: 'tokens-10k', max_monthly_topups: 5 } });
    expect((await consume(p, 600)).statusCode).toBe(200); // 400: crossing
    expect((await consume(p, 100)).statusCode).toBe(200); // 300: same crossing
    expect((await consume(p, 100)).statusCode).toBe(200); // 200: same crossing
    await waitFor(async () => (await balance(orgId)) === 10_200, { message: 'top-up credited' });

    const [charge] = charges(orgId);
    expect(charges(orgId)).toHaveLength(1);
    expect(charge!.form).toMatchObject({ amount: '1000', currency: 'usd', customer: `cus_${orgId.slice(0, 8)}`, payment_method: 'pm_saved', off_session: 'true', confirm: 'true', 'metadata[crossing_id]': `${orgId}.tokens.1` });
    expect(charge!.headers['idempotency-key']).toBe(`aos-topup-${orgId}.tokens.1`);
    const low = await outboxEvents(svc, 'billing.balance.low', orgId);
    expect(low).toHaveLength(1);
    expect(low[0]!.data).toEqual({ ledger: 'tokens', balance: 400, threshold: 500, userId: null });

    // Redeliver billing.balance.low past the broker's de-dupe, and Stripe's own webhook for the charge.
    const bus = await svc.ctx.bus;
    await bus.js.publish(subjectFor(bus.names, 'billing.balance.low'), JSON.stringify({ ...low[0], id: crypto.randomUUID() }));
    const piBody = { id: 'pi_test_from_webhook', object: 'payment_intent', amount: 1000, currency: 'usd', status: 'succeeded', customer: `cus_${orgId.slice(0, 8)}`, payment_method: 'pm_saved', metadata: { org_id: orgId, ledger: 'tokens', package_slug: 'tokens-10k', crossing_id: `${orgId}.tokens.1` } };
    const tx = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?type=purchase' });
    piBody.id = tx.json().data[0].reference_id;
    const wh = signedEvent({ type: 'payment_intent.succeeded', object: piBody });
    expect((await postWebhook(svc, wh.body, wh.signature)).json().data.outcome).toBe('already credited');
    await sleep(1_000);
    expect(charges(orgId)).toHaveLength(1);
    expect(await balance(orgId)).toBe(10_200);
    expect(await runs(orgId)).toEqual([{ crossing_id: `${orgId}.tokens.1`, status: 'succeeded', reason: null }]);
    expect((await outboxEvents(svc, 'billing.topup.completed', orgId)).map((e) => e.data)).toEqual([{ ledger: 'tokens', amount: 10_000, paymentIntentId: piBody.id }]);
  });

  it('re-arms after the balance recovers and stops at max_monthly_topups', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await withCard(orgId);
    await grant(orgId, 'tokens', 1_000);
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 500, package_slug: 'tokens-10k', max_monthly_topups: 2 } });
    await consume(p, 600); // 400 → crossing 1 → +10,000
    await waitFor(async () => (await balance(orgId)) === 10_400, { message: 'first top-up' });
    await consume(p, 10_000); // 400 → crossing 2 → +10,000
    await waitFor(async () => charges(orgId).length === 2, { message: 'second charge' });
    await waitFor(async () => (await balance(orgId)) === 10_400, { message: 'second credit' });
    await consume(p, 10_000); // 400 → crossing 3 → capped
    await waitFor(async () => (await runs(orgId)).length === 3 && (await runs(orgId))[2].status === 'capped', { message: 'third crossing capped' });
    await sleep(500);
    expect(charges(orgId)).toHaveLength(2);
    expect(await balance(orgId)).toBe(400);
    expect((await runs(orgId)).map((r) => r.status)).toEqual(['succeeded', 'succeeded', 'capped']);
    const cfg = await svc.inject(p, { method: 'GET', url: '/billing/auto-topup' });
    expect(cfg.json().data).toMatchObject({ topups_this_month: 2, balance: 400 });
  });

  it('tops up once when a run uses more than the balance: the top-up settles what is owed first', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await withCard(orgId);
    await grant(orgId, 'tokens', 600);
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 500, package_slug: 'tokens-10k', max_monthly_topups: 5 } });
    const data = { runId: 31_337, agentId: 1, agentName: 'a', status: 'succeeded', taskId: null, model: 'm', provider: 'p', usage: { inputTokens: 1_000, outputTokens: 0, totalTokens: 1_000 }, costUsd: 0, userId: null, durationMs: 5, error: null };
    const ev = await publish(svc, 'agents.run.completed', data, { orgId });
    // 600 consumed, 400 owed; the 10,000-token top-up pays the 400 first.
    await waitFor(async () => (await balance(orgId)) === 9_600, { message: 'top-up settled the debt' });
    expect(await balance(orgId, 'tokens_owed')).toBe(0);
    await publish(svc, 'agents.run.completed', data, { orgId, id: ev.id, msgId: `again-${ev.id}` });
    const again = await publish(svc, 'agents.run.completed', data, { orgId }); // the same run under a new event id
    await waitFor(async () => (await count(svc, 'SELECT count(*) AS n FROM aos_inbox WHERE event_id = $1', [again.id])) === 1, { message: 'redelivery handled' });
    await sleep(300);
    expect(await balance(orgId)).toBe(9_600);
    expect(charges(orgId)).toHaveLength(1);
    // One event for the crossing, carrying what was owed at that moment.
    expect((await outboxEvents(svc, 'billing.balance.low', orgId)).map((e) => e.data)).toEqual([{ ledger: 'tokens', balance: 0, threshold: 500, userId: null, owed: 400 }]);
    const entries = await svc.inject(p, { method: 'GET', url: '/tokens/transactions' });
    expect(entries.json().data.map((e: { type: string; amount: number; balance_after: number }) => [e.type, e.amount, e.balance_after]))
      .toEqual([['settlement', -400, 9_600], ['purchase', 10_000, 10_000], ['consume', -600, 0], ['admin_grant', 600, 600]]);
  });

  it('records one crossing when many parallel consumes cross the threshold together', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await grant(orgId, 'tokens', 1_000);
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 500, package_slug: 'tokens-10k', enabled: true } });
    const results = await Promise.all(Array.from({ length: 40 }, () => consume(p, 20)));
    expect(results.every((r) => r.statusCode === 200)).toBe(true);
    expect(await balance(orgId)).toBe(200);
    expect(await count(svc, 'SELECT count(*) AS n FROM billing_auto_topup_runs WHERE org_id = $1', [orgId])).toBe(1);
    expect(await outboxEvents(svc, 'billing.balance.low', orgId)).toHaveLength(1);
  });

  it('retries a charge that hit a Stripe outage with the same idempotency key and credits once', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await withCard(orgId);
    await grant(orgId, 'tokens', 100);
    const mine = (r: { path: string; form: Record<string, string> }) => r.path === '/v1/payment_intents' && r.form['metadata[org_id]'] === orgId;
    // The SDK retries once by itself; both attempts fail, so the job fails and BullMQ retries it.
    stripe.failNext(mine, 500, { error: { type: 'api_error', message: 'boom' } });
    stripe.failNext(mine, 500, { error: { type: 'api_error', message: 'boom' } });
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 50, package_slug: 'tokens-10k' } });
    await consume(p, 60);
    await waitFor(async () => (await balance(orgId)) === 10_040, { timeoutMs: 15_000, message: 'credited after retry' });
    const attempts = charges(orgId);
    expect(attempts.length).toBeGreaterThanOrEqual(3);
    expect(new Set(attempts.map((r) => r.headers['idempotency-key']))).toEqual(new Set([`aos-topup-${orgId}.tokens.1`]));
    expect((await runs(orgId)).map((r) => r.status)).toEqual(['succeeded']);
    expect(await count(svc, "SELECT count(*) AS n FROM billing_ledger_entries WHERE org_id = $1 AND type = 'purchase'", [orgId])).toBe(1);
  });

  it('records a declined card without retrying it, and emits billing.payment.failed', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await withCard(orgId);
    await grant(orgId, 'tokens', 100);
    stripe.failNext((r) => r.path === '/v1/payment_intents' && r.form['metadata[org_id]'] === orgId, 402, { error: { type: 'card_error', code: 'card_declined', decline_code: 'insufficient_funds', message: 'Your card was declined.', payment_intent: { id: 'pi_declined', object: 'payment_intent' } } });
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 50, package_slug: 'tokens-10k' } });
    await consume(p, 60);
    await waitFor(async () => (await runs(orgId))[0]?.status === 'failed', { message: 'declined run' });
    await sleep(500);
    expect(charges(orgId)).toHaveLength(1);
    expect((await runs(orgId))[0]).toMatchObject({ status: 'failed', reason: 'Your card was declined.' });
    expect((await outboxEvents(svc, 'billing.payment.failed', orgId))[0]!.data).toMatchObject({ stripeObjectId: 'pi_declined', reason: 'Your card was declined.' });
    expect(await balance(orgId)).toBe(40);
  });

  it('leaves a charge that needs the customer (3-D Secure) to the webhook, which settles it as failed', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await withCard(orgId);
    await grant(orgId, 'tokens', 100);
    const pi = { id: `pi_3ds_${orgId.slice(0, 8)}`, object: 'payment_intent', amount: 1000, currency: 'usd', status: 'requires_action', customer: `cus_${orgId.slice(0, 8)}`, payment_method: 'pm_saved', metadata: { org_id: orgId, ledger: 'tokens', package_slug: 'tokens-10k', crossing_id: `${orgId}.tokens.1` } };
    stripe.failNext((r) => r.path === '/v1/payment_intents' && r.form['metadata[org_id]'] === orgId, 200, pi);
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 50, package_slug: 'tokens-10k', max_monthly_topups: 1 } });
    await consume(p, 60);
    await waitFor(async () => (await runs(orgId))[0]?.status === 'processing' && (await runs(orgId))[0]?.reason === 'payment intent requires_action', { message: 'waiting for the customer' });
    const failed = signedEvent({ type: 'payment_intent.payment_failed', object: { ...pi, status: 'requires_payment_method', last_payment_error: { message: 'Authentication failed.' } } });
    expect((await postWebhook(svc, failed.body, failed.signature)).json().data.outcome).toBe('auto top-up failed');
    expect((await runs(orgId))[0]).toMatchObject({ status: 'failed', reason: 'Authentication failed.' });
    expect((await outboxEvents(svc, 'billing.payment.failed', orgId))[0]!.data).toMatchObject({ stripeObjectId: pi.id, reason: 'Authentication failed.' });
    // A failed run does not count against the monthly cap; a replay settles nothing twice.
    expect((await svc.inject(p, { method: 'GET', url: '/billing/auto-topup' })).json().data.topups_this_month).toBe(0);
    const again = signedEvent({ type: 'payment_intent.payment_failed', object: pi });
    expect((await postWebhook(svc, again.body, again.signature)).json().data.outcome).toBe('ignored: top-up already settled');
    expect(await balance(orgId)).toBe(40);
  });

  it('fails a run cleanly when no card is saved', async () => {
    const p = owner();
    await grant(p.orgId!, 'tokens', 100);
    await svc.inject(p, { method: 'POST', url: '/billing/auto-topup', payload: { threshold_tokens: 50, package_slug: 'tokens-10k' } });
    await consume(p, 60);
    await waitFor(async () => (await runs(p.orgId!))[0]?.status === 'failed', { message: 'run without card' });
    expect((await runs(p.orgId!))[0].reason).toBe('no saved payment method');
    expect(charges(p.orgId!)).toHaveLength(0);
  });

  it('tops up credits when AI costs of runs drain them below the threshold', async () => {
    const p = owner();
    const orgId = p.orgId!;
    await withCard(orgId);
    await grant(orgId, 'credits', 300);
    await svc.inject(p, { method: 'POST', url: '/billing/credit-auto-topup', payload: { threshold_cents: 200, package_slug: 'credits-10' } });
    await publish(svc, 'agents.run.completed', { runId: 77, agentId: 1, agentName: 'a', status: 'succeeded', taskId: null, model: 'm', provider: 'p', usage: { inputTokens: 0, outputTokens: 0, totalTokens: 0 }, costUsd: 1.5, userId: null, durationMs: 5, error: null }, { orgId });
    await waitFor(async () => (await balance(orgId, 'credits')) === 1_150, { message: 'credits topped up' });
    expect(charges(orgId)[0]!.form).toMatchObject({ amount: '1000', 'metadata[ledger]': 'credits', off_session: 'true' });
    expect((await outboxEvents(svc, 'billing.balance.low', orgId))[0]!.data).toMatchObject({ ledger: 'credits', balance: 150, threshold: 200 });
    const cfg = await svc.inject(p, { method: 'GET', url: '/billing/credit-auto-topup' });
    expect(cfg.json().data).toMatchObject({ balance: 1_150, topups_this_month: 1 });
    const entries = await svc.inject(p, { method: 'GET', url: '/tokens/transactions?ledger=credits' });
    expect(entries.json().data.map((e: { type: string; amount: number }) => [e.type, e.amount])).toEqual([['purchase', 1_000], ['consume', -150], ['admin_grant', 300]]);
  });
});

describe('top-ups interrupted by a crash', () => {
  const HOUR = 3_600_000;

  /** The state a crash between the claim and Stripe's answer leaves: crossing 1 recorded, run processing without a PaymentIntent. */
  async function crashState(target: Billing, orgId: string, claimedAgoMs: number) {
    const q = (text: string, params: unknown[]) => target.ctx.pool.query(text, params);
    await q('INSERT INTO billing_customers (org_id, stripe_customer_id, default_payment_method_id) VALUES ($1, $2, $3)', [orgId, `cus_${orgId.slice(0, 8)}`, 'pm_saved']);
    stripe.addCustomer(`cus_${orgId.slice(0, 8)}`);
    await q(`INSERT INTO billing_ledger_entries (org_id, ledger, type, amount, reference_id) VALUES ($1, 'tokens', 'admin_grant', 100, $2)`, [orgId, crypto.randomUUID()]);
    await q(`INSERT INTO billing_auto_topup_configs (org_id, ledger, threshold, package_slug, max_monthly_topups, armed, crossings) VALUES ($1, 'tokens', 500, 'tokens-10k', 5, false, 1)`, [orgId]);
    const claimedAt = new Date(Date.now() - claimedAgoMs);
    const { rows } = await q(`INSERT INTO billing_auto_topup_runs (org_id, ledger, crossing_id, month, status, package_slug, amount, price_cents, claimed_at, created_at, updated_at)
      VALUES ($1, 'tokens', $2, $3, 'processing', 'tokens-10k', 10000, 1000, $4, $4, $4) RETURNING *`, [orgId, `${orgId}.tokens.1`, claimedAt.toISOString().slice(0, 7), claimedAt]);
    return rows[0] as { crossing_id: string };
  }

  /** What the crashed worker had sent: the same request, through the SDK, before it died. */
  async function chargeSentBeforeCrash(target: Billing, orgId: string, crossingId: string, createdAgoS = 0) {
    const [run] = await target.ctx.db.select().from(autoTopupRuns).where(eq(autoTopupRuns.crossingId, crossingId));
    const { params, idempotencyKey } = topupIntent(target.ctx, run!, { tenantId: null }, `cus_${orgId.slice(0, 8)}`, 'pm_saved');
    const intent = await new Stripe('sk_test_local', stripeOptions(stripe.url)).paymentIntents.create(params, { idempotencyKey });
    if (createdAgoS) stripe.paymentIntents.set(intent.id, { ...stripe.paymentIntents.get(intent.id)!, created: Math.floor(Date.now() / 1000) - createdAgoS });
    return intent;
  }

  it('at start, re-sends a charge interrupted within 24 h with the same idempotency key (Stripe answers with the first result) and credits it once', async () => {
    const fresh = await startTestService(service, { background: false, env: { STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, STRIPE_SECRET_KEY: 'sk_test_local', STRIPE_API_BASE: stripe.url } });
    try {
      const orgId = crypto.randomUUID();
      const run = await crashState(fresh, orgId, 2 * HOUR);
      const first = await chargeSentBeforeCrash(fresh, orgId, run.crossing_id);
      // The job gave up before the crash: BullMQ keeps the failed job under the run's job id.
      const failing = fresh.ctx.queues.worker(Queues.autoTopup, async () => { throw new Error('Stripe unreachable'); });
      const job = await fresh.ctx.queues.add(Queues.autoTopup, 'charge', { crossingId: run.crossing_id }, { jobId: `topup.${run.crossing_id}`, attempts: 1 });
      await waitFor(async () => (await job.getState()) === 'failed', { message: 'job failed' });
      await failing.close();

      await startBackground(service, fresh.ctx); // the service starting again
      const balanceOf = async () => count(fresh, `SELECT balance AS n FROM billing_ledger_accounts WHERE org_id = $1 AND ledger = 'tokens'`, [orgId]);
      await waitFor(async () => (await balanceOf()) === 10_100, { message: 'recovered top-up credited' });
      const sent = charges(orgId);
      expect(sent).toHaveLength(2);
      expect(sent.map((r) => r.headers['idempotency-key'])).toEqual([`aos-topup-${run.crossing_id}`, `aos-topup-${run.crossing_id}`]);
      expect(sent[1]!.raw).toBe(sent[0]!.raw);
      expect([...stripe.paymentIntents.values()].filter((pi) => (pi.metadata as Record<string, string>).org_id === orgId)).toHaveLength(1);
      const { rows } = await fresh.ctx.pool.query(`SELECT status, payment_intent_id FROM billing_auto_topup_runs WHERE org_id = $1`, [orgId]);
      expect(rows).toEqual([{ status: 'succeeded', payment_intent_id: first.id }]);
      expect(await count(fresh, `SELECT count(*) AS n FROM billing_ledger_entries WHERE org_id = $1 AND type = 'purchase' AND reference_id = $2`, [orgId, first.id])).toBe(1);
      // The sweep keeps running on its schedule.
      expect(await fresh.ctx.queues.queue(Queues.autoTopup).getJobScheduler('auto-topup-recovery')).toMatchObject({ every: 600_000 });
      expect(await expectLedgersConsistent(fresh)).toBeGreaterThan(0);
    } finally {
      await fresh.close();
    }
  });

  it('past 24 h never re-sends: a charge Stripe has is credited from the lookup', async () => {
    const orgId = crypto.randomUUID();
    const run = await crashState(svc, orgId, 25 * HOUR);
    const first = await chargeSentBeforeCrash(svc, orgId, run.crossing_id, 25 * 3_600 - 5);
    const lookups = stripe.find('GET', '/v1/payment_intents').length;
    expect(await recoverTopups(svc.ctx)).toMatchObject({ [run.crossing_id]: 'credited' });
    expect(stripe.find('GET', '/v1/payment_intents').length).toBe(lookups + 1);
    expect(stripe.find('GET', '/v1/payment_intents').at(-1)!.form).toMatchObject({ customer: `cus_${orgId.slice(0, 8)}` });
    expect(charges(orgId)).toHaveLength(1); // only the one sent before the crash
    expect(await balance(orgId)).toBe(10_100);
    expect((await runs(orgId)).map((r) => r.status)).toEqual(['succeeded']);
    expect(await recoverTopups(svc.ctx)).not.toHaveProperty(run.crossing_id); // settled: nothing left to recover
    expect((await svc.ctx.pool.query('SELECT payment_intent_id FROM billing_auto_topup_runs WHERE org_id = $1', [orgId])).rows[0].payment_intent_id).toBe(first.id);
  });

  it('past 24 h, a charge Stripe declined fails the run without a retry; one waiting for the customer is left to the webhook', async () => {
    const declinedOrg = crypto.randomUUID();
    const declined = await crashState(svc, declinedOrg, 30 * HOUR);
    const created = Math.floor(Date.now() / 1000) - 30 * 3_600 + 1;
    stripe.paymentIntents.set(`pi_declined_${declinedOrg.slice(0, 8)}`, {
      id: `pi_declined_${declinedOrg.slice(0, 8)}`, object: 'payment_intent', created, amount: 1000, currency: 'usd', customer: `cus_${declinedOrg.slice(0, 8)}`,
      status: 'requires_payment_method', last_payment_error: { message: 'Your card was declined.' }, metadata: { org_id: declinedOrg, crossing_id: declined.crossing_id, package_slug: 'tokens-10k', ledger: 'tokens' },
    });
    const waitingOrg = crypto.randomUUID();
    const waiting = await crashState(svc, waitingOrg, 30 * HOUR);
    stripe.paymentIntents.set(`pi_3ds_${waitingOrg.slice(0, 8)}`, {
      id: `pi_3ds_${waitingOrg.slice(0, 8)}`, object: 'payment_intent', created, amount: 1000, currency: 'usd', customer: `cus_${waitingOrg.slice(0, 8)}`,
      status: 'requires_action', metadata: { org_id: waitingOrg, crossing_id: waiting.crossing_id, package_slug: 'tokens-10k', ledger: 'tokens' },
    });
    const report = await recoverTopups(svc.ctx);
    expect(report).toMatchObject({ [declined.crossing_id]: 'failed', [waiting.crossing_id]: 'awaiting webhook' });
    expect(await runs(declinedOrg)).toEqual([{ crossing_id: declined.crossing_id, status: 'failed', reason: 'Your card was declined.' }]);
    expect((await outboxEvents(svc, 'billing.payment.failed', declinedOrg)).map((e) => e.data.stripeObjectId)).toEqual([`pi_declined_${declinedOrg.slice(0, 8)}`]);
    expect(await runs(waitingOrg)).toEqual([{ crossing_id: waiting.crossing_id, status: 'processing', reason: 'payment intent requires_action' }]);
    // A declined card is not retried by a new crossing, and nothing was charged anew.
    expect(charges(declinedOrg)).toHaveLength(0);
    expect(charges(waitingOrg)).toHaveLength(0);
    expect((await svc.ctx.pool.query('SELECT armed FROM billing_auto_topup_configs WHERE org_id = $1', [declinedOrg])).rows[0].armed).toBe(false);
  });

  it('past 24 h with nothing at Stripe: the run fails with a clear reason and the crossing is re-armed, so a fresh one charges with a new key', async () => {
    const orgId = crypto.randomUUID();
    const run = await crashState(svc, orgId, 25 * HOUR);
    expect(await recoverTopups(svc.ctx)).toMatchObject({ [run.crossing_id]: 'interrupted' });
    await waitFor(async () => (await balance(orgId)) === 10_100, { message: 'fresh crossing charged' });
    expect(await runs(orgId)).toEqual([
      { crossing_id: run.crossing_id, status: 'failed', reason: expect.stringMatching(/^interrupted before Stripe confirmed the charge.*24 h idempotency window$/) },
      { crossing_id: `${orgId}.tokens.2`, status: 'succeeded', reason: null },
    ]);
    expect(charges(orgId).map((r) => r.headers['idempotency-key'])).toEqual([`aos-topup-${orgId}.tokens.2`]);
    expect((await outboxEvents(svc, 'billing.balance.low', orgId)).map((e) => e.data)).toEqual([{ ledger: 'tokens', balance: 100, threshold: 500, userId: null }]);
  });

  it('a retried job past the window reconciles instead of charging again', async () => {
    const orgId = crypto.randomUUID();
    const run = await crashState(svc, orgId, 24 * HOUR + 60_000);
    await chargeSentBeforeCrash(svc, orgId, run.crossing_id, 24 * 3_600);
    await svc.ctx.queues.add(Queues.autoTopup, 'charge', { crossingId: run.crossing_id }, { jobId: `topup.retry.${run.crossing_id}` });
    await waitFor(async () => (await balance(orgId)) === 10_100, { message: 'credited from the lookup' });
    expect(charges(orgId)).toHaveLength(1);
  });
});

describe('a webhook settling a run while its job waits for Stripe', () => {
  /** A Stripe stand-in that holds the charge's answer until the test lets it go. */
  async function heldStripe(status: number, body: unknown) {
    let arrived!: () => void;
    let release!: () => void;
    const reached = new Promise<void>((r) => { arrived = r; });
    const go = new Promise<void>((r) => { release = r; });
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        arrived();
        void go.then(() => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    return { url: `http://127.0.0.1:${port}`, reached, release, close: () => new Promise<void>((r) => server.close(() => r())) };
  }

  /** A pending run of crossing 1 with a saved card; the job is run by hand against `stripeUrl`. */
  async function pendingRun(orgId: string) {
    await withCard(orgId);
    await svc.ctx.pool.query(`INSERT INTO billing_auto_topup_configs (org_id, ledger, threshold, package_slug, armed, crossings) VALUES ($1, 'tokens', 500, 'tokens-10k', false, 1)`, [orgId]);
    await svc.ctx.pool.query(`INSERT INTO billing_auto_topup_runs (org_id, ledger, crossing_id, month, status, package_slug, amount, price_cents)
      VALUES ($1, 'tokens', $2, $3, 'pending', 'tokens-10k', 10000, 1000)`, [orgId, `${orgId}.tokens.1`, new Date().toISOString().slice(0, 7)]);
    return `${orgId}.tokens.1`;
  }
  const viaStripe = (url: string) => ({ ...svc.ctx, config: { ...svc.ctx.config, STRIPE_API_BASE: url } });
  const intent = (orgId: string, crossingId: string, status: string) => ({
    id: `pi_held_${orgId.slice(0, 8)}`, object: 'payment_intent', amount: 1000, currency: 'usd', status, customer: `cus_${orgId.slice(0, 8)}`,
    payment_method: 'pm_saved', metadata: { org_id: orgId, ledger: 'tokens', package_slug: 'tokens-10k', crossing_id: crossingId },
  });

  it('a decline the webhook already recorded is not recorded again (one billing.payment.failed)', async () => {
    const orgId = crypto.randomUUID();
    const crossingId = await pendingRun(orgId);
    const pi = intent(orgId, crossingId, 'requires_payment_method');
    const held = await heldStripe(402, { error: { type: 'card_error', code: 'card_declined', message: 'Your card was declined.', payment_intent: pi } });
    try {
      const job = processTopup(viaStripe(held.url), { crossingId });
      await held.reached;
      const failed = signedEvent({ type: 'payment_intent.payment_failed', object: { ...pi, last_payment_error: { message: 'Your card was declined.' } } });
      expect((await postWebhook(svc, failed.body, failed.signature)).json().data.outcome).toBe('auto top-up failed');
      held.release();
      await expect(job).rejects.toThrow('auto top-up declined');
    } finally {
      await held.close();
    }
    expect(await runs(orgId)).toEqual([{ crossing_id: crossingId, status: 'failed', reason: 'Your card was declined.' }]);
    expect(await outboxEvents(svc, 'billing.payment.failed', orgId)).toHaveLength(1);
  });

  it('a charge the webhook already credited stays succeeded when Stripe answers "processing"', async () => {
    const orgId = crypto.randomUUID();
    const crossingId = await pendingRun(orgId);
    const pi = intent(orgId, crossingId, 'processing');
    const held = await heldStripe(200, pi);
    try {
      const job = processTopup(viaStripe(held.url), { crossingId });
      await held.reached;
      const succeeded = signedEvent({ type: 'payment_intent.succeeded', object: { ...pi, status: 'succeeded' } });
      expect((await postWebhook(svc, succeeded.body, succeeded.signature)).json().data.outcome).toBe('credited 10000 tokens');
      held.release();
      expect(await job).toBe('processing');
    } finally {
      await held.close();
    }
    expect(await runs(orgId)).toEqual([{ crossing_id: crossingId, status: 'succeeded', reason: null }]);
    expect(await balance(orgId)).toBe(10_000);
  });
});
