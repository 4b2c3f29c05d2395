import { subjectFor } from '@aos/bus';
import { ANONYMOUS, type EventData, type EventType } from '@aos/contracts';
import { startTestService, userPrincipal } from '@aos/testkit';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { expect } from 'vitest';
import { service } from '../src/service.js';

export type Billing = Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;

export const WEBHOOK_SECRET = 'whsec_test_secret_for_billing';
export const anonymous = ANONYMOUS;

export function startBilling(env: Record<string, string> = {}): Promise<Billing> {
  return startTestService(service, { env: { STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, ...env } });
}

/** Settings pointing billing at the Stripe stand-in, with plan price ids. */
export const stripeEnv = (stripe: { url: string }) => ({ STRIPE_SECRET_KEY: 'sk_test_local', STRIPE_API_BASE: stripe.url, STRIPE_PRICE_PRO: 'price_pro', STRIPE_PRICE_TEAMS: 'price_teams' });

export const owner = (orgId: string = crypto.randomUUID()) => userPrincipal({ orgId, orgRole: 'owner' });

/** Publishes an event as if another service had (same namespace, direct to JetStream). */
export async function publish<T extends EventType>(svc: Billing, type: T, data: EventData<T>, opts: { orgId: string | null; tenantId?: string | null; id?: string; occurredAt?: string; msgId?: string }) {
  const envelope = {
    id: opts.id ?? crypto.randomUUID(), type, version: 1, source: 'test', occurredAt: opts.occurredAt ?? new Date().toISOString(),
    tenantId: opts.tenantId ?? null, orgId: opts.orgId, actor: { type: 'system', id: null }, data,
  };
  const bus = await svc.ctx.bus;
  await bus.js.publish(subjectFor(bus.names, type), JSON.stringify(envelope), { msgID: opts.msgId ?? envelope.id });
  return envelope;
}

export async function count(svc: Billing, text: string, params: unknown[] = []): Promise<number> {
  const { rows } = await svc.ctx.pool.query(text, params);
  return Number(rows[0]?.n ?? 0);
}

/**
 * The ledger invariant, over every account the test touched: the balance is the sum of its
 * journal, and each entry's balance_after is the running sum up to it. An organization owes
 * only once its balance is used up: never a positive balance and a debt on one ledger.
 */
export async function expectLedgersConsistent(svc: Billing) {
  const { rows } = await svc.ctx.pool.query(`
    SELECT a.org_id, a.ledger, a.balance::text AS balance, COALESCE(j.sum, 0)::text AS journal, COALESCE(j.broken, 0)::int AS broken
    FROM billing_ledger_accounts a
    LEFT JOIN (
      SELECT org_id, ledger, sum(amount) AS sum, count(*) FILTER (WHERE balance_after <> running) AS broken
      FROM (SELECT org_id, ledger, amount, balance_after, sum(amount) OVER (PARTITION BY org_id, ledger ORDER BY id) AS running FROM billing_ledger_entries) e
      GROUP BY org_id, ledger
    ) j USING (org_id, ledger)`);
  const broken = rows.filter((r) => r.balance !== r.journal || r.broken > 0);
  expect(broken).toEqual([]);
  const both = await svc.ctx.pool.query(`
    SELECT a.org_id, a.ledger FROM billing_ledger_accounts a JOIN billing_ledger_accounts o ON o.org_id = a.org_id AND o.ledger = a.ledger || '_owed'
    WHERE a.balance > 0 AND o.balance > 0`);
  expect(both.rows).toEqual([]);
  return rows.length;
}

/** Events this service wrote to its outbox, oldest first. */
export async function outboxEvents(svc: Billing, type: string, orgId?: string) {
  const { rows } = await svc.ctx.pool.query(
    `SELECT envelope FROM aos_outbox WHERE type = $1 ${orgId ? "AND envelope->>'orgId' = $2" : ''} ORDER BY created_at, id`,
    orgId ? [type, orgId] : [type],
  );
  return rows.map((r) => r.envelope as { id: string; orgId: string; data: Record<string, unknown> });
}

const signer = new Stripe('sk_test_signer');

