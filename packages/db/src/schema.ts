import { sql } from 'drizzle-orm';
import { index, integer, jsonb, pgTable, primaryKey, text, timestamp, uuid } from 'drizzle-orm/pg-core';

/**
 * Transactional outbox: a service writes its domain change and the event in one
 * transaction; the relay publishes rows to JetStream and sets `published_at` after the ack.
 */
export const outbox = pgTable('aos_outbox', {
  id: uuid('id').primaryKey(),
  subject: text('subject').notNull(),
  type: text('type').notNull(),
  envelope: jsonb('envelope').notNull(),
  headers: jsonb('headers').$type<Record<string, string>>().notNull().default({}),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  publishedAt: timestamp('published_at', { withTimezone: true }),
  attempts: integer('attempts').notNull().default(0),
  lastError: text('last_error'),
}, (t) => [
  index('aos_outbox_pending_idx').on(t.createdAt).where(sql`${t.publishedAt} IS NULL`),
]);

/** Inbox: one row per (consumer, event) processed, written in the handler's transaction. */
export const inbox = pgTable('aos_inbox', {
  consumer: text('consumer').notNull(),
  eventId: uuid('event_id').notNull(),
  eventType: text('event_type').notNull(),
  processedAt: timestamp('processed_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [primaryKey({ columns: [t.consumer, t.eventId] })]);
