import { DEFAULT_TIER, TierLimits, type EnforcedPlanLimit, type PlanLimits } from '@aos/contracts';
import { AppError } from '@aos/core';
import { eq, sql } from 'drizzle-orm';
import { integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import type { Executor } from './db.js';

/**
 * The plan limits billing last announced for each organization (`billing.subscription.changed`),
 * kept by every service that enforces one, in its own database. No row: the default tier's
 * limits. A null limit: unlimited. A service includes the table in its schema (and migrations).
 */
export const planLimits = pgTable('plan_limits', {
  orgId: text('org_id').primaryKey(),
  tier: text('tier').notNull(),
  agents: integer('agents'),
  seats: integer('seats'),
  tasksPerMonth: integer('tasks_per_month'),
  /** `occurredAt` of the event these come from: an older event delivered late changes nothing. */
  eventAt: timestamp('event_at', { withTimezone: true }).notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/** Records the limits an organization's plan now has, unless a newer event already set them. */
export async function recordPlanLimits(tx: Executor, orgId: string, tier: string, limits: PlanLimits, at: Date): Promise<void> {
  const values = { tier: tier.toLowerCase(), agents: limits.agents, seats: limits.seats, tasksPerMonth: limits.tasks_per_month, eventAt: at, updatedAt: new Date() };
  await tx.insert(planLimits).values({ orgId, ...values })
    .onConflictDoUpdate({ target: planLimits.orgId, set: values, setWhere: sql`${planLimits.eventAt} <= excluded.event_at` });
}

const COLUMN = { agents: 'agents', seats: 'seats', tasks_per_month: 'tasksPerMonth' } as const satisfies Record<EnforcedPlanLimit, keyof typeof planLimits.$inferSelect>;
const WHAT: Record<EnforcedPlanLimit, (max: number) => string> = {
  agents: (n) => `${n} ${n === 1 ? 'agent' : 'agents'} (deactivated ones do not count)`,
  seats: (n) => `${n} ${n === 1 ? 'seat' : 'seats'} (members and pending invitations)`,
  tasks_per_month: (n) => `${n} ${n === 1 ? 'task' : 'tasks'} a month (UTC calendar month)`,
};

/** The plan that applies to the organization and its maximum for `limit` (null: unlimited). */
export async function planLimitOf(tx: Executor, orgId: string, limit: EnforcedPlanLimit): Promise<{ tier: string; max: number | null }> {
  const [row] = await tx.select().from(planLimits).where(eq(planLimits.orgId, orgId));
  return row ? { tier: row.tier, max: row[COLUMN[limit]] } : { tier: DEFAULT_TIER, max: TierLimits[DEFAULT_TIER][limit] };
}

/**
 * Refuses (402 PLAN_LIMIT_REACHED) one more of `limit` when the organization already uses its
 * plan's maximum. Call it inside the transaction that creates the resource: it holds a per-org,
 * per-limit advisory lock until that transaction ends, so concurrent creations are counted one
 * after another and cannot both take the last place. `countUsed` counts what is used without
 * the resource being created; it runs after the lock is taken (READ COMMITTED: it sees every
 * creation committed before).
 */
export async function enforcePlanLimit(tx: Executor, orgId: string, limit: EnforcedPlanLimit, countUsed: () => Promise<number>): Promise<void> {
  await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtext(${`aos:plan-limit:${limit}:${orgId}`}))`);
  const { tier, max } = await planLimitOf(tx, orgId, limit);
  if (max === null) return;
  const used = await countUsed();
  if (used < max) return;
  const plan = `${tier.charAt(0).toUpperCase()}${tier.slice(1)}`;
  throw new AppError('PLAN_LIMIT_REACHED', `The ${plan} plan allows ${WHAT[limit](max)} and the organization uses ${used}; upgrade the plan to add more`, [{ limit, used, max, tier }]);
}
