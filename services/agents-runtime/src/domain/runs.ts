import { Queues } from '@aos/contracts';
import { systemMeta } from '@aos/bus';
import { UnrecoverableError, type Job } from '@aos/queue';
import { and, eq, sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';
import { agentRuns, agents } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { providers, RetryableError, type ProviderSettings } from './providers.js';

type Run = typeof agentRuns.$inferSelect;
type Agent = typeof agents.$inferSelect;

export const settings = (ctx: Ctx): ProviderSettings => ({
  openaiBaseUrl: ctx.config.OPENAI_BASE_URL, openaiApiKey: ctx.config.OPENAI_API_KEY, anthropicBaseUrl: ctx.config.ANTHROPIC_BASE_URL,
  anthropicApiKey: ctx.config.ANTHROPIC_API_KEY, timeoutMs: ctx.config.LLM_TIMEOUT_MS, maxAttempts: ctx.config.LLM_MAX_ATTEMPTS,
  retryBaseMs: ctx.config.LLM_RETRY_BASE_MS, offlineDelayMs: ctx.config.OFFLINE_TOKEN_DELAY_MS,
});

export const cost = (ctx: Ctx, input: number, output: number) =>
  (input / 1000) * ctx.config.LLM_COST_PER_1K_INPUT_USD + (output / 1000) * ctx.config.LLM_COST_PER_1K_OUTPUT_USD;

/** Channels on which a run's tokens and cancellation travel between processes. */
export const channels = (ctx: Ctx) => ({ tokens: (runId: number) => `${ctx.config.REDIS_PREFIX}:run:${runId}`, cancel: `${ctx.config.REDIS_PREFIX}:run-cancel` });

export async function enqueueRun(ctx: Ctx, run: Run, suffix = '') {
  await ctx.queues.add(Queues.agentRuns, 'run', { runId: run.id }, {
    jobId: `run-${run.id}${suffix}`, attempts: ctx.config.RUN_ATTEMPTS, backoff: { type: 'exponential', delay: ctx.config.LLM_RETRY_BASE_MS },
  });
}

/** Finishes a run and emits `agents.run.completed` (billing consumes its tokens once). */
async function finish(ctx: Ctx, run: Run, agent: Agent, result: { status: 'succeeded' | 'failed' | 'cancelled'; output?: string; error?: string; inputTokens: number; outputTokens: number }) {
  const usd = cost(ctx, result.inputTokens, result.outputTokens);
  await ctx.db.transaction(async (tx) => {
    const [done] = await tx.update(agentRuns).set({
      status: result.status, output: result.output ?? null, error: result.error ?? null, inputTokens: result.inputTokens,
      outputTokens: result.outputTokens, costUsd: usd, finishedAt: new Date(),
    }).where(and(eq(agentRuns.id, run.id), sql`${agentRuns.status} IN ('queued', 'running')`)).returning();
    if (!done) return;
    await tx.update(agents).set({ status: result.status === 'failed' ? 'error' : 'idle', lastHeartbeat: new Date(), updatedAt: new Date() }).where(eq(agents.id, agent.id));
    const meta = { ...systemMeta(null, run.orgId), actor: { type: 'agent' as const, id: agent.name } };
    await ctx.outbox.enqueue(tx, 'agents.run.completed', {
      runId: run.id, agentId: agent.id, agentName: agent.name, status: result.status, taskId: run.taskId, model: run.model, provider: run.provider,
      usage: { inputTokens: result.inputTokens, outputTokens: result.outputTokens, totalTokens: result.inputTokens + result.outputTokens },
      costUsd: usd, userId: run.userId, durationMs: run.startedAt ? Date.now() - run.startedAt.getTime() : 0, error: result.error ?? null,
    }, meta);
    if (result.status === 'failed') {
      await ctx.outbox.enqueue(tx, 'agents.agent.errored', { agentId: agent.id, name: agent.name, status: 'error', error: result.error ?? 'run failed', ownerUserId: agent.ownerUserId }, meta);
    }
  });
}

/**
 * Executes a queued run with the agent's provider, publishing tokens as they come. A
 * retryable provider failure goes back to the queue (BullMQ backoff) until the attempts
 * are spent; cancellation aborts the provider call between tokens.
 */
export function runWorker(ctx: Ctx, publisher: Redis, running: Map<number, AbortController>) {
  const all = providers(settings(ctx));
  return async ({ runId }: { runId: number }, job: Job<unknown>) => {
    const [row] = await ctx.db.select({ run: agentRuns, agent: agents }).from(agentRuns).innerJoin(agents, eq(agents.id, agentRuns.agentId)).where(eq(agentRuns.id, runId));
    if (!row || row.run.status === 'cancelled' || row.run.status === 'succeeded' || row.run.status === 'failed') return { skipped: true };
    const { agent } = row;
    const [run] = await ctx.db.update(agentRuns).set({ status: 'running', startedAt: row.run.startedAt ?? new Date(), attempts: sql`${agentRuns.attempts} + 1` }).where(eq(agentRuns.id, runId)).returning();
    await ctx.db.update(agents).set({ status: 'working', currentTask: run!.taskId ? String(run!.taskId) : null, lastHeartbeat: new Date() }).where(eq(agents.id, agent.id));
    const provider = all[run!.provider];
    if (!provider) {
      await finish(ctx, run!, agent, { status: 'failed', error: `unknown provider ${run!.provider}`, inputTokens: 0, outputTokens: 0 });
      throw new UnrecoverableError(`unknown provider ${run!.provider}`);
    }
    const controller = new AbortController();
    running.set(runId, controller);
    const channel = channels(ctx).tokens(runId);
    try {
      const result = await provider.complete({
        model: run!.model, signal: controller.signal,
        messages: [
          { role: 'system', content: agent.systemPrompt ?? `You are ${agent.displayName ?? agent.name}, a ${agent.role} agent.` },
          { role: 'user', content: run!.input },
        ],
        onToken: (token) => void publisher.publish(channel, JSON.stringify({ type: 'token', token })),
      });
      await finish(ctx, run!, agent, { status: 'succeeded', output: result.text, inputTokens: result.inputTokens, outputTokens: result.outputTokens });
      await publisher.publish(channel, JSON.stringify({ type: 'done', status: 'succeeded' }));
      return { status: 'succeeded' };
    } catch (err) {
      if (controller.signal.aborted) {
        await finish(ctx, run!, agent, { status: 'cancelled', error: 'cancelled', inputTokens: 0, outputTokens: 0 });
        await publisher.publish(channel, JSON.stringify({ type: 'done', status: 'cancelled' }));
        return { status: 'cancelled' };
      }
      const message = (err as Error).message ?? String(err);
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (err instanceof RetryableError && !lastAttempt) {
        await ctx.db.update(agentRuns).set({ status: 'queued', error: message }).where(eq(agentRuns.id, runId));
        throw err;
      }
      await finish(ctx, run!, agent, { status: 'failed', error: message, inputTokens: 0, outputTokens: 0 });
      await publisher.publish(channel, JSON.stringify({ type: 'done', status: 'failed', error: message }));
      throw new UnrecoverableError(message);
    } finally {
      running.delete(runId);
    }
  };
}
