import { apiKeyPrincipal, startTestService, tokenFor, userPrincipal, waitFor } from '@aos/testkit';
import { INTERNAL_TOKEN_HEADER } from '@aos/contracts';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service } from '../src/service.js';
import { count, envelope, handledBy, publish } from './helpers.js';

let svc: Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
const orgA = randomUUID();
const orgB = randomUUID();
const alice = userPrincipal({ orgId: orgA, orgRole: 'member', userId: randomUUID() });
const bob = userPrincipal({ orgId: orgA, orgRole: 'member', userId: randomUUID() });
const adminA = userPrincipal({ orgId: orgA, orgRole: 'admin', userId: randomUUID() });
const eve = userPrincipal({ orgId: orgB, orgRole: 'owner', userId: randomUUID() });

const create = (p: typeof alice, payload: Record<string, unknown>) => svc.inject(p, { method: 'POST', url: '/notifications', payload });
const get = (p: typeof alice, url: string) => svc.inject(p, { method: 'GET', url });

beforeAll(async () => { svc = await startTestService(service, { env: { SSE_HEARTBEAT_MS: '200', SSE_MAX_STREAMS_PER_CALLER: '2' } }); });
afterAll(async () => { await svc?.close(); });

describe('notifications API', () => {
  it('creates a notification for the caller (201) and lists it', async () => {
    const res = await create(alice, { title: 'Hello', message: 'World', type: 'success', source: 'test', link: '/tasks/1' });
    expect(res.statusCode).toBe(201);
    expect(res.json().data).toMatchObject({ title: 'Hello', message: 'World', type: 'success', source: 'test', link: '/tasks/1', read: false, user_id: alice.userId, kind: 'manual' });
    const list = (await get(alice, '/notifications')).json();
    expect(list.meta).toEqual({ total: 1, limit: 50, offset: 0 });
    expect(list.data[0].title).toBe('Hello');
  });

  it('keeps notifications per user and org: bob and another org see none of alice\'s', async () => {
    expect((await get(bob, '/notifications')).json().meta.total).toBe(0);
    expect((await get(eve, '/notifications')).json().meta.total).toBe(0);
    const id = (await get(alice, '/notifications')).json().data[0].id;
    for (const p of [bob, eve]) {
      expect((await svc.inject(p, { method: 'PATCH', url: `/notifications/${id}/read` })).statusCode).toBe(404);
      expect((await svc.inject(p, { method: 'DELETE', url: `/notifications/${id}` })).statusCode).toBe(404);
    }
  });

  it('filters by read and type, paginates with a stable order, counts unread', async () => {
    for (let i = 0; i < 5; i++) await create(bob, { title: `n${i}`, message: 'm', type: i % 2 ? 'error' : 'info' });
    const page1 = (await get(bob, '/notifications?limit=2')).json();
    const page2 = (await get(bob, '/notifications?limit=3&offset=2')).json();
    expect(page1.meta).toEqual({ total: 5, limit: 2, offset: 0 });
    expect([...page1.data, ...page2.data].map((n: { title: string }) => n.title)).toEqual(['n4', 'n3', 'n2', 'n1', 'n0']);
    expect((await get(bob, '/notifications?type=error')).json().meta.total).toBe(2);
    expect((await get(bob, '/notifications?type=error,info')).json().meta.total).toBe(5);
    expect((await get(bob, '/notifications?type=bogus')).statusCode).toBe(400);
    expect((await get(bob, '/notifications/unread-count')).json().data).toEqual({ count: 5 });

    const id = page1.data[0].id;
    const read = await svc.inject(bob, { method: 'PATCH', url: `/notifications/${id}/read` });
    expect(read.statusCode).toBe(200);
    expect(read.json().data).toMatchObject({ id, read: true });
    expect(read.json().data.read_at).toBeTruthy();
    expect((await get(bob, '/notifications?read=true')).json().data.map((n: { id: number }) => n.id)).toEqual([id]);
    expect((await get(bob, '/notifications?read=false')).json().meta.total).toBe(4);
    expect((await get(bob, '/notifications/unread-count')).json().data).toEqual({ count: 4 });

    const all = await svc.inject(bob, { method: 'PATCH', url: '/notifications/read-all' });
    expect(all.json().data).toEqual({ success: true, updated: 4 });
    expect((await get(bob, '/notifications/unread-count')).json().data).toEqual({ count: 0 });
    // Alice's unread notification is untouched by bob's read-all.
    expect((await get(alice, '/notifications/unread-count')).json().data).toEqual({ count: 1 });
  });

  it('deletes a notification', async () => {
    const id = (await create(bob, { title: 'tmp', message: 'm' })).json().data.id;
    expect((await svc.inject(bob, { method: 'DELETE', url: `/notifications/${id}` })).json().data).toEqual({ success: true, id });
    expect((await svc.inject(bob, { method: 'DELETE', url: `/notifications/${id}` })).statusCode).toBe(404);
  });

  it('lets admins notify another member or the whole org; members cannot; a non-member is 404', async () => {
    // Identity's events make alice a member of A and eve one of B (the projection recipients are checked against).
    const joined = [envelope('identity.member.added', { orgId: orgA, tenantId: randomUUID(), userId: alice.userId!, role: 'member' }, { orgId: orgA }),
      envelope('identity.member.added', { orgId: orgB, tenantId: randomUUID(), userId: eve.userId!, role: 'owner' }, { orgId: orgB })];
    for (const e of joined) await publish(svc.ctx, e);
    await waitFor(async () => (await Promise.all(joined.map((e) => handledBy(svc.ctx.pool, e.id, ['users-projection'])))).every(Boolean), { message: 'memberships projected' });
    for (const userId of [eve.userId, randomUUID()]) {
      const res = await create(adminA, { title: 'to a stranger', message: 'y', user_id: userId });
      expect(res.statusCode).toBe(404);
      expect(res.json().error).toMatchObject({ code: 'NOT_FOUND', details: [{ field: 'user_id' }] });
    }
    expect(await count(svc.ctx.pool, "SELECT count(*)::int AS n FROM notifications WHERE title = 'to a stranger'")).toBe(0);
    expect((await create(bob, { title: 'x', message: 'y', user_id: alice.userId })).statusCode).toBe(403);
    expect((await create(bob, { title: 'x', message: 'y', broadcast: true })).statusCode).toBe(403);
    expect((await create(adminA, { title: 'to alice', message: 'y', user_id: alice.userId })).statusCode).toBe(201);
    expect((await create(adminA, { title: 'everyone', message: 'y', broadcast: true })).statusCode).toBe(201);
    const aliceTitles = (await get(alice, '/notifications')).json().data.map((n: { title: string }) => n.title);
    expect(aliceTitles).toEqual(expect.arrayContaining(['to alice', 'everyone']));
    expect((await get(bob, '/notifications')).json().data.map((n: { title: string }) => n.title)).toContain('everyone');
    expect((await get(eve, '/notifications')).json().meta.total).toBe(0);
  });

  it('keeps read and dismiss state of org-wide notifications per member', async () => {
    const id = (await create(adminA, { title: 'org news', message: 'm', broadcast: true })).json().data.id;
    const unreadBob = (await get(bob, '/notifications/unread-count')).json().data.count;
    const unreadAlice = (await get(alice, '/notifications/unread-count')).json().data.count;
    const read = await svc.inject(bob, { method: 'PATCH', url: `/notifications/${id}/read` });
    expect(read.json().data).toMatchObject({ id, read: true, user_id: null });
    expect((await get(bob, '/notifications/unread-count')).json().data.count).toBe(unreadBob - 1);
    expect((await get(alice, '/notifications/unread-count')).json().data.count).toBe(unreadAlice);
    expect((await get(bob, '/notifications?read=true')).json().data.map((n: { id: number }) => n.id)).toContain(id);
    expect((await get(alice, '/notifications?read=false')).json().data.map((n: { id: number }) => n.id)).toContain(id);
    // Deleting an org-wide notification hides it for the caller only.
    expect((await svc.inject(bob, { method: 'DELETE', url: `/notifications/${id}` })).statusCode).toBe(200);
    expect((await get(bob, '/notifications?limit=200')).json().data.map((n: { id: number }) => n.id)).not.toContain(id);
    expect((await get(alice, '/notifications?limit=200')).json().data.map((n: { id: number }) => n.id)).toContain(id);
    expect((await svc.inject(bob, { method: 'PATCH', url: `/notifications/${id}/read` })).statusCode).toBe(404);
    // read-all covers org-wide ones for the caller only.
    const res = await svc.inject(alice, { method: 'PATCH', url: '/notifications/read-all' });
    expect(res.json().data.updated).toBe(unreadAlice);
    expect((await get(alice, '/notifications/unread-count')).json().data.count).toBe(0);
    await create(adminA, { title: 'later news', message: 'm', broadcast: true });
    expect((await get(alice, '/notifications/unread-count')).json().data.count).toBe(1);
  });

  it('a retried create with the same Idempotency-Key returns the first notification (per org)', async () => {
    const headers = { 'idempotency-key': `retry-${randomUUID()}` };
    const first = await svc.inject(alice, { method: 'POST', url: '/notifications', payload: { title: 'once', message: 'm' }, headers });
    const again = await svc.inject(alice, { method: 'POST', url: '/notifications', payload: { title: 'once', message: 'm' }, headers });
    expect(first.statusCode).toBe(201);
    expect(again.statusCode).toBe(200);
    expect(again.json().data.id).toBe(first.json().data.id);
    expect(await count(svc.ctx.pool, "SELECT count(*) AS n FROM notifications WHERE title = 'once'")).toBe(1);
    expect((await svc.inject(eve, { method: 'POST', url: '/notifications', payload: { title: 'once', message: 'm' }, headers })).statusCode).toBe(201);
    for (const key of ['x'.repeat(201), 'has space', '']) {
      const bad = await svc.inject(alice, { method: 'POST', url: '/notifications', payload: { title: 't', message: 'm' }, headers: { 'idempotency-key': key } });
      expect(bad.statusCode, key.slice(0, 10)).toBe(400);
    }
  });

  it("another member reusing an Idempotency-Key gets their own notification, never the first caller's", async () => {
    const headers = { 'idempotency-key': `shared-${randomUUID()}` };
    const first = await svc.inject(adminA, { method: 'POST', url: '/notifications', payload: { title: 'for alice only', message: 'private', user_id: alice.userId }, headers });
    expect(first.statusCode).toBe(201);
    const other = await svc.inject(bob, { method: 'POST', url: '/notifications', payload: { title: 'bob note', message: 'm' }, headers });
    expect(other.statusCode).toBe(201);
    expect(other.json().data).toMatchObject({ title: 'bob note', user_id: bob.userId });
    const retry = await svc.inject(adminA, { method: 'POST', url: '/notifications', payload: { title: 'for alice only', message: 'private', user_id: alice.userId }, headers });
    expect(retry.statusCode).toBe(200);
    expect(retry.json().data.id).toBe(first.json().data.id);
  });

  it('validates input with a 400 envelope', async () => {
    for (const payload of [{}, { title: '', message: 'm' }, { title: 't' }, { title: 't', message: 'm', type: 'fatal' },
      { title: 't', message: 'm', link: 'javascript:alert(1)' }, { title: 't', message: 'm', link: '//evil.example' }, { title: 'x'.repeat(301), message: 'm' }]) {
      const res = await create(alice, payload);
      expect(res.statusCode, JSON.stringify(payload)).toBe(400);
      expect(res.json().error.code).toBe('VALIDATION_ERROR');
    }
    expect((await svc.inject(alice, { method: 'PATCH', url: '/notifications/abc/read' })).statusCode).toBe(400);
    expect((await get(alice, '/notifications?limit=0')).statusCode).toBe(400);
    expect((await get(alice, '/notifications?limit=1000')).json().meta.limit).toBe(200);
  });

  it('enforces auth: 401 without a principal, 403 without the scope, read scope cannot write', async () => {
    expect((await get(null as never, '/notifications')).statusCode).toBe(401);
    const writeOnly = apiKeyPrincipal(['notifications:write'], { orgId: orgA });
    const res = await get(writeOnly, '/notifications');
    expect(res.statusCode).toBe(403);
    expect(res.json().error.code).toBe('SCOPE_REQUIRED');
    const readOnly = apiKeyPrincipal(['notifications:read'], { orgId: orgA });
    expect((await get(readOnly, '/notifications/unread-count')).statusCode).toBe(200);
    expect((await svc.inject(readOnly, { method: 'PATCH', url: '/notifications/read-all' })).statusCode).toBe(403);
    expect((await create(readOnly, { title: 't', message: 'm' })).statusCode).toBe(403);
  });
});

