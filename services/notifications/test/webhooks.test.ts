import { Queues } from '@aos/contracts';
import { apiKeyPrincipal, startTestService, userPrincipal, waitFor, sleep } from '@aos/testkit';
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isBlockedAddress, resolveTarget } from '../src/domain/ssrf.js';
import { deliver } from '../src/domain/webhooks.js';
import { webhookFanout } from '../src/events/webhooks.js';
import { recoverLostJobs } from '../src/jobs/recovery.js';
import { deliveryJobId } from '../src/jobs/webhook-delivery.js';
import { service } from '../src/service.js';
import { TestDnsServer } from './dns-server.js';
import { count, envelope, handledBy, publish } from './helpers.js';

type Received = { path: string; headers: http.IncomingHttpHeaders; body: string; at: number };
const received: Received[] = [];
/** Per path: the statuses to answer in turn (the last one repeats). */
const script = new Map<string, number[]>();
let receiver: http.Server;
let port: number;

let svc: Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
/** An instance resolving webhook hosts with `dns` (a local DNS server whose answers tests change). */
let resolving: typeof svc;
const dns = new TestDnsServer();
const orgA = randomUUID();
const orgB = randomUUID();
const adminA = userPrincipal({ orgId: orgA, orgRole: 'admin' });
const adminB = userPrincipal({ orgId: orgB, orgRole: 'admin' });
const url = (path: string) => `http://localhost:${port}${path}`;

const taskCreated = (taskId: number, org = orgA) => envelope('tasks.task.created', {
  taskId, title: `t${taskId}`, status: 'todo', priority: 'low', type: 'chore', assignee: null, productId: null,
  productSlug: null, parentTaskId: null, createdBy: null,
}, { orgId: org, actor: { type: 'user', id: 'u1' } });

async function register(path: string, events = ['tasks.task.created'], principal = adminA) {
  const res = await svc.inject(principal, { method: 'POST', url: '/webhooks', payload: { url: url(path), events } });
  expect(res.statusCode, res.body).toBe(201);
  return res.json().data as { id: number; secret: string };
}
const deliveries = async (id: number, principal = adminA) => (await svc.inject(principal, { method: 'GET', url: `/webhooks/${id}/deliveries` })).json();

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const path = req.url ?? '/';
      received.push({ path, headers: req.headers, body, at: Date.now() });
      const statuses = script.get(path) ?? [200];
      const status = statuses.length > 1 ? statuses.shift()! : statuses[0]!;
      if (status >= 300 && status < 400) res.setHeader('location', `http://127.0.0.1:${port}/ok`);
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  port = (receiver.address() as AddressInfo).port;
  await dns.start();
  resolving = await startTestService(service, {
    env: {
      WEBHOOK_DNS_SERVERS: `127.0.0.1:${dns.port}`, WEBHOOK_ALLOWED_HOSTS: 'pinned.test', WEBHOOK_BACKOFF_MS: '100', WEBHOOK_MAX_ATTEMPTS: '3',
      WEBHOOK_SECRET_KEY: randomBytes(32).toString('hex'),
    },
  });
  svc = await startTestService(service, {
    // Loopback is allowed by name for the local receiver only; 127.0.0.1 and every other private address stay refused.
    env: { WEBHOOK_ALLOWED_HOSTS: 'localhost', WEBHOOK_BACKOFF_MS: '100', WEBHOOK_MAX_ATTEMPTS: '3', WEBHOOK_DISABLE_AFTER: '2' },
  });
});
afterAll(async () => {
  await svc?.close();
  await resolving?.close();
  await dns.stop();
  await new Promise((r) => receiver?.close(r));
});

