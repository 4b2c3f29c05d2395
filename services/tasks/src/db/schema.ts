import { sql } from 'drizzle-orm';
import {
  type AnyPgColumn, bigint, customType, date, index, integer, jsonb, pgTable, primaryKey, serial, text, timestamp, uniqueIndex, uuid,
} from 'drizzle-orm/pg-core';

const tsvector = customType<{ data: string }>({ dataType: () => 'tsvector' });

export const products = pgTable('products', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  name: text('name').notNull(),
  slug: text('slug').notNull(),
  tagline: text('tagline'),
  description: text('description'),
  status: text('status').notNull().default('building'),
  domain: text('domain'),
  brandColor: text('brand_color'),
  accentColor: text('accent_color'),
  logoUrl: text('logo_url'),
  createdBy: text('created_by'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [uniqueIndex('products_org_slug_key').on(t.orgId, t.slug)]);

export const tasks = pgTable('tasks', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  title: text('title').notNull(),
  /** Lower-cased, whitespace-collapsed title: the de-duplication key. */
  titleKey: text('title_key').notNull(),
  description: text('description'),
  status: text('status').notNull().default('todo'),
  priority: text('priority').notNull().default('P2'),
  type: text('type').notNull().default('feature'),
  assignee: text('assignee'),
  productId: integer('product_id').references(() => products.id, { onDelete: 'set null' }),
  category: text('category'),
  tags: text('tags'),
  estimatedMinutes: integer('estimated_minutes'),
  dueDate: date('due_date'),
  parentTaskId: integer('parent_task_id').references((): AnyPgColumn => tasks.id, { onDelete: 'set null' }),
  derivationRuleId: text('derivation_rule_id'),
  resolution: text('resolution'),
  maxDurationSeconds: integer('max_duration_seconds'),
  createdBy: text('created_by'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  completedAt: timestamp('completed_at', { withTimezone: true }),
  search: tsvector('search').generatedAlwaysAs(sql`to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(description, ''))`),
}, (t) => [
  index('tasks_org_status_idx').on(t.orgId, t.status, t.priority, t.id),
  index('tasks_org_assignee_idx').on(t.orgId, t.assignee),
  index('tasks_org_product_idx').on(t.orgId, t.productId),
  index('tasks_parent_idx').on(t.parentTaskId),
  index('tasks_search_idx').using('gin', t.search),
  // An open task's title is unique per product (or per org without product).
  uniqueIndex('tasks_open_title_key').on(t.orgId, sql`coalesce(${t.productId}, 0)`, t.titleKey)
    .where(sql`${t.status} NOT IN ('done', 'cancelled')`),
  // One derived child per (parent, rule), whatever the redeliveries.
  uniqueIndex('tasks_derivation_key').on(t.parentTaskId, t.derivationRuleId).where(sql`${t.derivationRuleId} IS NOT NULL`),
]);

export const taskDependencies = pgTable('task_dependencies', {
  orgId: text('org_id').notNull(),
  taskId: integer('task_id').notNull().references(() => tasks.id, { onDelete: 'cascade' }),
  blockedById: integer('blocked_by_id').notNull().references(() => tasks.id, { onDelete: 'cascade' }),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [primaryKey({ columns: [t.taskId, t.blockedById] }), index('task_dependencies_blocker_idx').on(t.blockedById)]);

export const changelog = pgTable('changelog', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  taskId: integer('task_id').notNull(),
  /** The completion event: one entry per completion, whatever the redeliveries. */
  eventId: uuid('event_id').notNull().unique(),
  title: text('title').notNull(),
  agent: text('agent'),
  productSlug: text('product_slug'),
  area: text('area').notNull(),
  summary: text('summary').notNull(),
  completedAt: timestamp('completed_at', { withTimezone: true }).notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('changelog_org_idx').on(t.orgId, t.completedAt, t.id)]);

export const queueJobs = pgTable('queue_jobs', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  orgId: text('org_id').notNull(),
  queueName: text('queue_name').notNull(),
  taskType: text('task_type').notNull(),
  payload: jsonb('payload').notNull().default({}),
  priority: integer('priority').notNull().default(0),
  status: text('status').notNull().default('pending'),
  attempts: integer('attempts').notNull().default(0),
  maxAttempts: integer('max_attempts').notNull().default(3),
  timeoutSeconds: integer('timeout_seconds').notNull().default(300),
  idempotencyKey: text('idempotency_key'),
  workerId: text('worker_id'),
  leaseExpiresAt: timestamp('lease_expires_at', { withTimezone: true }),
  availableAt: timestamp('available_at', { withTimezone: true }).notNull().defaultNow(),
  lastError: text('last_error'),
  result: jsonb('result'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  completedAt: timestamp('completed_at', { withTimezone: true }),
}, (t) => [
  index('queue_jobs_claim_idx').on(t.orgId, t.queueName, t.status, t.priority, t.id),
  // The claim scans claimable jobs in claim order and stops at the batch size (no sort of the whole queue).
  index('queue_jobs_claimable_idx').on(t.orgId, t.queueName, t.priority.desc(), t.id).where(sql`${t.status} IN ('pending', 'claimed')`),
  uniqueIndex('queue_jobs_idempotency_key').on(t.orgId, t.idempotencyKey).where(sql`${t.idempotencyKey} IS NOT NULL`),
]);

/** The plan limits billing announced per organization (billing.subscription.changed), enforced here. */
export { planLimits } from '@aos/db';

/**
 * Tasks created per organization and UTC calendar month, deleted ones included (what billing
 * counts too): the `tasks_per_month` limit is checked against it, not against surviving rows.
 */
export const taskMonthlyUsage = pgTable('task_monthly_usage', {
  orgId: text('org_id').notNull(),
  month: date('month').notNull(),
  created: integer('created').notNull().default(0),
}, (t) => [primaryKey({ columns: [t.orgId, t.month] })]);
