import { systemMeta, type Outbox } from '@aos/bus';
import type { Tx } from '@aos/db';
import { sql } from 'drizzle-orm';
import { notifications } from '../db/schema.js';
import type * as schema from '../db/schema.js';

export type STx = Tx<typeof schema>;
export const NOTIFY_CHANNEL = 'aos_notifications';

export type NotificationType = 'info' | 'warning' | 'error' | 'success';

export interface NewNotification {
  orgId: string;
  userId: string | null;
  type: NotificationType;
  kind: string;
  title: string;
  message: string;
  source?: string | null;
  link?: string | null;
  eventId?: string | null;
  idempotencyKey?: string | null;
}

/**
 * Inserts a notification (once per event and recipient), publishes
 * `notifications.notification.created` and NOTIFYs the live streams — Postgres delivers
 * the NOTIFY only when the transaction commits, so a stream never shows a rolled-back row.
 */
export async function createNotification(tx: STx, outbox: Outbox, n: NewNotification, tenantId: string | null = null) {
  const [row] = await tx.insert(notifications).values({
    orgId: n.orgId, userId: n.userId, type: n.type, kind: n.kind, title: n.title.slice(0, 300),
    message: n.message.slice(0, 5_000), source: n.source ?? null, link: n.link ?? null, eventId: n.eventId ?? null,
    idempotencyKey: n.idempotencyKey ?? null,
  }).onConflictDoNothing().returning();
  if (!row) return null;
  await tx.execute(sql`SELECT pg_notify(${NOTIFY_CHANNEL}, ${JSON.stringify({ id: row.id, orgId: row.orgId, userId: row.userId })})`);
  await outbox.enqueue(tx, 'notifications.notification.created',
    { notificationId: row.id, userId: row.userId, type: row.type, title: row.title }, systemMeta(tenantId, row.orgId));
  return row;
}

export const notificationView = (r: typeof notifications.$inferSelect) => ({
  id: r.id, user_id: r.userId, type: r.type, kind: r.kind, title: r.title, message: r.message, source: r.source,
  link: r.link, read: r.read, read_at: r.readAt?.toISOString() ?? null, event_id: r.eventId, created_at: r.createdAt.toISOString(),
});
