import { apiKeyPrincipal, startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service } from '../src/service.js';
import { envelope, handledBy, publish, publishTwice } from './helpers.js';
import { activityVolume } from './volume.js';

let svc: Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
const orgA = randomUUID();
const orgB = randomUUID();
const userA = userPrincipal({ orgId: orgA, orgRole: 'member' });
const userB = userPrincipal({ orgId: orgB, orgRole: 'member' });

beforeAll(async () => { svc = await startTestService(service); });
afterAll(async () => { await svc?.close(); });

const list = async (q = '', p = userA) => (await svc.inject(p, { method: 'GET', url: `/activity-log${q}` })).json();

describe('activity log from events', () => {
  it('writes one row per event with actor, action, entity and metadata — also when redelivered', async () => {
    const e = envelope('tasks.task.completed', {
      taskId: 42, title: 'Done', status: 'done', priority: 'low', type: 'chore', assignee: null, productId: null, productSlug: null,
      parentTaskId: null, createdBy: null, completedAt: new Date().toISOString(), resolution: null,
    }, { orgId: orgA, actor: { type: 'agent', id: '9' } });
    await publishTwice(svc.ctx, e);
    await waitFor(() => handledBy(svc.ctx.pool, e.id, ['activity-log']));
    const res = await list(`?action=tasks.task.completed`);
    expect(res.meta.total).toBe(1);
    expect(res.data[0]).toMatchObject({ actor_type: 'agent', actor_id: '9', action: 'tasks.task.completed', entity_type: 'task', entity_id: '42', event_id: e.id });
    expect(res.data[0].metadata.data.title).toBe('Done');
  });

  it('maps API keys to user actors and services to system, and redacts one-time links', async () => {
    const key = envelope('identity.api_key.created', { orgId: orgA, tenantId: randomUUID(), apiKeyId: 'k1' }, { orgId: orgA, actor: { type: 'api_key', id: 'k1' } });
    const invite = envelope('identity.invite.created', {
      orgId: orgA, tenantId: randomUUID(), inviteId: 'i1', email: 'x@example.com', role: 'member', teamId: null, invitedBy: null,
      inviteeUserId: null, acceptUrl: 'https://app.example/invites/SECRET', expiresAt: new Date().toISOString(),
    }, { orgId: orgA, actor: { type: 'service', id: 'identity' } });
    for (const e of [key, invite]) await publish(svc.ctx, e);
    await waitFor(async () => (await handledBy(svc.ctx.pool, key.id, ['activity-log'])) && handledBy(svc.ctx.pool, invite.id, ['activity-log']));
    const k = (await list('?action=identity.api_key.created')).data[0];
    expect(k).toMatchObject({ actor_type: 'user', actor_id: 'k1', entity_type: 'api_key', entity_id: 'k1' });
    expect(k.metadata.actor_kind).toBe('api_key');
    const i = (await list('?action=identity.invite.created')).data[0];
    expect(i).toMatchObject({ actor_type: 'system', entity_type: 'invite', entity_id: 'i1' });
    expect(JSON.stringify(i)).not.toContain('SECRET');
  });

  it('500 events → 500 rows, no duplicates, no loss (5% re-published)', async () => {
    const r = await activityVolume(500);
    try {
      expect(r.total).toBe(500);
      expect(r.distinct).toBe(500);
      expect(r.missing).toBe(0);
      process.stdout.write(`activity log: 500 events in ${r.elapsedMs} ms → ${r.rate} events/s\n`);
    } finally {
      await r.svc.close();
    }
  }, 90_000);
});