/** A Stripe event body and its real `Stripe-Signature` header. */
export function signedEvent(event: { id?: string; type: string; created?: number; object: Record<string, unknown> }, opts: { secret?: string; timestamp?: number; pretty?: boolean } = {}) {
  const body = JSON.stringify({
    id: event.id ?? `evt_${crypto.randomUUID().replaceAll('-', '')}`, object: 'event', api_version: '2025-01-01', type: event.type,
    created: event.created ?? Math.floor(Date.now() / 1000), livemode: false, pending_webhooks: 1, request: { id: null, idempotency_key: null },
    data: { object: event.object },
  }, null, opts.pretty ? 2 : undefined);
  const signature = signer.webhooks.generateTestHeaderString({ payload: body, secret: opts.secret ?? WEBHOOK_SECRET, ...(opts.timestamp ? { timestamp: opts.timestamp } : {}) });
  return { body, signature };
}

export function postWebhook(svc: Billing, body: string, signature?: string) {
  return svc.inject(ANONYMOUS, {
    method: 'POST', url: '/billing/webhook', payload: body,
    headers: { 'content-type': 'application/json; charset=utf-8', ...(signature ? { 'stripe-signature': signature } : {}) },
  });
}

export interface RecordedRequest { method: string; path: string; headers: IncomingHttpHeaders; form: Record<string, string>; raw: string }

type Reply = { status: number; body: unknown };
type StripeObject = Record<string, unknown>;

const stripeError = (status: number, type: string, message: string, extra: Record<string, unknown> = {}): Reply => ({ status, body: { error: { type, message, ...extra } } });
const missing = (param: string) => stripeError(400, 'invalid_request_error', `Missing required param: ${param}.`, { code: 'parameter_missing', param });
const noSuch = (kind: string, id: string) => stripeError(404, 'invalid_request_error', `No such ${kind}: '${id}'`, { code: 'resource_missing', param: 'id' });

/** Stripe's bracket notation (`metadata[org_id]`, `items[0][price]`) back into nested values. */
function nested(form: Record<string, string>, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(form)) {
    const m = new RegExp(`^${prefix.replace(/[[\]]/g, '\\$&')}\\[([^\\]]+)\\]$`).exec(k);
    if (m) out[m[1]!] = v;
  }
  return out;
}

/**
 * A local HTTP server standing in for the Stripe API, strict where the SDK could go wrong:
 * it answers 401 without a secret key, 400 for a body that is not form-encoded or lacks a
 * required parameter, 404 `resource_missing` for unknown objects, replays a POST sent again
 * with the same `Idempotency-Key` (`Idempotent-Replayed: true`) and refuses the key with other
 * parameters. It records every request (path, form params, headers) for the tests to assert.
 */