describe('SSRF guard', () => {
  it('classifies private, loopback, link-local, CGNAT, multicast, ULA and IPv4-mapped addresses', () => {
    for (const a of ['10.1.2.3', '127.0.0.1', '169.254.169.254', '172.16.0.1', '192.168.1.1', '100.64.0.1', '0.0.0.0', '224.0.0.1',
      '::1', '::', 'fe80::1', 'fd00::1', 'fc00::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1', 'ff02::1',
      '0:0:0:0:0:ffff:127.0.0.1', '::127.0.0.1', '::7f00:1', '2002:7f00:1::', '2002:a9fe:a9fe::1', 'fec0::1', '64:ff9b:1::a00:1',
      '2001:0:4136:e378:8000:63bf:3fff:fdd2', '::ffff:0:7f00:1', 'fe80::1%eth0', '192.88.99.1']) {
      expect(isBlockedAddress(a), a).toBe(true);
    }
    for (const a of ['93.184.216.34', '8.8.8.8', '2606:4700::1111', '::ffff:8.8.8.8', '2002:808:808::1', '2a00:1450:4001::200e']) expect(isBlockedAddress(a), a).toBe(false);
  });

  it('refuses a host name that resolves to loopback unless allow-listed, also at connect time', async () => {
    const strict = { allowPrivate: false, allowedHosts: [] };
    await expect(resolveTarget('localhost', strict)).rejects.toThrow(/private or reserved/);
    await expect(resolveTarget('localhost', { allowPrivate: false, allowedHosts: ['localhost'] })).resolves.toBeTruthy();
    await expect(resolveTarget('localhost', { allowPrivate: true, allowedHosts: [] })).resolves.toBeTruthy();
    const before = received.length;
    const r = await deliver(`http://localhost:${port}/strict`, '{}', {}, strict, 2_000);
    expect(r).toMatchObject({ ok: false, permanent: true, status: null });
    expect(r.error).toMatch(/private or reserved/);
    expect(received.length).toBe(before);
  });

  it('refuses private targets at registration (422) and bad schemes', async () => {
    for (const target of ['http://127.0.0.1/hook', `http://127.0.0.1:${port}/x`, 'http://10.0.0.5/hook', 'http://169.254.169.254/latest/meta-data',
      'http://[::1]/hook', 'http://[::ffff:127.0.0.1]/hook', 'http://[::127.0.0.1]/', 'http://[2002:7f00:1::]/', 'http://0x7f000001/', 'http://2130706433/', 'http://127.1/', 'http://100.64.1.1/', 'http://192.168.0.10/', 'http://0.0.0.0/', 'http://[fd12::1]/',
      'ftp://example.com/x', 'http://user:pw@localhost/x', 'not a url']) {
      const res = await svc.inject(adminA, { method: 'POST', url: '/webhooks', payload: { url: target, events: ['*'] } });
      expect(res.statusCode, target).toBe(422);
      expect(res.json().error.code).toBe('UNPROCESSABLE');
    }
    expect(await count(svc.ctx.pool, 'SELECT count(*) AS n FROM webhooks')).toBe(0);
  });

  it('refuses a private target at delivery time too (row stored under another policy / DNS change)', async () => {
    const { rows } = await svc.ctx.pool.query(
      "INSERT INTO webhooks (org_id, url, events, secret) VALUES ($1, $2, '{tasks.task.created}', 'whsec_x') RETURNING id", [orgB, `http://127.0.0.1:${port}/private`]);
    const e = taskCreated(500, orgB);
    await publish(svc.ctx, e);
    const d = await waitFor(async () => {
      const list = (await svc.inject(adminB, { method: 'GET', url: `/webhooks/${rows[0].id}/deliveries` })).json().data;
      return list[0]?.status === 'failed' ? list[0] : null;
    }, { message: 'delivery refused' });
    expect(d.attempts).toBe(1); // refused targets are not retried
    expect(d.error).toMatch(/private or reserved/);
    expect(received.filter((r) => r.path === '/private')).toHaveLength(0);
  });
});

