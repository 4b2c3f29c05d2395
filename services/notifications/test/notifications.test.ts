import { apiKeyPrincipal, sleep, userPrincipal, waitFor } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { count, envelope, publish, startNotifications, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startNotifications(); });
afterAll(() => svc?.close());

const alice = userPrincipal();
const orgId = alice.orgId!;
const get = (url: string, p = alice) => svc.inject(p, { method: 'GET', url });

async function registerUser(userId: string, username: string, email: string, platformRoles: string[] = []) {
  await publish(svc, envelope('identity.user.registered', { userId, email, username, tenantId: randomUUID(), personalOrgId: orgId, platformRoles }, orgId));
  await waitFor(() => count(svc, 'SELECT count(*) AS n FROM users WHERE user_id = $1', [userId]));
}

const task = (over: Record<string, unknown> = {}) => ({
  taskId: 1, title: 'Ship it', status: 'todo', priority: 'P1', type: 'feature', assignee: 'alice', productId: null, productSlug: null, parentTaskId: null, createdBy: alice.userId, ...over,
});

describe('notifications from events: exactly one per event, even when redelivered', () => {
  beforeAll(() => registerUser(alice.userId!, 'alice', 'alice@example.com', ['admin']));

  const cases: Array<[string, () => ReturnType<typeof envelope>]> = [
    ['task assigned', () => envelope('tasks.task.created', task({ taskId: 11 }), orgId)],
    ['task completed', () => envelope('tasks.task.completed', { ...task({ taskId: 12, status: 'done' }), completedAt: new Date().toISOString(), resolution: null }, orgId)],
    ['invite received', () => envelope('identity.invite.created', { orgId: randomUUID(), tenantId: randomUUID(), inviteId: randomUUID(), email: 'alice@example.com', role: 'member', teamId: null, invitedBy: null, inviteeUserId: null, acceptUrl: 'https://aos.local/invites/abc', expiresAt: new Date(Date.now() + 86_400_000).toISOString() }, orgId)],
    ['payment failed', () => envelope('billing.payment.failed', { stripeObjectId: 'in_1', amountCents: 4900, currency: 'usd', reason: 'card declined', userId: alice.userId, email: null }, orgId)],
    ['low balance', () => envelope('billing.balance.low', { ledger: 'tokens', balance: 10, threshold: 100, userId: null }, orgId)],
    ['backup failed', () => envelope('backups.backup.failed', { backupId: null, database: 'aos_tasks', error: 'pg_dump: connection refused' }, null)],
    ['agent error', () => envelope('agents.agent.errored', { agentId: 1, name: 'felix', status: 'error', error: 'provider timeout', ownerUserId: alice.userId }, orgId)],
  ];

  for (const [name, make] of cases) {
    it(name, async () => {
      const env = make();
      await publish(svc, env);
      await publish(svc, env, `${env.id}-redelivered`);
      await waitFor(() => count(svc, 'SELECT count(*) AS n FROM notifications WHERE event_id = $1', [env.id]), { message: name });
      await sleep(300);
      expect(await count(svc, 'SELECT count(*) AS n FROM notifications WHERE event_id = $1', [env.id])).toBe(1);
    });
  }

  it('shows them to the user, counts unread, marks read', async () => {
    const list = (await get('/notifications?limit=200')).json();
    expect(list.meta.total).toBeGreaterThanOrEqual(7);
    expect(list.data.map((n: { title: string }) => n.title)).toEqual(expect.arrayContaining(['Task assigned: Ship it', 'Payment failed', 'Low tokens balance', 'Backup of aos_tasks failed']));
    const unread = (await get('/notifications/unread-count')).json().data.count;
    expect(unread).toBe(list.meta.total);
    const first = list.data[0];
    const marked = await svc.inject(alice, { method: 'PATCH', url: `/notifications/${first.id}/read` });
    expect(marked.json().data.read).toBe(true);
    expect((await get('/notifications/unread-count')).json().data.count).toBe(unread - 1);
    expect((await get('/notifications?read=true')).json().data.map((n: { id: number }) => n.id)).toEqual([first.id]);
    expect((await get('/notifications?type=error')).json().data.every((n: { type: string }) => n.type === 'error')).toBe(true);
    await svc.inject(alice, { method: 'PATCH', url: '/notifications/read-all' });
    expect((await get('/notifications/unread-count')).json().data.count).toBe(0);
  });
});

describe('notification routes', () => {
  it('creates, deletes, isolates users and orgs, validates', async () => {
    const bob = userPrincipal({ orgId });
    const res = await svc.inject(bob, { method: 'POST', url: '/notifications', payload: { title: 'Hello', message: 'World', type: 'success' } });
    expect(res.statusCode).toBe(201);
    const id = res.json().data.id;
    expect((await get(`/notifications?limit=200`)).json().data.some((n: { id: number }) => n.id === id)).toBe(false); // bob's own
    const stranger = userPrincipal();
    expect((await svc.inject(stranger, { method: 'PATCH', url: `/notifications/${id}/read` })).statusCode).toBe(404);
    expect((await svc.inject(stranger, { method: 'DELETE', url: `/notifications/${id}` })).statusCode).toBe(404);
    expect((await svc.inject(bob, { method: 'DELETE', url: `/notifications/${id}` })).statusCode).toBe(200);
    expect((await svc.inject(bob, { method: 'POST', url: '/notifications', payload: { title: '', message: 'x' } })).statusCode).toBe(400);
    expect((await svc.inject(bob, { method: 'POST', url: '/notifications', payload: { title: 'x', message: 'x', type: 'fatal' } })).statusCode).toBe(400);
    expect((await svc.inject(apiKeyPrincipal(['notifications:read'], { orgId }), { method: 'POST', url: '/notifications', payload: { title: 'x', message: 'y' } })).statusCode).toBe(403);
  });

  it('streams new notifications to the caller over SSE', async () => {
    const carol = userPrincipal();
    await svc.ctx.internalKey; // ready
    const address = await svc.app.listen({ host: '127.0.0.1', port: 0 });
    const { tokenFor } = await import('@aos/testkit');
    const controller = new AbortController();
    const res = await fetch(`${address}/notifications/stream`, { headers: { 'x-aos-internal-token': await tokenFor(carol) }, signal: controller.signal });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    await reader.read().then((c) => { text += decoder.decode(c.value); }); // ": connected"
    await svc.inject(carol, { method: 'POST', url: '/notifications', payload: { title: 'Live one', message: 'pushed' } });
    await svc.inject(userPrincipal(), { method: 'POST', url: '/notifications', payload: { title: 'Not for carol', message: 'x' } });
    const deadline = Date.now() + 5_000;
    while (!text.includes('Live one') && Date.now() < deadline) {
      const chunk = await reader.read();
      text += decoder.decode(chunk.value);
    }
    controller.abort();
    const events = text.split('\n\n').filter((e) => e.startsWith('id:'));
    expect(events).toHaveLength(1);
    const data = JSON.parse(events[0]!.split('\n').find((l) => l.startsWith('data: '))!.slice(6));
    expect(data).toMatchObject({ title: 'Live one', read: false });
  });
});
