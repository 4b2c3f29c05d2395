import { sql } from 'drizzle-orm';
import { bigint, boolean, index, integer, jsonb, pgTable, serial, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';

/** Users as identity announces them: who an assignee name or an invite e-mail refers to. */
export const users = pgTable('users', {
  userId: text('user_id').primaryKey(),
  username: text('username').notNull(),
  email: text('email').notNull(),
  personalOrgId: text('personal_org_id'),
  platformRoles: text('platform_roles').array().notNull().default(sql`'{}'::text[]`),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('users_username_idx').on(t.username), index('users_email_idx').on(t.email)]);

/** `user_id` null: for every member of `org_id`. */
export const notifications = pgTable('notifications', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  userId: text('user_id'),
  type: text('type').notNull().default('info'),
  title: text('title').notNull(),
  message: text('message').notNull(),
  source: text('source'),
  link: text('link'),
  eventId: uuid('event_id'),
  readAt: timestamp('read_at', { withTimezone: true }),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  index('notifications_user_idx').on(t.userId, t.id),
  index('notifications_org_idx').on(t.orgId, t.id),
  uniqueIndex('notifications_event_recipient_key').on(t.eventId, sql`coalesce(${t.userId}, '')`).where(sql`${t.eventId} IS NOT NULL`),
]);

export const activityLog = pgTable('activity_log', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  eventId: uuid('event_id').unique(),
  orgId: text('org_id'),
  actorType: text('actor_type').notNull(),
  actorId: text('actor_id'),
  action: text('action').notNull(),
  entityType: text('entity_type'),
  entityId: text('entity_id'),
  metadata: jsonb('metadata').notNull().default({}),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('activity_org_idx').on(t.orgId, t.id), index('activity_org_action_idx').on(t.orgId, t.action, t.createdAt)]);

export const webhooks = pgTable('webhooks', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  url: text('url').notNull(),
  description: text('description'),
  eventTypes: text('event_types').array().notNull(),
  secret: text('secret').notNull(),
  isActive: boolean('is_active').notNull().default(true),
  consecutiveFailures: integer('consecutive_failures').notNull().default(0),
  disabledAt: timestamp('disabled_at', { withTimezone: true }),
  createdBy: text('created_by'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('webhooks_org_idx').on(t.orgId)]);

export const webhookDeliveries = pgTable('webhook_deliveries', {
  id: serial('id').primaryKey(),
  webhookId: integer('webhook_id').notNull().references(() => webhooks.id, { onDelete: 'cascade' }),
  orgId: text('org_id').notNull(),
  eventId: uuid('event_id').notNull(),
  eventType: text('event_type').notNull(),
  payload: jsonb('payload').notNull(),
  status: text('status').notNull().default('pending'),
  attempts: integer('attempts').notNull().default(0),
  responseStatus: integer('response_status'),
  error: text('error'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  deliveredAt: timestamp('delivered_at', { withTimezone: true }),
}, (t) => [uniqueIndex('webhook_deliveries_once').on(t.webhookId, t.eventId), index('webhook_deliveries_webhook_idx').on(t.webhookId, t.id)]);

export const emails = pgTable('emails', {
  id: serial('id').primaryKey(),
  orgId: text('org_id'),
  eventId: uuid('event_id'),
  template: text('template').notNull(),
  to: text('to_address').notNull(),
  subject: text('subject').notNull(),
  text: text('text_body').notNull(),
  html: text('html_body').notNull(),
  status: text('status').notNull(),
  error: text('error'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  sentAt: timestamp('sent_at', { withTimezone: true }),
}, (t) => [uniqueIndex('emails_event_template_key').on(t.eventId, t.template, t.to).where(sql`${t.eventId} IS NOT NULL`)]);