describe('SSRF guard with DNS answers that change (rebinding)', () => {
  const orgR = randomUUID();
  const adminR = userPrincipal({ orgId: orgR, orgRole: 'admin' });
  const registerOn = (target: string) => resolving.inject(adminR, { method: 'POST', url: '/webhooks', payload: { url: target, events: ['tasks.task.created'] } });
  const deliveriesOn = async (id: number) => (await resolving.inject(adminR, { method: 'GET', url: `/webhooks/${id}/deliveries` })).json().data;

  it('refuses a name with any private address among its answers at registration', async () => {
    dns.records.set('mixed.test', ['93.184.216.34', '10.0.0.7']);
    dns.records.set('v6-loopback.test', ['93.184.216.34', '::1']);
    for (const host of ['mixed.test', 'v6-loopback.test', 'unknown.test']) {
      const res = await registerOn(`http://${host}:${port}/x`);
      expect(res.statusCode, host).toBe(422);
    }
  });

  it('accepts a public answer at registration, then refuses the private answer at delivery without connecting', async () => {
    dns.records.set('rebind.test', ['93.184.216.34']);
    const res = await registerOn(`http://rebind.test:${port}/rebind`);
    expect(res.statusCode, res.body).toBe(201);
    dns.records.set('rebind.test', ['127.0.0.1']);
    await publish(resolving.ctx, taskCreated(600, orgR));
    const d = await waitFor(async () => (await deliveriesOn(res.json().data.id)).find((x: { status: string }) => x.status === 'failed'), { message: 'delivery refused' });
    expect(d).toMatchObject({ attempts: 1, response_status: null });
    expect(d.error).toMatch(/private or reserved/);
    expect(received.filter((r) => r.path === '/rebind')).toHaveLength(0);
    expect(dns.queries.filter((q) => q.name === 'rebind.test' && q.type === 1).length).toBeGreaterThanOrEqual(2); // resolved again at delivery
  });

  it('connects to the address it checked (an allowed name the system resolver does not know)', async () => {
    dns.records.set('pinned.test', ['127.0.0.1']);
    const res = await registerOn(`http://pinned.test:${port}/pinned`);
    expect(res.statusCode, res.body).toBe(201);
    await publish(resolving.ctx, taskCreated(601, orgR));
    const hit = await waitFor(() => received.find((r) => r.path === '/pinned'), { message: 'delivered to the resolved address' });
    expect(hit.headers.host).toBe(`pinned.test:${port}`);
    // This instance has WEBHOOK_SECRET_KEY: the stored secret is sealed, the signature still verifies.
    const secret = res.json().data.secret as string;
    const { rows: [stored] } = await resolving.ctx.pool.query('SELECT secret FROM webhooks WHERE id = $1', [res.json().data.id]);
    expect(stored.secret).toMatch(/^enc1:/);
    expect(stored.secret).not.toContain(secret.slice(6));
    const ts = hit.headers['x-aos-timestamp'] as string;
    expect(hit.headers['x-aos-signature']).toBe(`v1=${createHmac('sha256', secret).update(`${ts}.${hit.body}`).digest('hex')}`);
  });
});

