import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { owner, startBilling, type Billing } from './helpers.js';

// The same routes against stripe-mock (Stripe's own API mock, validating every parameter against
// the OpenAPI spec). It runs in docker-compose (`docker compose up stripe-mock`), not on every host:
// STRIPE_MOCK_URL=http://127.0.0.1:12111 pnpm vitest run services/billing/test/stripe-mock.test.ts
const url = process.env.STRIPE_MOCK_URL;

describe.skipIf(!url)('against stripe-mock', () => {
  let svc: Billing;
  beforeAll(async () => {
    svc = await startBilling({ STRIPE_SECRET_KEY: 'sk_test_123', STRIPE_API_BASE: url!, STRIPE_PRICE_PRO: 'price_pro', STRIPE_PRICE_TEAMS: 'price_teams' });
  });
  afterAll(async () => { await svc?.close(); });

  it('checkout, portal and a package payment intent are accepted by the API as sent', async () => {
    const p = owner();
    const checkout = await svc.inject(p, { method: 'POST', url: '/billing/checkout', payload: { tier: 'pro' } });
    expect(checkout.statusCode, checkout.body).toBe(200);
    expect(checkout.json().data.session_id).toMatch(/^cs_/);
    const inline = await startBilling({ STRIPE_SECRET_KEY: 'sk_test_123', STRIPE_API_BASE: url! });
    try {
      const res = await inline.inject(owner(), { method: 'POST', url: '/billing/checkout', payload: { tier: 'teams' } });
      expect(res.statusCode, res.body).toBe(200); // inline price_data instead of a price id
    } finally {
      await inline.close();
    }
    const portal = await svc.inject(p, { method: 'POST', url: '/billing/portal', payload: {} });
    expect(portal.statusCode, portal.body).toBe(200);
    expect(portal.json().data.url).toMatch(/^https?:\/\//);
    const intent = await svc.inject(p, { method: 'POST', url: '/billing/create-payment-intent', payload: { package_slug: 'tokens-10k', idempotency_key: 'mock-1' } });
    expect(intent.statusCode, intent.body).toBe(200);
    expect(intent.json().data.payment_intent_id).toMatch(/^pi_/);
  });
});
