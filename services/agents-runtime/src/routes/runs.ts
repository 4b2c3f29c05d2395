import { Queues } from '@aos/contracts';
import { badRequest, conflict, notFound } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, desc, eq, sql, type SQL } from 'drizzle-orm';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import { agentMessages, agentRuns } from '../db/schema.js';
import { providers } from '../domain/providers.js';
import { channels, cost, enqueueRun, settings } from '../domain/runs.js';
import type { Ctx } from '../service.js';
import { checkName, findAgent, NameParam } from './agents.js';
import { systemMeta } from '@aos/bus';

export const RunSchema = Type.Object({
  id: Type.Integer(), agent_id: Type.Integer(), task_id: Nullable(Type.Integer()), input: Type.String(), status: Type.String(), output: Nullable(Type.String()),
  error: Nullable(Type.String()), provider: Type.String(), model: Type.String(), input_tokens: Type.Integer(), output_tokens: Type.Integer(),
  total_tokens: Type.Integer(), cost_usd: Type.Number(), attempts: Type.Integer(), created_at: Type.String(), started_at: Nullable(Type.String()), finished_at: Nullable(Type.String()),
});
type Run = typeof agentRuns.$inferSelect;
const view = (r: Run) => ({
  id: r.id, agent_id: r.agentId, task_id: r.taskId, input: r.input, status: r.status, output: r.output, error: r.error, provider: r.provider, model: r.model,
  input_tokens: r.inputTokens, output_tokens: r.outputTokens, total_tokens: r.inputTokens + r.outputTokens, cost_usd: r.costUsd, attempts: r.attempts,
  created_at: r.createdAt.toISOString(), started_at: r.startedAt?.toISOString() ?? null, finished_at: r.finishedAt?.toISOString() ?? null,
});
const RunId = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) });
const ref = (name: string) => (/^\d+$/.test(name) ? { id: Number(name) } : (checkName(name), { name }));

