import { startTestService, waitFor, sleep } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queueEmail } from '../src/domain/email.js';
import { recoverLostJobs } from '../src/jobs/recovery.js';
import { service } from '../src/service.js';
import { count, envelope, handledBy, publish, publishTwice } from './helpers.js';

type Mail = { from: string; to: string[]; raw: string; decoded: string };
const inbox: Mail[] = [];
let smtp: SMTPServer;
let smtpPort: number;

/** Undoes quoted-printable so assertions can read the text and HTML parts. */
const decodeQp = (raw: string) => Buffer.from(raw.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8');

let svc: Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
let bare: Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
const orgA = randomUUID();
const evil = { userId: randomUUID(), username: '<img src=x onerror=alert(1)>', email: 'evil@example.com' };

const resetEvent = (email: string) => envelope('identity.password_reset.requested', {
  userId: randomUUID(), email, resetUrl: 'https://app.example/reset?token=SECRET-TOKEN-123', expiresAt: '2030-01-01T00:00:00.000Z',
});

beforeAll(async () => {
  smtp = new SMTPServer({
    authOptional: true, disabledCommands: ['STARTTLS'], logger: false,
    onRcptTo(address, _session, cb) {
      if (address.address.startsWith('bounce')) return cb(Object.assign(new Error('mailbox unavailable'), { responseCode: 450 }));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        inbox.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), raw, decoded: decodeQp(raw) });
        cb();
      });
    },
  });
  await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', () => r()));
  smtpPort = (smtp.server.address() as AddressInfo).port;
  svc = await startTestService(service, {
    env: { SMTP_URL: `smtp://127.0.0.1:${smtpPort}`, MAIL_FROM: 'AOS <noreply@aos.test>', EMAIL_MAX_ATTEMPTS: '2', EMAIL_BACKOFF_MS: '50' },
  });
  bare = await startTestService(service);
  await publish(svc.ctx, envelope('identity.user.registered', {
    userId: evil.userId, email: evil.email, username: evil.username, tenantId: randomUUID(), personalOrgId: randomUUID(), platformRoles: [],
  }));
  await publish(svc.ctx, envelope('identity.org.created', { orgId: orgA, tenantId: randomUUID(), name: 'Acme <Corp>', slug: 'acme' }));
  await waitFor(async () => (await count(svc.ctx.pool, 'SELECT count(*) AS n FROM users')) === 1);
  await waitFor(async () => (await count(svc.ctx.pool, 'SELECT count(*) AS n FROM orgs')) === 1);
});
afterAll(async () => {
  await svc?.close();
  await bare?.close();
  await new Promise<void>((r) => smtp?.close(() => r()));
});

const mailTo = (addr: string) => inbox.filter((m) => m.to.includes(addr));

