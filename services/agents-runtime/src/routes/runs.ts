import { Queues } from '@aos/contracts';
import { systemMeta } from '@aos/bus';
import { AppError, badRequest, conflict, notFound } from '@aos/core';
import { isUniqueViolation, type Tx } from '@aos/db';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, desc, eq, inArray, sql, type SQL } from 'drizzle-orm';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import { agentMessages, agentRuns, agents, assignedTasks, RunStatuses, type RunStatus } from '../db/schema.js';
import { findAgent, findAgentByRef } from '../domain/agents.js';
import { ProviderError, providers, UsageMeter, type ChatMessage, type Usage } from '../domain/providers.js';
import { appendRunEvent, cancelChannel, cost, createRun, finishRun, jobIdOf, runStreamKey, settings, systemPromptOf, TERMINAL, type Run } from '../domain/runs.js';
import { agentLog, runOutcomeLine } from '../domain/logs.js';
import type * as schema from '../db/schema.js';
import type { Ctx } from '../service.js';
import { NameParam } from './agents.js';
import { AgentName, countOf, enumList, Id, literals } from './common.js';

export const RunSchema = Type.Object({
  id: Type.Integer(), agent_id: Type.Integer(), agent_name: Type.Optional(Type.String()), task_id: Nullable(Type.Integer()), input: Type.String(), status: literals(RunStatuses),
  output: Nullable(Type.String()), error: Nullable(Type.String()), provider: Type.String(), model: Type.String(), input_tokens: Type.Integer(), output_tokens: Type.Integer(),
  total_tokens: Type.Integer(), cost_usd: Type.Number(), usage_estimated: Type.Boolean({ description: 'part of the usage is estimated (~4 characters a token): the run ended before the provider reported its count' }),
  attempts: Type.Integer(), cancel_requested: Type.Boolean(), retry_of: Nullable(Type.Integer({ description: 'the failed or cancelled run this one runs again' })),
  created_at: Type.String(), started_at: Nullable(Type.String()), finished_at: Nullable(Type.String()),
});
const view = (r: Run) => ({
  id: r.id, agent_id: r.agentId, task_id: r.taskId, input: r.input, status: r.status as RunStatus, output: r.output, error: r.error, provider: r.provider, model: r.model,
  input_tokens: r.inputTokens, output_tokens: r.outputTokens, total_tokens: r.inputTokens + r.outputTokens, cost_usd: r.costUsd, usage_estimated: r.usageEstimated,
  attempts: r.attempts, cancel_requested: r.cancelRequestedAt !== null, retry_of: r.retryOf, created_at: r.createdAt.toISOString(), started_at: r.startedAt?.toISOString() ?? null, finished_at: r.finishedAt?.toISOString() ?? null,
});
const TaskId = Type.Integer({ minimum: 1, maximum: 2_147_483_647 });
const RunFilters = {
  ...PaginationQuery, status: Type.Optional(Type.String({ maxLength: 100, description: 'comma list of queued, running, succeeded, failed, cancelled' })), task_id: Type.Optional(TaskId),
  retry_of: Type.Optional(Type.Integer({ minimum: 1, maximum: 2_147_483_647, description: 'the retry of this run' })),
};

/** Provider failures of a synchronous call: 504 for a timeout, 503 otherwise; never a 500. */
const upstream = (err: unknown) => new AppError(err instanceof ProviderError && err.kind === 'timeout' ? 'UPSTREAM_TIMEOUT' : 'SERVICE_UNAVAILABLE', `The model provider failed: ${((err as Error).message ?? String(err)).slice(0, 300)}`);

