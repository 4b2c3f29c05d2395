import { systemMeta } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { splitList } from '@aos/core';
import { UnrecoverableError, type Job } from '@aos/queue';
import { eq, sql } from 'drizzle-orm';
import { createHmac } from 'node:crypto';
import nodemailer from 'nodemailer';
import { emails, webhookDeliveries, webhooks } from '../db/schema.js';
import { assertDeliverable } from '../domain/ssrf.js';
import type { Ctx } from '../service.js';


/** `X-AOS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` — as Stripe signs. */
export function sign(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

const isFinalAttempt = (job: Job<unknown>) => job.attemptsMade + 1 >= (job.opts.attempts ?? 1);

export function startWorkers(ctx: Ctx) {
  const transport = ctx.config.SMTP_URL ? nodemailer.createTransport(ctx.config.SMTP_URL) : null;

  ctx.queues.worker<{ emailId: number }>(Queues.email, async ({ emailId }, job) => {
    const [mail] = await ctx.db.select().from(emails).where(eq(emails.id, emailId));
    if (!mail || mail.status === 'sent') return { skipped: true };
    if (!transport) throw new UnrecoverableError('SMTP is not configured');
    try {
      await transport.sendMail({ from: ctx.config.MAIL_FROM, to: mail.to, subject: mail.subject, text: mail.text, html: mail.html });
    } catch (err) {
      const message = (err as Error).message.slice(0, 500);
      await ctx.db.update(emails).set({ status: isFinalAttempt(job) ? 'failed' : 'queued', error: message }).where(eq(emails.id, emailId));
      throw err;
    }
    await ctx.db.update(emails).set({ status: 'sent', sentAt: new Date(), error: null }).where(eq(emails.id, emailId));
    return { sent: true };
  }, { concurrency: 4 });

  const policy = { allowPrivate: ctx.config.WEBHOOK_ALLOW_PRIVATE_TARGETS, allowedHosts: splitList(ctx.config.WEBHOOK_ALLOWED_HOSTS) };

  ctx.queues.worker<{ deliveryId: number }>(Queues.webhookDelivery, async ({ deliveryId }, job) => {
    const [row] = await ctx.db.select({ d: webhookDeliveries, w: webhooks }).from(webhookDeliveries)
      .innerJoin(webhooks, eq(webhooks.id, webhookDeliveries.webhookId)).where(eq(webhookDeliveries.id, deliveryId));
    if (!row) return { skipped: 'gone' };
    const { d, w } = row;
    if (d.status === 'delivered') return { skipped: 'delivered' };
    if (!w.isActive) {
      await ctx.db.update(webhookDeliveries).set({ status: 'skipped', error: 'endpoint disabled' }).where(eq(webhookDeliveries.id, d.id));
      return { skipped: 'disabled' };
    }
    const body = JSON.stringify(d.payload);
    const timestamp = Math.floor(Date.now() / 1000);
    let status: number | null = null;
    let error: string | null = null;
    try {
      const url = await assertDeliverable(w.url, policy);
      const res = await fetch(url, {
        method: 'POST',
        redirect: 'manual',
        signal: AbortSignal.timeout(ctx.config.WEBHOOK_TIMEOUT_MS),
        headers: {
          'content-type': 'application/json', 'user-agent': 'AOS-Webhooks/1',
          'x-aos-event': d.eventType, 'x-aos-delivery': String(d.id), 'x-aos-event-id': d.eventId,
          'x-aos-signature': sign(w.secret, timestamp, body),
        },
        body,
      });
      status = res.status;
      await res.body?.cancel().catch(() => {});
      if (res.status < 200 || res.status >= 300) error = res.status >= 300 && res.status < 400 ? `redirect ${res.status} not followed` : `HTTP ${res.status}`;
    } catch (err) {
      error = (err as { message?: string }).message?.slice(0, 500) ?? 'delivery failed';
      if ((err as { code?: string }).code === 'VALIDATION_ERROR') error = `refused: ${error}`;
    }
    if (!error) {
      await ctx.db.transaction(async (tx) => {
        await tx.update(webhookDeliveries).set({ status: 'delivered', responseStatus: status, error: null, attempts: sql`${webhookDeliveries.attempts} + 1`, deliveredAt: new Date() }).where(eq(webhookDeliveries.id, d.id));
        await tx.update(webhooks).set({ consecutiveFailures: 0 }).where(eq(webhooks.id, w.id));
      });
      return { delivered: status };
    }
    const refused = error.startsWith('refused:');
    const final = refused || isFinalAttempt(job);
    await ctx.db.transaction(async (tx) => {
      await tx.update(webhookDeliveries).set({ status: final ? 'failed' : 'retrying', responseStatus: status, error, attempts: sql`${webhookDeliveries.attempts} + 1` }).where(eq(webhookDeliveries.id, d.id));
      if (!final) return;
      const [hook] = await tx.update(webhooks).set({ consecutiveFailures: sql`${webhooks.consecutiveFailures} + 1` }).where(eq(webhooks.id, w.id)).returning();
      if (hook && hook.isActive && hook.consecutiveFailures >= ctx.config.WEBHOOK_MAX_FAILURES) {
        await tx.update(webhooks).set({ isActive: false, disabledAt: new Date() }).where(eq(webhooks.id, w.id));
        await ctx.outbox.enqueue(tx, 'notifications.webhook.disabled', { webhookId: w.id, url: w.url, consecutiveFailures: hook.consecutiveFailures }, systemMeta(null, w.orgId));
      }
    });
    if (refused) throw new UnrecoverableError(error);
    throw new Error(error);
  }, { concurrency: 8 });
}
