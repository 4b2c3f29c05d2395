import { apiKeyPrincipal, userPrincipal } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectLedgersConsistent, fakeStripe, owner, postWebhook, signedEvent, startBilling, type Billing, type FakeStripe } from './helpers.js';

// Every billing route, fed what a careless or hostile client sends: never a 500, always the
// error envelope, never a stack trace or SQL in the answer.
let stripe: FakeStripe;
let svc: Billing;
beforeAll(async () => {
  stripe = await fakeStripe();
  svc = await startBilling({ STRIPE_SECRET_KEY: 'sk_test_local', STRIPE_API_BASE: stripe.url, STRIPE_PRICE_PRO: 'price_pro', STRIPE_PRICE_TEAMS: 'price_teams' });
});
afterAll(async () => { if (svc) await expectLedgersConsistent(svc); await svc?.close(); await stripe?.close(); });

const WRITES: [string, string][] = [
  ['POST', '/billing/checkout'], ['POST', '/billing/portal'], ['POST', '/billing/create-payment-intent'], ['POST', '/billing/change-plan'],
  ['POST', '/billing/validate-downgrade'], ['POST', '/billing/auto-topup'], ['PUT', '/billing/auto-topup'], ['POST', '/billing/credit-auto-topup'],
  ['PUT', '/billing/credit-auto-topup'], ['POST', '/tokens/consume'], ['POST', '/tokens/grant'], ['POST', '/billing/costs'], ['POST', '/billing/webhook'],
  ['PUT', `/billing/admin/orgs/${crypto.randomUUID()}/plan`], ['DELETE', `/billing/admin/orgs/${crypto.randomUUID()}/plan`], ['POST', '/billing/admin/plans/announce'],
];
const asPlatformAdmin = (url: string) => url === '/tokens/grant' || url.startsWith('/billing/admin/');
const READS = ['/billing/tiers', '/billing/pricing', '/billing/subscription', '/billing/usage', '/billing/plan-summary', '/billing/overview', '/billing/auto-topup',
  '/billing/credit-auto-topup', '/tokens/balance', '/tokens/transactions', '/tokens/ledger-check', '/billing/costs', `/billing/admin/orgs/${crypto.randomUUID()}/plan`];

const huge = 'x'.repeat(200_000);
const sqlish = "'; DROP TABLE billing_ledger_entries; --";
const BODIES: unknown[] = [
  null, [], [1, 2], 'plain string', 42, true, {},
  { tier: sqlish, package_slug: sqlish, amount: sqlish, action: sqlish, reference_id: sqlish, source: sqlish, threshold_tokens: sqlish },
  { tier: { $ne: null }, amount: { $gt: 0 }, package_slug: ['tokens-10k'], threshold_tokens: [10], action: { a: 1 } },
  { tier: 'pro\u0000', amount: 1, action: 'a\u0000b', reference_id: 'nul\u0000ref', package_slug: 'tokens-10k\u0000' },
  { tier: huge, amount: 1, action: huge, reference_id: huge, package_slug: huge, source: huge, description: huge },
  { amount: 1e308, threshold_tokens: 1e308, threshold_cents: -1e308, max_monthly_topups: 1e20, amount_usd: 1e308 },
  { amount: -1, threshold_tokens: -5, max_monthly_topups: -1, amount_usd: -1, org_id: 'not-a-uuid' },
  { amount: 1.000001, action: 'x', metadata: 'not an object' },
  { amount: 1, action: 'x', metadata: nest(60) },
  JSON.parse('{"__proto__": {"admin": true}, "constructor": {"prototype": {"admin": true}}, "amount": 1, "action": "proto"}'),
  { tier: 'enterprise', success_url: 'javascript:alert(1)', cancel_url: 'file:///etc/passwd', return_url: 'not a url' },
  { tier: 'enterprise', limits: { requests_per_minute: 1e308, agents: -1, seats: 'all', included_tokens: sqlish }, mrr_cents: 1e20, note: huge },
  { tier: 'enterprise', limits: [1, 2], cancel_stripe_subscription: 'yes' }, { tier: 'enterprise', limits: { requests_per_minute: null, requests_per_hour: null } },
  { stripe_payment_method_id: `pm_${sqlish}`, threshold_tokens: 10, package_id: '../../etc/passwd' },
  // Well-formed enough to reach the database: NUL characters inside text and jsonb.
  { amount: 1, action: 'nul-in-metadata', metadata: { k: 'v\u0000' } },
  { amount: 1, action: 'nul-in-key', metadata: { 'k\u0000': 1 } },
  { source: 'aws', reference_id: 'nul-desc', amount_usd: 1, description: 'd\u0000', product: 'shop' },
  { org_id: '00000000-0000-4000-8000-000000000000', amount: 5, type: 'bonus', note: 'n\u0000' },
];

