import type { Tx } from '@aos/db';
import { eq, or, sql } from 'drizzle-orm';
import { emails, notifications, users } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { logEmail, templates, type Rendered } from './emails.js';
import type { Ctx } from '../service.js';
import { Queues } from '@aos/contracts';

export type NTx = Tx<typeof schema>;

export interface NewNotification {
  orgId: string;
  userId: string | null;
  type: 'info' | 'warning' | 'error' | 'success';
  title: string;
  message: string;
  source?: string | null;
  link?: string | null;
  eventId?: string | null;
}

/** Inserts a notification; a second one for the same (event, recipient) is ignored. */
export async function notify(tx: NTx, n: NewNotification) {
  const [row] = await tx.insert(notifications).values({ ...n, title: n.title.slice(0, 300), message: n.message.slice(0, 5_000) })
    .onConflictDoNothing().returning();
  return row ?? null;
}

/** The user an assignee or e-mail names, if identity has told us about them. */
export async function findUser(tx: NTx, ref: string | null | undefined) {
  if (!ref) return null;
  const [u] = await tx.select().from(users).where(or(eq(users.userId, ref), eq(users.username, ref), eq(sql`lower(${users.email})`, ref.toLowerCase()))).limit(1);
  return u ?? null;
}

/**
 * Records an e-mail and, with SMTP configured, queues its delivery (job id = e-mail id, so
 * a redelivered event never sends twice). Without SMTP it is stored, and logged without its body.
 */
export async function sendEmail(ctx: Ctx, tx: NTx, afterCommit: (fn: () => Promise<unknown>) => void, e: { orgId: string | null; eventId: string | null; to: string; template: string; rendered: Rendered }) {
  const status = ctx.config.SMTP_URL ? 'queued' : 'stored';
  const [row] = await tx.insert(emails).values({
    orgId: e.orgId, eventId: e.eventId, template: e.template, to: e.to, subject: e.rendered.subject, text: e.rendered.text, html: e.rendered.html, status,
  }).onConflictDoNothing().returning({ id: emails.id });
  if (!row) return;
  logEmail(ctx.log, e.template, e.to, status);
  // Queued once the row is committed, so the worker always finds it.
  if (ctx.config.SMTP_URL) afterCommit(() => ctx.queues.add(Queues.email, e.template, { emailId: row.id }, { jobId: `email-${row.id}`, attempts: 8 }));
}

export { templates };
