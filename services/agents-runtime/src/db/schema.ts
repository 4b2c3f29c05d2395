import { sql } from 'drizzle-orm';
import { type AnyPgColumn, bigint, boolean, check, doublePrecision, index, integer, jsonb, pgTable, primaryKey, serial, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

export interface DerivationRule {
  id: string;
  when?: { type?: string; status?: string; title_matches?: string; on?: 'created' | 'updated' | 'any' };
  create: { title: string; description?: string; priority?: string; type?: string; assignee?: string };
}

/** One recorded bootstrap step of an agent (see domain/bootstrap.ts). */
export interface BootstrapStep { step: string; state: 'done' | 'failed' | 'pending'; detail: string; at: string | null }

export const AgentStatuses = ['active', 'idle', 'working', 'blocked', 'offline', 'paused', 'error'] as const;
export type AgentStatus = (typeof AgentStatuses)[number];
export const RunStatuses = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type RunStatus = (typeof RunStatuses)[number];
const inList = (values: readonly string[]) => sql.raw(values.map((v) => `'${v}'`).join(', '));

export const agents = pgTable('agents', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  name: text('name').notNull(),
  displayName: text('display_name'),
  role: text('role').notNull().default('engineer'),
  emoji: text('emoji'),
  color: text('color'),
  model: text('model').notNull().default('offline-1'),
  provider: text('provider').notNull().default('offline'),
  systemPrompt: text('system_prompt'),
  intervalSec: integer('interval_sec').notNull().default(3600),
  status: text('status').notNull().default('idle'),
  workspacePath: text('workspace_path'),
  currentTask: text('current_task'),
  derivationRules: jsonb('derivation_rules').$type<DerivationRule[]>().notNull().default([]),
  bootstrap: jsonb('bootstrap').$type<BootstrapStep[]>().notNull().default([]),
  /** Set once every bootstrap step is done; until then POST /agents with the name resumes it. */
  bootstrappedAt: timestamp('bootstrapped_at', { withTimezone: true }),
  /** A bootstrap in progress holds this lease, so two resumes never run the steps at once. */
  bootstrapLeaseUntil: timestamp('bootstrap_lease_until', { withTimezone: true }),
  /** Tokens the agent may spend per rolling 24 h; null = no limit. */
  dailyTokenBudget: integer('daily_token_budget'),
  templateSlug: text('template_slug'),
  ownerUserId: text('owner_user_id'),
  lastHeartbeat: timestamp('last_heartbeat', { withTimezone: true }),
  lastCycleAt: timestamp('last_cycle_at', { withTimezone: true }),
  lastCycleResult: text('last_cycle_result'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  uniqueIndex('agents_org_name_key').on(t.orgId, t.name), index('agents_org_status_idx').on(t.orgId, t.status),
  check('agents_status_ck', sql`${t.status} IN (${inList(AgentStatuses)})`),
]);

export const agentRuns = pgTable('agent_runs', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  agentId: integer('agent_id').notNull().references(() => agents.id, { onDelete: 'cascade' }),
  taskId: integer('task_id'),
  input: text('input').notNull(),
  status: text('status').notNull().default('queued'),
  output: text('output'),
  error: text('error'),
  provider: text('provider').notNull(),
  model: text('model').notNull(),
  inputTokens: integer('input_tokens').notNull().default(0),
  outputTokens: integer('output_tokens').notNull().default(0),
  costUsd: doublePrecision('cost_usd').notNull().default(0),
  /** Part of the usage is an estimate (the provider had not reported its count when the run ended). */
  usageEstimated: boolean('usage_estimated').notNull().default(false),
  attempts: integer('attempts').notNull().default(0),
  /** The BullMQ job currently carrying the run (the reconciler may give it a new one). */
  jobId: text('job_id'),
  /** The failed or cancelled run this one runs again (each run is retried at most once). */
  retryOf: integer('retry_of').references((): AnyPgColumn => agentRuns.id, { onDelete: 'set null' }),
  cancelRequestedAt: timestamp('cancel_requested_at', { withTimezone: true }),
  userId: text('user_id'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  startedAt: timestamp('started_at', { withTimezone: true }),
  finishedAt: timestamp('finished_at', { withTimezone: true }),
}, (t) => [
  index('agent_runs_org_idx').on(t.orgId, t.id), index('agent_runs_agent_idx').on(t.agentId, t.id),
  index('agent_runs_open_idx').on(t.status, t.createdAt).where(sql`${t.status} IN ('queued', 'running')`),
  uniqueIndex('agent_runs_retry_of_key').on(t.retryOf).where(sql`${t.retryOf} IS NOT NULL`),
  index('agent_runs_finished_idx').on(t.finishedAt),
  check('agent_runs_status_ck', sql`${t.status} IN (${inList(RunStatuses)})`),
]);

export const agentMessages = pgTable('agent_messages', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  orgId: text('org_id').notNull(),
  agentId: integer('agent_id').notNull().references(() => agents.id, { onDelete: 'cascade' }),
  conversationId: text('conversation_id').notNull(),
  role: text('role').notNull(),
  content: text('content').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('agent_messages_conv_idx').on(t.agentId, t.conversationId, t.id)]);

