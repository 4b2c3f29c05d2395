import type { Static } from '@sinclair/typebox';
import { agentsEvents } from './agents.js';
import { backupsEvents } from './backups.js';
import { billingEvents } from './billing.js';
import type { Actor } from './define.js';
import { identityEvents } from './identity.js';
import { notificationsEvents } from './notifications.js';
import { platformEvents } from './platform.js';
import { tasksEvents } from './tasks.js';

export * from './define.js';

/**
 * The event catalog: every event type, its version and payload schema. Publishers and
 * consumers both import from here, so the two can never disagree.
 */
export const EventCatalog = {
  ...identityEvents,
  ...tasksEvents,
  ...agentsEvents,
  ...billingEvents,
  ...notificationsEvents,
  ...backupsEvents,
  ...platformEvents,
};

export type EventType = keyof typeof EventCatalog;
export type EventData<T extends EventType> = Static<(typeof EventCatalog)[T]['schema']>;

export interface EventEnvelope<T extends EventType = EventType> {
  id: string;
  type: T;
  version: number;
  source: string;
  occurredAt: string;
  tenantId: string | null;
  orgId: string | null;
  actor: Actor;
  data: EventData<T>;
}

/** An envelope of one of `T`'s types, narrowable by `event.type`. */
export type EventOf<T extends EventType> = T extends EventType ? EventEnvelope<T> : never;

export function isEventType(value: string): value is EventType {
  return Object.hasOwn(EventCatalog, value);
}

/** JetStream names. Subjects are `<root>.<event type>`; the root is `aos` outside tests. */
export const StreamDefaults = {
  subjectRoot: 'aos',
  stream: 'AOS_EVENTS',
  deadLetterStream: 'AOS_DLQ',
} as const;
