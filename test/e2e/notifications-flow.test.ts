import { createNamespace, putOnPlan, startTestService, waitFor } from '@aos/testkit';
import { createHmac, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service as notificationsService } from '../../services/notifications/src/service.js';
import { startStack } from './stack.js';

/**
 * The events notifications consumes, published by the real identity and tasks services from
 * real API calls, and the notifications API (incl. the SSE stream) reached through the gateway.
 */
let stack: Awaited<ReturnType<typeof startStack>>;
let notifications: Awaited<ReturnType<typeof startTestService<typeof notificationsService.schema, typeof notificationsService.config>>>;
let gatewayPort: number;
let receiver: http.Server;
let receiverPort: number;
const hooks: { headers: http.IncomingHttpHeaders; body: string }[] = [];

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => { hooks.push({ headers: req.headers, body }); res.writeHead(204).end(); });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  receiverPort = (receiver.address() as AddressInfo).port;
  const ns = createNamespace();
  notifications = await startTestService(notificationsService, { namespace: ns, env: { WEBHOOK_ALLOWED_HOSTS: 'localhost', SSE_HEARTBEAT_MS: '1000' } });
  await notifications.app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(notifications.app.server.address() as AddressInfo).port}`;
  stack = await startStack({ NOTIFICATIONS_URL: url }, ns);
  await stack.gateway.listen({ host: '127.0.0.1', port: 0 });
  gatewayPort = (stack.gateway.server.address() as AddressInfo).port;
}, 90_000);
afterAll(async () => {
  await notifications?.close();
  await stack?.close();
  await new Promise((r) => receiver?.close(r));
});

type Headers = Record<string, string>;
const api = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, opts: { token?: string; org?: string; body?: unknown } = {}) =>
  stack.gateway.inject({
    method, url, ...(opts.body !== undefined ? { payload: opts.body as object } : {}),
    headers: { ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...(opts.org ? { 'x-org-id': opts.org } : {}) },
  });

async function signup() {
  const id = randomUUID().slice(0, 8);
  const res = await api('POST', '/api/auth/register', { body: { username: `u_${id}`, email: `${id}@example.com`, password: 'correct horse battery', terms_accepted: true, privacy_accepted: true } });
  expect(res.statusCode, res.body).toBe(201);
  const d = res.json().data as { token: string; org_id: string; user: { id: string; username: string; email: string } };
  return { ...d, username: `u_${id}`, email: `${id}@example.com` };
}

/** GET /api/notifications/stream through the gateway over a real socket. */
async function stream(token: string, org: string) {
  const chunks: string[] = [];
  let req!: http.ClientRequest;
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const headers: Headers = { authorization: `Bearer ${token}`, 'x-org-id': org, accept: 'text/event-stream' };
    req = http.get({ host: '127.0.0.1', port: gatewayPort, path: '/api/notifications/stream', headers }, resolve);
    req.on('error', reject);
  });
  res.setEncoding('utf8');
  res.on('data', (c: string) => chunks.push(c));
  res.on('error', () => {});
  const text = () => chunks.join('');
  return {
    status: res.statusCode, contentType: String(res.headers['content-type']), text,
    events: () => text().split('\n\n').filter((b) => b.includes('event: notification'))
      .map((b) => JSON.parse(b.split('\n').find((l) => l.startsWith('data: '))!.slice(6)) as { kind: string; title: string; link: string }),
    close: () => req.destroy(),
  };
}

const notificationsOf = async (token: string, org: string, query = '') => {
  const res = await api('GET', `/api/notifications${query}`, { token, org });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as { data: { kind: string; title: string; link: string; read: boolean; id: number }[]; meta: { total: number } };
};

describe('notifications from the real publishers, through the gateway', () => {
  it('invite, assignment, completion and password reset: one notification / e-mail each, live on the stream, all in the activity log', async () => {
    const owner = await signup();
    const member = await signup();
    const org = (await api('POST', '/api/organizations', { token: owner.token, body: { name: `Acme ${randomUUID().slice(0, 6)}` } })).json().data as { id: string };
    await putOnPlan(stack.identity, org.id, 'pro'); // Free has a single seat

    // identity.invite.created → the invitee's notification (in their personal org) and the invite e-mail.
    const invite = await api('POST', `/api/organizations/${org.id}/invites`, { token: owner.token, body: { email: member.email, role: 'member' } });
    expect(invite.statusCode, invite.body).toBe(201);
    const invited = await waitFor(async () => (await notificationsOf(member.token, member.org_id, '?kind=invite_received')).data[0], { message: 'invite notification' });
    expect(invited).toMatchObject({ kind: 'invite_received', read: false, link: '/invites' });
    // The mailer is a consumer of its own: the e-mail may land after the notification.
    const inviteMails = await waitFor(async () => {
      const { rows } = await notifications.ctx.pool.query("SELECT status, text FROM emails WHERE template = 'invite' AND recipient = $1", [member.email]);
      return rows.length > 0 ? rows : null;
    }, { message: 'invite e-mail' });
    expect(inviteMails).toHaveLength(1);
    expect(inviteMails[0].status).toBe('stored'); // no SMTP configured: stored, never dropped
    expect(inviteMails[0].text).toContain(invite.json().data.token);
    expect((await api('POST', `/api/organizations/invites/${invite.json().data.token}/accept`, { token: member.token, body: {} })).statusCode).toBe(200);

    // Only org admins manage webhooks; the owner's webhook receives the real task events, signed.
    expect((await api('POST', '/api/webhooks', { token: member.token, org: org.id, body: { url: `http://localhost:${receiverPort}/hook`, events: ['tasks.*'] } })).statusCode).toBe(403);
    const hook = await api('POST', '/api/webhooks', { token: owner.token, org: org.id, body: { url: `http://localhost:${receiverPort}/hook`, events: ['tasks.task.created'] } });
    expect(hook.statusCode, hook.body).toBe(201);
    const secret = hook.json().data.secret as string;

    const live = await stream(member.token, org.id);
    try {
      expect(live.status).toBe(200);
      expect(live.contentType).toMatch(/^text\/event-stream/);
      await waitFor(() => live.text().includes(': connected'), { message: 'stream open through the gateway' });

      // tasks.task.created with the member's username as assignee → task_assigned for the member, live.
      const task = await api('POST', '/api/tasks', { token: owner.token, org: org.id, body: { title: 'Review the launch plan', assignee: member.username } });
      expect(task.statusCode, task.body).toBe(201);
      const taskId = task.json().data.id as number;
      await waitFor(() => live.events().some((e) => e.kind === 'task_assigned'), { message: 'assignment streamed through the gateway' });
      expect(live.events().map((e) => e.link)).toEqual([`/tasks/${taskId}`]);

      // The member moves it to done → tasks.task.completed → task_completed for the creator (owner).
      for (const status of ['in_progress', 'review', 'done']) {
        const res = await api('PATCH', `/api/tasks/${taskId}`, { token: member.token, org: org.id, body: { status } });
        expect(res.statusCode, res.body).toBe(200);
      }
      const completed = await waitFor(async () => (await notificationsOf(owner.token, org.id, '?kind=task_completed')).data[0], { message: 'completion notification' });
      expect(completed.link).toBe(`/tasks/${taskId}`);

      // Activity log: every event of the task, once each, with the real actors.
      const activity = await waitFor(async () => {
        const res = (await api('GET', `/api/activity-log?entity_type=task&entity_id=${taskId}&limit=200`, { token: owner.token, org: org.id })).json();
        return res.meta.total === 5 ? res.data as { action: string; actor_type: string; actor_id: string }[] : null;
      }, { message: 'five activity rows for the task' });
      expect(activity.map((a) => a.action).sort()).toEqual(['tasks.task.completed', 'tasks.task.created', 'tasks.task.updated', 'tasks.task.updated', 'tasks.task.updated']);
      expect(activity.find((a) => a.action === 'tasks.task.created')).toMatchObject({ actor_type: 'user', actor_id: owner.user.id });
      expect(activity.find((a) => a.action === 'tasks.task.completed')).toMatchObject({ actor_type: 'user', actor_id: member.user.id });

      // The webhook got tasks.task.created, signed with the secret shown once.
      const got = await waitFor(() => hooks.find((h) => JSON.parse(h.body).data?.taskId === taskId), { message: 'webhook delivery' });
      const ts = got.headers['x-aos-timestamp'] as string;
      expect(got.headers['x-aos-signature']).toBe(`v1=${createHmac('sha256', secret).update(`${ts}.${got.body}`).digest('hex')}`);
      expect(JSON.parse(got.body)).toMatchObject({ type: 'tasks.task.created', org_id: org.id, actor: { type: 'user', id: owner.user.id } });

      // Exactly one of each, also after every consumer has seen every event.
      expect((await notificationsOf(member.token, org.id, '?kind=task_assigned')).meta.total).toBe(1);
      expect((await notificationsOf(owner.token, org.id, '?kind=task_completed')).meta.total).toBe(1);
      expect((await notificationsOf(member.token, member.org_id, '?kind=invite_received')).meta.total).toBe(1);
      expect((await api('GET', '/api/notifications/unread-count', { token: member.token, org: org.id })).json().data.count).toBe(1);
      expect(live.events()).toHaveLength(1);
    } finally {
      live.close();
    }

    // identity.password_reset.requested → one stored reset e-mail carrying the one-time link.
    expect((await api('POST', '/api/auth/forgot-password', { body: { email: member.email } })).statusCode).toBe(200);
    await waitFor(async () => (await notifications.ctx.pool.query("SELECT 1 FROM emails WHERE template = 'password_reset' AND recipient = $1", [member.email])).rowCount === 1, { message: 'reset e-mail' });
    const { rows: [reset] } = await notifications.ctx.pool.query("SELECT text, html FROM emails WHERE template = 'password_reset' AND recipient = $1", [member.email]);
    expect(reset.text).toMatch(/reset-password\?token=/);
    expect(reset.html).toMatch(/href="http[^"]+reset-password\?token=/);
  }, 60_000);
});