describe('activity log API', () => {
  it('records manual activities (201) and validates them', async () => {
    const res = await svc.inject(userA, { method: 'POST', url: '/activity-log', payload: { actor_type: 'user', actor_id: 'me', action: 'deploy.started', entity_type: 'product', entity_id: 'p1', metadata: { env: 'prod' } } });
    expect(res.statusCode).toBe(201);
    expect(res.json().data).toMatchObject({ actor_type: 'user', actor_id: 'me', action: 'deploy.started', entity_type: 'product', entity_id: 'p1', event_id: null });
    expect(res.json().data.metadata.env).toBe('prod');
    for (const payload of [{}, { actor_type: 'robot', actor_id: 'x', action: 'y' }, { actor_type: 'user', action: 'y' }, { actor_type: 'user', actor_id: 'x', action: '' },
      { actor_type: 'user', actor_id: 'x', action: 'y', metadata: 'nope' }, { actor_type: 'user', actor_id: 'x', action: 'y', metadata: { big: 'x'.repeat(20_000) } },
      { actor_type: 'user', actor_id: 'x', action: 'y', metadata: { note: 'a\u0000b' } }, { actor_type: 'user', actor_id: 'x', action: 'y', metadata: { 'k\u0000': 1 } },
      { actor_type: 'user', actor_id: 'x\u0000', action: 'y' }]) {
      const bad = await svc.inject(userA, { method: 'POST', url: '/activity-log', payload });
      expect(bad.statusCode, JSON.stringify(payload).slice(0, 80)).toBe(400);
      expect(bad.json().error.code).toBe('VALIDATION_ERROR');
    }
    const deep = `{"actor_type":"user","actor_id":"x","action":"y","metadata":{"deep":${'['.repeat(5_000)}${']'.repeat(5_000)}}}`;
    const tooDeep = await svc.inject(userA, { method: 'POST', url: '/activity-log', payload: deep, headers: { 'content-type': 'application/json' } });
    expect(tooDeep.statusCode).toBe(400);
    expect(tooDeep.json().error.message).toMatch(/nests too deep/);
  });

  it('a retried record with the same Idempotency-Key is stored once', async () => {
    const headers = { 'idempotency-key': `a-${randomUUID()}` };
    const payload = { actor_type: 'system', actor_id: 'cron', action: 'report.sent' };
    const first = await svc.inject(userA, { method: 'POST', url: '/activity-log', payload, headers });
    const again = await svc.inject(userA, { method: 'POST', url: '/activity-log', payload, headers });
    expect([first.statusCode, again.statusCode]).toEqual([201, 200]);
    expect(again.json().data.id).toBe(first.json().data.id);
    expect((await list('?action=report.sent')).meta.total).toBe(1);
    await svc.inject(userA, { method: 'POST', url: '/activity-log', payload });
    expect((await list('?action=report.sent')).meta.total).toBe(2); // without a key, each call records
  });

  it('filters by actor, action (and action family), entity; paginates newest first', async () => {
    for (let i = 0; i < 4; i++) {
      await svc.inject(userA, { method: 'POST', url: '/activity-log', payload: { actor_type: i % 2 ? 'agent' : 'system', actor_id: `a${i}`, action: `job.step${i}` } });
    }
    expect((await list('?actor_type=agent')).data.every((r: { actor_type: string }) => r.actor_type === 'agent')).toBe(true);
    expect((await list('?actor_id=a2')).data.map((r: { action: string }) => r.action)).toEqual(['job.step2']);
    expect((await list('?action=job.*')).meta.total).toBe(4);
    expect((await list('?entity_type=product&entity_id=p1')).meta.total).toBe(1);
    const p1 = await list('?action=job.*&limit=3');
    const p2 = await list('?action=job.*&limit=3&offset=3');
    expect([...p1.data, ...p2.data].map((r: { action: string }) => r.action)).toEqual(['job.step3', 'job.step2', 'job.step1', 'job.step0']);
    expect((await svc.inject(userA, { method: 'GET', url: '/activity-log?actor_type=robot' })).statusCode).toBe(400);
    expect((await svc.inject(userA, { method: 'GET', url: '/activity-log?since=yesterday' })).statusCode).toBe(400);
  });

  it('keeps orgs apart and enforces scopes', async () => {
    expect((await list('', userB)).meta.total).toBe(0);
    expect((await svc.inject(null, { method: 'GET', url: '/activity-log' })).statusCode).toBe(401);
    const noScope = apiKeyPrincipal(['tasks:read'], { orgId: orgA });
    expect((await svc.inject(noScope, { method: 'GET', url: '/activity-log' })).json().error.code).toBe('SCOPE_REQUIRED');
    const readKey = apiKeyPrincipal(['notifications:read'], { orgId: orgA });
    expect((await svc.inject(readKey, { method: 'GET', url: '/activity-log/stats' })).statusCode).toBe(200);
    expect((await svc.inject(readKey, { method: 'POST', url: '/activity-log', payload: { actor_type: 'user', actor_id: 'x', action: 'y' } })).statusCode).toBe(403);
  });

  it('summarises counts by action and actor over 24 h and 7 d', async () => {
    await svc.ctx.pool.query("INSERT INTO activity_log (org_id, actor_type, actor_id, action, created_at) VALUES ($1, 'user', 'old', 'old.thing', now() - interval '3 days')", [orgA]);
    const s = (await svc.inject(userA, { method: 'GET', url: '/activity-log/stats' })).json().data;
    const all = (await list('?limit=200')).meta.total;
    expect(s.last_7d.total).toBe(all);
    expect(s.last_24h.total).toBe(all - 1);
    expect(s.last_7d.by_action).toEqual(expect.arrayContaining([{ action: 'old.thing', count: 1 }]));
    expect(s.last_24h.by_action.find((a: { action: string }) => a.action === 'old.thing')).toBeUndefined();
    expect(s.last_24h.by_actor).toEqual(expect.arrayContaining([{ actor_type: 'agent', actor_id: '9', count: 1 }]));
    expect(s.last_24h.by_actor_type.reduce((n: number, a: { count: number }) => n + a.count, 0)).toBe(all - 1);
    expect((await svc.inject(userB, { method: 'GET', url: '/activity-log/stats' })).json().data.last_7d.total).toBe(0);
  });
});

describe('retention', () => {
  it('deletes activity older than the retention window and keeps recent rows', async () => {
    const { runRetention } = await import('../src/jobs/retention.js');
    await svc.ctx.pool.query("INSERT INTO activity_log (org_id, actor_type, action, created_at) VALUES ($1, 'system', 'ancient.thing', now() - interval '200 days')", [orgA]);
    await svc.ctx.pool.query("INSERT INTO notifications (org_id, user_id, title, message, read, created_at) VALUES ($1, 'u', 'old read', 'm', true, now() - interval '200 days'), ($1, 'u', 'old unread', 'm', false, now() - interval '200 days')", [orgA]);
    const before = (await list('?limit=1')).meta.total;
    const result = await runRetention(svc.ctx);
    expect(result).toMatchObject({ activity_log: 1, notifications: 1 });
    expect((await list('?limit=1')).meta.total).toBe(before - 1);
    const { rows } = await svc.ctx.pool.query("SELECT title FROM notifications WHERE user_id = 'u'");
    expect(rows.map((r) => r.title)).toEqual(['old unread']);
  });
});
