import { systemMeta } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { UnrecoverableError } from '@aos/queue';
import { and, eq, sql } from 'drizzle-orm';
import { webhookDeliveries, webhooks } from '../db/schema.js';
import { deliver, sign, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../domain/webhooks.js';
import { splitList } from '@aos/core';
import type { Ctx } from '../service.js';
import { createNotification } from '../domain/notifications.js';
import { openSecret, secretKey } from '../domain/secret-box.js';

export interface WebhookJob { webhookId: number; eventId: string }

/** One job per (webhook, event), and one more per manual redelivery: the ids make adds idempotent. */
export const deliveryJobId = (webhookId: number, eventId: string, redeliveries: number) =>
  redeliveries === 0 ? `${webhookId}-${eventId}` : `${webhookId}-${eventId}-r${redeliveries}`;

export function enqueueDelivery(ctx: Ctx, d: { webhookId: number; eventId: string; eventType: string; redeliveries: number }) {
  return ctx.queues.add(Queues.webhookDelivery, d.eventType, { webhookId: d.webhookId, eventId: d.eventId } satisfies WebhookJob, {
    jobId: deliveryJobId(d.webhookId, d.eventId, d.redeliveries), attempts: ctx.config.WEBHOOK_MAX_ATTEMPTS,
    backoff: { type: 'exponential', delay: ctx.config.WEBHOOK_BACKOFF_MS },
  });
}

export const targetPolicy = (ctx: Ctx) => ({
  allowPrivate: ctx.config.WEBHOOK_ALLOW_PRIVATE_TARGETS,
  allowedHosts: splitList(ctx.config.WEBHOOK_ALLOWED_HOSTS),
  dnsServers: splitList(ctx.config.WEBHOOK_DNS_SERVERS),
});

/**
 * One delivery attempt. Success resets the webhook's failure streak; the last failed
 * attempt (or a refused target) marks the delivery failed and counts towards auto-disable.
 */
export async function deliverWebhookJob(ctx: Ctx, job: WebhookJob, attempt: number, maxAttempts: number): Promise<void> {
  const [row] = await ctx.db.select({ d: webhookDeliveries, w: webhooks }).from(webhookDeliveries)
    .innerJoin(webhooks, eq(webhooks.id, webhookDeliveries.webhookId))
    .where(and(eq(webhookDeliveries.webhookId, job.webhookId), eq(webhookDeliveries.eventId, job.eventId)));
  // Queued after the fan-out committed: a missing row was deleted since (by retention, or with its webhook).
  if (!row) return;
  const { d, w } = row;
  if (d.status === 'succeeded') return;
  if (!w.active) {
    await ctx.db.update(webhookDeliveries).set({ status: 'failed', error: 'webhook disabled' }).where(eq(webhookDeliveries.id, d.id));
    return;
  }
  let secret: string;
  try {
    secret = openSecret(w.secret, secretKey(ctx.config.WEBHOOK_SECRET_KEY));
  } catch (err) {
    // Misconfiguration (key missing or changed): retrying cannot help; fix the key and redeliver.
    await ctx.db.update(webhookDeliveries).set({ status: 'failed', error: (err as Error).message.slice(0, 500) }).where(eq(webhookDeliveries.id, d.id));
    throw new UnrecoverableError((err as Error).message);
  }
  const body = JSON.stringify(d.payload);
  const timestamp = Math.floor(Date.now() / 1000);
  const result = await deliver(w.url, body, {
    [SIGNATURE_HEADER]: sign(secret, timestamp, body),
    [TIMESTAMP_HEADER]: String(timestamp),
    'x-aos-event': d.eventType,
    'x-aos-event-id': d.eventId,
    'x-aos-delivery': String(d.id),
  }, targetPolicy(ctx), ctx.config.WEBHOOK_TIMEOUT_MS);

  const final = !result.ok && (result.permanent || attempt >= maxAttempts);
  await ctx.db.transaction(async (tx) => {
    await tx.update(webhookDeliveries).set({
      status: result.ok ? 'succeeded' : final ? 'failed' : 'retrying',
      attempts: sql`${webhookDeliveries.attempts} + 1`, responseStatus: result.status, error: result.error?.slice(0, 500) ?? null,
      durationMs: result.durationMs, lastAttemptAt: new Date(), deliveredAt: result.ok ? new Date() : null,
    }).where(eq(webhookDeliveries.id, d.id));
    if (result.ok) {
      await tx.update(webhooks).set({ consecutiveFailures: 0 }).where(eq(webhooks.id, w.id));
    } else if (final) {
      const [updated] = await tx.update(webhooks).set({ consecutiveFailures: sql`${webhooks.consecutiveFailures} + 1` })
        .where(eq(webhooks.id, w.id)).returning({ failures: webhooks.consecutiveFailures, active: webhooks.active });
      if (updated && updated.active && updated.failures >= ctx.config.WEBHOOK_DISABLE_AFTER) {
        await tx.update(webhooks).set({ active: false, disabledAt: new Date(), disabledReason: `${updated.failures} consecutive failed deliveries`, updatedAt: new Date() })
          .where(eq(webhooks.id, w.id));
        // Only the origin: a path or query may hold the receiver's token, and events reach every member (activity log).
        await ctx.outbox.enqueue(tx, 'notifications.webhook.disabled', { webhookId: w.id, url: new URL(w.url).origin, consecutiveFailures: updated.failures }, systemMeta(null, w.orgId));
        await createNotification(tx, ctx.outbox, {
          orgId: w.orgId, userId: w.createdBy, type: 'warning', kind: 'webhook_disabled', title: 'Webhook disabled',
          message: `Webhook #${w.id} was disabled after ${updated.failures} consecutive failed deliveries. Fix the receiver and re-enable it.`,
          link: `/webhooks/${w.id}`, source: 'notifications.webhook.disabled',
        });
      }
    }
  });
  if (result.ok) return;
  if (result.permanent) throw new UnrecoverableError(result.error ?? 'target refused');
  throw new Error(result.error ?? 'delivery failed');
}
