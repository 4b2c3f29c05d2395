import { Queues } from '@aos/contracts';
import { systemMeta } from '@aos/bus';
import { UnrecoverableError, type Job, type Redis } from '@aos/queue';
import { and, eq, inArray, isNull, lt, sql } from 'drizzle-orm';
import { agentRuns, agents, type RunStatus } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { evictIdle } from './agents.js';
import { agentLog, runOutcomeLine } from './logs.js';
import { reconcileSchedules } from './schedules.js';
import { ProviderError, providers, UsageMeter, type ChatMessage, type ProviderSettings, type Usage } from './providers.js';

export type Run = typeof agentRuns.$inferSelect;
type Agent = typeof agents.$inferSelect;
export const TERMINAL: readonly RunStatus[] = ['succeeded', 'failed', 'cancelled'];

export const settings = (ctx: Ctx): ProviderSettings => ({
  openaiBaseUrl: ctx.config.OPENAI_BASE_URL, openaiApiKey: ctx.config.OPENAI_API_KEY, anthropicBaseUrl: ctx.config.ANTHROPIC_BASE_URL,
  anthropicApiKey: ctx.config.ANTHROPIC_API_KEY, anthropicMaxTokens: ctx.config.ANTHROPIC_MAX_TOKENS, timeoutMs: ctx.config.LLM_TIMEOUT_MS,
  maxAttempts: ctx.config.LLM_MAX_ATTEMPTS, retryBaseMs: ctx.config.LLM_RETRY_BASE_MS, retryMaxMs: ctx.config.LLM_RETRY_MAX_MS, offlineDelayMs: ctx.config.OFFLINE_TOKEN_DELAY_MS,
});

export const cost = (ctx: Ctx, input: number, output: number) =>
  (input / 1000) * ctx.config.LLM_COST_PER_1K_INPUT_USD + (output / 1000) * ctx.config.LLM_COST_PER_1K_OUTPUT_USD;

export const systemPromptOf = (a: Agent) => a.systemPrompt ?? `You are ${a.displayName ?? a.name}, a ${a.role} agent.`;

/** A run's events (`token`, `retry`, `done`) live in a Redis stream: SSE readers replay it from any id. */
export const runStreamKey = (ctx: Ctx, runId: number) => `${ctx.config.REDIS_PREFIX}:run:${runId}:events`;
/** Cancellation requests travel here to whichever process runs the job (the DB flag is the fallback). */
export const cancelChannel = (ctx: Ctx) => `${ctx.config.REDIS_PREFIX}:run-cancel`;

export type StreamEvent = { type: 'token'; token: string } | { type: 'retry'; attempt: number; error: string } | { type: 'done'; status: RunStatus; error?: string };

export async function appendRunEvent(ctx: Ctx, redis: Redis, runId: number, event: StreamEvent) {
  const key = runStreamKey(ctx, runId);
  const multi = redis.multi().xadd(key, 'MAXLEN', '~', '20000', '*', 'e', JSON.stringify(event));
  await multi.expire(key, event.type === 'done' ? ctx.config.RUN_STREAM_TTL_SEC : ctx.config.RUN_STREAM_TTL_SEC * 2).exec();
}

export const jobIdOf = (run: Pick<Run, 'id' | 'jobId'>) => run.jobId ?? `run-${run.id}`;

export async function enqueueRun(ctx: Ctx, run: Pick<Run, 'id' | 'jobId'>) {
  await ctx.queues.add(Queues.agentRuns, 'run', { runId: run.id }, {
    jobId: jobIdOf(run), attempts: ctx.config.RUN_ATTEMPTS, backoff: { type: 'exponential', delay: ctx.config.LLM_RETRY_BASE_MS },
  });
}

/**
 * Records a run and queues it. The row is the record: when the enqueue fails (Redis away) the
 * run stays `queued` and the reconciler puts it on BullMQ later, so the caller still succeeds.
 */