describe('e-mail over SMTP', () => {
  it('sends the password reset e-mail once, with text and HTML parts', async () => {
    const e = resetEvent('reset@example.com');
    await publishTwice(svc.ctx, e);
    const mail = await waitFor(() => mailTo('reset@example.com')[0], { message: 'reset mail' });
    expect(mail.from).toBe('noreply@aos.test');
    expect(mail.raw).toMatch(/^Subject: Reset your AOS password/m);
    expect(mail.raw).toMatch(/Content-Type: text\/plain/);
    expect(mail.raw).toMatch(/Content-Type: text\/html/);
    expect(mail.decoded).toContain('https://app.example/reset?token=SECRET-TOKEN-123');
    expect(mail.decoded).toContain('href="https://app.example/reset?token=SECRET-TOKEN-123"');
    await waitFor(async () => (await count(svc.ctx.pool, "SELECT count(*) AS n FROM emails WHERE recipient = 'reset@example.com' AND status = 'sent'")) === 1);
    await sleep(400);
    expect(mailTo('reset@example.com')).toHaveLength(1);
    await waitFor(async () => (await count(svc.ctx.pool, "SELECT count(*) AS n FROM aos_outbox WHERE type = 'notifications.email.sent'")) >= 1);
  });

  it('sends the invite e-mail with the accept link and escapes user data in HTML', async () => {
    const e = envelope('identity.invite.created', {
      orgId: orgA, tenantId: randomUUID(), inviteId: randomUUID(), email: 'newbie@example.com', role: 'member', teamId: null,
      invitedBy: evil.userId, inviteeUserId: null, acceptUrl: 'https://app.example/invites/abc?x=1&y=2', expiresAt: '2030-01-01T00:00:00.000Z',
    }, { orgId: orgA });
    await publish(svc.ctx, e);
    const mail = await waitFor(() => mailTo('newbie@example.com')[0], { message: 'invite mail' });
    expect(mail.raw).toMatch(/^Subject: You are invited to join/m);
    expect(mail.decoded).toContain('&lt;img src=x onerror=alert(1)&gt; invited you');
    const html = mail.decoded.slice(mail.decoded.indexOf('<!doctype html>'));
    expect(html).not.toContain('<img src=x');
    expect(html).toContain('<b>Acme &lt;Corp&gt;</b>');
    expect(mail.decoded).toContain('href="https://app.example/invites/abc?x=1&amp;y=2"');
    expect(mail.decoded).toContain('https://app.example/invites/abc?x=1&y=2'); // text part, raw
  });

  it('sends the payment failure e-mail to the address of the event or of the user', async () => {
    const e = envelope('billing.payment.failed', { stripeObjectId: 'in_1', amountCents: 4200, currency: 'eur', reason: 'expired_card', userId: evil.userId, email: null }, { orgId: orgA });
    await publish(svc.ctx, e);
    const mail = await waitFor(() => mailTo(evil.email)[0], { message: 'payment mail' });
    expect(mail.raw).toMatch(/^Subject: Your AOS payment failed/m);
    expect(mail.decoded).toContain('€42.00');
    expect(mail.decoded).toContain('expired_card');
  });

  it('without an e-mail or user on the event, mails the org\'s current owners and admins (membership events out of order)', async () => {
    const orgX = randomUUID();
    const tenantId = randomUUID();
    const people = ['owner', 'admin', 'member', 'ex-admin', 'gone-admin'].map((r) => ({ role: r, userId: randomUUID(), email: `${r}-${orgX.slice(0, 6)}@example.com` }));
    const [owner, admin, member, exAdmin, goneAdmin] = people as [typeof people[number], typeof people[number], typeof people[number], typeof people[number], typeof people[number]];
    const t0 = Date.now() - 60_000;
    const events = [
      ...people.map((p) => envelope('identity.user.registered', { userId: p.userId, email: p.email, username: p.role, tenantId, personalOrgId: randomUUID(), platformRoles: [] }, { occurredAt: new Date(t0) })),
      envelope('identity.member.added', { orgId: orgX, tenantId, userId: owner.userId, role: 'owner' }, { orgId: orgX, occurredAt: new Date(t0 + 1_000) }),
      envelope('identity.member.added', { orgId: orgX, tenantId, userId: admin.userId, role: 'member' }, { orgId: orgX, occurredAt: new Date(t0 + 1_000) }),
      envelope('identity.member.role_changed', { orgId: orgX, tenantId, userId: admin.userId, role: 'admin' }, { orgId: orgX, occurredAt: new Date(t0 + 2_000) }),
      envelope('identity.member.added', { orgId: orgX, tenantId, userId: member.userId, role: 'member' }, { orgId: orgX, occurredAt: new Date(t0 + 1_000) }),
      // Removed, but the removal is consumed before the (older) addition.
      envelope('identity.member.removed', { orgId: orgX, tenantId, userId: exAdmin.userId }, { orgId: orgX, occurredAt: new Date(t0 + 3_000) }),
      envelope('identity.member.added', { orgId: orgX, tenantId, userId: exAdmin.userId, role: 'admin' }, { orgId: orgX, occurredAt: new Date(t0 + 1_000) }),
      envelope('identity.member.added', { orgId: orgX, tenantId, userId: goneAdmin.userId, role: 'admin' }, { orgId: orgX, occurredAt: new Date(t0 + 1_000) }),
      envelope('identity.user.deleted', { userId: goneAdmin.userId, tenantId }, { occurredAt: new Date(t0 + 4_000) }),
    ];
    for (const e of events) {
      await publish(svc.ctx, e);
      await waitFor(() => handledBy(svc.ctx.pool, e.id, ['users-projection']), { message: `${e.type} projected` });
    }
    const failed = envelope('billing.payment.failed', { stripeObjectId: 'pi_auto', amountCents: 500, currency: 'usd', reason: 'card_declined', userId: null, email: null }, { orgId: orgX });
    await publishTwice(svc.ctx, failed);
    await waitFor(() => mailTo(owner.email)[0] && mailTo(admin.email)[0], { message: 'owner and admin mailed' });
    await waitFor(() => handledBy(svc.ctx.pool, failed.id, ['mailer']));
    const { rows } = await svc.ctx.pool.query("SELECT recipient FROM emails WHERE event_id = $1 ORDER BY recipient", [failed.id]);
    expect(rows.map((r) => r.recipient)).toEqual([admin.email, owner.email].sort());
    for (const p of [member, exAdmin, goneAdmin]) expect(mailTo(p.email)).toHaveLength(0);
  });

  it('keeps a deleted user out even when their registration is consumed after the deletion', async () => {
    const userId = randomUUID();
    const deleted = envelope('identity.user.deleted', { userId, tenantId: null }, { occurredAt: new Date() });
    const registered = envelope('identity.user.registered', { userId, email: 'late@example.com', username: 'late', tenantId: randomUUID(), personalOrgId: randomUUID(), platformRoles: [] },
      { occurredAt: new Date(Date.now() - 60_000) });
    for (const e of [deleted, registered]) {
      await publish(svc.ctx, e);
      await waitFor(() => handledBy(svc.ctx.pool, e.id, ['users-projection']));
    }
    expect(await count(svc.ctx.pool, 'SELECT count(*) AS n FROM users WHERE user_id = $1', [userId])).toBe(0);
  });

  it('gives a deleted user no membership even when it is consumed after the deletion', async () => {
    const userId = randomUUID();
    const orgId = randomUUID();
    const deleted = envelope('identity.user.deleted', { userId, tenantId: null }, { occurredAt: new Date() });
    const joined = envelope('identity.member.added', { orgId, tenantId: randomUUID(), userId, role: 'admin' }, { orgId, occurredAt: new Date(Date.now() - 60_000) });
    const promoted = envelope('identity.member.role_changed', { orgId, tenantId: randomUUID(), userId, role: 'owner' }, { orgId, occurredAt: new Date(Date.now() - 30_000) });
    for (const e of [deleted, joined, promoted]) {
      await publish(svc.ctx, e);
      await waitFor(() => handledBy(svc.ctx.pool, e.id, ['users-projection']));
    }
    expect(await count(svc.ctx.pool, "SELECT count(*) AS n FROM org_members WHERE user_id = $1 AND role <> 'removed'", [userId])).toBe(0);
  });

  it('retries a refused send and records it failed after the last attempt', async () => {
    await publish(svc.ctx, resetEvent('bounce@example.com'));
    await waitFor(async () => (await count(svc.ctx.pool, "SELECT count(*) AS n FROM emails WHERE recipient = 'bounce@example.com' AND status = 'failed' AND attempts = 2")) === 1,
      { message: 'failed after 2 attempts' });
    const { rows } = await svc.ctx.pool.query("SELECT error FROM emails WHERE recipient = 'bounce@example.com'");
    expect(rows[0].error).toMatch(/mailbox unavailable/);
  });
});