describe('webhook delivery', () => {
  it('gives up on a receiver that answers but trickles its body without end (the timeout bounds the whole attempt)', async () => {
    const trickle = http.createServer((_req, res) => {
      res.writeHead(200);
      const drip = setInterval(() => res.write('.'), 50);
      res.on('close', () => clearInterval(drip));
    });
    await new Promise<void>((r) => trickle.listen(0, '127.0.0.1', r));
    try {
      const started = Date.now();
      const r = await deliver(`http://127.0.0.1:${(trickle.address() as AddressInfo).port}/slow`, '{}', {}, { allowPrivate: true, allowedHosts: [] }, 300);
      expect(r).toMatchObject({ ok: false, permanent: false });
      expect(r.error).toMatch(/timed out after 300 ms/);
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      trickle.closeAllConnections();
      await new Promise((r) => trickle.close(r));
    }
  });

  it('delivers a matching event with a verifiable HMAC-SHA256 signature over timestamp.body', async () => {
    const hook = await register('/signed');
    expect(hook.secret).toMatch(/^whsec_/);
    const e = taskCreated(1);
    await publish(svc.ctx, e);
    const r = await waitFor(() => received.find((x) => x.path === '/signed'), { message: 'delivery received' });
    const ts = r.headers['x-aos-timestamp'] as string;
    const sig = r.headers['x-aos-signature'] as string;
    const expected = `v1=${createHmac('sha256', hook.secret).update(`${ts}.${r.body}`).digest('hex')}`;
    expect(timingSafeEqual(Buffer.from(sig), Buffer.from(expected))).toBe(true);
    expect(Math.abs(Date.now() / 1000 - Number(ts))).toBeLessThan(60);
    expect(r.headers['x-aos-event']).toBe('tasks.task.created');
    expect(r.headers['x-aos-event-id']).toBe(e.id);
    expect(JSON.parse(r.body)).toMatchObject({ id: e.id, type: 'tasks.task.created', org_id: orgA, data: { taskId: 1 } });
    // A tampered body does not verify.
    const forged = `v1=${createHmac('sha256', hook.secret).update(`${ts}.${r.body.replace('"t1"', '"t2"')}`).digest('hex')}`;
    expect(forged).not.toBe(sig);
    await waitFor(async () => (await deliveries(hook.id)).data[0]?.status === 'succeeded');
    expect((await deliveries(hook.id)).data[0]).toMatchObject({ attempts: 1, response_status: 200, event_id: e.id });
  });

  it('retries a receiver answering 500 then 200 and gets the event through', async () => {
    script.set('/flaky', [500, 200]);
    const hook = await register('/flaky');
    const e = taskCreated(2);
    await publish(svc.ctx, e);
    await waitFor(async () => (await deliveries(hook.id)).data[0]?.status === 'succeeded', { message: 'retry succeeded' });
    const hits = received.filter((x) => x.path === '/flaky');
    expect(hits).toHaveLength(2);
    expect(hits.every((h) => JSON.parse(h.body).id === e.id)).toBe(true);
    expect((await deliveries(hook.id)).data[0]).toMatchObject({ attempts: 2, response_status: 200 });
  });

  it('delivers an event once even when the bus redelivers it', async () => {
    const hook = await register('/once');
    const e = taskCreated(3);
    await publish(svc.ctx, e);
    await publish(svc.ctx, e, `again-${e.id}`);
    await waitFor(() => received.some((x) => x.path === '/once'));
    await sleep(600);
    expect(received.filter((x) => x.path === '/once')).toHaveLength(1);
    expect((await deliveries(hook.id)).meta.total).toBe(1);
  });

  it('treats a redirect as a failure and never follows it; retries back off exponentially', async () => {
    script.set('/redirect', [302]);
    const hook = await register('/redirect');
    await publish(svc.ctx, taskCreated(4));
    await waitFor(async () => (await deliveries(hook.id)).data[0]?.status === 'failed', { message: 'redirect failed' });
    expect((await deliveries(hook.id)).data[0]).toMatchObject({ attempts: 3, response_status: 302 });
    expect(received.filter((x) => x.path === '/ok')).toHaveLength(0);
    // WEBHOOK_BACKOFF_MS = 100: the 2nd attempt comes ≥ 100 ms after the 1st, the 3rd ≥ 200 ms after the 2nd.
    const at = received.filter((x) => x.path === '/redirect').map((x) => x.at);
    expect(at).toHaveLength(3);
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(100);
    expect(at[2]! - at[1]!).toBeGreaterThanOrEqual(200);
  });

  it('skips events the webhook did not subscribe to and events of other orgs; `tasks.*` matches the family', async () => {
    const other = await register('/only-completed', ['tasks.task.completed']);
    const family = await register('/family', ['tasks.*']);
    const mine = taskCreated(5);
    const theirs = taskCreated(6, orgB);
    await publish(svc.ctx, mine);
    await publish(svc.ctx, theirs);
    await waitFor(async () => (await handledBy(svc.ctx.pool, mine.id, ['webhook-fanout'])) && handledBy(svc.ctx.pool, theirs.id, ['webhook-fanout']));
    await waitFor(() => received.filter((x) => x.path === '/family').length >= 1);
    expect(received.filter((x) => x.path === '/family').map((x) => JSON.parse(x.body).data.taskId)).toEqual([5]);
    expect((await deliveries(other.id)).meta.total).toBe(0);
    expect((await deliveries(family.id)).meta.total).toBe(1);
  });

  it('auto-disables a webhook after N consecutive failed deliveries and publishes notifications.webhook.disabled', async () => {
    script.set('/down?token=receiver-secret', [500]);
    const hook = await register('/down?token=receiver-secret');
    await publish(svc.ctx, taskCreated(7));
    await publish(svc.ctx, taskCreated(8));
    const w = await waitFor(async () => {
      const res = (await svc.inject(adminA, { method: 'GET', url: `/webhooks/${hook.id}` })).json().data;
      return res.active === false ? res : null;
    }, { timeoutMs: 15_000, message: 'webhook disabled' });
    expect(w).toMatchObject({ consecutive_failures: 2, disabled_reason: '2 consecutive failed deliveries' });
    const { rows: disabled } = await svc.ctx.pool.query("SELECT envelope->'data' AS data FROM aos_outbox WHERE type = 'notifications.webhook.disabled' AND (envelope->'data'->>'webhookId')::int = $1", [hook.id]);
    expect(disabled.map((r) => r.data)).toEqual([{ webhookId: hook.id, url: `http://localhost:${port}`, consecutiveFailures: 2 }]);
    const note = (await svc.inject(adminA, { method: 'GET', url: '/notifications?kind=webhook_disabled' })).json().data;
    expect(note.map((n: { link: string }) => n.link)).toContain(`/webhooks/${hook.id}`);
    // Disabled: new events are not delivered, nor redelivered; re-enabling resets the streak.
    const later = taskCreated(9);
    await publish(svc.ctx, later);
    await waitFor(() => handledBy(svc.ctx.pool, later.id, ['webhook-fanout']), { message: 'fan-out saw the event' });
    const log = await deliveries(hook.id);
    expect(log.meta.total).toBe(2);
    const refused = await svc.inject(adminA, { method: 'POST', url: `/webhooks/${hook.id}/deliveries/${log.data[0].id}/redeliver` });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.code).toBe('CONFLICT');
    const res = await svc.inject(adminA, { method: 'PATCH', url: `/webhooks/${hook.id}`, payload: { active: true } });
    expect(res.json().data).toMatchObject({ active: true, consecutive_failures: 0, disabled_at: null });
    expect((await svc.inject(adminA, { method: 'POST', url: `/webhooks/${hook.id}/deliveries/${log.data[0].id}/redeliver` })).statusCode).toBe(202);
  });

  it('fails a delivery at once, saying why, when the stored secret is sealed but this instance has no WEBHOOK_SECRET_KEY', async () => {
    const orgS = randomUUID();
    const { rows } = await svc.ctx.pool.query(
      "INSERT INTO webhooks (org_id, url, events, secret) VALUES ($1, $2, '{tasks.task.created}', 'enc1:AAAA.BBBB.CCCC') RETURNING id", [orgS, url('/sealed')]);
    await publish(svc.ctx, taskCreated(800, orgS));
    const d = await waitFor(async () => {
      const r = await svc.ctx.pool.query('SELECT status, error, attempts FROM webhook_deliveries WHERE webhook_id = $1', [rows[0].id]);
      return r.rows[0]?.status === 'failed' ? r.rows[0] : null;
    }, { message: 'delivery failed' });
    expect(d.error).toMatch(/WEBHOOK_SECRET_KEY/);
    expect(received.filter((r) => r.path === '/sealed')).toHaveLength(0);
  });

  it('redelivers a past delivery on request (same event id, fresh signature)', async () => {
    const hook = await register('/again');
    const e = taskCreated(10);
    await publish(svc.ctx, e);
    await waitFor(async () => (await deliveries(hook.id)).data[0]?.status === 'succeeded');
    const deliveryId = (await deliveries(hook.id)).data[0].id;
    const res = await svc.inject(adminA, { method: 'POST', url: `/webhooks/${hook.id}/deliveries/${deliveryId}/redeliver` });
    expect(res.statusCode).toBe(202);
    await waitFor(() => received.filter((x) => x.path === '/again').length === 2, { message: 'redelivered' });
    expect(received.filter((x) => x.path === '/again').map((x) => JSON.parse(x.body).id)).toEqual([e.id, e.id]);
    await waitFor(async () => (await deliveries(hook.id)).data[0]?.status === 'succeeded');
    expect((await deliveries(hook.id)).data[0].redeliveries).toBe(1);
    expect((await svc.inject(adminA, { method: 'POST', url: `/webhooks/${hook.id}/deliveries/999999/redeliver` })).statusCode).toBe(404);
    expect((await svc.inject(adminB, { method: 'POST', url: `/webhooks/${hook.id}/deliveries/${deliveryId}/redeliver` })).statusCode).toBe(404);
  });
});

