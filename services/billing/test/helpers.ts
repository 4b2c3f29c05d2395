import { subjectFor } from '@aos/bus';
import { ANONYMOUS, type EventData, type EventType } from '@aos/contracts';
import { startTestService, userPrincipal } from '@aos/testkit';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { service } from '../src/service.js';

export type Billing = Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;

export const WEBHOOK_SECRET = 'whsec_test_secret_for_billing';
export const anonymous = ANONYMOUS;

export function startBilling(env: Record<string, string> = {}): Promise<Billing> {
  return startTestService(service, { env: { STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, ...env } });
}

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

/**
 * A local HTTP server speaking enough of the Stripe API for the SDK: it records every request
 * (path, form params, headers) and answers like Stripe, including idempotent replays.
 */
export async function fakeStripe() {
  const requests: RecordedRequest[] = [];
  const idempotent = new Map<string, { status: number; body: unknown }>();
  let seq = 0;
  const failures: { match: (r: RecordedRequest) => boolean; status: number; body: unknown }[] = [];
  const subscriptions = new Map<string, Record<string, unknown>>();

  const respond = (r: RecordedRequest): { status: number; body: unknown } => {
    const fail = failures.findIndex((f) => f.match(r));
    if (fail >= 0) { const [f] = failures.splice(fail, 1); return { status: f!.status, body: f!.body }; }
    const id = ++seq;
    const meta = Object.fromEntries(Object.entries(r.form).filter(([k]) => k.startsWith('metadata[')).map(([k, v]) => [k.slice(9, -1), v]));
    if (r.method === 'POST' && r.path === '/v1/customers') return { status: 200, body: { id: `cus_test${id}`, object: 'customer', metadata: meta } };
    if (r.method === 'POST' && r.path === '/v1/checkout/sessions') return { status: 200, body: { id: `cs_test_${id}`, object: 'checkout.session', url: `https://checkout.stripe.test/c/cs_test_${id}`, mode: r.form.mode, metadata: meta } };
    if (r.method === 'POST' && r.path === '/v1/billing_portal/sessions') return { status: 200, body: { id: `bps_${id}`, object: 'billing_portal.session', url: `https://billing.stripe.test/p/session_${id}`, customer: r.form.customer } };
    if (r.method === 'POST' && r.path === '/v1/payment_intents') {
      const confirmed = r.form.confirm === 'true';
      return { status: 200, body: {
        id: `pi_test${id}`, object: 'payment_intent', amount: Number(r.form.amount), currency: r.form.currency, customer: r.form.customer ?? null,
        payment_method: r.form.payment_method ?? null, status: confirmed ? 'succeeded' : 'requires_payment_method', client_secret: `pi_test${id}_secret_x`, metadata: meta,
      } };
    }
    const sub = /^\/v1\/subscriptions\/([^/]+)$/.exec(r.path);
    if (sub) {
      const current = subscriptions.get(sub[1]!) ?? { id: sub[1], object: 'subscription', status: 'active', metadata: {}, items: { object: 'list', data: [{ id: 'si_test1', price: { id: 'price_old' } }] } };
      if (r.method === 'POST') {
        const items = current.items as { data: { id: string; price: { id: string } }[] };
        const price = r.form['items[0][price]'];
        const updated = {
          ...current, metadata: { ...(current.metadata as object), ...meta }, cancel_at_period_end: r.form.cancel_at_period_end === 'true',
          items: price ? { ...items, data: [{ ...items.data[0]!, price: { id: price } }] } : items,
        };
        subscriptions.set(sub[1]!, updated);
        return { status: 200, body: updated };
      }
      return { status: 200, body: current };
    }
    return { status: 404, body: { error: { type: 'invalid_request_error', message: `No such route ${r.method} ${r.path}` } } };
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'http://x');
      const form = Object.fromEntries(new URLSearchParams(req.method === 'GET' ? url.search : raw));
      const r: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, headers: req.headers, form, raw };
      requests.push(r);
      const key = req.headers['idempotency-key'];
      let out: { status: number; body: unknown };
      if (typeof key === 'string' && idempotent.has(key)) out = idempotent.get(key)!;
      else {
        out = respond(r);
        // Like Stripe: server errors are not stored under the key, so a retry runs again.
        if (typeof key === 'string' && r.method === 'POST' && out.status < 500) idempotent.set(key, out);
      }
      res.writeHead(out.status, { 'content-type': 'application/json', 'request-id': `req_${seq}` });
      res.end(JSON.stringify(out.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    subscriptions,
    failNext: (match: (r: RecordedRequest) => boolean, status: number, body: unknown) => failures.push({ match, status, body }),
    find: (method: string, path: string) => requests.filter((r) => r.method === method && r.path === path),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export type FakeStripe = Awaited<ReturnType<typeof fakeStripe>>;