export async function runRoutes(app: App, ctx: Ctx) {
  const findRun = async (orgId: string, id: number) => {
    const [r] = await ctx.db.select().from(agentRuns).where(and(eq(agentRuns.orgId, orgId), eq(agentRuns.id, id)));
    if (!r) throw notFound('Run');
    return r;
  };
  const createRun = async (request: FastifyRequest, agentRef: { id?: number; name?: string }, input: string, taskId: number | null) => {
    const orgId = orgOf(request);
    const agent = await findAgent(ctx, orgId, agentRef);
    const [run] = await ctx.db.insert(agentRuns).values({ orgId, agentId: agent.id, taskId, input, provider: agent.provider, model: agent.model, userId: request.principal.userId }).returning();
    await enqueueRun(ctx, run!);
    return run!;
  };

  app.post('/agents/:name/runs', {
    config: { scope: 'agents:execute' },
    schema: {
      tags: ['Runs'], summary: 'Run an agent on a task or an input (queued on BullMQ)', params: NameParam,
      body: Type.Object({ input: Type.Optional(Type.String({ minLength: 1, maxLength: 100_000 })), task_id: Type.Optional(Type.Integer({ minimum: 1, maximum: 2_147_483_647 })) }, { additionalProperties: false }),
      response: { 202: Envelope(RunSchema) },
    },
  }, async (request, reply) => {
    const { input, task_id: taskId } = request.body;
    if (!input && !taskId) throw badRequest('input or task_id is required');
    const run = await createRun(request, ref(request.params.name), input ?? `Work on task #${taskId}`, taskId ?? null);
    return reply.status(202).send(ok(view(run)));
  });

  app.get('/agents/:name/runs', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Runs'], summary: "An agent's runs, newest first", params: NameParam, querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(Type.String({ maxLength: 20 })) }), response: { 200: ListEnvelope(RunSchema) } },
  }, async (request) => {
    const agent = await findAgent(ctx, orgOf(request), ref(request.params.name));
    return listRuns(request.query, [eq(agentRuns.agentId, agent.id)], orgOf(request));
  });

  const listRuns = async (q: { limit?: number; offset?: number; status?: string }, extra: SQL[], orgId: string) => {
    const p = page(q);
    const cond = and(eq(agentRuns.orgId, orgId), ...(q.status ? [eq(agentRuns.status, q.status)] : []), ...extra);
    const rows = await ctx.db.select().from(agentRuns).where(cond).orderBy(desc(agentRuns.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(agentRuns).where(cond)) as [{ n: number }];
    return list(rows.map(view), n, p);
  };

  app.get('/agent-runs', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Runs'], summary: 'Recent runs of every agent', querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(Type.String({ maxLength: 20 })) }), response: { 200: ListEnvelope(RunSchema) } },
  }, async (request) => listRuns(request.query, [], orgOf(request)));

  app.get('/agent-runs/:id', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Runs'], summary: 'A run', params: RunId, response: { 200: Envelope(RunSchema) } },
  }, async (request) => ok(view(await findRun(orgOf(request), request.params.id))));

  app.post('/agent-runs/:id/cancel', {
    config: { scope: 'agents:execute' },
    schema: { tags: ['Runs'], summary: 'Cancel a queued or running run', params: RunId, response: { 200: Envelope(RunSchema) } },
  }, async (request) => {
    const run = await findRun(orgOf(request), request.params.id);
    if (run.status === 'queued') {
      await ctx.db.update(agentRuns).set({ status: 'cancelled', finishedAt: new Date(), error: 'cancelled' }).where(and(eq(agentRuns.id, run.id), eq(agentRuns.status, 'queued')));
      await ctx.queues.queue(Queues.agentRuns).remove(`run-${run.id}`).catch(() => {});
    } else if (run.status === 'running') {
      await ctx.queues.connection.publish(channels(ctx).cancel, String(run.id));
    } else {
      throw conflict(`The run is already ${run.status}`);
    }
    const deadline = Date.now() + 5_000;
    let current = await findRun(run.orgId, run.id);
    while (current.status === 'running' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      current = await findRun(run.orgId, run.id);
    }
    return ok(view(current));
  });

  app.post('/agent-runs/:id/retry', {
    config: { scope: 'agents:execute' },
    schema: { tags: ['Runs'], summary: 'Run a failed or cancelled run again', params: RunId, response: { 202: Envelope(RunSchema) } },
  }, async (request, reply) => {
    const run = await findRun(orgOf(request), request.params.id);
    if (run.status !== 'failed' && run.status !== 'cancelled') throw conflict(`Only failed or cancelled runs can be retried (this one is ${run.status})`);
    const [again] = await ctx.db.update(agentRuns).set({ status: 'queued', error: null, output: null, finishedAt: null, startedAt: null }).where(eq(agentRuns.id, run.id)).returning();
    await enqueueRun(ctx, again!, `-retry-${Date.now()}`);
    return reply.status(202).send(ok(view(again!)));
  });

  /** Server-sent events of a run: `token` events as the provider produces them, then `done`. */
  const stream = async (request: FastifyRequest, reply: FastifyReply, run: Run) => {
    const sub = ctx.queues.connection.duplicate();
    const res = reply.raw;
    const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      sub.disconnect();
      res.end();
    };
    await sub.subscribe(channels(ctx).tokens(run.id));
    reply.hijack();
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-trace-id': request.id });
    send('run', { id: run.id, status: run.status });
    sub.on('message', (_channel, message) => {
      const m = JSON.parse(message) as { type: string; token?: string; status?: string; error?: string };
      if (m.type === 'token') send('token', { token: m.token });
      else {
        send('done', { status: m.status, ...(m.error ? { error: m.error } : {}) });
        close();
      }
    });
    request.raw.on('close', close);
    // Already finished (or finished while subscribing): replay the result and end.
    const current = await findRun(run.orgId, run.id);
    if (['succeeded', 'failed', 'cancelled'].includes(current.status)) {
      if (current.output) send('token', { token: current.output });
      send('done', { status: current.status });
      close();
    }
  };

  app.get('/agent-runs/:id/stream', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Runs'], summary: "Stream a run's tokens (text/event-stream)", params: RunId },
  }, async (request, reply) => stream(request, reply, await findRun(orgOf(request), request.params.id)));

  app.post('/chat/stream', {
    config: { scope: 'agents:execute' },
    schema: {
      tags: ['Runs'], summary: 'Start a run and stream its tokens (text/event-stream)',
      body: Type.Object({ agent: Type.String({ maxLength: 200 }), message: Type.String({ minLength: 1, maxLength: 100_000 }) }, { additionalProperties: false }),
    },
  }, async (request, reply) => {
    const run = await createRun(request, ref(request.body.agent), request.body.message, null);
    return stream(request, reply, run);
  });

  const MessageSchema = Type.Object({ role: Type.String(), content: Type.String(), created_at: Type.String() });

  app.post('/agents/:name/messages', {
    config: { scope: 'agents:execute' },
    schema: {
      tags: ['Messages'], summary: 'Send a message and get the reply; the conversation history is kept', params: NameParam,
      body: Type.Object({ message: Type.String({ minLength: 1, maxLength: 100_000 }), conversation_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_-]+$' })) }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ conversation_id: Type.String(), reply: Type.String(), run_id: Type.Integer(), usage: Type.Object({ input_tokens: Type.Integer(), output_tokens: Type.Integer() }) })) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const agent = await findAgent(ctx, orgId, ref(request.params.name));
    const conversationId = request.body.conversation_id ?? randomUUID();
    const history = await ctx.db.select().from(agentMessages).where(and(eq(agentMessages.agentId, agent.id), eq(agentMessages.conversationId, conversationId), eq(agentMessages.orgId, orgId))).orderBy(asc(agentMessages.id)).limit(50);
    const provider = providers(settings(ctx))[agent.provider];
    if (!provider) throw badRequest(`Unknown provider ${agent.provider}`);
    const messages = [
      { role: 'system' as const, content: agent.systemPrompt ?? `You are ${agent.displayName ?? agent.name}, a ${agent.role} agent.` },
      ...history.map((m) => ({ role: m.role as 'user' | 'assistant', content: m.content })),
      { role: 'user' as const, content: request.body.message },
    ];
    const result = await provider.complete({ model: agent.model, messages }).catch((err: Error) => {
      throw badRequest(`The model provider failed: ${err.message.slice(0, 300)}`);
    });
    const usd = cost(ctx, result.inputTokens, result.outputTokens);
    const run = await ctx.db.transaction(async (tx) => {
      await tx.insert(agentMessages).values([
        { orgId, agentId: agent.id, conversationId, role: 'user', content: request.body.message },
        { orgId, agentId: agent.id, conversationId, role: 'assistant', content: result.text },
      ]);
      const [r] = await tx.insert(agentRuns).values({
        orgId, agentId: agent.id, input: request.body.message, status: 'succeeded', output: result.text, provider: agent.provider, model: agent.model,
        inputTokens: result.inputTokens, outputTokens: result.outputTokens, costUsd: usd, attempts: 1, userId: request.principal.userId, startedAt: new Date(), finishedAt: new Date(),
      }).returning();
      await ctx.outbox.enqueue(tx, 'agents.run.completed', {
        runId: r!.id, agentId: agent.id, agentName: agent.name, status: 'succeeded', taskId: null, model: agent.model, provider: agent.provider,
        usage: { inputTokens: result.inputTokens, outputTokens: result.outputTokens, totalTokens: result.inputTokens + result.outputTokens },
        costUsd: usd, userId: request.principal.userId, durationMs: 0, error: null,
      }, { ...systemMeta(request.principal.tenantId, orgId), actor: { type: 'agent', id: agent.name } });
      return r!;
    });
    return ok({ conversation_id: conversationId, reply: result.text, run_id: run.id, usage: { input_tokens: result.inputTokens, output_tokens: result.outputTokens } });
  });

  app.get('/agents/:name/messages', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Messages'], summary: 'A conversation with an agent', params: NameParam, querystring: Type.Object({ conversation_id: Type.String({ minLength: 1, maxLength: 100 }) }), response: { 200: ListEnvelope(MessageSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const agent = await findAgent(ctx, orgId, ref(request.params.name));
    const rows = await ctx.db.select().from(agentMessages).where(and(eq(agentMessages.orgId, orgId), eq(agentMessages.agentId, agent.id), eq(agentMessages.conversationId, request.query.conversation_id))).orderBy(asc(agentMessages.id)).limit(200);
    return list(rows.map((m) => ({ role: m.role, content: m.content, created_at: m.createdAt.toISOString() })), rows.length, { limit: 200, offset: 0 });
  });
}