describe('lost jobs', () => {
  // Each test in an org of its own: its events reach only its webhook.
  let orgC = randomUUID();
  let adminC = userPrincipal({ orgId: orgC, orgRole: 'admin' });
  beforeEach(() => {
    orgC = randomUUID();
    adminC = userPrincipal({ orgId: orgC, orgRole: 'admin' });
  });
  const fanOutWithoutEnqueue = (e: ReturnType<typeof taskCreated>) => svc.ctx.db.transaction((tx) =>
    webhookFanout(svc.ctx).handle(e, tx, { log: svc.ctx.log, deliveryCount: 1, afterCommit: () => {} }));

  it('re-queues a delivery whose job was never added (crash between commit and enqueue), once', async () => {
    const hook = await register('/lost', undefined, adminC);
    const e = taskCreated(700, orgC);
    // The fan-out exactly as the consumer runs it, but the process "dies" before its after-commit enqueue.
    await fanOutWithoutEnqueue(e);
    expect((await deliveries(hook.id, adminC)).data[0]).toMatchObject({ status: 'pending', attempts: 0 });
    expect(await recoverLostJobs(svc.ctx, 60_000)).toMatchObject({ deliveries: 0 }); // too recent to be called lost
    expect(await recoverLostJobs(svc.ctx, 0)).toMatchObject({ deliveries: 1 });
    await waitFor(async () => (await deliveries(hook.id, adminC)).data[0]?.status === 'succeeded', { message: 'recovered delivery succeeded' });
    expect(received.filter((r) => r.path === '/lost').map((r) => JSON.parse(r.body).id)).toEqual([e.id]);
    expect(await recoverLostJobs(svc.ctx, 0)).toMatchObject({ deliveries: 0 });
  });

  it('leaves a delivery alone while its job is still to run (e.g. waiting out a backoff)', async () => {
    const hook = await register('/later', undefined, adminC);
    const e = taskCreated(701, orgC);
    await fanOutWithoutEnqueue(e);
    const job = await svc.ctx.queues.add(Queues.webhookDelivery, e.type, { webhookId: hook.id, eventId: e.id }, { jobId: deliveryJobId(hook.id, e.id, 0), delay: 60_000 });
    expect(await recoverLostJobs(svc.ctx, 0)).toMatchObject({ deliveries: 0 });
    const pending = (await deliveries(hook.id, adminC)).data[0];
    const busy = await svc.inject(adminC, { method: 'POST', url: `/webhooks/${hook.id}/deliveries/${pending.id}/redeliver` });
    expect(busy.statusCode).toBe(409); // still in progress
    expect(await job.getState()).toBe('delayed');
    await job.remove();
    await svc.inject(adminC, { method: 'DELETE', url: `/webhooks/${hook.id}` });
  });

  it('closes what a disabled webhook still owed instead of leaving it pending', async () => {
    const hook = await register('/closed', undefined, adminC);
    const e = taskCreated(702, orgC);
    await fanOutWithoutEnqueue(e);
    await svc.inject(adminC, { method: 'PATCH', url: `/webhooks/${hook.id}`, payload: { active: false } });
    expect(await recoverLostJobs(svc.ctx, 0)).toMatchObject({ deliveries: 0 });
    expect((await deliveries(hook.id, adminC)).data[0]).toMatchObject({ status: 'failed', error: 'webhook disabled' });
    expect(await svc.ctx.queues.queue(Queues.webhookDelivery).getJob(deliveryJobId(hook.id, e.id, 0))).toBeUndefined();
  });
});

