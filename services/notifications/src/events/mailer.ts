import { defineHandler } from '@aos/bus';
import { eq } from 'drizzle-orm';
import { orgs, users } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { jsonWithoutNul } from '../domain/sanitize.js';
import { queueEmail } from '../domain/email.js';
import { formatAmount } from '../domain/email-templates.js';
import type { Ctx } from '../service.js';

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
        let to = d.email;
        if (!to && d.userId) to = (await tx.select().from(users).where(eq(users.userId, d.userId)))[0]?.email ?? null;
        if (!to) return;
        await queueEmail(tx, ctx, afterCommit, { template: 'payment_failed', to, vars: { amount: formatAmount(d.amountCents, d.currency), reason: d.reason }, orgId: event.orgId, eventId: event.id });
        break;
      }
    }
  },
});
