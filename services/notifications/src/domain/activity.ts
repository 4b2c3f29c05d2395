import type { EventEnvelope } from '@aos/contracts';
import { jsonWithoutNul, withoutNul } from './sanitize.js';

export type ActorType = 'agent' | 'system' | 'user';

/** The reference knows three actor types; API keys act for a user, services are the system. */
export function actorOf(event: EventEnvelope): { actorType: ActorType; actorId: string | null; via: string } {
  const a = event.actor;
  if (a.type === 'user' || a.type === 'agent') return { actorType: a.type, actorId: a.id, via: a.type };
  if (a.type === 'api_key') return { actorType: 'user', actorId: a.id, via: 'api_key' };
  return { actorType: 'system', actorId: a.id, via: a.type };
}

const ENTITY_ID_KEYS: Record<string, string> = {
  task: 'taskId', product: 'productId', agent: 'agentId', run: 'runId', user: 'userId', org: 'orgId',
  member: 'userId', invite: 'inviteId', team: 'teamId', team_member: 'userId', api_key: 'apiKeyId',
  session: 'jti', backup: 'backupId', subscription: 'subscriptionId', payment: 'stripeObjectId',
  notification: 'notificationId', webhook: 'webhookId', email: 'emailId', credential: 'key',
};

/** `tasks.task.created` → entity `task`, id `data.taskId`; falls back to the first `*Id` field. */
export function entityOf(event: EventEnvelope): { entityType: string | null; entityId: string | null } {
  const entityType = event.type.split('.')[1] ?? null;
  const data = (event.data ?? {}) as Record<string, unknown>;
  const key = entityType ? ENTITY_ID_KEYS[entityType] : undefined;
  let value = key ? data[key] : undefined;
  if (value === undefined || value === null) {
    const k = Object.keys(data).find((name) => /Id$/.test(name) && (typeof data[name] === 'string' || typeof data[name] === 'number'));
    value = k ? data[k] : undefined;
  }
  return { entityType, entityId: value === undefined || value === null ? null : withoutNul(String(value)).slice(0, 200) };
}

/** Payload fields that must not be copied into the activity log (one-time links carry tokens). */
const SECRET_FIELDS = new Set(['resetUrl', 'acceptUrl', 'token', 'secret', 'password']);

export function metadataOf(event: EventEnvelope, via: string): Record<string, unknown> {
  const data = jsonWithoutNul({ ...((event.data ?? {}) as Record<string, unknown>) });
  for (const k of Object.keys(data)) if (SECRET_FIELDS.has(k)) data[k] = '[redacted]';
  return { data, source: withoutNul(event.source), actor_kind: via, tenant_id: event.tenantId, occurred_at: event.occurredAt };
}