describe('OpenAPI', () => {
  it('documents every route of the service', async () => {
    const res = await svc.inject(null, { method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const paths = Object.keys(res.json().paths);
    for (const p of ['/notifications', '/notifications/unread-count', '/notifications/read-all', '/notifications/{id}/read', '/notifications/{id}',
      '/notifications/stream', '/activity-log', '/activity-log/stats', '/webhooks', '/webhooks/{id}', '/webhooks/{id}/deliveries',
      '/webhooks/{id}/deliveries/{deliveryId}/redeliver', '/webhooks/{id}/rotate-secret']) expect(paths, p).toContain(p);
  });
});

type Streamed = { id: number; title: string };
/** Opens GET /notifications/stream over a real socket; resolves once the status line is in. */
async function openStream(p: typeof alice, headers: Record<string, string> = {}) {
  if (!svc.app.server.listening) await svc.app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = svc.app.server.address() as AddressInfo;
  const chunks: string[] = [];
  const token = await tokenFor(p);
  let req!: http.ClientRequest;
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    req = http.get({ host: '127.0.0.1', port, path: '/notifications/stream', headers: { [INTERNAL_TOKEN_HEADER]: token, ...headers } }, resolve);
    req.on('error', reject);
  });
  res.setEncoding('utf8');
  res.on('data', (c: string) => chunks.push(c));
  res.on('error', () => {});
  if (res.statusCode !== 200) await new Promise((resolve) => res.on('end', resolve)); // an error answer: read it whole
  const text = () => chunks.join('');
  return {
    status: res.statusCode, contentType: String(res.headers['content-type']), text,
    events: (): Streamed[] => text().split('\n\n').filter((b) => b.includes('event: notification'))
      .map((b) => JSON.parse(b.split('\n').find((l) => l.startsWith('data: '))!.slice(6))),
    ids: () => [...text().matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1])),
    close: () => req.destroy(),
  };
}

