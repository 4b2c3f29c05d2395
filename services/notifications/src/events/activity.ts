import { defineHandler } from '@aos/bus';
import type { EventType } from '@aos/contracts';
import { activityLog } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { actorOf, entityOf, metadataOf } from '../domain/activity.js';
import { withoutNul } from '../domain/sanitize.js';

/** Every event becomes one activity row (event_id unique; the inbox already dedupes redeliveries). */
export const activityRecorder = (concurrency: number) => defineHandler<EventType, typeof schema>({
  name: 'activity-log',
  events: 'all',
  concurrency,
  async handle(event, tx) {
    const { actorType, actorId, via } = actorOf(event);
    const { entityType, entityId } = entityOf(event);
    const occurred = new Date(event.occurredAt);
    await tx.insert(activityLog).values({
      orgId: event.orgId, eventId: event.id, actorType, actorId: actorId === null ? null : withoutNul(actorId), action: event.type, entityType, entityId,
      metadata: metadataOf(event, via), createdAt: Number.isNaN(occurred.getTime()) ? new Date() : occurred,
    }).onConflictDoNothing();
  },
});
