import { systemMeta } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { UnrecoverableError } from '@aos/queue';
import { eq, sql } from 'drizzle-orm';
import nodemailer, { type Transporter } from 'nodemailer';
import { emails } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { templates, type TemplateName } from './email-templates.js';
import type { STx } from './notifications.js';

export interface EmailJob { emailId: number }

/** Masks the local part: `a***@example.com` — recipients are personal data. */
export const maskEmail = (email: string) => email.replace(/^(.).*(@.*)$/, '$1***$2');

/**
 * Records an e-mail in the transaction (once per event, template and recipient). With SMTP
 * it is queued for the mailer; without, it stays `stored` and a log line names the
 * template and recipient (never the body: it may carry a reset or invite token).
 */
export async function queueEmail<T extends TemplateName>(
  tx: STx, ctx: Ctx, afterCommit: (fn: () => Promise<unknown>) => void,
  e: { template: T; to: string; vars: Parameters<(typeof templates)[T]>[0]; orgId: string | null; eventId: string | null },
) {
  const rendered = (templates[e.template] as (v: typeof e.vars) => { subject: string; text: string; html: string })(e.vars);
  const smtp = !!ctx.config.SMTP_URL;
  const [row] = await tx.insert(emails).values({
    orgId: e.orgId, eventId: e.eventId, template: e.template, recipient: e.to, subject: rendered.subject,
    text: rendered.text, html: rendered.html, status: smtp ? 'queued' : 'stored',
  }).onConflictDoNothing().returning({ id: emails.id });
  if (!row) return null;
  if (smtp) {
    // Queued once the row is committed, so the mailer always finds it; a crash before the add leaves
    // the row `queued`, and jobs/recovery.ts re-adds it.
    afterCommit(() => enqueueEmail(ctx, row.id, e.template));
  } else {
    ctx.log.info({ emailId: row.id, template: e.template, recipient: maskEmail(e.to) }, 'SMTP not configured: e-mail stored, not sent');
  }
  return row.id;
}

export const emailJobId = (emailId: number) => `email-${emailId}`;

export function enqueueEmail(ctx: Ctx, emailId: number, template: string) {
  return ctx.queues.add(Queues.email, template, { emailId } satisfies EmailJob, {
    jobId: emailJobId(emailId), attempts: ctx.config.EMAIL_MAX_ATTEMPTS, backoff: { type: 'exponential', delay: ctx.config.EMAIL_BACKOFF_MS },
  });
}

let transport: Transporter | null = null;
let transportUrl: string | null = null;
function transporter(url: string): Transporter {
  if (!transport || transportUrl !== url) {
    transport = nodemailer.createTransport(url);
    transportUrl = url;
  }
  return transport;
}

/** The e-mail job: sends a queued row, records `sent` or (after the last attempt) `failed`. */
export async function sendEmailJob(ctx: Ctx, job: EmailJob, attempt: number, maxAttempts: number): Promise<void> {
  const [row] = await ctx.db.select().from(emails).where(eq(emails.id, job.emailId));
  if (!row) throw new UnrecoverableError('e-mail row not found');
  if (row.status === 'sent') return;
  const url = ctx.config.SMTP_URL;
  if (!url) throw new UnrecoverableError('SMTP not configured');
  try {
    const info = await transporter(url).sendMail({ from: ctx.config.MAIL_FROM, to: row.recipient, subject: row.subject, text: row.text, html: row.html });
    await ctx.db.transaction(async (tx) => {
      await tx.update(emails).set({ status: 'sent', attempts: sql`${emails.attempts} + 1`, sentAt: new Date(), messageId: info.messageId ?? null, error: null })
        .where(eq(emails.id, row.id));
      await ctx.outbox.enqueue(tx, 'notifications.email.sent', { emailId: row.id, template: row.template, delivered: true }, systemMeta(null, row.orgId));
    });
    ctx.log.info({ emailId: row.id, template: row.template, recipient: maskEmail(row.recipient) }, 'e-mail sent');
  } catch (err) {
    const last = attempt >= maxAttempts;
    const message = (err as Error).message.slice(0, 500);
    await ctx.db.transaction(async (tx) => {
      await tx.update(emails).set({ status: last ? 'failed' : 'queued', attempts: sql`${emails.attempts} + 1`, error: message }).where(eq(emails.id, row.id));
      if (last) await ctx.outbox.enqueue(tx, 'notifications.email.sent', { emailId: row.id, template: row.template, delivered: false }, systemMeta(null, row.orgId));
    });
    throw err;
  }
}

export const emailView = (r: typeof emails.$inferSelect) => ({
  id: r.id, template: r.template, recipient: r.recipient, subject: r.subject, status: r.status,
  attempts: r.attempts, error: r.error, sent_at: r.sentAt?.toISOString() ?? null, created_at: r.createdAt.toISOString(),
});