describe('live stream (SSE)', () => {
  it('streams the caller\'s new notifications (and org-wide ones), not other users\' or orgs\', with heartbeats', async () => {
    const s = await openStream(alice);
    try {
      await waitFor(() => s.text().includes(': connected'), { message: 'stream open' });
      expect(s.status).toBe(200);
      expect(s.contentType).toMatch(/^text\/event-stream/);
      await create(bob, { title: 'for bob', message: 'm' });
      await create(eve, { title: 'other org', message: 'm' });
      await create(alice, { title: 'for alice', message: 'm' });
      await create(adminA, { title: 'for all of A', message: 'm', broadcast: true });
      await waitFor(() => s.text().includes('for all of A'), { message: 'org-wide notification streamed' });
      await waitFor(() => s.text().includes(': heartbeat'), { message: 'heartbeat' });
      expect(s.events().map((e) => e.title)).toEqual(['for alice', 'for all of A']);
      expect(s.text()).not.toContain('for bob');
      expect(s.text()).not.toContain('other org');
    } finally {
      s.close();
    }
  });

  it('replays exactly what a reconnecting client missed after Last-Event-ID (its own and org-wide only), then goes live without repeats', async () => {
    const { rows: [{ max }] } = await svc.ctx.pool.query('SELECT max(id)::int AS max FROM notifications');
    await create(bob, { title: 'missed by bob only', message: 'm' });
    await create(eve, { title: 'other org, missed', message: 'm' });
    await create(alice, { title: 'missed 1', message: 'm' });
    await create(adminA, { title: 'missed 2', message: 'm', broadcast: true });
    await create(alice, { title: 'missed 3', message: 'm' });
    const s = await openStream(alice, { 'last-event-id': String(max) });
    try {
      await waitFor(() => s.events().length >= 3, { message: 'replayed' });
      await create(alice, { title: 'live after replay', message: 'm' });
      await waitFor(() => s.events().some((e) => e.title === 'live after replay'), { message: 'live after replay' });
      const events = s.events();
      expect(events.map((e) => e.title)).toEqual(['missed 1', 'missed 2', 'missed 3', 'live after replay']);
      expect(s.ids()).toEqual(events.map((e) => e.id));
      expect(s.ids()[0]).toBeGreaterThan(max);
    } finally {
      s.close();
    }
  });

  it('limits open streams per caller (429), and frees the slot when one closes', async () => {
    const first = await openStream(bob);
    const second = await openStream(bob);
    try {
      const third = await openStream(bob);
      expect(third.status).toBe(429);
      expect(JSON.parse(third.text()).error.code).toBe('RATE_LIMITED');
      expect((await openStream(alice)).status).toBe(200); // another caller is not affected
      first.close();
      await waitFor(async () => {
        const again = await openStream(bob);
        again.close();
        return again.status === 200;
      }, { message: 'slot freed' });
    } finally {
      first.close();
      second.close();
    }
  });

  it('rejects an unauthenticated stream request', async () => {
    const res = await get(null as never, '/notifications/stream');
    expect(res.statusCode).toBe(401);
    expect(await count(svc.ctx.pool, 'SELECT count(*) AS n FROM notifications')).toBeGreaterThan(0);
  });
});
