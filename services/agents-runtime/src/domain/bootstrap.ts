import type { EventMeta } from '@aos/bus';
import { conflict } from '@aos/core';
import { isUniqueViolation, type Tx } from '@aos/db';
import { and, eq, isNull, lt, or, sql } from 'drizzle-orm';
import { agents, files, type BootstrapStep, type DerivationRule } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import type { Ctx } from '../service.js';
import { agentLog } from './logs.js';
import { countsAgainstPlan, enforceAgentLimit, evictIdle, schedule, STOPPED, workspaceOf, type AgentRow } from './agents.js';

export const BOOTSTRAP_STEPS = ['registration', 'workspace', 'identity_document', 'schedule', 'heartbeat', 'log'] as const;
type StepName = (typeof BOOTSTRAP_STEPS)[number];

export interface NewAgent {
  name: string; displayName?: string | null; role?: string; model?: string; provider?: string; intervalSec?: number; emoji?: string | null;
  color?: string | null; systemPrompt?: string | null; derivationRules?: DerivationRule[]; status?: string; dailyTokenBudget?: number | null;
  templateSlug?: string | null; identity?: string | null; workspacePath?: string | null; ownerUserId: string | null;
}

export interface BootstrapResult { agent: AgentRow; steps: (BootstrapStep & { ok: boolean })[]; complete: boolean; resumed: boolean }

const pending = (): BootstrapStep[] => BOOTSTRAP_STEPS.map((step) => ({ step, state: 'pending', detail: 'not run yet', at: null }));

const soul = (a: AgentRow, identity: string | null | undefined) => identity ?? [
  `# ${a.displayName ?? a.name}${a.emoji ? ` ${a.emoji}` : ''}`, '', `Role: ${a.role}`, `Model: ${a.model}`, '', a.systemPrompt ?? '', '',
].join('\n');

async function withTimeout<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

type S = typeof schema;
/** Database steps run in one transaction with their record: done exactly once. Others are idempotent. */
const STEP_RUNNERS: Record<Exclude<StepName, 'registration'>, { db?: (tx: Tx<S>, a: AgentRow, identity: string | null) => Promise<string>; other?: (ctx: Ctx, a: AgentRow) => Promise<string> }> = {
  workspace: {
    db: async (tx, a) => {
      const path = a.workspacePath ?? workspaceOf(a.name);
      await tx.update(agents).set({ workspacePath: path }).where(eq(agents.id, a.id));
      return path;
    },
  },
  identity_document: {
    db: async (tx, a, identity) => {
      const path = `${a.workspacePath ?? workspaceOf(a.name)}/SOUL.md`;
      const content = soul(a, identity);
      await tx.insert(files).values({ orgId: a.orgId, path, name: 'SOUL.md', content, mimeType: 'text/markdown', fileType: 'md', category: 'identity', agent: a.name })
        .onConflictDoUpdate({ target: [files.orgId, files.path], set: { content, updatedAt: new Date() } });
      return path;
    },
  },
  schedule: {
    other: async (ctx, a) => {
      if (STOPPED.includes(a.status)) return `not scheduled: agent is ${a.status}`;
      await schedule(ctx, a);
      return `every ${a.intervalSec}s`;
    },
  },
  heartbeat: {
    db: async (tx, a) => {
      await tx.update(agents).set({ lastHeartbeat: new Date() }).where(eq(agents.id, a.id));
      return 'recorded';
    },
  },
  log: {
    db: async (tx, a) => {
      await agentLog(tx, a, 'info', `agent ${a.name} bootstrapped`);
      return 'agent log entry written';
    },
  },
};

const recordStep = (steps: BootstrapStep[], step: StepName, state: 'done' | 'failed', detail: string) =>
  steps.map((s) => (s.step === step ? { step, state, detail: detail.slice(0, 500), at: new Date().toISOString() } : s));

/**
 * Creates an agent through recorded, idempotent bootstrap steps. A name that exists with an
 * unfinished bootstrap (a step failed, or the process died mid-way) resumes from the first
 * step not done; a name whose bootstrap completed is a 409. A new agent beyond the plan's
 * `agents` (offline ones aside) is a 402 and leaves nothing behind.
 */
