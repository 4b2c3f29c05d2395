import { metaFromPrincipal } from '@aos/bus';
import { badRequest, conflict, notFound } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, ilike, inArray, isNull, or, sql, type SQL } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { agents, AgentStatuses, templates } from '../db/schema.js';
import { checkName, countsAgainstPlan, enforceAgentLimit, evictIdle, findAgentByRef, schedule, STOPPED, unschedule, type AgentRow } from '../domain/agents.js';
import { BOOTSTRAP_STEPS, createAgent } from '../domain/bootstrap.js';
import { checkRules } from '../domain/derivation.js';
import { agentLog } from '../domain/logs.js';
import type { Ctx } from '../service.js';
import { AgentName, countOf, enumList, like, literals, Slug } from './common.js';

export const AgentStatus = literals(AgentStatuses);
export const Provider = literals(['offline', 'openai', 'anthropic'] as const);

const Rule = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_.:-]+$' }),
  when: Type.Optional(Type.Object({
    type: Type.Optional(Type.String({ maxLength: 30 })), status: Type.Optional(Type.String({ maxLength: 30 })),
    title_matches: Type.Optional(Type.String({ maxLength: 200 })), on: Type.Optional(literals(['created', 'updated', 'any'] as const)),
  }, { additionalProperties: false })),
  create: Type.Object({
    title: Type.String({ minLength: 1, maxLength: 500 }), description: Type.Optional(Type.String({ maxLength: 5_000 })), priority: Type.Optional(Type.String({ pattern: '^P[0-3]$' })),
    type: Type.Optional(Type.String({ maxLength: 30 })), assignee: Type.Optional(AgentName),
  }, { additionalProperties: false }),
}, { additionalProperties: false });
const Rules = Type.Array(Rule, { maxItems: 50 });
const Step = Type.Object({ step: Type.String(), ok: Type.Boolean(), state: literals(['done', 'failed', 'pending'] as const), detail: Type.String(), at: Nullable(Type.String()) });

export const AgentSchema = Type.Object({
  id: Type.Integer(), name: Type.String(), display_name: Nullable(Type.String()), role: Type.String(), emoji: Nullable(Type.String()), color: Nullable(Type.String()),
  model: Type.String(), provider: Type.String(), interval_sec: Type.Integer(), status: AgentStatus, workspace_path: Nullable(Type.String()),
  current_task: Nullable(Type.String()), derivation_rules: Type.Array(Rule), daily_token_budget: Nullable(Type.Integer()), template: Nullable(Type.String()),
  bootstrapped: Type.Boolean(), last_heartbeat: Nullable(Type.String()), last_cycle_at: Nullable(Type.String()), last_cycle_result: Nullable(Type.String()),
  created_at: Type.String(), updated_at: Type.String(),
});
export const agentView = (a: AgentRow) => ({
  id: a.id, name: a.name, display_name: a.displayName, role: a.role, emoji: a.emoji, color: a.color, model: a.model, provider: a.provider,
  interval_sec: a.intervalSec, status: a.status as (typeof AgentStatuses)[number], workspace_path: a.workspacePath, current_task: a.currentTask,
  derivation_rules: a.derivationRules, daily_token_budget: a.dailyTokenBudget, template: a.templateSlug, bootstrapped: a.bootstrappedAt !== null,
  last_heartbeat: a.lastHeartbeat?.toISOString() ?? null, last_cycle_at: a.lastCycleAt?.toISOString() ?? null, last_cycle_result: a.lastCycleResult,
  created_at: a.createdAt.toISOString(), updated_at: a.updatedAt.toISOString(),
});

export const NameParam = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) });
const Editable = {
  display_name: Type.Optional(Nullable(Type.String({ maxLength: 100 }))), role: Type.Optional(Type.String({ minLength: 1, maxLength: 60 })),
  model: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })), provider: Type.Optional(Provider),
  interval_sec: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 86_400 })), emoji: Type.Optional(Nullable(Type.String({ maxLength: 16 }))),
  color: Type.Optional(Nullable(Type.String({ pattern: '^#[0-9a-fA-F]{6}$' }))), system_prompt: Type.Optional(Nullable(Type.String({ maxLength: 20_000 }))),
  derivation_rules: Type.Optional(Rules), daily_token_budget: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 2_000_000_000 }))),
};

