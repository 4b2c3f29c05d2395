import { Queues } from '@aos/contracts';
import { badRequest, notFound } from '@aos/core';
import { enforcePlanLimit, type Executor } from '@aos/db';
import { and, eq, ne, sql } from 'drizzle-orm';
import { posix } from 'node:path';
import { agents } from '../db/schema.js';
import type { Ctx } from '../service.js';

export type AgentRow = typeof agents.$inferSelect;

export const AGENT_NAME = '^[a-z0-9][a-z0-9-]{0,62}$';
const agentName = new RegExp(AGENT_NAME);
export const WORKSPACE_ROOT = 'workspaces';

export function checkName(name: string, field = 'name') {
  if (!agentName.test(name)) throw badRequest('Invalid agent name: lowercase letters, digits and dashes, up to 63 characters', [{ field, pattern: AGENT_NAME }]);
}

/**
 * A relative path made of plain segments (no `.`/`..`, no leading `/`, no empty segment):
 * whatever joins it to a root stays inside that root.
 */
export const SAFE_RELATIVE_PATH = '^(?!\\.{1,2}(?:/|$))(?!.*/\\.{1,2}(?:/|$))[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$';

/** The agent's workspace inside the workspace root; the name is checked before it touches a path. */
export function workspaceOf(name: string): string {
  checkName(name);
  const path = posix.join(WORKSPACE_ROOT, name);
  if (posix.dirname(path) !== WORKSPACE_ROOT) throw badRequest('Invalid agent name', [{ field: 'name' }]);
  return path;
}

const schedulerId = (a: Pick<AgentRow, 'id'>) => `agent-${a.id}`;

/** The agent's repeatable cycle on BullMQ: one job scheduler per agent, every `interval_sec`. */
export async function schedule(ctx: Ctx, a: AgentRow) {
  await ctx.queues.queue(Queues.agentSchedules).upsertJobScheduler(schedulerId(a), { every: a.intervalSec * 1000 }, { name: 'cycle', data: { payload: { agentId: a.id }, trace: {} } });
}
export async function unschedule(ctx: Ctx, a: Pick<AgentRow, 'id'>) {
  await ctx.queues.queue(Queues.agentSchedules).removeJobScheduler(schedulerId(a));
}
export const scheduleOf = (ctx: Ctx, a: Pick<AgentRow, 'id'>) => ctx.queues.queue(Queues.agentSchedules).getJobScheduler(schedulerId(a));

/** Statuses in which an agent does not run its cycles. */
export const STOPPED: readonly string[] = ['paused', 'offline'];

/** Billing counts an agent against the plan's `agents` limit unless it is deactivated (offline). */
export const countsAgainstPlan = (status: string) => status !== 'offline';

/**
 * 402 PLAN_LIMIT_REACHED when agent `agentId` (being created, or reactivated from offline) would
 * take the organization past its plan's agents; call it in the transaction that does it.
 */
export const enforceAgentLimit = (tx: Executor, orgId: string, agentId: number) => enforcePlanLimit(tx, orgId, 'agents', async () => {
  const [row] = await tx.select({ n: sql<number>`count(*)::int` }).from(agents)
    .where(and(eq(agents.orgId, orgId), ne(agents.status, 'offline'), ne(agents.id, agentId)));
  return row!.n;
});

export async function findAgent(ctx: Ctx, orgId: string, ref: { id?: number; name?: string }) {
  const [a] = await ctx.db.select().from(agents).where(and(eq(agents.orgId, orgId), ref.id !== undefined ? eq(agents.id, ref.id) : eq(agents.name, ref.name!)));
  if (!a) throw notFound('Agent');
  return a;
}

/** A `{name}` path parameter: an agent name, or the agent's numeric id (an all-digit name still resolves by name when no id matches). */
export async function findAgentByRef(ctx: Ctx, orgId: string, nameOrId: string) {
  if (/^\d{1,9}$/.test(nameOrId)) {
    const [byId] = await ctx.db.select().from(agents).where(and(eq(agents.orgId, orgId), eq(agents.id, Number(nameOrId))));
    if (byId) return byId;
  }
  checkName(nameOrId);
  return findAgent(ctx, orgId, { name: nameOrId });
}

/** Idle-check answers of an organization live in one Redis hash (field = agent name). */
export const idleCacheKey = (ctx: Ctx, orgId: string) => `${ctx.config.REDIS_PREFIX}:idle:${orgId}`;
/** Bumped by every eviction of the org: an answer computed across one is not cached (see idleCheck). */
export const idleGenerationKey = (ctx: Ctx, orgId: string) => `${ctx.config.REDIS_PREFIX}:idle-gen:${orgId}`;
const IDLE_GENERATION_TTL_MS = 86_400_000;

/** Drops cached idle-check answers after a state change (best effort: the TTL bounds staleness). */
export async function evictIdle(ctx: Ctx, orgId: string, names: string[] | 'all') {
  if (names !== 'all' && names.length === 0) return;
  const key = idleCacheKey(ctx, orgId);
  const gen = idleGenerationKey(ctx, orgId);
  try {
    const tx = ctx.queues.connection.multi();
    if (names === 'all') tx.del(key);
    else tx.hdel(key, ...names);
    await tx.incr(gen).pexpire(gen, IDLE_GENERATION_TTL_MS).exec();
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'idle cache eviction failed');
  }
}
