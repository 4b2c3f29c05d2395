import { and, eq, gt, sql } from 'drizzle-orm';
import { agentRuns, agents, assignedTasks, orgBudgets } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { idleCacheKey, idleGenerationKey, STOPPED } from './agents.js';

/**
 * A task ready for the agent: assigned, `todo`, and not already worked on by one of the
 * agent's runs since it (re)entered todo (the agent reports back through the tasks API).
 */
export const readyTask = (agentId: number, orgId: string, name: string) => and(
  eq(assignedTasks.orgId, orgId), eq(assignedTasks.assignee, name), eq(assignedTasks.status, 'todo'),
  sql`NOT EXISTS (SELECT 1 FROM ${agentRuns} r WHERE r.agent_id = ${agentId} AND r.task_id = ${assignedTasks.taskId} AND r.created_at >= ${assignedTasks.queuedSince})`,
);

/** What the idle check decides from; cached per agent (the run mode is applied on read). */
interface IdleFacts {
  known: boolean;
  status: string | null;
  bootstrapped: boolean;
  ready_tasks: number;
  /** Its tasks in `blocked` (absent in answers cached before the field existed). */
  blocked_tasks?: number;
  /** Why the agent may not spend tokens now, or null. */
  over_budget: string | null;
  at: number;
}

export interface IdleDecision {
  agent_name: string;
  should_skip: boolean;
  reason: string;
  ready_tasks: number;
  blocked_tasks: number;
  over_budget: boolean;
  cached: boolean;
}

/**
 * Reads the facts from this service's own tables only: the agent row, the task projection
 * fed by tasks events (`assigned_tasks`), the balance projection fed by billing events
 * (`org_budgets`) and the agent's own runs (daily token budget).
 */
async function facts(ctx: Ctx, orgId: string, name: string): Promise<IdleFacts> {
  const at = Date.now();
  const [agent] = await ctx.db.select().from(agents).where(and(eq(agents.orgId, orgId), eq(agents.name, name)));
  if (!agent) return { known: false, status: null, bootstrapped: false, ready_tasks: 0, blocked_tasks: 0, over_budget: null, at };
  const [[ready], [blocked], [budget], [spent]] = await Promise.all([
    ctx.db.select({ n: sql<number>`count(*)::int` }).from(assignedTasks).where(readyTask(agent.id, orgId, name)),
    ctx.db.select({ n: sql<number>`count(*)::int` }).from(assignedTasks)
      .where(and(eq(assignedTasks.orgId, orgId), eq(assignedTasks.assignee, name), eq(assignedTasks.status, 'blocked'))),
    ctx.db.select().from(orgBudgets).where(eq(orgBudgets.orgId, orgId)),
    agent.dailyTokenBudget === null
      ? Promise.resolve([{ n: 0 }])
      : ctx.db.select({ n: sql<number>`coalesce(sum(${agentRuns.inputTokens} + ${agentRuns.outputTokens}), 0)::int` }).from(agentRuns)
        .where(and(eq(agentRuns.agentId, agent.id), gt(agentRuns.createdAt, sql`now() - interval '24 hours'`))),
  ]);
  let overBudget: string | null = null;
  if (budget && budget.tokenBalance <= 0) overBudget = 'organization token balance exhausted';
  else if (agent.dailyTokenBudget !== null && spent!.n >= agent.dailyTokenBudget) overBudget = `daily token budget spent (${spent!.n}/${agent.dailyTokenBudget})`;
  return { known: true, status: agent.status, bootstrapped: agent.bootstrappedAt !== null, ready_tasks: ready!.n, blocked_tasks: blocked!.n, over_budget: overBudget, at };
}

function decide(name: string, f: IdleFacts, runMode: string | undefined, cached: boolean): IdleDecision {
  const blocked = f.blocked_tasks ?? 0;
  const skip = (reason: string) => ({ agent_name: name, should_skip: true, reason, ready_tasks: f.ready_tasks, blocked_tasks: blocked, over_budget: f.over_budget !== null, cached });
  if (!f.known) return skip('unknown agent');
  if (STOPPED.includes(f.status!)) return skip(`agent is ${f.status}`);
  if (!f.bootstrapped) return skip('bootstrap incomplete');
  if (f.over_budget) return skip(f.over_budget);
  if (runMode === 'discovery') return { ...skip('discovery run'), should_skip: false };
  if (f.ready_tasks === 0) return skip(blocked ? `no ready tasks (${blocked} blocked)` : 'no ready tasks');
  return { ...skip(`${f.ready_tasks} ready task(s)`), should_skip: false };
}

/**
 * Should the agent skip this cycle? Answers from a Redis hash per organization (one field
 * per agent, valid IDLE_CACHE_TTL_SEC); state changes evict fields (see evictIdle).
 */
export async function idleCheck(ctx: Ctx, orgId: string, name: string, runMode?: string): Promise<IdleDecision> {
  const key = idleCacheKey(ctx, orgId);
  const genKey = idleGenerationKey(ctx, orgId);
  const ttlMs = ctx.config.IDLE_CACHE_TTL_SEC * 1000;
  // One round trip: the answer and, for a miss, the generation its fill is compared with.
  const [hit, generation] = await ctx.queues.connection.multi().hget(key, name).get(genKey).exec()
    .then((r) => (r ?? []).map(([err, v]) => (err ? null : v as string | null)), () => [null, null]);
  if (hit) {
    const f = JSON.parse(hit) as IdleFacts;
    if (Date.now() - f.at < ttlMs) return decide(name, f, runMode, true);
  }
  const f = await facts(ctx, orgId, name);
  // Stored only if no eviction happened while the facts were read: else a change that landed
  // meanwhile (its eviction already done) would be hidden behind this older answer for the TTL.
  await ctx.queues.connection.eval(STORE_IF_GENERATION, 2, key, genKey, generation ?? '0', name, JSON.stringify(f), ttlMs).catch(() => null);
  return decide(name, f, runMode, false);
}

const STORE_IF_GENERATION = `
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`;
