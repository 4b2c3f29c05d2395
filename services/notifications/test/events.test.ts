import { startTestService, userPrincipal, waitFor, sleep } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service } from '../src/service.js';
import { count, envelope, handledBy, publish, publishTwice } from './helpers.js';

let svc: Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
const orgA = randomUUID();
const alice = { userId: randomUUID(), username: 'alice', email: 'alice@example.com', personalOrgId: randomUUID() };
const carol = { userId: randomUUID(), username: 'Carol', email: 'carol@example.com', personalOrgId: randomUUID() };
const root = { userId: randomUUID(), username: 'root', email: 'root@example.com', personalOrgId: randomUUID() };

const notificationsFor = (userId: string | null, kind: string) => count(svc.ctx.pool,
  'SELECT count(*) AS n FROM notifications WHERE kind = $1 AND user_id IS NOT DISTINCT FROM $2', [kind, userId]);

beforeAll(async () => {
  svc = await startTestService(service);
  for (const u of [alice, carol, root]) {
    const e = envelope('identity.user.registered', {
      userId: u.userId, email: u.email, username: u.username, tenantId: randomUUID(), personalOrgId: u.personalOrgId,
      platformRoles: u === root ? ['admin'] : [],
    });
    await publish(svc.ctx, e);
  }
  await waitFor(async () => (await count(svc.ctx.pool, 'SELECT count(*) AS n FROM users')) === 3, { message: 'users projected' });
});
afterAll(async () => { await svc?.close(); });

/** Publishes an event twice (different msgIDs) and waits until the notifier has handled it. */
async function deliverTwice(env: ReturnType<typeof envelope>) {
  await publishTwice(svc.ctx, env);
  await waitFor(() => handledBy(svc.ctx.pool, env.id, ['notifier']), { message: `${env.type} handled` });
  await sleep(400);
}

const task = (over: Record<string, unknown> = {}) => ({
  taskId: 7, title: 'Ship it', status: 'todo', priority: 'high', type: 'feature', assignee: null as string | null,
  productId: null, productSlug: null, parentTaskId: null, createdBy: null as string | null, ...over,
});

