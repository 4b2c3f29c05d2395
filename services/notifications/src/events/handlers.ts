import { defineHandler, type EventHandler } from '@aos/bus';
import type { EventEnvelope, EventType } from '@aos/contracts';
import { Queues } from '@aos/contracts';
import { and, arrayContains, eq } from 'drizzle-orm';
import { activityLog, users, webhookDeliveries, webhooks } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { findUser, notify, sendEmail, templates } from '../domain/notify.js';
import type { Ctx } from '../service.js';

type S = typeof schema;

/** `tasks.task.created` → entity `task`, id from `data.taskId` (or the first `*Id` field). */
export function entityOf(event: EventEnvelope): { type: string | null; id: string | null } {
  const parts = event.type.split('.');
  const entity = parts.length >= 3 ? parts.slice(1, -1).join('.') : null;
  const data = (event.data ?? {}) as Record<string, unknown>;
  const camel = entity ? `${entity.replace(/[._](\w)/g, (_, c: string) => c.toUpperCase())}Id` : '';
  const key = camel && camel in data ? camel : Object.keys(data).find((k) => k.endsWith('Id') && data[k] != null);
  const id = key ? data[key] : null;
  return { type: entity, id: id == null ? null : String(id) };
}

function actorOf(event: EventEnvelope): { type: string; id: string | null } {
  switch (event.actor.type) {
    case 'user': return { type: 'user', id: event.actor.id };
    case 'api_key': return { type: 'user', id: event.actor.id ? `api_key:${event.actor.id}` : null };
    case 'agent': return { type: 'agent', id: event.actor.id };
    default: return { type: 'system', id: event.actor.id ?? event.source };
  }
}

/** Does a webhook subscribed to `patterns` want `type`? `*` all; `tasks.*` a prefix; else exact. */
export function matches(patterns: string[], type: string): boolean {
  return patterns.some((p) => p === '*' || p === type || (p.endsWith('.*') && type.startsWith(p.slice(0, -1))));
}