export async function createAgent(ctx: Ctx, orgId: string, input: NewAgent, meta: EventMeta): Promise<BootstrapResult> {
  let agentId: number;
  let resumed = false;
  try {
    agentId = await ctx.db.transaction(async (tx) => {
      const [a] = await tx.insert(agents).values({
        orgId, name: input.name, displayName: input.displayName ?? null, role: input.role ?? 'engineer', model: input.model ?? 'offline-1',
        provider: input.provider ?? ctx.config.LLM_DEFAULT_PROVIDER, intervalSec: input.intervalSec ?? 3600, emoji: input.emoji ?? null, color: input.color ?? null,
        systemPrompt: input.systemPrompt ?? null, derivationRules: input.derivationRules ?? [], status: input.status ?? 'active',
        dailyTokenBudget: input.dailyTokenBudget ?? null, templateSlug: input.templateSlug ?? null, ownerUserId: input.ownerUserId,
        workspacePath: input.workspacePath ?? null,
        bootstrap: recordStep(pending(), 'registration', 'done', 'registered'),
        // The creator holds the lease from the start: a concurrent POST with the name cannot run the steps first.
        bootstrapLeaseUntil: sql`now() + ${`${leaseMs(ctx)} milliseconds`}::interval`,
      }).returning();
      // After the insert: a name whose bootstrap is unfinished fails it above and resumes, whatever the plan.
      if (countsAgainstPlan(a!.status)) await enforceAgentLimit(tx, orgId, a!.id);
      await ctx.outbox.enqueue(tx, 'agents.agent.created', { agentId: a!.id, name: a!.name, status: a!.status }, meta);
      return a!.id;
    });
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    const [existing] = await ctx.db.select().from(agents).where(and(eq(agents.orgId, orgId), eq(agents.name, input.name)));
    if (!existing || existing.bootstrappedAt) throw conflict(`An agent named "${input.name}" already exists`);
    agentId = existing.id;
    resumed = true;
  }
  return { ...(await runBootstrap(ctx, agentId, input.identity ?? null, !resumed)), resumed };
}

/** The lease outlives every step's timeout, so a crashed bootstrap can be resumed once it lapses. */
const leaseMs = (ctx: Ctx) => ctx.config.BOOTSTRAP_STEP_TIMEOUT_MS * BOOTSTRAP_STEPS.length + 10_000;

async function runBootstrap(ctx: Ctx, agentId: number, identity: string | null, leased: boolean): Promise<Omit<BootstrapResult, 'resumed'>> {
  const timeout = ctx.config.BOOTSTRAP_STEP_TIMEOUT_MS;
  const [claimed] = leased
    ? await ctx.db.select().from(agents).where(eq(agents.id, agentId))
    : await ctx.db.update(agents).set({ bootstrapLeaseUntil: sql`now() + ${`${leaseMs(ctx)} milliseconds`}::interval` })
      .where(and(eq(agents.id, agentId), isNull(agents.bootstrappedAt), or(isNull(agents.bootstrapLeaseUntil), lt(agents.bootstrapLeaseUntil, sql`now()`))))
      .returning();
  if (!claimed) {
    const [now] = await ctx.db.select({ bootstrappedAt: agents.bootstrappedAt }).from(agents).where(eq(agents.id, agentId));
    throw conflict(now?.bootstrappedAt ? 'The agent already exists' : 'The agent is being bootstrapped by another request; try again shortly');
  }
  let agent = claimed;
  let steps = BOOTSTRAP_STEPS.map((name) => claimed.bootstrap.find((s) => s.step === name) ?? { step: name, state: 'pending' as const, detail: 'not run yet', at: null });
  for (const name of BOOTSTRAP_STEPS) {
    if (steps.find((s) => s.step === name)!.state === 'done' || name === 'registration') continue;
    const runner = STEP_RUNNERS[name];
    try {
      if (runner.db) {
        agent = await ctx.db.transaction(async (tx) => {
          const [a] = await tx.select().from(agents).where(eq(agents.id, agentId));
          const detail = await runner.db!(tx, a!, identity);
          steps = recordStep(steps, name, 'done', detail);
          const [u] = await tx.update(agents).set({ bootstrap: steps }).where(eq(agents.id, agentId)).returning();
          return u!;
        });
      } else {
        const detail = await withTimeout(timeout, `step ${name}`, runner.other!(ctx, agent));
        steps = recordStep(steps, name, 'done', detail);
        [agent] = await ctx.db.update(agents).set({ bootstrap: steps }).where(eq(agents.id, agentId)).returning() as [AgentRow];
      }
    } catch (err) {
      steps = recordStep(steps, name, 'failed', (err as Error).message ?? String(err));
      break;
    }
  }
  const complete = steps.every((s) => s.state === 'done');
  [agent] = await ctx.db.update(agents).set({ bootstrap: steps, bootstrapLeaseUntil: null, ...(complete ? { bootstrappedAt: new Date(), updatedAt: new Date() } : {}) })
    .where(eq(agents.id, agentId)).returning() as [AgentRow];
  if (complete) await evictIdle(ctx, agent.orgId, [agent.name]);
  return { agent, steps: steps.map((s) => ({ ...s, ok: s.state === 'done' })), complete };
}
