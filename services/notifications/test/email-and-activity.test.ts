import { userPrincipal, waitFor, sleep } from '@aos/testkit';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { count, envelope, publish, startNotifications, type Svc } from './helpers.js';

const mails: { from: string; to: string[]; raw: string }[] = [];
let smtp: SMTPServer;
let svc: Svc;
let offline: Svc;
const admin = userPrincipal();
const orgId = admin.orgId!;

beforeAll(async () => {
  smtp = new SMTPServer({
    authOptional: true, disabledCommands: ['STARTTLS'],
    onData(stream, session, cb) {
      let raw = '';
      stream.on('data', (c) => { raw += c; });
      stream.on('end', () => {
        mails.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), raw });
        cb();
      });
    },
  });
  await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', () => r()));
  const port = (smtp.server.address() as AddressInfo).port;
  svc = await startNotifications({ env: { SMTP_URL: `smtp://127.0.0.1:${port}`, MAIL_FROM: 'AOS <no-reply@aos.test>' } });
  offline = await startNotifications();
});
afterAll(async () => {
  await svc?.close();
  await offline?.close();
  await new Promise<void>((r) => smtp.close(() => r()));
});

describe('e-mail', () => {
  it('sends the password reset mail over SMTP with text and HTML parts', async () => {
    const env = envelope('identity.password_reset.requested', { userId: randomUUID(), email: 'dana@example.com', resetUrl: 'https://aos.local/reset?token=abc123', expiresAt: new Date(Date.now() + 1_800_000).toISOString() }, orgId);
    await publish(svc, env);
    await publish(svc, env, `${env.id}-again`);
    const mail = await waitFor(() => mails.find((m) => m.to.includes('dana@example.com')), { message: 'reset mail' });
    expect(mail.from).toBe('no-reply@aos.test');
    expect(mail.raw).toContain('Subject: Reset your AOS password');
    expect(mail.raw).toContain('text/plain');
    expect(mail.raw).toContain('text/html');
    expect(mail.raw).toContain('aos.local/reset');
    await waitFor(async () => (await count(svc, "SELECT count(*) AS n FROM emails WHERE to_address = 'dana@example.com' AND status = 'sent'")) === 1);
    await sleep(300);
    expect(mails.filter((m) => m.to.includes('dana@example.com'))).toHaveLength(1);
  });

  it('escapes user data in invite HTML', async () => {
    await publish(svc, envelope('identity.invite.created', { orgId, tenantId: randomUUID(), inviteId: randomUUID(), email: 'erin@example.com', role: '<b>admin</b>', teamId: null, invitedBy: null, inviteeUserId: null, acceptUrl: 'https://aos.local/i/x"><script>', expiresAt: new Date().toISOString() }, orgId));
    const mail = await waitFor(() => mails.find((m) => m.to.includes('erin@example.com')));
    const html = mail.raw.slice(mail.raw.indexOf('Content-Type: text/html')).replace(/=\r\n/g, '');
    expect(html).not.toContain('<script>');
    expect(html).toContain('&lt;b&gt;admin&lt;/b&gt;');
  });

  it('without SMTP stores the mail (never drops it)', async () => {
    await publish(offline, envelope('billing.payment.failed', { stripeObjectId: 'in_2', amountCents: 1000, currency: 'eur', reason: null, userId: null, email: 'finance@example.com' }, orgId));
    await waitFor(() => count(offline, "SELECT count(*) AS n FROM emails WHERE to_address = 'finance@example.com' AND status = 'stored' AND subject = 'Your AOS payment failed'"));
  });
});

describe('activity log', () => {
  it('records every event exactly once with actor and entity, and answers filters and stats', async () => {
    const events = Array.from({ length: 500 }, (_, i) => envelope('tasks.task.updated', {
      taskId: i + 1, title: `t${i}`, status: 'todo', priority: 'P2', type: 'feature', assignee: null, productId: null, productSlug: null, parentTaskId: null, createdBy: null,
      changes: ['title'], previousStatus: 'todo', previousAssignee: null,
    }, orgId, { actor: { type: i % 2 ? 'agent' : 'user', id: i % 2 ? 'felix' : admin.userId } }));
    await Promise.all(events.map((e) => publish(svc, e)));
    await Promise.all(events.slice(0, 50).map((e) => publish(svc, e, `${e.id}-dup`)));
    await waitFor(async () => (await count(svc, "SELECT count(*) AS n FROM activity_log WHERE action = 'tasks.task.updated'")) >= 500, { timeoutMs: 30_000 });
    await sleep(500);
    expect(await count(svc, "SELECT count(*) AS n FROM activity_log WHERE action = 'tasks.task.updated'")).toBe(500);
    const agentRows = (await svc.inject(admin, { method: 'GET', url: '/activity-log?actor_type=agent&actor_id=felix&limit=1' })).json();
    expect(agentRows.meta.total).toBe(250);
    expect(agentRows.data[0]).toMatchObject({ actor_type: 'agent', actor_id: 'felix', action: 'tasks.task.updated', entity_type: 'task' });
    const stats = (await svc.inject(admin, { method: 'GET', url: '/activity-log/stats' })).json().data;
    expect(stats.by_action.find((a: { action: string }) => a.action === 'tasks.task.updated').last_24h).toBe(500);
    expect((await svc.inject(userPrincipal(), { method: 'GET', url: '/activity-log' })).json().meta.total).toBe(0);
  });

  it('accepts manual records and validates them', async () => {
    const res = await svc.inject(admin, { method: 'POST', url: '/activity-log', payload: { actor_type: 'user', actor_id: 'u1', action: 'deploy.started', entity_type: 'product', entity_id: 'x', metadata: { sha: 'abc' } } });
    expect(res.statusCode).toBe(201);
    expect((await svc.inject(admin, { method: 'GET', url: '/activity-log?action=deploy.*' })).json().data[0]).toMatchObject({ action: 'deploy.started', metadata: { sha: 'abc' } });
    expect((await svc.inject(admin, { method: 'POST', url: '/activity-log', payload: { actor_type: 'robot', actor_id: 'x', action: 'y' } })).statusCode).toBe(400);
  });
});