export const handlers = (ctx: Ctx): EventHandler<EventType, S>[] => [
  defineHandler<EventType, S>({
    name: 'activity-log',
    events: 'all',
    concurrency: ctx.config.ACTIVITY_CONCURRENCY,
    async handle(event, tx) {
      const actor = actorOf(event);
      const entity = entityOf(event);
      await tx.insert(activityLog).values({
        eventId: event.id, orgId: event.orgId, actorType: actor.type, actorId: actor.id, action: event.type,
        entityType: entity.type, entityId: entity.id, metadata: { ...(event.data as object), source: event.source },
        createdAt: new Date(event.occurredAt),
      }).onConflictDoNothing();
    },
  }),

  defineHandler<'identity.user.registered' | 'identity.user.deleted' | 'identity.user.updated', S>({
    name: 'users-projection',
    events: ['identity.user.registered', 'identity.user.deleted'],
    async handle(event, tx) {
      if (event.type === 'identity.user.registered') {
        const d = event.data;
        await tx.insert(users).values({ userId: d.userId, username: d.username, email: d.email, personalOrgId: d.personalOrgId, platformRoles: d.platformRoles })
          .onConflictDoUpdate({ target: users.userId, set: { username: d.username, email: d.email, platformRoles: d.platformRoles } });
      } else if (event.type === 'identity.user.deleted') {
        await tx.delete(users).where(eq(users.userId, event.data.userId));
      }
    },
  }),

  defineHandler<'tasks.task.created' | 'tasks.task.updated' | 'tasks.task.completed', S>({
    name: 'task-notifications',
    events: ['tasks.task.created', 'tasks.task.updated', 'tasks.task.completed'],
    async handle(event, tx) {
      if (!event.orgId) return;
      const d = event.data;
      if (event.type === 'tasks.task.completed') {
        const creator = await findUser(tx, d.createdBy);
        if (!creator) return;
        await notify(tx, { orgId: event.orgId, userId: creator.userId, type: 'success', title: `Task completed: ${d.title}`, message: `"${d.title}" is done${d.assignee ? ` (by ${d.assignee})` : ''}.`, source: 'tasks', link: `/tasks/${d.taskId}`, eventId: event.id });
        return;
      }
      const newlyAssigned = event.type === 'tasks.task.created' ? !!d.assignee : event.data.changes.includes('assignee') && !!d.assignee;
      if (!newlyAssigned) return;
      const assignee = await findUser(tx, d.assignee);
      if (!assignee) return;
      await notify(tx, { orgId: event.orgId, userId: assignee.userId, type: 'info', title: `Task assigned: ${d.title}`, message: `You were assigned "${d.title}" (${d.priority}).`, source: 'tasks', link: `/tasks/${d.taskId}`, eventId: event.id });
    },
  }),

  defineHandler<'identity.invite.created', S>({
    name: 'invite-notifications',
    events: ['identity.invite.created'],
    async handle(event, tx, { afterCommit }) {
      const d = event.data;
      const invitee = d.inviteeUserId ? await findUser(tx, d.inviteeUserId) : await findUser(tx, d.email);
      if (invitee) {
        await notify(tx, { orgId: invitee.personalOrgId ?? d.orgId, userId: invitee.userId, type: 'info', title: 'You have a new invitation', message: `You were invited to join ${d.teamId ? 'a team' : 'an organization'} as ${d.role}.`, source: 'identity', link: d.acceptUrl, eventId: event.id });
      }
      await sendEmail(ctx, tx, afterCommit, { orgId: d.orgId, eventId: event.id, to: d.email, template: 'invite', rendered: templates.invite({ role: d.role, acceptUrl: d.acceptUrl, expiresAt: d.expiresAt, team: !!d.teamId }) });
    },
  }),

  defineHandler<'identity.password_reset.requested', S>({
    name: 'password-reset-email',
    events: ['identity.password_reset.requested'],
    async handle(event, tx, { afterCommit }) {
      const d = event.data;
      const user = await findUser(tx, d.userId);
      await sendEmail(ctx, tx, afterCommit, { orgId: event.orgId, eventId: event.id, to: d.email, template: 'password_reset', rendered: templates.passwordReset({ username: user?.username ?? d.email, resetUrl: d.resetUrl, expiresAt: d.expiresAt }) });
    },
  }),

  defineHandler<'billing.payment.failed' | 'billing.balance.low', S>({
    name: 'billing-notifications',
    events: ['billing.payment.failed', 'billing.balance.low'],
    async handle(event, tx, { afterCommit }) {
      if (!event.orgId) return;
      if (event.type === 'billing.payment.failed') {
        const d = event.data;
        const amount = `${(d.amountCents / 100).toFixed(2)} ${d.currency.toUpperCase()}`;
        await notify(tx, { orgId: event.orgId, userId: d.userId, type: 'error', title: 'Payment failed', message: `A payment of ${amount} failed${d.reason ? `: ${d.reason}` : ''}.`, source: 'billing', link: '/billing', eventId: event.id });
        const to = d.email ?? (await findUser(tx, d.userId))?.email;
        if (to) await sendEmail(ctx, tx, afterCommit, { orgId: event.orgId, eventId: event.id, to, template: 'payment_failed', rendered: templates.paymentFailed({ amount, reason: d.reason }) });
      } else {
        const d = event.data;
        await notify(tx, { orgId: event.orgId, userId: d.userId, type: 'warning', title: `Low ${d.ledger} balance`, message: `Your ${d.ledger} balance (${d.balance}) is below ${d.threshold}.`, source: 'billing', link: '/billing', eventId: event.id });
      }
    },
  }),

  defineHandler<'backups.backup.failed', S>({
    name: 'backup-notifications',
    events: ['backups.backup.failed'],
    async handle(event, tx) {
      const admins = await tx.select().from(users).where(arrayContains(users.platformRoles, ['admin']));
      for (const admin of admins) {
        await notify(tx, { orgId: admin.personalOrgId ?? event.orgId ?? 'platform', userId: admin.userId, type: 'error', title: `Backup of ${event.data.database} failed`, message: event.data.error.slice(0, 1_000), source: 'backups', link: '/backups', eventId: event.id });
      }
    },
  }),

  defineHandler<'agents.agent.errored', S>({
    name: 'agent-notifications',
    events: ['agents.agent.errored'],
    async handle(event, tx) {
      if (!event.orgId) return;
      const d = event.data;
      await notify(tx, { orgId: event.orgId, userId: d.ownerUserId, type: 'error', title: `Agent ${d.name} failed`, message: d.error.slice(0, 1_000), source: 'agents-runtime', link: `/agents/${d.name}`, eventId: event.id });
    },
  }),

  defineHandler<EventType, S>({
    name: 'webhook-fanout',
    events: 'all',
    concurrency: 8,
    async handle(event, tx, { afterCommit }) {
      if (!event.orgId) return;
      const hooks = await tx.select().from(webhooks).where(and(eq(webhooks.orgId, event.orgId), eq(webhooks.isActive, true)));
      for (const hook of hooks.filter((h) => matches(h.eventTypes, event.type))) {
        const [delivery] = await tx.insert(webhookDeliveries).values({ webhookId: hook.id, orgId: event.orgId, eventId: event.id, eventType: event.type, payload: event })
          .onConflictDoNothing().returning({ id: webhookDeliveries.id });
        if (delivery) afterCommit(() => ctx.queues.add(Queues.webhookDelivery, event.type, { deliveryId: delivery.id }, webhookJobOptions(ctx, delivery.id)));
      }
    },
  }),
];

export const webhookJobOptions = (ctx: Ctx, deliveryId: number, suffix = '') => ({
  jobId: `wh-${deliveryId}${suffix}`,
  attempts: ctx.config.WEBHOOK_ATTEMPTS,
  backoff: { type: 'exponential' as const, delay: ctx.config.WEBHOOK_BACKOFF_MS },
});
