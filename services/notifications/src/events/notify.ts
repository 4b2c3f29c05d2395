import { defineHandler } from '@aos/bus';
import { arrayContains, eq, or, sql } from 'drizzle-orm';
import { users } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { jsonWithoutNul } from '../domain/sanitize.js';
import { formatAmount } from '../domain/email-templates.js';
import { createNotification, type NewNotification, type STx } from '../domain/notifications.js';
import type { Ctx } from '../service.js';

type Handled = 'tasks.task.created' | 'tasks.task.updated' | 'tasks.task.completed' | 'identity.invite.created'
  | 'billing.payment.failed' | 'billing.balance.low' | 'backups.backup.failed' | 'agents.agent.errored';

const HANDLED: Handled[] = ['tasks.task.created', 'tasks.task.updated', 'tasks.task.completed', 'identity.invite.created',
  'billing.payment.failed', 'billing.balance.low', 'backups.backup.failed', 'agents.agent.errored'];

/** A task's assignee or creator is a username or a user id; both resolve through the users projection. */
async function userByNameOrId(tx: STx, ref: string) {
  const [u] = await tx.select().from(users)
    .where(or(eq(users.userId, ref), sql`lower(${users.username}) = lower(${ref})`)).limit(1);
  return u ?? null;
}

/** Creates the in-app notifications of domain events, one per (event, recipient). */
export const notifier = (ctx: Ctx) => defineHandler<Handled, typeof schema>({
  name: 'notifier',
  events: HANDLED,
  async handle(raw, tx) {
    const event = jsonWithoutNul(raw);
    const out: Omit<NewNotification, 'eventId' | 'source'>[] = [];
    const org = event.orgId;
    switch (event.type) {
      case 'tasks.task.created':
      case 'tasks.task.updated': {
        const d = event.data;
        if (!org || !d.assignee) break;
        if (event.type === 'tasks.task.updated'
          && (!event.data.changes.some((c) => c === 'assignee' || c === 'assigned_to') || event.data.previousAssignee === d.assignee)) break;
        const user = await userByNameOrId(tx, d.assignee);
        if (!user || (event.actor.type === 'user' && event.actor.id === user.userId)) break;
        out.push({ orgId: org, userId: user.userId, type: 'info', kind: 'task_assigned', title: `Task assigned to you: ${d.title}`,
          message: `Task #${d.taskId} "${d.title}" (${d.priority}) is now assigned to you.`, link: `/tasks/${d.taskId}` });
        break;
      }
      case 'tasks.task.completed': {
        const d = event.data;
        if (!org || !d.createdBy) break;
        const user = await userByNameOrId(tx, d.createdBy);
        // Completing your own task needs no notification.
        if (!user || (event.actor.type === 'user' && event.actor.id === user.userId)) break;
        out.push({ orgId: org, userId: user.userId, type: 'success', kind: 'task_completed', title: `Task completed: ${d.title}`,
          message: `Task #${d.taskId} "${d.title}" you created was completed${d.resolution ? `: ${d.resolution}` : '.'}`, link: `/tasks/${d.taskId}` });
        break;
      }
      case 'identity.invite.created': {
        const d = event.data;
        const [invitee] = d.inviteeUserId
          ? await tx.select().from(users).where(eq(users.userId, d.inviteeUserId))
          : await tx.select().from(users).where(sql`lower(${users.email}) = lower(${d.email})`).limit(1);
        if (!invitee) break;
        // The invitee is not a member of the inviting org yet: the notification lives in their personal org.
        const target = invitee.personalOrgId ?? d.orgId;
        out.push({ orgId: target, userId: invitee.userId, type: 'info', kind: 'invite_received', title: 'You were invited to an organization',
          message: `You were invited to join an organization as ${d.role}. The invitation expires at ${d.expiresAt}.`, link: '/invites' });
        break;
      }
      case 'billing.payment.failed': {
        const d = event.data;
        if (!org) break;
        out.push({ orgId: org, userId: d.userId, type: 'error', kind: 'payment_failed', title: 'Payment failed',
          message: `A payment of ${formatAmount(d.amountCents, d.currency)} failed${d.reason ? `: ${d.reason}` : '.'}`, link: '/billing' });
        break;
      }
      case 'billing.balance.low': {
        const d = event.data;
        if (!org) break;
        const owed = d.ledger === 'credits' ? formatAmount(d.owed ?? 0, 'usd') : `${d.owed} tokens`;
        out.push(d.owed
          ? { orgId: org, userId: d.userId, type: 'error', kind: 'balance_low', title: `${d.ledger === 'tokens' ? 'Tokens' : 'Credits'} exhausted`,
            message: `Your ${d.ledger} balance is used up and ${owed} of usage is owed; it is settled from your next purchase or top-up.`, link: '/billing' }
          : { orgId: org, userId: d.userId, type: 'warning', kind: 'balance_low', title: `Low ${d.ledger} balance`,
            message: `Your ${d.ledger} balance is ${d.balance}, below the threshold of ${d.threshold}.`, link: '/billing' });
        break;
      }
      case 'backups.backup.failed': {
        const d = event.data;
        const message = `The backup of ${d.database} failed: ${d.error.slice(0, 500)}`;
        const admins = await tx.select().from(users).where(arrayContains(users.platformRoles, ['admin']));
        for (const a of admins) {
          if (a.personalOrgId) out.push({ orgId: a.personalOrgId, userId: a.userId, type: 'error', kind: 'backup_failed', title: 'Backup failed', message, link: '/backups' });
        }
        if (out.length === 0 && org) out.push({ orgId: org, userId: null, type: 'error', kind: 'backup_failed', title: 'Backup failed', message, link: '/backups' });
        break;
      }
      case 'agents.agent.errored': {
        const d = event.data;
        if (!org) break;
        out.push({ orgId: org, userId: d.ownerUserId, type: 'error', kind: 'agent_error', title: `Agent ${d.name} errored`,
          message: d.error.slice(0, 1_000), link: `/agents/${d.agentId}` });
        break;
      }
    }
    for (const n of out) await createNotification(tx, ctx.outbox, { ...n, eventId: event.id, source: event.type }, event.tenantId);
  },
});

