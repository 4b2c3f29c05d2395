// Tables of this service, one export per table; `pnpm db:generate` writes the SQL migration.
import { sql } from 'drizzle-orm';
import { bigint, bigserial, boolean, check, index, integer, jsonb, numeric, pgTable, primaryKey, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/** Stripe customer of an organization (the billing account). */
export const customers = pgTable('billing_customers', {
  orgId: text('org_id').primaryKey(),
  tenantId: text('tenant_id'),
  stripeCustomerId: text('stripe_customer_id').notNull().unique(),
  /** Saved card for off-session top-ups (from a succeeded payment intent), unless the config names one. */
  defaultPaymentMethodId: text('default_payment_method_id'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

/** One row per organization that ever had a paid plan; no row = Free. */
export const subscriptions = pgTable('billing_subscriptions', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  orgId: text('org_id').notNull().unique(),
  tenantId: text('tenant_id'),
  tier: text('tier').notNull(),
  status: text('status').notNull(),
  stripeSubscriptionId: text('stripe_subscription_id').unique(),
  stripeCustomerId: text('stripe_customer_id'),
  currentPeriodStart: timestamp('current_period_start', { withTimezone: true }),
  currentPeriodEnd: timestamp('current_period_end', { withTimezone: true }),
  cancelAtPeriodEnd: boolean('cancel_at_period_end').notNull().default(false),
  /** A downgrade waiting for the end of the period. */
  pendingTier: text('pending_tier'),
  pendingAt: timestamp('pending_at', { withTimezone: true }),
  /** When the pending downgrade was requested (unix s): only a Stripe change after it may withdraw it. */
  pendingRequestedAt: bigint('pending_requested_at', { mode: 'number' }).notNull().default(0),
  /** `created` (unix s) of the newest Stripe event applied; older ones never overwrite the state. */
  stripeStateAt: bigint('stripe_state_at', { mode: 'number' }).notNull().default(0),
  mrrCents: integer('mrr_cents').notNull().default(0),
  /** Set by a platform admin (Enterprise contracts, comped plans): Stripe events and self-serve changes leave it alone. */
  managed: boolean('managed').notNull().default(false),
  managedBy: text('managed_by'),
  managedNote: text('managed_note'),
  /** Negotiated limits of a managed Enterprise plan, over the catalogue's (absent = catalogue, null = unlimited). */
  customLimits: jsonb('custom_limits').$type<Partial<Record<string, number | null>>>(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * Current balance per (org, account); written only by the trigger on ledger_entries. Accounts:
 * `tokens`, `credits` (cents) — what the organization can spend — and `tokens_owed`,
 * `credits_owed` — usage that happened beyond the balance, settled first by the next credit.
 */
export const ledgerAccounts = pgTable('billing_ledger_accounts', {
  orgId: text('org_id').notNull(),
  ledger: text('ledger').notNull(),
  balance: bigint('balance', { mode: 'number' }).notNull().default(0),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  primaryKey({ columns: [t.orgId, t.ledger] }),
  check('billing_ledger_accounts_balance_non_negative', sql`${t.balance} >= 0`),
]);

/** Append-only journal of both ledgers (tokens, credits in cents); UPDATE/DELETE are refused by trigger. */
export const ledgerEntries = pgTable('billing_ledger_entries', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  orgId: text('org_id').notNull(),
  ledger: text('ledger').notNull(),
  type: text('type').notNull(),
  /** Signed: credits and overdrafts positive, consumption, settlements and reversals (refunded purchases) negative. */
  amount: bigint('amount', { mode: 'number' }).notNull(),
  /** Set by the trigger from the account row it updates. */
  balanceAfter: bigint('balance_after', { mode: 'number' }).notNull().default(0),
  action: text('action'),
  referenceId: text('reference_id'),
  userId: text('user_id'),
  metadata: jsonb('metadata').$type<Record<string, unknown>>().notNull().default({}),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  index('billing_ledger_entries_org_idx').on(t.orgId, t.ledger, t.id),
  index('billing_ledger_entries_org_type_idx').on(t.orgId, t.ledger, t.type, t.id),
  uniqueIndex('billing_ledger_entries_reference_uq').on(t.orgId, t.ledger, t.type, t.referenceId).where(sql`${t.referenceId} IS NOT NULL`),
  check('billing_ledger_entries_type_ck', sql`${t.type} IN ('consume','purchase','bonus','signup_bonus','admin_grant','refund','overdraft','settlement','reversal')`),
  check('billing_ledger_entries_ledger_ck', sql`${t.ledger} IN ('tokens','credits','tokens_owed','credits_owed')`),
  check('billing_ledger_entries_sign_ck', sql`(${t.type} IN ('consume','settlement','reversal')) = (${t.amount} < 0) AND ${t.amount} <> 0`),
  // Debt accounts hold only overdrafts and their settlements; an overdraft is never booked elsewhere.
  check('billing_ledger_entries_owed_ck', sql`CASE WHEN ${t.ledger} IN ('tokens_owed','credits_owed') THEN ${t.type} IN ('overdraft','settlement') ELSE ${t.type} <> 'overdraft' END`),
]);

/** Stripe events already applied (idempotency by event id). */
export const stripeEvents = pgTable('billing_stripe_events', {
  id: text('id').primaryKey(),
  type: text('type').notNull(),
  created: bigint('created', { mode: 'number' }).notNull(),
  orgId: text('org_id'),
  outcome: text('outcome').notNull(),
  processedAt: timestamp('processed_at', { withTimezone: true }).notNull().defaultNow(),
});

export const autoTopupConfigs = pgTable('billing_auto_topup_configs', {
  orgId: text('org_id').notNull(),
  ledger: text('ledger').notNull(),
  tenantId: text('tenant_id'),
  enabled: boolean('enabled').notNull().default(true),
  threshold: bigint('threshold', { mode: 'number' }).notNull(),
  packageSlug: text('package_slug').notNull(),
  maxMonthlyTopups: integer('max_monthly_topups').notNull().default(3),
  stripePaymentMethodId: text('stripe_payment_method_id'),
  /** True while the balance is at/above the threshold: dropping below while armed is one crossing. */
  armed: boolean('armed').notNull().default(true),
  crossings: integer('crossings').notNull().default(0),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [primaryKey({ columns: [t.orgId, t.ledger] })]);

/** One row per threshold crossing; `crossing_id` is the BullMQ job id and the Stripe idempotency key. */
export const autoTopupRuns = pgTable('billing_auto_topup_runs', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  orgId: text('org_id').notNull(),
  ledger: text('ledger').notNull(),
  crossingId: text('crossing_id').notNull().unique(),
  month: text('month').notNull(),
  status: text('status').notNull(),
  packageSlug: text('package_slug').notNull(),
  amount: bigint('amount', { mode: 'number' }).notNull(),
  priceCents: integer('price_cents').notNull(),
  paymentIntentId: text('payment_intent_id'),
  reason: text('reason'),
  /** When the run turned `processing`: the first charge request (and its idempotency key) may have gone out since. */
  claimedAt: timestamp('claimed_at', { withTimezone: true }),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  index('billing_auto_topup_runs_org_idx').on(t.orgId, t.ledger, t.month),
  index('billing_auto_topup_runs_open_idx').on(t.status).where(sql`${t.status} IN ('pending', 'processing')`),
]);

/**
 * What other services told us exists (agents, members, tasks), for plan limits.
 * `event_at` makes replays and out-of-order create/delete converge on the newest state.
 */
export const usageEntities = pgTable('billing_usage_entities', {
  orgId: text('org_id').notNull(),
  kind: text('kind').notNull(),
  entityId: text('entity_id').notNull(),
  present: boolean('present').notNull(),
  /** Tasks: the product slug from `tasks.task.created`, so AI spend can be shown by product. */
  product: text('product'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  eventAt: timestamp('event_at', { withTimezone: true }).notNull(),
}, (t) => [
  primaryKey({ columns: [t.orgId, t.kind, t.entityId] }),
  index('billing_usage_entities_created_idx').on(t.orgId, t.kind, t.createdAt),
]);

/** Recorded costs: AI from `agents.run.completed`, infrastructure (and other AI) from `POST /billing/costs`. */
export const costRecords = pgTable('billing_cost_records', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  orgId: text('org_id').notNull(),
  kind: text('kind').notNull(),
  source: text('source').notNull(),
  referenceId: text('reference_id').notNull(),
  amountUsd: numeric('amount_usd', { precision: 14, scale: 6, mode: 'number' }).notNull(),
  tokens: bigint('tokens', { mode: 'number' }).notNull().default(0),
  model: text('model'),
  /** Product slug the cost belongs to, when stated; otherwise the run's task's product (see usage_entities). */
  product: text('product'),
  taskId: text('task_id'),
  description: text('description'),
  occurredAt: timestamp('occurred_at', { withTimezone: true }).notNull(),
}, (t) => [
  uniqueIndex('billing_cost_records_source_ref_uq').on(t.orgId, t.source, t.referenceId),
  index('billing_cost_records_org_idx').on(t.orgId, t.kind, t.occurredAt),
  check('billing_cost_records_kind_ck', sql`${t.kind} IN ('ai','infra')`),
]);