export async function runRoutes(app: App, ctx: Ctx) {
  const all = providers(settings(ctx));
  const findRun = async (orgId: string, id: number) => {
    const [r] = await ctx.db.select().from(agentRuns).where(and(eq(agentRuns.orgId, orgId), eq(agentRuns.id, id)));
    if (!r) throw notFound('Run');
    return r;
  };

  const listRuns = async (q: { limit?: number; offset?: number; status?: string; task_id?: number; retry_of?: number }, extra: SQL[], orgId: string) => {
    const p = page(q);
    const statuses = enumList(q.status, RunStatuses, 'status');
    const cond = and(eq(agentRuns.orgId, orgId), statuses ? inArray(agentRuns.status, statuses) : undefined, q.task_id ? eq(agentRuns.taskId, q.task_id) : undefined,
      q.retry_of ? eq(agentRuns.retryOf, q.retry_of) : undefined, ...extra);
    const rows = await ctx.db.select().from(agentRuns).where(cond).orderBy(desc(agentRuns.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(view), await countOf(ctx, agentRuns, cond), p);
  };

  app.post('/agents/:name/runs', {
    config: { scope: 'agents:execute' },
    schema: {
      tags: ['Runs'], summary: 'Run an agent on a task or an input (queued on BullMQ)', params: NameParam,
      body: Type.Object({ input: Type.Optional(Type.String({ minLength: 1, maxLength: 100_000 })), task_id: Type.Optional(TaskId) }, { additionalProperties: false }),
      response: { 202: Envelope(RunSchema) },
    },
  }, async (request, reply) => {
    const { input, task_id: taskId } = request.body;
    if (!input && !taskId) throw badRequest('input or task_id is required');
    const agent = await findAgentByRef(ctx, orgOf(request), request.params.name);
    let text = input ?? '';
    if (taskId) {
      // The organization's tasks as the tasks service's events report them (every task, assigned or not).
      const [task] = await ctx.db.select().from(assignedTasks).where(and(eq(assignedTasks.orgId, agent.orgId), eq(assignedTasks.taskId, taskId)));
      if (!task || task.status === 'deleted') throw new AppError('NOT_FOUND', `Task #${taskId} not found`, [{ field: 'task_id' }]);
      text ||= task.title ? `Work on task #${taskId}: ${task.title}` : `Work on task #${taskId}`;
    }
    const run = await createRun(ctx, agent, text, taskId ?? null, request.principal.userId);
    return reply.status(202).send(ok(view(run)));
  });

  app.get('/agents/:name/runs', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Runs'], summary: "An agent's runs, newest first", params: NameParam, querystring: Type.Object(RunFilters), response: { 200: ListEnvelope(RunSchema) } },
  }, async (request) => {
    const agent = await findAgentByRef(ctx, orgOf(request), request.params.name);
    return listRuns(request.query, [eq(agentRuns.agentId, agent.id)], agent.orgId);
  });

  app.get('/agent-runs', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Runs'], summary: 'Recent runs of every agent', querystring: Type.Object({ ...RunFilters, agent: Type.Optional(AgentName) }), response: { 200: ListEnvelope(RunSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const extra = request.query.agent ? [sql`${agentRuns.agentId} IN (SELECT ${agents.id} FROM ${agents} WHERE ${agents.orgId} = ${orgId} AND ${agents.name} = ${request.query.agent})`] : [];
    return listRuns(request.query, extra, orgId);
  });

  app.get('/agent-runs/:id', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Runs'], summary: 'A run', params: Id, response: { 200: Envelope(RunSchema) } },
  }, async (request) => ok(view(await findRun(orgOf(request), request.params.id))));

  app.post('/agent-runs/:id/cancel', {
    config: { scope: 'agents:execute' },
    schema: { tags: ['Runs'], summary: 'Cancel a queued or running run', description: 'A queued run is cancelled at once; a running one is aborted by its worker (the answer waits up to 5 s for it).', params: Id, response: { 200: Envelope(RunSchema) } },
  }, async (request) => {
    const run = await findRun(orgOf(request), request.params.id);
    if (TERMINAL.includes(run.status as RunStatus)) throw conflict(`The run is already ${run.status}`);
    // The flag first: from here on no worker starts the run, and a running one sees it at its next poll.
    await ctx.db.update(agentRuns).set({ cancelRequestedAt: sql`coalesce(${agentRuns.cancelRequestedAt}, now())` }).where(eq(agentRuns.id, run.id));
    const agent = await findAgent(ctx, run.orgId, { id: run.agentId });
    if (await finishRun(ctx, run, agent, { status: 'cancelled', error: 'cancelled' }, ['queued'])) {
      await ctx.queues.queue(Queues.agentRuns).remove(jobIdOf(run)).catch(() => {});
      await appendRunEvent(ctx, ctx.queues.connection, run.id, { type: 'done', status: 'cancelled' });
    } else {
      await ctx.queues.connection.publish(cancelChannel(ctx), String(run.id));
    }
    const deadline = Date.now() + 5_000;
    let current = await findRun(run.orgId, run.id);
    while (!TERMINAL.includes(current.status as RunStatus) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      current = await findRun(run.orgId, run.id);
    }
    return ok(view(current));
  });

  app.post('/agent-runs/:id/retry', {
    config: { scope: 'agents:execute' },
    schema: {
      tags: ['Runs'], summary: 'Run a failed or cancelled run again, as a new run',
      description: 'The new run (`retry_of` = this run) has the same agent, task and input; the original keeps its outcome and usage, each billed once. A run is retried once (409 after).',
      params: Id, response: { 202: Envelope(RunSchema) },
    },
  }, async (request, reply) => {
    const run = await findRun(orgOf(request), request.params.id);
    if (!['failed', 'cancelled'].includes(run.status)) throw conflict(`Only failed or cancelled runs can be retried (this one is ${run.status})`);
    const agent = await findAgent(ctx, run.orgId, { id: run.agentId });
    // A new run id: billing charges each run id once, so the retry's usage is billed apart from the original's.
    const again = await createRun(ctx, agent, run.input, run.taskId, request.principal.userId, { retryOf: run.id }).catch(async (err: unknown) => {
      if (!isUniqueViolation(err)) throw err;
      const [retry] = await ctx.db.select({ id: agentRuns.id }).from(agentRuns).where(eq(agentRuns.retryOf, run.id));
      throw conflict(`Run ${run.id} was already retried as run ${retry?.id ?? '?'}`);
    });
    return reply.status(202).send(ok(view(again)));
  });

  /**
   * Server-sent events of a run, read from its Redis stream: `run`, then `token`… (and `retry`
   * when an attempt starts over), then `done`. Every event has an `id`; a client reconnecting
   * with `Last-Event-ID` continues after it. A finished run whose stream expired replays its output.
   */
  const openStreams = new Set<() => void>();
  // Hijacked responses are not Fastify's to close: end them at shutdown (clients reconnect with Last-Event-ID).
  app.addHook('preClose', async () => { for (const end of openStreams) end(); });

  const stream = async (request: FastifyRequest, reply: FastifyReply, run: Run) => {
    const key = runStreamKey(ctx, run.id);
    const header = request.headers['last-event-id'];
    let lastId = typeof header === 'string' && /^\d{1,20}-\d{1,20}$/.test(header) ? header : '0';
    const reader = ctx.queues.connection.duplicate();
    reader.on('error', (err: Error) => ctx.log.debug({ err: err.message, runId: run.id }, 'run stream reader: redis error'));
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no', 'x-trace-id': request.id });
    const send = (event: string, data: unknown, id?: string) => res.write(`${id ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    let open = true;
    const end = () => { open = false; reader.disconnect(); };
    openStreams.add(end);
    request.raw.on('close', end);
    const heartbeat = setInterval(() => res.write(': ping\n\n'), ctx.config.SSE_HEARTBEAT_MS);
    send('run', { id: run.id, status: run.status });
    /**
     * A finished run ends from its row: without a stream (expired, or a message run) it replays
     * its output. With one, only once it has nothing after `lastId` (`drained`): a reader that had
     * seen `done` already (EventSource reconnects when a stream ends) gets `done` again, not a wait.
     */
    const finished = async (drained: boolean) => {
      const current = await findRun(run.orgId, run.id);
      if (!TERMINAL.includes(current.status as RunStatus)) return false;
      const expired = !(await ctx.queues.connection.exists(key));
      if (!expired && !drained) return false;
      if (expired && current.output) send('token', { token: current.output });
      send('done', { status: current.status, ...(current.error && current.status === 'failed' ? { error: current.error } : {}) });
      return true;
    };
    try {
      if (await finished(false)) open = false;
      while (open) {
        const batch = await reader.xread('COUNT', 500, 'BLOCK', 2_000, 'STREAMS', key, lastId);
        if (!batch) {
          if (await finished(true)) break;
          continue;
        }
        for (const [, entries] of batch) {
          for (const [id, fields] of entries) {
            lastId = id;
            const { type, ...data } = JSON.parse(fields[1]!) as { type: string };
            send(type, data, id);
            if (type === 'done') open = false;
          }
        }
      }
    } catch (err) {
      if (open) ctx.log.warn({ err: (err as Error).message, runId: run.id }, 'run stream failed');
    } finally {
      openStreams.delete(end);
      clearInterval(heartbeat);
      reader.disconnect();
      res.end();
    }
  };

  app.get('/agent-runs/:id/stream', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Runs'], summary: "Stream a run's tokens (text/event-stream; Last-Event-ID resumes)", params: Id },
  }, async (request, reply) => stream(request, reply, await findRun(orgOf(request), request.params.id)));

  app.post('/chat/stream', {
    config: { scope: 'agents:execute' },
    schema: {
      tags: ['Runs'], summary: 'Start a run and stream its tokens (text/event-stream)',
      body: Type.Object({ agent: Type.String({ minLength: 1, maxLength: 200 }), message: Type.String({ minLength: 1, maxLength: 100_000 }) }, { additionalProperties: false }),
    },
  }, async (request, reply) => {
    const agent = await findAgentByRef(ctx, orgOf(request), request.body.agent);
    return stream(request, reply, await createRun(ctx, agent, request.body.message, null, request.principal.userId));
  });

  const MessageSchema = Type.Object({ id: Type.Integer(), role: literals(['user', 'assistant'] as const), content: Type.String(), created_at: Type.String() });
  const ConversationId = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_-]+$' });
  /** Turns of history sent to the provider with a new message (the most recent ones). */
  const HISTORY_TURNS = 50;

  app.post('/agents/:name/messages', {
    config: { scope: 'agents:execute' },
    schema: {
      tags: ['Messages'], summary: 'Send a message and get the reply; the conversation history is kept', params: NameParam,
      body: Type.Object({ message: Type.String({ minLength: 1, maxLength: 100_000 }), conversation_id: Type.Optional(ConversationId) }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ conversation_id: Type.String(), reply: Type.String(), run_id: Type.Integer(), usage: Type.Object({ input_tokens: Type.Integer(), output_tokens: Type.Integer() }) })) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const agent = await findAgentByRef(ctx, orgId, request.params.name);
    const conversationId = request.body.conversation_id ?? randomUUID();
    const recent = await ctx.db.select().from(agentMessages)
      .where(and(eq(agentMessages.orgId, orgId), eq(agentMessages.agentId, agent.id), eq(agentMessages.conversationId, conversationId)))
      .orderBy(desc(agentMessages.id)).limit(HISTORY_TURNS);
    const provider = all[agent.provider];
    if (!provider) throw badRequest(`Unknown provider ${agent.provider}`);
    const messages: ChatMessage[] = [
      { role: 'system', content: systemPromptOf(agent) },
      ...recent.reverse().map((m) => ({ role: m.role as 'user' | 'assistant', content: m.content })),
      { role: 'user', content: request.body.message },
    ];
    const started = new Date();
    /** The message's run, recorded with its usage and emitted for billing in the caller's transaction. */
    const recordRun = async (tx: Tx<typeof schema>, outcome: { status: 'succeeded' | 'failed'; output: string; error: string | null; usage: Usage }) => {
      const { inputTokens, outputTokens, estimated } = outcome.usage;
      const usd = cost(ctx, inputTokens, outputTokens);
      const [r] = await tx.insert(agentRuns).values({
        orgId, agentId: agent.id, input: request.body.message, status: outcome.status, output: outcome.output || null, error: outcome.error, provider: agent.provider, model: agent.model,
        inputTokens, outputTokens, costUsd: usd, usageEstimated: estimated, attempts: 1, userId: request.principal.userId, startedAt: started, finishedAt: new Date(),
      }).returning();
      await ctx.outbox.enqueue(tx, 'agents.run.completed', {
        runId: r!.id, agentId: agent.id, agentName: agent.name, status: outcome.status, taskId: null, model: agent.model, provider: agent.provider,
        usage: { inputTokens, outputTokens, totalTokens: inputTokens + outputTokens }, costUsd: usd, userId: request.principal.userId,
        durationMs: Date.now() - started.getTime(), error: outcome.error,
      }, { ...systemMeta(request.principal.tenantId, orgId), actor: { type: 'agent', id: agent.name } });
      await agentLog(tx, agent, outcome.status === 'failed' ? 'error' : 'info', `message: ${runOutcomeLine(r!)}`, { run_id: r!.id, conversation_id: conversationId });
      return r!;
    };
    const meter = new UsageMeter();
    const result = await provider.complete({ model: agent.model, messages, meter }).catch(async (err: unknown) => {
      const error = upstream(err);
      // A call that failed after the provider began answering still used tokens: a failed run bills them; the conversation is unchanged.
      const used = meter.usage(messages);
      if (used.inputTokens + used.outputTokens > 0) await ctx.db.transaction((tx) => recordRun(tx, { status: 'failed', output: meter.text, error: error.message, usage: used }));
      throw error;
    });
    const run = await ctx.db.transaction(async (tx) => {
      await tx.insert(agentMessages).values([
        { orgId, agentId: agent.id, conversationId, role: 'user', content: request.body.message },
        { orgId, agentId: agent.id, conversationId, role: 'assistant', content: result.text },
      ]);
      return recordRun(tx, { status: 'succeeded', output: result.text, error: null, usage: result });
    });
    return ok({ conversation_id: conversationId, reply: result.text, run_id: run.id, usage: { input_tokens: result.inputTokens, output_tokens: result.outputTokens } });
  });

  app.get('/agents/:name/messages', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Messages'], summary: 'A conversation with an agent, oldest first', params: NameParam, querystring: Type.Object({ ...PaginationQuery, conversation_id: ConversationId }), response: { 200: ListEnvelope(MessageSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const agent = await findAgentByRef(ctx, orgId, request.params.name);
    const p = page(request.query);
    const cond = and(eq(agentMessages.orgId, orgId), eq(agentMessages.agentId, agent.id), eq(agentMessages.conversationId, request.query.conversation_id));
    const rows = await ctx.db.select().from(agentMessages).where(cond).orderBy(asc(agentMessages.id)).limit(p.limit).offset(p.offset);
    return list(rows.map((m) => ({ id: m.id, role: m.role as 'user' | 'assistant', content: m.content, created_at: m.createdAt.toISOString() })), await countOf(ctx, agentMessages, cond), p);
  });
}
