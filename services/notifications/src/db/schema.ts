import { sql } from 'drizzle-orm';
import { bigint, bigserial, boolean, primaryKey, index, integer, jsonb, pgTable, serial, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** In-app notifications. `user_id` null = visible to every member of the org. */
export const notifications = pgTable('notifications', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  orgId: text('org_id').notNull(),
  userId: text('user_id'),
  type: text('type').notNull().default('info'),
  kind: text('kind').notNull().default('manual'),
  title: text('title').notNull(),
  message: text('message').notNull(),
  source: text('source'),
  link: text('link'),
  read: boolean('read').notNull().default(false),
  readAt: ts('read_at'),
  eventId: uuid('event_id'),
  /** `Idempotency-Key` of the POST that created it: a retried request returns this row. */
  idempotencyKey: text('idempotency_key'),
  createdAt: ts('created_at').notNull().defaultNow(),
}, (t) => [
  uniqueIndex('notifications_idempotency_uq').on(t.orgId, t.idempotencyKey).where(sql`${t.idempotencyKey} IS NOT NULL`),
  index('notifications_org_user_idx').on(t.orgId, t.userId, t.createdAt.desc(), t.id.desc()),
  index('notifications_unread_idx').on(t.orgId, t.userId).where(sql`NOT ${t.read}`),
  // One notification per (event, recipient), whatever the number of deliveries.
  uniqueIndex('notifications_event_recipient_uq').on(t.eventId, sql`coalesce(${t.userId}, '')`, t.orgId),
]);

/** Per-member read/dismiss state of org-wide notifications (`user_id` null). */
export const notificationReceipts = pgTable('notification_receipts', {
  notificationId: bigint('notification_id', { mode: 'number' }).notNull().references(() => notifications.id, { onDelete: 'cascade' }),
  userId: text('user_id').notNull(),
  readAt: ts('read_at'),
  dismissedAt: ts('dismissed_at'),
}, (t) => [primaryKey({ columns: [t.notificationId, t.userId] })]);

/** Projection of identity's users: maps assignee names and e-mails to accounts. */
export const users = pgTable('users', {
  userId: text('user_id').primaryKey(),
  username: text('username').notNull(),
  email: text('email').notNull(),
  personalOrgId: text('personal_org_id'),
  platformRoles: text('platform_roles').array().notNull().default(sql`'{}'::text[]`),
  createdAt: ts('created_at').notNull().defaultNow(),
}, (t) => [
  index('users_username_idx').on(sql`lower(${t.username})`),
  index('users_email_idx').on(sql`lower(${t.email})`),
]);

/**
 * Users identity deleted. Each event type has its own consumer, so a replay may bring a
 * user's registration after their deletion: this keeps a deleted user (and e-mail) out.
 */
export const deletedUsers = pgTable('deleted_users', {
  userId: text('user_id').primaryKey(),
  deletedAt: ts('deleted_at').notNull(),
});

/**
 * Projection of identity's memberships: who owns and administers an org (recipients of
 * org-level e-mails). Events of different types may arrive out of order: a row changes only
 * for a newer event (`changed_at` = its occurredAt), and a removal leaves role `removed`.
 */
export const orgMembers = pgTable('org_members', {
  orgId: text('org_id').notNull(),
  userId: text('user_id').notNull(),
  role: text('role').notNull(),
  changedAt: ts('changed_at').notNull(),
}, (t) => [primaryKey({ columns: [t.orgId, t.userId] }), index('org_members_user_idx').on(t.userId)]);

/** Projection of identity's organizations (names for e-mails). */
export const orgs = pgTable('orgs', {
  orgId: text('org_id').primaryKey(),
  name: text('name').notNull(),
  slug: text('slug').notNull(),
});

/** One row per event (event_id unique) plus manual records. `org_id` null = platform-level event. */
export const activityLog = pgTable('activity_log', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  orgId: text('org_id'),
  eventId: uuid('event_id'),
  actorType: text('actor_type').notNull(),
  actorId: text('actor_id'),
  action: text('action').notNull(),
  entityType: text('entity_type'),
  entityId: text('entity_id'),
  metadata: jsonb('metadata').notNull().default({}),
  idempotencyKey: text('idempotency_key'),
  createdAt: ts('created_at').notNull().defaultNow(),
}, (t) => [
  uniqueIndex('activity_log_event_uq').on(t.eventId),
  uniqueIndex('activity_log_idempotency_uq').on(t.orgId, t.idempotencyKey).where(sql`${t.idempotencyKey} IS NOT NULL`),
  index('activity_log_org_created_idx').on(t.orgId, t.createdAt.desc(), t.id.desc()),
  index('activity_log_org_action_idx').on(t.orgId, t.action, t.createdAt.desc()),
  index('activity_log_org_actor_idx').on(t.orgId, t.actorType, t.actorId),
]);

export const webhooks = pgTable('webhooks', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  url: text('url').notNull(),
  description: text('description'),
  events: text('events').array().notNull(),
  secret: text('secret').notNull(),
  active: boolean('active').notNull().default(true),
  consecutiveFailures: integer('consecutive_failures').notNull().default(0),
  disabledAt: ts('disabled_at'),
  disabledReason: text('disabled_reason'),
  createdBy: text('created_by'),
  idempotencyKey: text('idempotency_key'),
  createdAt: ts('created_at').notNull().defaultNow(),
  updatedAt: ts('updated_at').notNull().defaultNow(),
}, (t) => [
  index('webhooks_org_idx').on(t.orgId, t.id),
  uniqueIndex('webhooks_idempotency_uq').on(t.orgId, t.idempotencyKey).where(sql`${t.idempotencyKey} IS NOT NULL`),
]);

export const webhookDeliveries = pgTable('webhook_deliveries', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  orgId: text('org_id').notNull(),
  webhookId: integer('webhook_id').notNull().references(() => webhooks.id, { onDelete: 'cascade' }),
  eventId: uuid('event_id').notNull(),
  eventType: text('event_type').notNull(),
  payload: jsonb('payload').notNull(),
  status: text('status').notNull().default('pending'),
  attempts: integer('attempts').notNull().default(0),
  redeliveries: integer('redeliveries').notNull().default(0),
  responseStatus: integer('response_status'),
  error: text('error'),
  durationMs: integer('duration_ms'),
  lastAttemptAt: ts('last_attempt_at'),
  deliveredAt: ts('delivered_at'),
  createdAt: ts('created_at').notNull().defaultNow(),
}, (t) => [
  uniqueIndex('webhook_deliveries_webhook_event_uq').on(t.webhookId, t.eventId),
  index('webhook_deliveries_org_webhook_idx').on(t.orgId, t.webhookId, t.id.desc()),
]);

/** Every e-mail, sent or not: `stored` (no SMTP configured), `queued`, `sent`, `failed`. */
export const emails = pgTable('emails', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  orgId: text('org_id'),
  eventId: uuid('event_id'),
  template: text('template').notNull(),
  recipient: text('recipient').notNull(),
  subject: text('subject').notNull(),
  text: text('text').notNull(),
  html: text('html').notNull(),
  status: text('status').notNull(),
  attempts: integer('attempts').notNull().default(0),
  error: text('error'),
  messageId: text('message_id'),
  sentAt: ts('sent_at'),
  createdAt: ts('created_at').notNull().defaultNow(),
}, (t) => [
  uniqueIndex('emails_event_template_recipient_uq').on(t.eventId, t.template, t.recipient),
  index('emails_status_idx').on(t.status, t.id),
]);