describe('webhook management', () => {
  it('shows the secret only at creation, lists, updates, rotates and deletes', async () => {
    const hook = await register('/crud', ['*']);
    const got = await svc.inject(adminA, { method: 'GET', url: `/webhooks/${hook.id}` });
    expect(got.statusCode).toBe(200);
    expect(got.json().data.secret).toBeUndefined();
    const listed = (await svc.inject(adminA, { method: 'GET', url: '/webhooks?limit=2' })).json();
    expect(listed.meta).toMatchObject({ limit: 2, offset: 0 });
    expect(listed.data).toHaveLength(2);
    expect(listed.data.every((w: Record<string, unknown>) => w.secret === undefined)).toBe(true);
    const upd = await svc.inject(adminA, { method: 'PATCH', url: `/webhooks/${hook.id}`, payload: { events: ['billing.*'], description: 'billing feed' } });
    expect(upd.json().data).toMatchObject({ events: ['billing.*'], description: 'billing feed' });
    expect((await svc.inject(adminA, { method: 'PATCH', url: `/webhooks/${hook.id}`, payload: { url: 'http://10.0.0.1/' } })).statusCode).toBe(422);
    const rotated = await svc.inject(adminA, { method: 'POST', url: `/webhooks/${hook.id}/rotate-secret` });
    expect(rotated.json().data.secret).toMatch(/^whsec_/);
    expect(rotated.json().data.secret).not.toBe(hook.secret);
    expect((await svc.inject(adminA, { method: 'DELETE', url: `/webhooks/${hook.id}` })).statusCode).toBe(200);
    expect((await svc.inject(adminA, { method: 'GET', url: `/webhooks/${hook.id}` })).statusCode).toBe(404);
  });

  it('a retried registration with the same Idempotency-Key creates one webhook and does not show the secret again', async () => {
    const headers = { 'idempotency-key': `w-${randomUUID()}` };
    const payload = { url: url('/idem'), events: ['tasks.task.created'] };
    const first = await svc.inject(adminA, { method: 'POST', url: '/webhooks', payload, headers });
    const again = await svc.inject(adminA, { method: 'POST', url: '/webhooks', payload, headers });
    expect([first.statusCode, again.statusCode]).toEqual([201, 200]);
    expect(first.json().data.secret).toMatch(/^whsec_/);
    expect(again.json().data).toMatchObject({ id: first.json().data.id });
    expect(again.json().data.secret).toBeUndefined();
    expect(await count(svc.ctx.pool, "SELECT count(*) AS n FROM webhooks WHERE url = $1", [url('/idem')])).toBe(1);
  });

  it('validates input: unknown event types, empty events, unknown fields stripped', async () => {
    const bad = await svc.inject(adminA, { method: 'POST', url: '/webhooks', payload: { url: url('/v'), events: ['tasks.task.exploded'] } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.code).toBe('VALIDATION_ERROR');
    expect((await svc.inject(adminA, { method: 'POST', url: '/webhooks', payload: { url: url('/v'), events: [] } })).statusCode).toBe(400);
    expect((await svc.inject(adminA, { method: 'POST', url: '/webhooks', payload: { events: ['*'] } })).statusCode).toBe(400);
    expect((await svc.inject(adminA, { method: 'GET', url: '/webhooks/abc' })).statusCode).toBe(400);
  });

  it('enforces auth: admins only, scopes for API keys, other org → 404, no auth → 401', async () => {
    const hook = await register('/authz');
    expect((await svc.inject(null, { method: 'GET', url: '/webhooks' })).statusCode).toBe(401);
    const member = userPrincipal({ orgId: orgA, orgRole: 'member' });
    expect((await svc.inject(member, { method: 'GET', url: '/webhooks' })).statusCode).toBe(403);
    expect((await svc.inject(member, { method: 'POST', url: '/webhooks', payload: { url: url('/m'), events: ['*'] } })).statusCode).toBe(403);
    const readKey = apiKeyPrincipal(['notifications:read'], { orgId: orgA, orgRole: 'admin' });
    expect((await svc.inject(readKey, { method: 'GET', url: '/webhooks' })).statusCode).toBe(200);
    const denied = await svc.inject(readKey, { method: 'POST', url: '/webhooks', payload: { url: url('/k'), events: ['*'] } });
    expect(denied.statusCode).toBe(403);
    expect(denied.json().error.code).toBe('SCOPE_REQUIRED');
    for (const [method, path] of [['GET', `/webhooks/${hook.id}`], ['PATCH', `/webhooks/${hook.id}`], ['DELETE', `/webhooks/${hook.id}`], ['GET', `/webhooks/${hook.id}/deliveries`]] as const) {
      const res = await svc.inject(adminB, { method, url: path, ...(method === 'PATCH' ? { payload: { description: 'x' } } : {}) });
      expect(res.statusCode, `${method} ${path}`).toBe(404);
    }
    expect((await svc.inject(adminB, { method: 'GET', url: '/webhooks' })).json().data.every((w: { id: number }) => w.id !== hook.id)).toBe(true);
  });
});
