import { defineHandler } from '@aos/bus';
import { and, eq, inArray } from 'drizzle-orm';
import { orgMembers, orgs, users } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { jsonWithoutNul } from '../domain/sanitize.js';
import { queueEmail } from '../domain/email.js';
import { formatAmount } from '../domain/email-templates.js';
import type { STx } from '../domain/notifications.js';
import type { Ctx } from '../service.js';

/** The billing e-mail of the event, else its user, else the org's owners and admins (e.g. a declined auto top-up). */
async function paymentFailureRecipients(tx: STx, email: string | null, userId: string | null, orgId: string | null): Promise<string[]> {
  if (email) return [email];
  if (userId) {
    const [u] = await tx.select({ email: users.email }).from(users).where(eq(users.userId, userId));
    if (u) return [u.email];
  }
  if (!orgId) return [];
  const admins = await tx.select({ email: users.email }).from(orgMembers).innerJoin(users, eq(users.userId, orgMembers.userId))
    .where(and(eq(orgMembers.orgId, orgId), inArray(orgMembers.role, ['owner', 'admin']))).orderBy(users.email);
  return admins.map((a) => a.email);
}

type Handled = 'identity.password_reset.requested' | 'identity.invite.created' | 'billing.payment.failed';

/** Transactional e-mails: one per (event, template, recipient). */
export const mailer = (ctx: Ctx) => defineHandler<Handled, typeof schema>({
  name: 'mailer',
  events: ['identity.password_reset.requested', 'identity.invite.created', 'billing.payment.failed'],
  async handle(raw, tx, { afterCommit }) {
    const event = jsonWithoutNul(raw);
    switch (event.type) {
      case 'identity.password_reset.requested': {
        const d = event.data;
        await queueEmail(tx, ctx, afterCommit, { template: 'password_reset', to: d.email, vars: { resetUrl: d.resetUrl, expiresAt: d.expiresAt }, orgId: event.orgId, eventId: event.id });
        break;
      }
      case 'identity.invite.created': {
        const d = event.data;
        const [inviter] = d.invitedBy ? await tx.select().from(users).where(eq(users.userId, d.invitedBy)) : [];
        const [org] = await tx.select().from(orgs).where(eq(orgs.orgId, d.orgId));
        await queueEmail(tx, ctx, afterCommit, {
          template: 'invite', to: d.email, orgId: d.orgId, eventId: event.id,
          vars: { orgName: org?.name ?? 'an organization', role: d.role, acceptUrl: d.acceptUrl, expiresAt: d.expiresAt, inviter: inviter?.username ?? null },
        });
        break;
      }
      case 'billing.payment.failed': {
        const d = event.data;
        const recipients = await paymentFailureRecipients(tx, d.email, d.userId, event.orgId);
        if (recipients.length === 0) {
          ctx.log.warn({ eventId: event.id, orgId: event.orgId }, 'payment failure e-mail: no recipient known (no e-mail, user or org owner/admin)');
          return;
        }
        for (const to of recipients) {
          await queueEmail(tx, ctx, afterCommit, { template: 'payment_failed', to, vars: { amount: formatAmount(d.amountCents, d.currency), reason: d.reason }, orgId: event.orgId, eventId: event.id });
        }
        break;
      }
    }
  },
});