/** One derivation request per (task, rule), whatever the redeliveries. */
export const derivations = pgTable('derivations', {
  orgId: text('org_id').notNull(),
  taskId: integer('task_id').notNull(),
  ruleId: text('rule_id').notNull(),
  agentName: text('agent_name').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [primaryKey({ columns: [t.orgId, t.taskId, t.ruleId] })]);

/** Tasks assigned to agents, as the task events describe them (queue health, idle check, cycles). */
export const assignedTasks = pgTable('assigned_tasks', {
  orgId: text('org_id').notNull(),
  taskId: integer('task_id').notNull(),
  assignee: text('assignee').notNull(),
  title: text('title').notNull().default(''),
  status: text('status').notNull(),
  /** When the task last entered `todo` (the wait queue health reports). */
  queuedSince: timestamp('queued_since', { withTimezone: true }).notNull(),
  completedAt: timestamp('completed_at', { withTimezone: true }),
  /** `occurredAt` of the event applied last: an older event arriving late changes nothing. */
  eventAt: timestamp('event_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [primaryKey({ columns: [t.orgId, t.taskId] }), index('assigned_tasks_assignee_idx').on(t.orgId, t.assignee, t.status)]);

/** Depth of derived tasks (a child of a root task is 1): derivation stops at DERIVATION_MAX_DEPTH. */
export const taskLineage = pgTable('task_lineage', {
  orgId: text('org_id').notNull(),
  taskId: integer('task_id').notNull(),
  parentTaskId: integer('parent_task_id').notNull(),
  depth: integer('depth').notNull(),
}, (t) => [primaryKey({ columns: [t.orgId, t.taskId] })]);

/** The organization's token balance as billing's events report it (idle check: over budget). */
export const orgBudgets = pgTable('org_budgets', {
  orgId: text('org_id').primaryKey(),
  tokenBalance: bigint('token_balance', { mode: 'number' }).notNull(),
  balanceAt: timestamp('balance_at', { withTimezone: true }).notNull(),
});

export const templates = pgTable('templates', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  name: text('name').notNull(),
  slug: text('slug').notNull(),
  description: text('description'),
  icon: text('icon'),
  category: text('category'),
  model: text('model'),
  intervalSec: integer('interval_sec'),
  identity: text('identity'),
  tools: text('tools').array().notNull().default(sql`'{}'::text[]`),
  capabilities: text('capabilities').array().notNull().default(sql`'{}'::text[]`),
  config: jsonb('config').notNull().default({}),
  isFeatured: boolean('is_featured').notNull().default(false),
  sortOrder: integer('sort_order').notNull().default(0),
  archivedAt: timestamp('archived_at', { withTimezone: true }),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [uniqueIndex('templates_org_slug_live_key').on(t.orgId, t.slug).where(sql`${t.archivedAt} IS NULL`)]);

export const rules = pgTable('rules', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  title: text('title').notNull(),
  body: text('body').notNull(),
  scope: text('scope').notNull().default('global'),
  agent: text('agent'),
  category: text('category'),
  permanent: boolean('permanent').notNull().default(false),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('rules_org_idx').on(t.orgId, t.scope)]);

export const LogSources = ['file', 'db'] as const;

export const logs = pgTable('agent_logs', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  orgId: text('org_id').notNull(),
  agent: text('agent').notNull(),
  level: text('level').notNull().default('info'),
  message: text('message').notNull(),
  meta: jsonb('meta').notNull().default({}),
  /** `file`: the agent's own log, written by the runtime (see domain/logs.ts); `db`: stored through POST /logs. */
  source: text('source').notNull().default('db'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [
  index('agent_logs_org_time_idx').on(t.orgId, t.createdAt, t.id), index('agent_logs_files_idx').on(t.orgId, t.source, t.agent, t.createdAt),
  index('agent_logs_created_idx').on(t.createdAt),
  check('agent_logs_source_ck', sql`${t.source} IN (${inList(LogSources)})`),
]);

export const files = pgTable('files', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  path: text('path').notNull(),
  name: text('name').notNull(),
  content: text('content').notNull(),
  mimeType: text('mime_type'),
  fileType: text('file_type'),
  category: text('category'),
  agent: text('agent'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [uniqueIndex('files_org_path_key').on(t.orgId, t.path), index('files_org_category_idx').on(t.orgId, t.category)]);

export const automations = pgTable('automations', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  name: text('name').notNull(),
  agentName: text('agent_name').notNull(),
  type: text('type').notNull(),
  path: text('path').notNull(),
  label: text('label'),
  status: text('status').notNull().default('active'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('automations_org_idx').on(t.orgId)]);

export const discoveryEngines = pgTable('discovery_engines', {
  id: serial('id').primaryKey(),
  orgId: text('org_id').notNull(),
  slug: text('slug').notNull(),
  name: text('name').notNull(),
  description: text('description'),
  layer: text('layer').notNull(),
  scheduleIntervalMs: integer('schedule_interval_ms').notNull().default(3_600_000),
  model: text('model').notNull().default('offline-1'),
  provider: text('provider').notNull().default('offline'),
  enabled: boolean('enabled').notNull().default(true),
  lastRunAt: timestamp('last_run_at', { withTimezone: true }),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [uniqueIndex('discovery_engines_org_slug_key').on(t.orgId, t.slug)]);

export const discoveryRuns = pgTable('discovery_runs', {
  id: serial('id').primaryKey(),
  engineId: integer('engine_id').notNull().references(() => discoveryEngines.id, { onDelete: 'cascade' }),
  trigger: text('trigger').notNull(),
  status: text('status').notNull(),
  findings: integer('findings').notNull().default(0),
  tokens: integer('tokens').notNull().default(0),
  costUsd: doublePrecision('cost_usd').notNull().default(0),
  durationMs: integer('duration_ms').notNull().default(0),
  error: text('error'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
}, (t) => [index('discovery_runs_engine_idx').on(t.engineId, t.id), index('discovery_runs_created_idx').on(t.createdAt)]);

/** Factory worker pool settings (one row); applied live by PATCH /factory-workers/config. */
export const factoryConfig = pgTable('factory_config', {
  id: integer('id').primaryKey().default(1),
  workerCount: integer('worker_count').notNull().default(2),
  concurrency: integer('concurrency').notNull().default(2),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/** The plan limits billing announced per organization (billing.subscription.changed), enforced here. */
export { planLimits } from '@aos/db';