describe('lost e-mail jobs', () => {
  it('sends a queued e-mail whose job was never added (crash between commit and enqueue)', async () => {
    const id = await svc.ctx.db.transaction((tx) => queueEmail(tx, svc.ctx, () => {}, {
      template: 'password_reset', to: 'lost@example.com', vars: { resetUrl: 'https://app.example/reset?token=t', expiresAt: '2030-01-01T00:00:00.000Z' }, orgId: null, eventId: randomUUID(),
    }));
    expect(id).toBeTypeOf('number');
    expect(await recoverLostJobs(svc.ctx, 0)).toMatchObject({ emails: 1 });
    await waitFor(() => mailTo('lost@example.com')[0], { message: 'recovered e-mail sent' });
    await waitFor(async () => (await count(svc.ctx.pool, "SELECT count(*) AS n FROM emails WHERE id = $1 AND status = 'sent'", [id])) === 1);
    expect(await recoverLostJobs(svc.ctx, 0)).toMatchObject({ emails: 0 });
    expect(mailTo('lost@example.com')).toHaveLength(1);
  });
});

describe('e-mail without SMTP', () => {
  it('stores the e-mail (status stored) once, and never sends it; the log names template and recipient, not the link', async () => {
    const logged: unknown[][] = [];
    const info = bare.ctx.log.info.bind(bare.ctx.log);
    bare.ctx.log.info = ((...args: unknown[]) => { logged.push(args); return (info as (...a: unknown[]) => void)(...args); }) as typeof bare.ctx.log.info;
    const e = resetEvent('nosmtp@example.com');
    await publishTwice(bare.ctx, e);
    await waitFor(() => handledBy(bare.ctx.pool, e.id, ['mailer']));
    await sleep(400);
    const { rows } = await bare.ctx.pool.query("SELECT status, template, subject, text FROM emails WHERE recipient = 'nosmtp@example.com'");
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status: 'stored', template: 'password_reset', subject: 'Reset your AOS password' });
    expect(rows[0].text).toContain('SECRET-TOKEN-123');
    expect(mailTo('nosmtp@example.com')).toHaveLength(0);
    const line = logged.find((a) => String(a[1]).includes('SMTP not configured'));
    expect(line?.[0]).toMatchObject({ template: 'password_reset', recipient: 'n***@example.com' });
    expect(JSON.stringify(logged)).not.toContain('SECRET-TOKEN');
  });
});