describe('notifications from events (exactly once per event)', () => {
  it('task created with an assignee notifies the assignee (by username, case-insensitive)', async () => {
    const e = envelope('tasks.task.created', task({ assignee: 'alice' }), { orgId: orgA });
    await deliverTwice(e);
    expect(await notificationsFor(alice.userId, 'task_assigned')).toBe(1);
    const res = await svc.inject(userPrincipal({ orgId: orgA, userId: alice.userId }), { method: 'GET', url: '/notifications' });
    expect(res.json().data[0]).toMatchObject({ kind: 'task_assigned', type: 'info', link: '/tasks/7', event_id: e.id, read: false });
  });

  it('task reassigned notifies the new assignee; an update without an assignee change does not', async () => {
    const changed = envelope('tasks.task.updated', { ...task({ taskId: 8, assignee: 'carol' }), changes: ['assignee'], previousStatus: null, previousAssignee: 'alice' }, { orgId: orgA });
    const unchanged = envelope('tasks.task.updated', { ...task({ taskId: 9, assignee: 'carol' }), changes: ['title'], previousStatus: null, previousAssignee: 'carol' }, { orgId: orgA });
    await deliverTwice(changed);
    await deliverTwice(unchanged);
    const { rows } = await svc.ctx.pool.query("SELECT link FROM notifications WHERE user_id = $1 AND kind = 'task_assigned'", [carol.userId]);
    expect(rows.map((r) => r.link)).toEqual(['/tasks/8']);
  });

  it('task completed notifies its creator', async () => {
    const e = envelope('tasks.task.completed', { ...task({ taskId: 10, createdBy: alice.userId, status: 'done' }), completedAt: new Date().toISOString(), resolution: 'merged' }, { orgId: orgA });
    await deliverTwice(e);
    expect(await notificationsFor(alice.userId, 'task_completed')).toBe(1);
  });

  it('does not notify you of your own assignment or of completing your own task', async () => {
    const self = { type: 'user' as const, id: alice.userId };
    const assigned = envelope('tasks.task.created', task({ taskId: 20, assignee: 'alice' }), { orgId: orgA, actor: self });
    const done = envelope('tasks.task.completed', { ...task({ taskId: 21, createdBy: alice.userId, status: 'done' }), completedAt: new Date().toISOString(), resolution: null }, { orgId: orgA, actor: self });
    await deliverTwice(assigned);
    await deliverTwice(done);
    expect(await count(svc.ctx.pool, "SELECT count(*) AS n FROM notifications WHERE link IN ('/tasks/20', '/tasks/21')")).toBe(0);
  });

  it('invite received notifies the invitee (when they have an account) in their personal org', async () => {
    const e = envelope('identity.invite.created', {
      orgId: orgA, tenantId: randomUUID(), inviteId: randomUUID(), email: 'CAROL@example.com', role: 'member', teamId: null,
      invitedBy: alice.userId, inviteeUserId: null, acceptUrl: 'https://app.example/invites/tok', expiresAt: new Date().toISOString(),
    }, { orgId: orgA });
    await deliverTwice(e);
    const { rows } = await svc.ctx.pool.query("SELECT org_id FROM notifications WHERE user_id = $1 AND kind = 'invite_received'", [carol.userId]);
    expect(rows).toEqual([{ org_id: carol.personalOrgId }]);
  });

  it('payment failed, low balance and agent error notify the user (or the org when no user)', async () => {
    const pay = envelope('billing.payment.failed', { stripeObjectId: 'pi_1', amountCents: 1999, currency: 'usd', reason: 'card_declined', userId: alice.userId, email: null }, { orgId: orgA });
    const low = envelope('billing.balance.low', { ledger: 'tokens', balance: 10, threshold: 100, userId: null }, { orgId: orgA });
    const agent = envelope('agents.agent.errored', { agentId: 3, name: 'scout', status: 'error', error: 'boom', ownerUserId: alice.userId }, { orgId: orgA });
    for (const e of [pay, low, agent]) await deliverTwice(e);
    expect(await notificationsFor(alice.userId, 'payment_failed')).toBe(1);
    expect(await notificationsFor(null, 'balance_low')).toBe(1);
    expect(await notificationsFor(alice.userId, 'agent_error')).toBe(1);
    const { rows } = await svc.ctx.pool.query("SELECT message, type FROM notifications WHERE kind = 'payment_failed'");
    expect(rows[0]).toEqual({ message: 'A payment of $19.99 failed: card_declined', type: 'error' });
  });

  it('a balance gone into debt says what is owed, not a threshold', async () => {
    const debt = envelope('billing.balance.low', { ledger: 'tokens', balance: 0, threshold: 1, userId: carol.userId, owed: 250 }, { orgId: orgA });
    const credits = envelope('billing.balance.low', { ledger: 'credits', balance: 0, threshold: 1, userId: carol.userId, owed: 1234 }, { orgId: orgA });
    for (const e of [debt, credits]) await deliverTwice(e);
    const { rows } = await svc.ctx.pool.query("SELECT title, message, type FROM notifications WHERE kind = 'balance_low' AND user_id = $1 ORDER BY id", [carol.userId]);
    expect(rows).toEqual([
      { title: 'Tokens exhausted', type: 'error', message: 'Your tokens balance is used up and 250 tokens of usage is owed; it is settled from your next purchase or top-up.' },
      { title: 'Credits exhausted', type: 'error', message: 'Your credits balance is used up and $12.34 of usage is owed; it is settled from your next purchase or top-up.' },
    ]);
  });

  it('backup failed notifies each platform admin', async () => {
    const e = envelope('backups.backup.failed', { backupId: null, database: 'aos_tasks', error: 'pg_dump exited 1' });
    await deliverTwice(e);
    const { rows } = await svc.ctx.pool.query("SELECT user_id, org_id FROM notifications WHERE kind = 'backup_failed'");
    expect(rows).toEqual([{ user_id: root.userId, org_id: root.personalOrgId }]);
  });

  it('unknown assignees and events for deleted users are skipped without error', async () => {
    const gone = envelope('identity.user.deleted', { userId: carol.userId, tenantId: null });
    await publish(svc.ctx, gone);
    await waitFor(async () => (await count(svc.ctx.pool, 'SELECT count(*) AS n FROM users WHERE user_id = $1', [carol.userId])) === 0);
    expect(await count(svc.ctx.pool, 'SELECT count(*) AS n FROM notifications WHERE user_id = $1', [carol.userId])).toBe(0);
    const e = envelope('tasks.task.created', task({ taskId: 11, assignee: 'carol' }), { orgId: orgA });
    const e2 = envelope('tasks.task.created', task({ taskId: 12, assignee: 'nobody' }), { orgId: orgA });
    await deliverTwice(e);
    await deliverTwice(e2);
    expect(await count(svc.ctx.pool, "SELECT count(*) AS n FROM notifications WHERE link IN ('/tasks/11', '/tasks/12')")).toBe(0);
  });

  it('an event carrying NUL characters (Postgres refuses them) still gives its notification and activity row', async () => {
    const e = envelope('agents.agent.errored', { agentId: 4, name: 'nul\u0000bot', status: 'error', error: 'bad\u0000byte', ownerUserId: alice.userId },
      { orgId: orgA, actor: { type: 'agent', id: 'nul\u0000bot' } });
    await deliverTwice(e);
    await waitFor(() => handledBy(svc.ctx.pool, e.id, ['activity-log']), { message: 'activity recorded' });
    const { rows } = await svc.ctx.pool.query('SELECT title, message FROM notifications WHERE event_id = $1', [e.id]);
    expect(rows).toEqual([{ title: 'Agent nulbot errored', message: 'badbyte' }]);
    const { rows: activity } = await svc.ctx.pool.query("SELECT actor_id, metadata->'data'->>'error' AS error FROM activity_log WHERE event_id = $1", [e.id]);
    expect(activity).toEqual([{ actor_id: 'nulbot', error: 'badbyte' }]);
  });

  it('publishes notifications.notification.created for each notification', async () => {
    expect(await count(svc.ctx.pool, 'SELECT count(*) AS n FROM notifications')).toBeGreaterThan(5);
    expect(await count(svc.ctx.pool, `SELECT count(*) AS n FROM notifications n WHERE NOT EXISTS (SELECT 1 FROM aos_outbox o
      WHERE o.type = 'notifications.notification.created' AND (o.envelope->'data'->>'notificationId')::bigint = n.id)`)).toBe(0);
  });
});