export async function fakeStripe() {
  const requests: RecordedRequest[] = [];
  const idempotent = new Map<string, { raw: string; path: string; reply: Reply }>();
  let seq = 0;
  const failures: { match: (r: RecordedRequest) => boolean; status: number; body: unknown }[] = [];
  const subscriptions = new Map<string, StripeObject>();
  const customers = new Map<string, StripeObject>();
  const paymentIntents = new Map<string, StripeObject>();
  const created = () => Math.floor(Date.now() / 1000);

  const respond = (r: RecordedRequest): Reply => {
    const fail = failures.findIndex((f) => f.match(r));
    if (fail >= 0) { const [f] = failures.splice(fail, 1); return { status: f!.status, body: f!.body }; }
    const id = ++seq;
    const metadata = nested(r.form, 'metadata');
    const base = { created: created(), livemode: false, metadata };
    if (r.method === 'POST' && r.path === '/v1/customers') {
      const customer = { id: `cus_test${id}`, object: 'customer', ...base, email: r.form.email ?? null, invoice_settings: { default_payment_method: null } };
      customers.set(customer.id, customer);
      return { status: 200, body: customer };
    }
    if (r.method === 'POST' && r.path === '/v1/checkout/sessions') {
      if (!r.form.mode) return missing('mode');
      if (!r.form.success_url) return missing('success_url');
      if (!r.form['line_items[0][price]'] && !r.form['line_items[0][price_data][currency]']) return missing('line_items');
      if (r.form.customer && !customers.has(r.form.customer)) return noSuch('customer', r.form.customer);
      return { status: 200, body: {
        id: `cs_test_${id}`, object: 'checkout.session', ...base, url: `https://checkout.stripe.test/c/cs_test_${id}`, mode: r.form.mode, status: 'open',
        customer: r.form.customer ?? null, client_reference_id: r.form.client_reference_id ?? null, subscription: null, payment_status: 'unpaid',
        success_url: r.form.success_url, cancel_url: r.form.cancel_url ?? null,
      } };
    }
    if (r.method === 'POST' && r.path === '/v1/billing_portal/sessions') {
      if (!r.form.customer) return missing('customer');
      if (!customers.has(r.form.customer)) return noSuch('customer', r.form.customer);
      return { status: 200, body: { id: `bps_${id}`, object: 'billing_portal.session', created: created(), livemode: false, url: `https://billing.stripe.test/p/session_${id}`, customer: r.form.customer, return_url: r.form.return_url ?? null } };
    }
    if (r.method === 'POST' && r.path === '/v1/payment_intents') {
      if (!r.form.amount) return missing('amount');
      if (!r.form.currency) return missing('currency');
      const confirmed = r.form.confirm === 'true';
      if (r.form.off_session === 'true' && !confirmed) return stripeError(400, 'invalid_request_error', 'off_session can only be used with confirm=true.', { param: 'off_session' });
      if (confirmed && !r.form.payment_method) return missing('payment_method');
      const intent = {
        id: `pi_test${id}`, object: 'payment_intent', ...base, amount: Number(r.form.amount), currency: r.form.currency, customer: r.form.customer ?? null,
        payment_method: r.form.payment_method ?? null, status: confirmed ? 'succeeded' : 'requires_payment_method', client_secret: `pi_test${id}_secret_x`,
        setup_future_usage: r.form.setup_future_usage ?? null, description: r.form.description ?? null,
      };
      paymentIntents.set(intent.id, intent);
      return { status: 200, body: intent };
    }
    if (r.method === 'GET' && r.path === '/v1/payment_intents') {
      // Newest first like Stripe; filters by customer and created[gte].
      const gte = r.form['created[gte]'] === undefined ? 0 : Number(r.form['created[gte]']);
      let data = [...paymentIntents.values()].filter((pi) => (!r.form.customer || pi.customer === r.form.customer) && Number(pi.created) >= gte).reverse();
      if (r.form.starting_after) data = data.slice(data.findIndex((pi) => pi.id === r.form.starting_after) + 1);
      const limit = Math.min(100, Number(r.form.limit ?? 10));
      return { status: 200, body: { object: 'list', url: '/v1/payment_intents', has_more: data.length > limit, data: data.slice(0, limit) } };
    }
    const sub = /^\/v1\/subscriptions\/([^/]+)$/.exec(r.path);
    if (sub) {
      const current = subscriptions.get(sub[1]!);
      if (!current) return noSuch('subscription', sub[1]!);
      if (r.method === 'DELETE') {
        const canceled = { ...current, status: 'canceled', canceled_at: created(), ended_at: created() };
        subscriptions.set(sub[1]!, canceled);
        return { status: 200, body: canceled };
      }
      if (r.method === 'POST') {
        if (current.status === 'canceled') return stripeError(400, 'invalid_request_error', 'A canceled subscription can only update its cancellation_details and metadata.');
        if (r.form.payment_behavior === 'pending_if_incomplete') {
          const allowed = /^(items\[|proration_behavior$|payment_behavior$|proration_date$|billing_cycle_anchor$|trial_end$|trial_from_plan$|expand\[|add_invoice_items\[)/;
          const other = Object.keys(r.form).find((k) => !allowed.test(k));
          if (other) return stripeError(400, 'invalid_request_error', `You cannot pass \`${other}\` when \`payment_behavior\` is \`pending_if_incomplete\`.`, { param: other });
        }
        const items = current.items as { data: { id: string; price: { id: string } }[] };
        const price = r.form['items[0][price]'];
        if (r.form['items[0][id]'] && !items.data.some((i) => i.id === r.form['items[0][id]'])) return noSuch('subscription_item', r.form['items[0][id]']!);
        const updated = {
          ...current, metadata: { ...(current.metadata as object), ...metadata },
          cancel_at_period_end: r.form.cancel_at_period_end === undefined ? current.cancel_at_period_end : r.form.cancel_at_period_end === 'true',
          items: price ? { ...items, data: [{ ...items.data[0]!, price: { id: price } }] } : items,
        };
        subscriptions.set(sub[1]!, updated);
        return { status: 200, body: updated };
      }
      return { status: 200, body: current };
    }
    return stripeError(404, 'invalid_request_error', `Unrecognized request URL (${r.method}: ${r.path}).`);
  };

  const handle = (r: RecordedRequest): Reply & { replayed?: boolean } => {
    const auth = r.headers.authorization;
    if (typeof auth !== 'string' || !/^Bearer sk_(test|live)_\w+$/.test(auth)) {
      return stripeError(401, 'invalid_request_error', 'Invalid API Key provided.');
    }
    if (r.method === 'POST' && r.raw.length > 0 && !String(r.headers['content-type']).startsWith('application/x-www-form-urlencoded')) {
      return stripeError(400, 'invalid_request_error', 'Invalid request: bodies must be form-encoded (application/x-www-form-urlencoded).');
    }
    const key = r.headers['idempotency-key'];
    if (typeof key !== 'string' || r.method !== 'POST') return respond(r);
    const prior = idempotent.get(key);
    if (prior) {
      if (prior.raw !== r.raw || prior.path !== r.path) {
        return stripeError(400, 'idempotency_error', `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`);
      }
      return { ...prior.reply, replayed: true };
    }
    const reply = respond(r);
    // Like Stripe: server errors are not stored under the key, so a retry runs again.
    if (reply.status < 500) idempotent.set(key, { raw: r.raw, path: r.path, reply });
    return reply;
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'http://x');
      const form = Object.fromEntries(new URLSearchParams(req.method === 'POST' ? raw : url.search));
      const r: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, headers: req.headers, form, raw };
      requests.push(r);
      const out = handle(r);
      res.writeHead(out.status, { 'content-type': 'application/json', 'request-id': `req_${seq}`, ...(out.replayed ? { 'idempotent-replayed': 'true' } : {}) });
      res.end(JSON.stringify(out.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    subscriptions,
    /** PaymentIntents Stripe holds (created through the API, or put here as if created earlier). */
    paymentIntents,
    /** Registers a customer as if created earlier (for rows the tests insert directly). */
    addCustomer: (id: string) => customers.set(id, { id, object: 'customer', metadata: {} }),
    failNext: (match: (r: RecordedRequest) => boolean, status: number, body: unknown) => failures.push({ match, status, body }),
    find: (method: string, path: string) => requests.filter((r) => r.method === method && r.path === path),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export type FakeStripe = Awaited<ReturnType<typeof fakeStripe>>;

/** A live Stripe subscription as checkout and Stripe's first update webhook leave it (the stand-in knows it too). */
export async function subscribeThroughWebhooks(svc: Billing, stripe: FakeStripe, orgId: string, tier: string, periodEnd = Math.floor(Date.now() / 1000) + 20 * 86400) {
  const created = Math.floor(Date.now() / 1000) - 60;
  const cs = signedEvent({ type: 'checkout.session.completed', created, object: { id: `cs_${orgId}`, object: 'checkout.session', mode: 'subscription', client_reference_id: orgId, customer: `cus_${orgId.slice(0, 8)}`, subscription: `sub_${orgId.slice(0, 8)}`, metadata: { org_id: orgId, tier } } });
  expect((await postWebhook(svc, cs.body, cs.signature)).statusCode).toBe(200);
  const object = { id: `sub_${orgId.slice(0, 8)}`, object: 'subscription', customer: `cus_${orgId.slice(0, 8)}`, status: 'active', cancel_at_period_end: false, metadata: { org_id: orgId, tier }, items: { object: 'list', data: [{ id: 'si_test1', price: { id: `price_${tier}` }, current_period_start: created, current_period_end: periodEnd }] } };
  stripe.subscriptions.set(object.id, object);
  stripe.addCustomer(object.customer);
  const up = signedEvent({ type: 'customer.subscription.updated', created: created + 1, object });
  expect((await postWebhook(svc, up.body, up.signature)).statusCode).toBe(200);
}
