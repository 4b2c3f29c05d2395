import { createLogger } from '@aos/core';
import type { App } from '@aos/http';
import { internalKeys } from '@aos/testkit';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildGateway } from '../../gateway/src/app.js';
import { loadGatewayConfig } from '../../gateway/src/config.js';
import { signedEvent, startBilling, type Billing } from '../../services/billing/test/helpers.js';

// The Stripe webhook and the public catalogue through the real gateway: anonymous callers,
// bodies forwarded byte for byte so the signature still verifies.
let billing: Billing;
let gateway: App;

beforeAll(async () => {
  billing = await startBilling();
  await billing.app.listen({ host: '127.0.0.1', port: 0 });
  const config = loadGatewayConfig({
    INTERNAL_TOKEN_PRIVATE_JWK: (await internalKeys()).privateJwk,
    BILLING_URL: `http://127.0.0.1:${(billing.app.server.address() as AddressInfo).port}`,
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  });
  gateway = await buildGateway({ config, version: 't', log: createLogger('gw', 'silent') });
  await gateway.ready();
});

afterAll(async () => {
  await gateway?.close();
  await billing?.close();
});

describe('billing behind the gateway', () => {
  it('serves the public tiers to anonymous callers', async () => {
    const res = await gateway.inject({ method: 'GET', url: '/api/billing/tiers' });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toHaveLength(4);
  });

  it('delivers a signed Stripe webhook with its raw body intact, and rejects a forged one', async () => {
    const orgId = crypto.randomUUID();
    const { body, signature } = signedEvent({
      type: 'checkout.session.completed',
      object: { id: 'cs_gw', object: 'checkout.session', mode: 'subscription', client_reference_id: orgId, customer: 'cus_gw', subscription: 'sub_gw', metadata: { org_id: orgId, tier: 'teams', note: 'Zoë ✓' } },
    }, { pretty: true });
    const res = await gateway.inject({ method: 'POST', url: '/api/billing/webhook', payload: body, headers: { 'content-type': 'application/json; charset=utf-8', 'stripe-signature': signature } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().data).toMatchObject({ received: true, outcome: 'subscription activated' });
    const { rows } = await billing.ctx.pool.query('SELECT tier FROM billing_subscriptions WHERE org_id = $1', [orgId]);
    expect(rows[0]?.tier).toBe('teams');

    const forged = await gateway.inject({ method: 'POST', url: '/api/billing/webhook', payload: body.replace('teams', 'pro  '), headers: { 'content-type': 'application/json', 'stripe-signature': signature } });
    expect(forged.statusCode).toBe(400);
  });
});