export async function createRun(ctx: Ctx, agent: Agent, input: string, taskId: number | null, userId: string | null, opts: { retryOf?: number; byCycle?: boolean } = {}): Promise<Run> {
  const run = await ctx.db.transaction(async (tx) => {
    const [inserted] = await tx.insert(agentRuns).values({ orgId: agent.orgId, agentId: agent.id, taskId, input, provider: agent.provider, model: agent.model, userId, retryOf: opts.retryOf ?? null }).returning();
    const [withJob] = await tx.update(agentRuns).set({ jobId: `run-${inserted!.id}` }).where(eq(agentRuns.id, inserted!.id)).returning();
    const how = opts.byCycle ? ' by a cycle' : opts.retryOf ? ` to retry run ${opts.retryOf}` : '';
    await agentLog(tx, agent, 'info', `run ${inserted!.id} queued${how}${taskId ? ` for task #${taskId}` : ''}`, { run_id: inserted!.id, task_id: taskId });
    return withJob!;
  });
  await enqueueRun(ctx, run).catch((err: Error) => ctx.log.warn({ err: err.message, runId: run.id }, 'run enqueue failed; the reconciler will queue it'));
  // A run on a task takes it off the agent's ready list.
  if (taskId !== null) await evictIdle(ctx, agent.orgId, [agent.name]);
  return run;
}

/** The last attempt's outcome; `usage` is what that attempt used (earlier attempts' usage is on the row already). */
interface Outcome { status: 'succeeded' | 'failed' | 'cancelled'; output?: string; error?: string; usage?: Usage }

/** Column updates adding one attempt's usage (and its cost) to what the run has recorded so far. */
function addUsage(ctx: Ctx, u: Usage | undefined) {
  const input = sql<number>`${agentRuns.inputTokens} + ${u?.inputTokens ?? 0}::int`;
  const output = sql<number>`${agentRuns.outputTokens} + ${u?.outputTokens ?? 0}::int`;
  return {
    inputTokens: input, outputTokens: output, usageEstimated: sql<boolean>`${agentRuns.usageEstimated} OR ${u?.estimated ?? false}::boolean`,
    costUsd: sql<number>`(${input}) / 1000.0 * ${ctx.config.LLM_COST_PER_1K_INPUT_USD}::float8 + (${output}) / 1000.0 * ${ctx.config.LLM_COST_PER_1K_OUTPUT_USD}::float8`,
  };
}

/**
 * Finishes a run still in one of `from` and emits `agents.run.completed` with everything the run
 * used, over all its attempts, however it ended (billing consumes it once per run id). Returns
 * false when the run had already left those states (nothing emitted).
 */
export async function finishRun(ctx: Ctx, run: Run, agent: Agent, result: Outcome, from: RunStatus[] = ['queued', 'running']): Promise<boolean> {
  return ctx.db.transaction(async (tx) => {
    const [done] = await tx.update(agentRuns).set({
      status: result.status, output: result.output || null, error: result.error ?? null, ...addUsage(ctx, result.usage), finishedAt: new Date(),
    }).where(and(eq(agentRuns.id, run.id), inArray(agentRuns.status, from))).returning();
    if (!done) return false;
    await agentLog(tx, agent, result.status === 'failed' ? 'error' : 'info', runOutcomeLine(done), { run_id: run.id, task_id: run.taskId });
    // The agent goes back to idle (or error) only from `working` and when none of its other runs is still running.
    const othersRunning = sql`EXISTS (SELECT 1 FROM agent_runs r WHERE r.agent_id = ${agent.id} AND r.status = 'running' AND r.id <> ${run.id})`;
    await tx.update(agents).set({
      status: sql`CASE WHEN ${agents.status} = 'working' AND NOT ${othersRunning} THEN ${result.status === 'failed' ? 'error' : 'idle'} ELSE ${agents.status} END`,
      currentTask: sql`CASE WHEN ${othersRunning} THEN ${agents.currentTask} ELSE NULL END`, lastHeartbeat: new Date(), updatedAt: new Date(),
    }).where(eq(agents.id, agent.id));
    const meta = { ...systemMeta(null, run.orgId), actor: { type: 'agent' as const, id: agent.name } };
    await ctx.outbox.enqueue(tx, 'agents.run.completed', {
      runId: run.id, agentId: agent.id, agentName: agent.name, status: result.status, taskId: run.taskId, model: run.model, provider: run.provider,
      usage: { inputTokens: done.inputTokens, outputTokens: done.outputTokens, totalTokens: done.inputTokens + done.outputTokens },
      costUsd: done.costUsd, userId: run.userId, durationMs: run.startedAt ? Date.now() - run.startedAt.getTime() : 0, error: result.error ?? null,
    }, meta);
    if (result.status === 'failed') {
      await ctx.outbox.enqueue(tx, 'agents.agent.errored', { agentId: agent.id, name: agent.name, status: 'error', error: result.error ?? 'run failed', ownerUserId: agent.ownerUserId }, meta);
    }
    return true;
  });
}

/** Marks a run started (only if still queued/running and not cancelled); emits `agents.run.started` on its first attempt. */
async function startRun(ctx: Ctx, runId: number, agent: Agent): Promise<Run | null> {
  return ctx.db.transaction(async (tx) => {
    const [run] = await tx.update(agentRuns).set({ status: 'running', startedAt: sql`coalesce(${agentRuns.startedAt}, now())`, attempts: sql`${agentRuns.attempts} + 1` })
      .where(and(eq(agentRuns.id, runId), inArray(agentRuns.status, ['queued', 'running']), isNull(agentRuns.cancelRequestedAt))).returning();
    if (!run) return null;
    await tx.update(agents).set({ status: sql`CASE WHEN ${agents.status} IN ('paused', 'offline') THEN ${agents.status} ELSE 'working' END`, currentTask: run.taskId ? String(run.taskId) : agents.currentTask, lastHeartbeat: new Date() })
      .where(eq(agents.id, agent.id));
    if (run.attempts === 1) await ctx.outbox.enqueue(tx, 'agents.run.started', { runId, agentId: agent.id, agentName: agent.name }, { ...systemMeta(null, run.orgId), actor: { type: 'agent', id: agent.name } });
    await agentLog(tx, agent, 'info', `run ${runId} started${run.attempts > 1 ? ` (attempt ${run.attempts})` : ''}${run.taskId ? ` on task #${run.taskId}` : ''} with ${run.provider}/${run.model}`, { run_id: runId, task_id: run.taskId });
    return run;
  });
}

/**
 * Executes a queued run with the agent's provider, streaming its tokens. A retryable provider
 * failure goes back to BullMQ (backoff) until the attempts are spent; cancellation (pub/sub,
 * or the DB flag polled every RUN_CANCEL_POLL_MS) aborts the provider call.
 */
export function runWorker(ctx: Ctx, redis: Redis, running: Map<number, AbortController>) {
  const all = providers(settings(ctx));
  return async (payload: { runId?: number }, job: Job<unknown>) => {
    if (job.name === 'reconcile') return { ...(await reconcileRuns(ctx)), ...(await reconcileSchedules(ctx)) };
    const runId = payload.runId!;
    const [row] = await ctx.db.select({ run: agentRuns, agent: agents }).from(agentRuns).innerJoin(agents, eq(agents.id, agentRuns.agentId)).where(eq(agentRuns.id, runId));
    if (!row || TERMINAL.includes(row.run.status as RunStatus)) return { skipped: true };
    const { agent } = row;
    if (row.run.cancelRequestedAt) {
      await finishRun(ctx, row.run, agent, { status: 'cancelled', error: 'cancelled' });
      await appendRunEvent(ctx, redis, runId, { type: 'done', status: 'cancelled' });
      return { status: 'cancelled' };
    }
    const run = await startRun(ctx, runId, agent);
    if (!run) return { skipped: true };
    const provider = all[run.provider];
    if (!provider) {
      await finishRun(ctx, run, agent, { status: 'failed', error: `unknown provider ${run.provider}` });
      await appendRunEvent(ctx, redis, runId, { type: 'done', status: 'failed', error: `unknown provider ${run.provider}` });
      throw new UnrecoverableError(`unknown provider ${run.provider}`);
    }
    // The run's own count of starts: a BullMQ retry, but also a worker that died mid-attempt (stalled, or re-queued by the reconciler).
    if (run.attempts > 1) await appendRunEvent(ctx, redis, runId, { type: 'retry', attempt: run.attempts, error: row.run.error ?? 'retrying' });
    const controller = new AbortController();
    const meter = new UsageMeter();
    const messages: ChatMessage[] = [{ role: 'system', content: systemPromptOf(agent) }, { role: 'user', content: run.input }];
    running.set(runId, controller);
    const poll = setInterval(() => {
      void ctx.db.select({ at: agentRuns.cancelRequestedAt }).from(agentRuns).where(eq(agentRuns.id, runId))
        .then(([r]) => { if (r?.at) controller.abort(new Error('cancelled')); }, () => {});
    }, ctx.config.RUN_CANCEL_POLL_MS);
    try {
      const result = await provider.complete({
        model: run.model, signal: controller.signal, messages, meter,
        onToken: (token) => void appendRunEvent(ctx, redis, runId, { type: 'token', token }).catch(() => {}),
      });
      await finishRun(ctx, run, agent, { status: 'succeeded', output: result.text, usage: result });
      await appendRunEvent(ctx, redis, runId, { type: 'done', status: 'succeeded' });
      return { status: 'succeeded' };
    } catch (err) {
      // What the provider produced before the run ended is used (and billed) all the same.
      const used = meter.usage(messages);
      if (controller.signal.aborted) {
        await finishRun(ctx, run, agent, { status: 'cancelled', error: 'cancelled', output: meter.text, usage: used });
        await appendRunEvent(ctx, redis, runId, { type: 'done', status: 'cancelled' });
        return { status: 'cancelled' };
      }
      const message = (err as Error).message ?? String(err);
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (err instanceof ProviderError && err.retryable && !lastAttempt) {
        await ctx.db.transaction(async (tx) => {
          const [back] = await tx.update(agentRuns).set({ status: 'queued', error: message, ...addUsage(ctx, used) }).where(and(eq(agentRuns.id, runId), eq(agentRuns.status, 'running'))).returning();
          if (back) await agentLog(tx, agent, 'warn', `run ${runId} attempt ${job.attemptsMade + 1} failed, retrying: ${message.slice(0, 500)}`, { run_id: runId });
        });
        throw err;
      }
      await finishRun(ctx, run, agent, { status: 'failed', error: message, output: meter.text, usage: used });
      await appendRunEvent(ctx, redis, runId, { type: 'done', status: 'failed', error: message });
      throw new UnrecoverableError(message);
    } finally {
      clearInterval(poll);
      running.delete(runId);
    }
  };
}

/**
 * Puts back on BullMQ the runs whose job is gone: a crash between the run's insert and its
 * enqueue, a job that ended while the run did not (worker died past the stall limit), or a
 * Redis that lost its data. Runs are found in Postgres, the source of truth.
 */
export async function reconcileRuns(ctx: Ctx): Promise<{ requeued: number }> {
  const grace = `${ctx.config.RUN_RECONCILE_GRACE_MS} milliseconds`;
  const open = await ctx.db.select().from(agentRuns)
    .where(and(inArray(agentRuns.status, ['queued', 'running']), lt(sql`coalesce(${agentRuns.startedAt}, ${agentRuns.createdAt})`, sql`now() - ${grace}::interval`)))
    .orderBy(agentRuns.id).limit(500);
  const queue = ctx.queues.queue(Queues.agentRuns);
  let requeued = 0;
  for (const run of open) {
    const job = await queue.getJob(jobIdOf(run));
    const state = job ? await job.getState() : 'missing';
    if (state !== 'missing' && state !== 'completed' && state !== 'failed' && state !== 'unknown') continue;
    const jobId = state === 'missing' || state === 'unknown' ? jobIdOf(run) : `run-${run.id}-r${Date.now()}`;
    // Compare-and-set on the job id read: of overlapping passes, only one gives the run a new job.
    const [moved] = await ctx.db.update(agentRuns).set({ status: 'queued', jobId })
      .where(and(eq(agentRuns.id, run.id), inArray(agentRuns.status, ['queued', 'running']), sql`${agentRuns.jobId} IS NOT DISTINCT FROM ${run.jobId}`)).returning();
    if (!moved) continue;
    await enqueueRun(ctx, moved);
    requeued++;
  }
  if (requeued) ctx.log.warn({ requeued }, 'runs without a BullMQ job re-queued');
  return { requeued };
}

