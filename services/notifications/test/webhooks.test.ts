import { userPrincipal, waitFor } from '@aos/testkit';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPrivateAddress } from '../src/domain/ssrf.js';
import { count, envelope, publish, startNotifications, type Svc } from './helpers.js';

interface Received { headers: IncomingMessage['headers']; body: string }
let receiver: Server;
let receiverUrl: string;
const received: Received[] = [];
/** Paths starting with /fail-once fail their first request; /failing always fails. */
const failedOnce = new Set<string>();

let svc: Svc; // loopback allowed (as the tests' receiver is local)
let strict: Svc; // production policy: private targets refused
const admin = userPrincipal();
const orgId = admin.orgId!;

beforeAll(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      const path = req.url ?? '';
      const fail = path.startsWith('/failing') || (path.startsWith('/fail-once') && !failedOnce.has(path));
      if (path.startsWith('/fail-once')) failedOnce.add(path);
      if (fail) res.writeHead(500).end('nope');
      else res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  svc = await startNotifications({ env: { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true', WEBHOOK_BACKOFF_MS: '50', WEBHOOK_ATTEMPTS: '3', WEBHOOK_MAX_FAILURES: '2' } });
  strict = await startNotifications();
});
afterAll(async () => {
  await svc?.close();
  await strict?.close();
  receiver.close();
});

const register = (s: Svc, body: object, p = admin) => s.inject(p, { method: 'POST', url: '/webhooks', payload: body });
const taskEvent = (id: number) => envelope('tasks.task.created', { taskId: id, title: `T${id}`, status: 'todo', priority: 'P2', type: 'feature', assignee: null, productId: null, productSlug: null, parentTaskId: null, createdBy: null }, orgId);

describe('outbound webhooks', () => {
  it('delivers matching events with a verifiable HMAC signature', async () => {
    const res = await register(svc, { url: receiverUrl, event_types: ['tasks.*'] });
    expect(res.statusCode).toBe(201);
    const { secret, id } = res.json().data;
    expect(secret).toMatch(/^whsec_/);
    expect((await svc.inject(admin, { method: 'GET', url: `/webhooks/${id}` })).json().data.secret).toBeUndefined();

    const env = taskEvent(1);
    await publish(svc, env);
    await publish(svc, envelope('billing.balance.low', { ledger: 'tokens', balance: 1, threshold: 10, userId: null }, orgId)); // not subscribed
    await waitFor(() => received.find((r) => r.headers['x-aos-event-id'] === env.id));
    const hit = received.find((r) => r.headers['x-aos-event-id'] === env.id)!;
    const [, t, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(hit.headers['x-aos-signature'] as string)!;
    expect(createHmac('sha256', secret).update(`${t}.${hit.body}`).digest('hex')).toBe(v1);
    expect(Math.abs(Date.now() / 1000 - Number(t))).toBeLessThan(60);
    expect(JSON.parse(hit.body)).toMatchObject({ id: env.id, type: 'tasks.task.created', data: { taskId: 1 } });
    expect(received.some((r) => r.headers['x-aos-event'] === 'billing.balance.low')).toBe(false);
    // The receiver has the request; the worker records the outcome right after the response.
    const deliveries = await waitFor(async () => {
      const list = (await svc.inject(admin, { method: 'GET', url: `/webhooks/${id}/deliveries` })).json().data;
      return list[0]?.status === 'delivered' ? list : null;
    });
    expect(deliveries[0]).toMatchObject({ event_id: env.id, status: 'delivered', response_status: 200, attempts: 1 });
  });

  it('retries a receiver that answers 500, then succeeds; redeliver sends again', async () => {
    const { id } = (await register(svc, { url: receiverUrl.replace('/hook', '/fail-once-retry'), event_types: ['tasks.task.created'] })).json().data;
    const env = taskEvent(2);
    await publish(svc, env);
    await waitFor(async () => (await svc.inject(admin, { method: 'GET', url: `/webhooks/${id}/deliveries` })).json().data[0]?.status === 'delivered', { message: 'delivered after retry' });
    const d = (await svc.inject(admin, { method: 'GET', url: `/webhooks/${id}/deliveries` })).json().data[0];
    expect(d.attempts).toBe(2);
    const before = received.filter((r) => r.headers['x-aos-event-id'] === env.id).length;
    const re = await svc.inject(admin, { method: 'POST', url: `/webhooks/${id}/deliveries/${d.id}/redeliver` });
    expect(re.statusCode).toBe(202);
    await waitFor(() => received.filter((r) => r.headers['x-aos-event-id'] === env.id).length > before);
  });

  it('disables an endpoint after repeated failures', async () => {
    const { id } = (await register(svc, { url: receiverUrl.replace('/hook', '/failing'), event_types: ['billing.*'] })).json().data;
    {
      await publish(svc, envelope('billing.balance.low', { ledger: 'tokens', balance: 1, threshold: 10, userId: null }, orgId));
      await publish(svc, envelope('billing.balance.low', { ledger: 'tokens', balance: 0, threshold: 10, userId: null }, orgId));
      await waitFor(async () => (await svc.inject(admin, { method: 'GET', url: `/webhooks/${id}` })).json().data.is_active === false, { timeoutMs: 20_000, message: 'endpoint disabled' });
    }
    await waitFor(() => count(svc, "SELECT count(*) AS n FROM aos_outbox WHERE type = 'notifications.webhook.disabled'"));
  });

  it('refuses private targets at registration and at delivery', async () => {
    for (const url of ['http://127.0.0.1/x', 'http://10.0.0.5/x', 'http://[::1]/x', 'http://169.254.169.254/latest', 'http://localhost:8080/', 'ftp://example.com/', 'http://user:pw@example.com/']) {
      const res = await register(strict, { url, event_types: ['*'] });
      expect(res.statusCode, url).toBe(400);
    }
    expect(isPrivateAddress('::ffff:10.1.2.3')).toBe(true);
    expect(isPrivateAddress('100.64.1.1')).toBe(true);
    expect(isPrivateAddress('93.184.216.34')).toBe(false);
    // Registered while allowed, then delivered under the strict policy: refused without a request.
    const [hook] = (await strict.ctx.pool.query(
      `INSERT INTO webhooks (org_id, url, event_types, secret) VALUES ($1, $2, '{*}', 'whsec_x') RETURNING id`, [orgId, receiverUrl])).rows;
    const before = received.length;
    const env = taskEvent(3);
    await publish(strict, env);
    await waitFor(async () => (await strict.inject(admin, { method: 'GET', url: `/webhooks/${hook.id}/deliveries` })).json().data[0]?.status === 'failed', { message: 'refused delivery' });
    const d = (await strict.inject(admin, { method: 'GET', url: `/webhooks/${hook.id}/deliveries` })).json().data[0];
    expect(d.error).toContain('private');
    expect(received.length).toBe(before);
  });

  it('is for org admins only, and per org', async () => {
    const member = userPrincipal({ orgId, orgRole: 'member' });
    expect((await register(svc, { url: receiverUrl, event_types: ['*'] }, member)).statusCode).toBe(403);
    const { id } = (await register(svc, { url: receiverUrl, event_types: ['*'] })).json().data;
    const other = userPrincipal();
    expect((await svc.inject(other, { method: 'GET', url: `/webhooks/${id}` })).statusCode).toBe(404);
    expect((await svc.inject(other, { method: 'DELETE', url: `/webhooks/${id}` })).statusCode).toBe(404);
    expect((await register(svc, { url: receiverUrl, event_types: ['Bad Pattern'] })).statusCode).toBe(400);
    expect((await svc.inject(admin, { method: 'DELETE', url: `/webhooks/${id}` })).statusCode).toBe(200);
  });
});
