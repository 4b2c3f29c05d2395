import { defineHandler } from '@aos/bus';
import type { EventType } from '@aos/contracts';
import { and, eq } from 'drizzle-orm';
import { webhookDeliveries, webhooks } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { metadataOf } from '../domain/activity.js';
import { jsonWithoutNul } from '../domain/sanitize.js';
import { matchesEvent } from '../domain/webhooks.js';
import type { Ctx } from '../service.js';
import { enqueueDelivery } from '../jobs/webhook-delivery.js';

/** Fans each org event out to the org's active webhooks: one delivery row + one job per (webhook, event). */
export const webhookFanout = (ctx: Ctx) => defineHandler<EventType, typeof schema>({
  name: 'webhook-fanout',
  events: 'all',
  concurrency: 8,
  async handle(event, tx, { afterCommit }) {
    if (!event.orgId) return;
    const hooks = await tx.select({ id: webhooks.id, events: webhooks.events }).from(webhooks)
      .where(and(eq(webhooks.orgId, event.orgId), eq(webhooks.active, true)));
    const matching = hooks.filter((h) => matchesEvent(h.events, event.type));
    if (matching.length === 0) return;
    const { data } = metadataOf(event, event.actor.type);
    const payload = { id: event.id, type: event.type, occurred_at: event.occurredAt, org_id: event.orgId, actor: jsonWithoutNul(event.actor), data };
    for (const hook of matching) {
      const [row] = await tx.insert(webhookDeliveries).values({
        orgId: event.orgId, webhookId: hook.id, eventId: event.id, eventType: event.type, payload,
      }).onConflictDoNothing().returning({ id: webhookDeliveries.id });
      if (!row) continue;
      // Queued once the delivery row is committed; the job id makes a redelivered event's add a no-op.
      // A crash between commit and this add leaves the row pending: jobs/recovery.ts re-adds it.
      afterCommit(() => enqueueDelivery(ctx, { webhookId: hook.id, eventId: event.id, eventType: event.type, redeliveries: 0 }));
    }
  },
});