export async function agentRoutes(app: App, ctx: Ctx) {
  const meta = (r: FastifyRequest) => metaFromPrincipal(r.principal);

  app.post('/agents', {
    config: { scope: 'agents:write' },
    schema: {
      tags: ['Agents'],
      summary: 'Create an agent: runs the bootstrap steps and returns each result',
      description: `Steps: ${BOOTSTRAP_STEPS.join(', ')}. Each is recorded; a failed step leaves the agent with \`bootstrapped: false\` and the same request resumes from it (200). A name whose bootstrap completed is a 409.`,
      body: Type.Object({
        name: Type.String({ minLength: 1, maxLength: 200 }), ...Editable, template: Type.Optional(Slug),
        status: Type.Optional(literals(['active', 'idle', 'paused'] as const)),
      }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ agent: AgentSchema, steps: Type.Array(Step), complete: Type.Boolean(), resumed: Type.Boolean() })), 201: Envelope(Type.Object({ agent: AgentSchema, steps: Type.Array(Step), complete: Type.Boolean(), resumed: Type.Boolean() })) },
    },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    checkName(b.name);
    checkRules(b.derivation_rules ?? []);
    let tpl: typeof templates.$inferSelect | undefined;
    if (b.template) {
      [tpl] = await ctx.db.select().from(templates).where(and(eq(templates.orgId, orgId), eq(templates.slug, b.template), isNull(templates.archivedAt)));
      if (!tpl) throw notFound('Template');
    }
    const result = await createAgent(ctx, orgId, {
      name: b.name, displayName: b.display_name, role: b.role ?? tpl?.category ?? undefined, model: b.model ?? tpl?.model ?? undefined, provider: b.provider,
      intervalSec: b.interval_sec ?? tpl?.intervalSec ?? undefined, emoji: b.emoji ?? tpl?.icon, color: b.color, systemPrompt: b.system_prompt ?? tpl?.identity,
      derivationRules: b.derivation_rules, status: b.status, dailyTokenBudget: b.daily_token_budget, templateSlug: tpl?.slug ?? null, identity: tpl?.identity ?? null,
      ownerUserId: request.principal.userId,
    }, meta(request));
    return reply.status(result.resumed ? 200 : 201).send(ok({ agent: agentView(result.agent), steps: result.steps, complete: result.complete, resumed: result.resumed }));
  });

  app.get('/agents', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Agents'], summary: 'List agents (status comma list, role, q, bootstrapped)',
      querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(Type.String({ maxLength: 200 })), role: Type.Optional(Type.String({ maxLength: 60 })), q: Type.Optional(Type.String({ maxLength: 100 })), bootstrapped: Type.Optional(Type.Boolean()) }),
      response: { 200: ListEnvelope(AgentSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const where: SQL[] = [eq(agents.orgId, orgOf(request))];
    const statuses = enumList(q.status, AgentStatuses, 'status');
    if (statuses) where.push(inArray(agents.status, statuses));
    if (q.role) where.push(eq(agents.role, q.role));
    if (q.bootstrapped !== undefined) where.push(q.bootstrapped ? sql`${agents.bootstrappedAt} IS NOT NULL` : isNull(agents.bootstrappedAt));
    if (q.q?.trim()) where.push(or(ilike(agents.name, like(q.q.trim())), ilike(agents.displayName, like(q.q.trim())), ilike(agents.role, like(q.q.trim())))!);
    const cond = and(...where);
    const rows = await ctx.db.select().from(agents).where(cond).orderBy(desc(agents.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(agentView), await countOf(ctx, agents, cond), p);
  });

  app.get('/agents/:name', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Agents'], summary: 'An agent with its bootstrap record', params: NameParam, response: { 200: Envelope(Type.Object({ ...AgentSchema.properties, bootstrap: Type.Array(Step) })) } },
  }, async (request) => {
    const a = await findAgentByRef(ctx, orgOf(request), request.params.name);
    return ok({ ...agentView(a), bootstrap: a.bootstrap.map((s) => ({ ...s, ok: s.state === 'done' })) });
  });

  app.patch('/agents/:name', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Agents'], summary: 'Update an agent (a new interval reschedules its cycle)', params: NameParam, body: Type.Object(Editable, { additionalProperties: false }), response: { 200: Envelope(AgentSchema) } },
  }, async (request) => {
    const a = await findAgentByRef(ctx, orgOf(request), request.params.name);
    const b = request.body;
    const changes = Object.keys(b);
    if (changes.length === 0) throw badRequest('Nothing to update');
    if (b.derivation_rules) checkRules(b.derivation_rules);
    const updated = await ctx.db.transaction(async (tx) => {
      const [u] = await tx.update(agents).set({
        displayName: b.display_name, role: b.role, model: b.model, provider: b.provider, intervalSec: b.interval_sec, emoji: b.emoji, color: b.color,
        systemPrompt: b.system_prompt, derivationRules: b.derivation_rules, dailyTokenBudget: b.daily_token_budget, updatedAt: new Date(),
      }).where(eq(agents.id, a.id)).returning();
      await ctx.outbox.enqueue(tx, 'agents.agent.updated', { agentId: a.id, name: a.name, status: u!.status, changes }, meta(request));
      return u!;
    });
    if (b.interval_sec !== undefined && b.interval_sec !== a.intervalSec && !STOPPED.includes(updated.status) && updated.bootstrappedAt) await schedule(ctx, updated);
    await evictIdle(ctx, a.orgId, [a.name]);
    return ok(agentView(updated));
  });

  for (const action of ['stop', 'start', 'restart'] as const) {
    app.post(`/agents/:name/${action}`, {
      config: { scope: 'agents:write' },
      schema: {
        tags: ['Agents'],
        summary: { stop: 'Stop an agent (status paused, its BullMQ schedule removed)', start: 'Start an agent (status active, its schedule restored)', restart: 'Restart an agent (schedule re-created: a cycle runs now)' }[action],
        params: NameParam, body: Type.Object({ note: Type.Optional(Type.String({ maxLength: 1_000 })) }, { additionalProperties: false }), response: { 200: Envelope(AgentSchema) },
      },
      preValidation: async (request) => { request.body ??= {}; },
    }, async (request) => {
      const a = await findAgentByRef(ctx, orgOf(request), request.params.name);
      if (action !== 'stop' && !a.bootstrappedAt) throw conflict('The agent\'s bootstrap is incomplete: POST /agents with its name to resume it');
      // A scheduler left next to a stopped status only fires cycles that skip themselves; the reverse would be a
      // silent agent. So: start schedules before the row says active, stop removes it after the row says paused
      // (the schedule reconciler holds the row lock, so it cannot slip a scheduler back in between).
      const status = action === 'stop' ? 'paused' : 'active';
      const updated = await ctx.db.transaction(async (tx) => {
        // A deactivated (offline) agent counts against the plan again once started: checked before it is scheduled.
        if (!countsAgainstPlan(a.status) && countsAgainstPlan(status)) await enforceAgentLimit(tx, a.orgId, a.id);
        if (action === 'restart') await unschedule(ctx, a);
        if (action !== 'stop') await schedule(ctx, a);
        const [u] = await tx.update(agents).set({ status, updatedAt: new Date(), ...(action !== 'stop' ? { lastHeartbeat: new Date() } : {}) }).where(eq(agents.id, a.id)).returning();
        const data = { agentId: a.id, name: a.name, status };
        if (action === 'stop') await ctx.outbox.enqueue(tx, 'agents.agent.stopped', { ...data, note: request.body.note ?? null }, meta(request));
        else await ctx.outbox.enqueue(tx, action === 'start' ? 'agents.agent.started' : 'agents.agent.restarted', data, meta(request));
        const note = request.body.note ? `: ${request.body.note}` : '';
        await agentLog(tx, a, 'info', `agent ${a.name} ${{ stop: 'stopped (paused)', start: 'started', restart: 'restarted' }[action]}${note}`, { user_id: request.principal.userId, api_key_id: request.principal.apiKeyId });
        return u!;
      });
      if (action === 'stop') await unschedule(ctx, a);
      await evictIdle(ctx, a.orgId, [a.name]);
      return ok(agentView(updated));
    });
  }
}