function nest(depth: number): Record<string, unknown> {
  let o: Record<string, unknown> = { leaf: 1 };
  for (let i = 0; i < depth; i++) o = { n: o };
  return o;
}

function expectClean(res: { statusCode: number; body: string; headers: Record<string, unknown> }, label: string) {
  expect(res.statusCode, `${label} → ${res.body.slice(0, 300)}`).toBeLessThan(500);
  expect(String(res.headers['content-type']), label).toContain('application/json');
  const body = JSON.parse(res.body) as { data?: unknown; error?: { code: unknown; message: unknown } };
  if (res.statusCode >= 400) {
    expect(typeof body.error?.code, label).toBe('string');
    expect(typeof body.error?.message, label).toBe('string');
  } else {
    expect(body.data, label).toBeDefined();
  }
  expect(res.body, label).not.toMatch(/\bat .+\.(ts|js):\d+|node_modules|SELECT |INSERT INTO|violates .*constraint|syntax error at/);
}

describe('hostile input', () => {
  it('JSON bodies of every wrong shape, on every write route → 4xx (or a handled 2xx), never 500', async () => {
    const p = owner();
    // A funded org, so a consume gets past the balance check to the insert.
    await svc.ctx.pool.query(`INSERT INTO billing_ledger_entries (org_id, ledger, type, amount, reference_id) VALUES ($1, 'tokens', 'admin_grant', 1000, 'fund')`, [p.orgId]);
    const admin = userPrincipal({ orgId: p.orgId, orgRole: 'owner', platformRoles: ['admin'] });
    for (const [method, url] of WRITES) {
      for (const [i, body] of BODIES.entries()) {
        const res = await svc.inject(asPlatformAdmin(url) ? admin : p, { method: method as 'POST', url, payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
        expectClean(res, `${method} ${url} body#${i}`);
      }
    }
  });

  it('malformed JSON, wrong content types and empty bodies → 4xx', async () => {
    const p = owner();
    for (const [method, url] of WRITES) {
      for (const [type, payload] of [['application/json', '{"tier":'], ['application/json', ''], ['text/plain', 'tier=pro'], ['application/x-www-form-urlencoded', 'tier=pro'], ['application/xml', '<tier>pro</tier>']] as const) {
        const res = await svc.inject(p, { method: method as 'POST', url, payload, headers: { 'content-type': type } });
        expectClean(res, `${method} ${url} ${type} ${JSON.stringify(payload)}`);
        if (url !== '/billing/portal' || payload !== '') expect(res.statusCode, `${method} ${url} ${type}`).toBeGreaterThanOrEqual(400);
      }
    }
  });

  it('hostile query strings on every read route → 200 or 400, never 500', async () => {
    const p = owner();
    const queries = ['limit=-1', 'limit=1e10', 'limit=abc', 'offset=-5', 'offset=99999999999999999999', 'type=bogus', 'type=consume&type=refund', `type=${encodeURIComponent(sqlish)}`,
      'ledger=gold', `reference_id=${'r'.repeat(5000)}`, 'from=2024-13-45T99:00:00Z', 'to=not-a-date', 'scope=platform', 'scope=everything', 'kind=%00', `source=${encodeURIComponent(sqlish)}`, 'limit=200&offset=0'];
    for (const url of READS) {
      for (const q of queries) {
        const res = await svc.inject(p, { method: 'GET', url: `${url}?${q}` });
        expectClean(res, `GET ${url}?${q}`);
        expect([200, 400, 403], `GET ${url}?${q}`).toContain(res.statusCode);
      }
    }
  });

  it('wrong principals: no token, anonymous, no org, other scopes, viewers → 401/403, never data', async () => {
    const p = owner();
    const principals = [
      ['none', null], ['no org', userPrincipal({ orgId: null })], ['tasks key', apiKeyPrincipal(['tasks:read', 'tasks:write'], { orgId: p.orgId })],
      ['viewer', userPrincipal({ orgId: p.orgId, orgRole: 'viewer' })],
    ] as const;
    for (const [method, url] of WRITES.filter(([, u]) => u !== '/billing/webhook' && u !== '/billing/validate-downgrade')) {
      for (const [name, principal] of principals) {
        const res = await svc.inject(principal, { method: method as 'POST', url, payload: { tier: 'pro', amount: 1, action: 'x', package_slug: 'tokens-10k', threshold_tokens: 10, threshold_cents: 10, source: 'aws', reference_id: 'r', amount_usd: 1, org_id: p.orgId } });
        expectClean(res, `${name} ${method} ${url}`);
        expect([401, 403], `${name} ${method} ${url}`).toContain(res.statusCode);
      }
    }
    for (const url of READS.filter((u) => u !== '/billing/tiers' && u !== '/billing/pricing')) {
      for (const [name, principal] of principals.filter(([n]) => n !== 'viewer')) {
        const res = await svc.inject(principal, { method: 'GET', url });
        expect([401, 403], `${name} GET ${url}`).toContain(res.statusCode);
      }
    }
  });

  it('signed Stripe events with odd objects are answered (never 500, which Stripe would retry for days)', async () => {
    const orgId = crypto.randomUUID();
    const types = ['checkout.session.completed', 'customer.subscription.created', 'customer.subscription.updated', 'customer.subscription.deleted',
      'invoice.paid', 'invoice.payment_failed', 'payment_intent.succeeded', 'payment_intent.payment_failed', 'charge.refunded'];
    const objects: Record<string, unknown>[] = [
      {}, { id: 42 }, { id: 'x', metadata: null }, { id: 'x', metadata: { org_id: orgId } },
      { id: 'x', metadata: { org_id: orgId, tier: 'pro', ledger: 'tokens', package_slug: 'tokens-10k', crossing_id: sqlish } },
      { id: 'x', metadata: { org_id: 'nul\u0000org', tier: 'gold' }, customer: { id: 'cus_obj' }, items: 'not a list', status: 42 },
      { id: 'x', mode: 'subscription', client_reference_id: orgId, metadata: { org_id: orgId, tier: 'teams' }, customer: null, subscription: { id: 'sub_obj' } },
      { id: 'x', customer: 'cus_unknown', amount_paid: 'lots', amount_due: null, currency: 7, parent: { subscription_details: { metadata: { org_id: orgId, tier: 'pro' } } } },
      { id: 'sub_odd', customer: 'cus_odd', status: 'active', metadata: { org_id: orgId, tier: 'pro' }, items: { data: [{ current_period_start: 'soon', current_period_end: -1 }] }, cancel_at_period_end: 'yes' },
      { id: 'x', amount: -5, currency: 'usd', metadata: { org_id: orgId, ledger: 'credits', package_slug: 'credits-10' }, payment_method: { id: 'pm_obj' }, customer: 12 },
    ];
    for (const type of types) {
      for (const [i, object] of objects.entries()) {
        const ev = signedEvent({ type, object });
        const res = await postWebhook(svc, ev.body, ev.signature);
        expectClean(res, `${type} object#${i}`);
        expect(res.statusCode, `${type} object#${i}`).toBe(200);
      }
    }
    const bad = signedEvent({ type: 'invoice.paid', object: {} });
    const notJson = 'not json at all';
    expect((await postWebhook(svc, notJson, bad.signature)).statusCode).toBe(400);
  });
});
