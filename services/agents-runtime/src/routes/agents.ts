import { metaFromPrincipal } from '@aos/bus';
import { Queues } from '@aos/contracts';
import { badRequest, conflict, notFound } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { type App, csv, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, ilike, inArray, or, sql, type SQL } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { agents, files } from '../db/schema.js';
import type { Ctx } from '../service.js';

export const AGENT_NAME = '^[a-z0-9][a-z0-9-]{0,62}$';
export const Statuses = ['active', 'idle', 'working', 'blocked', 'offline', 'paused', 'error'] as const;
const Rule = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_.:-]+$' }),
  when: Type.Optional(Type.Object({ type: Type.Optional(Type.String({ maxLength: 30 })), status: Type.Optional(Type.String({ maxLength: 30 })), title_matches: Type.Optional(Type.String({ maxLength: 200 })), on: Type.Optional(Type.Union([Type.Literal('created'), Type.Literal('updated'), Type.Literal('any')])) })),
  create: Type.Object({ title: Type.String({ minLength: 1, maxLength: 500 }), description: Type.Optional(Type.String({ maxLength: 5_000 })), priority: Type.Optional(Type.String({ pattern: '^P[0-3]$' })), type: Type.Optional(Type.String({ maxLength: 30 })), assignee: Type.Optional(Type.String({ maxLength: 200 })) }),
});
export const AgentSchema = Type.Object({
  id: Type.Integer(), name: Type.String(), display_name: Nullable(Type.String()), role: Type.String(), emoji: Nullable(Type.String()), color: Nullable(Type.String()),
  model: Type.String(), provider: Type.String(), interval_sec: Type.Integer(), status: Type.String(), workspace_path: Nullable(Type.String()),
  current_task: Nullable(Type.String()), derivation_rules: Type.Array(Rule), last_heartbeat: Nullable(Type.String()), created_at: Type.String(), updated_at: Type.String(),
});
export type AgentRow = typeof agents.$inferSelect;
export const agentView = (a: AgentRow) => ({
  id: a.id, name: a.name, display_name: a.displayName, role: a.role, emoji: a.emoji, color: a.color, model: a.model, provider: a.provider,
  interval_sec: a.intervalSec, status: a.status, workspace_path: a.workspacePath, current_task: a.currentTask, derivation_rules: a.derivationRules,
  last_heartbeat: a.lastHeartbeat?.toISOString() ?? null, created_at: a.createdAt.toISOString(), updated_at: a.updatedAt.toISOString(),
});

const schedulerId = (a: AgentRow) => `agent-${a.id}`;

/** The agent's repeatable cycle on BullMQ: one job scheduler per agent, every `interval_sec`. */
export async function schedule(ctx: Ctx, a: AgentRow) {
  await ctx.queues.queue(Queues.agentSchedules).upsertJobScheduler(schedulerId(a), { every: a.intervalSec * 1000 }, { name: 'cycle', data: { payload: { agentId: a.id }, trace: {} } });
}
export async function unschedule(ctx: Ctx, a: AgentRow) {
  await ctx.queues.queue(Queues.agentSchedules).removeJobScheduler(schedulerId(a));
}

export async function findAgent(ctx: Ctx, orgId: string, ref: { id?: number; name?: string }) {
  const [a] = await ctx.db.select().from(agents).where(and(eq(agents.orgId, orgId), ref.id !== undefined ? eq(agents.id, ref.id) : eq(agents.name, ref.name!)));
  if (!a) throw notFound('Agent');
  return a;
}

export const NameParam = Type.Object({ name: Type.String({ maxLength: 200 }) });
export function checkName(name: string) {
  if (!new RegExp(AGENT_NAME).test(name)) throw badRequest('Invalid agent name: lowercase letters, digits and dashes, up to 63 characters', [{ field: 'name', pattern: AGENT_NAME }]);
}

export async function agentRoutes(app: App, ctx: Ctx) {
  const meta = (r: FastifyRequest) => metaFromPrincipal(r.principal);

  app.post('/agents', {
    config: { scope: 'agents:write' },
    schema: {
      tags: ['Agents'], summary: 'Create an agent: runs the bootstrap steps and returns each result',
      body: Type.Object({
        name: Type.String({ maxLength: 200 }), display_name: Type.Optional(Type.String({ maxLength: 100 })), role: Type.Optional(Type.String({ maxLength: 60 })),
        model: Type.Optional(Type.String({ maxLength: 100 })), provider: Type.Optional(Type.Union([Type.Literal('offline'), Type.Literal('openai'), Type.Literal('anthropic')])),
        interval_sec: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 86_400 })), emoji: Type.Optional(Type.String({ maxLength: 16 })),
        color: Type.Optional(Type.String({ pattern: '^#[0-9a-fA-F]{6}$' })), system_prompt: Type.Optional(Type.String({ maxLength: 20_000 })),
        derivation_rules: Type.Optional(Type.Array(Rule, { maxItems: 50 })),
      }, { additionalProperties: false }),
      response: { 201: Envelope(Type.Object({ agent: AgentSchema, steps: Type.Array(Type.Object({ step: Type.String(), ok: Type.Boolean(), detail: Type.String() })) })) },
    },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    checkName(b.name);
    const steps: { step: string; ok: boolean; detail: string }[] = [];
    let agent: AgentRow;
    try {
      agent = await ctx.db.transaction(async (tx) => {
        const [a] = await tx.insert(agents).values({
          orgId, name: b.name, displayName: b.display_name ?? null, role: b.role ?? 'engineer', model: b.model ?? 'offline-1',
          provider: b.provider ?? ctx.config.LLM_DEFAULT_PROVIDER, intervalSec: b.interval_sec ?? 3600, emoji: b.emoji ?? null, color: b.color ?? null,
          systemPrompt: b.system_prompt ?? null, derivationRules: b.derivation_rules ?? [], ownerUserId: request.principal.userId,
          workspacePath: `workspaces/${b.name}`, status: 'active',
        }).returning();
        steps.push({ step: 'registration', ok: true, detail: `agent ${a!.id}` });
        steps.push({ step: 'workspace', ok: true, detail: a!.workspacePath! });
        const soul = `# ${a!.displayName ?? a!.name}\n\nRole: ${a!.role}\nModel: ${a!.model}\n\n${a!.systemPrompt ?? ''}\n`;
        await tx.insert(files).values({ orgId, path: `${a!.workspacePath}/SOUL.md`, name: 'SOUL.md', content: soul, mimeType: 'text/markdown', agent: a!.name })
          .onConflictDoUpdate({ target: [files.orgId, files.path], set: { content: soul, updatedAt: new Date() } });
        steps.push({ step: 'identity_document', ok: true, detail: `${a!.workspacePath}/SOUL.md` });
        await ctx.outbox.enqueue(tx, 'agents.agent.created', { agentId: a!.id, name: a!.name, status: a!.status }, meta(request));
        return a!;
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`An agent named "${b.name}" already exists`);
      throw err;
    }
    try {
      await schedule(ctx, agent);
      steps.push({ step: 'schedule', ok: true, detail: `every ${agent.intervalSec}s` });
    } catch (err) {
      steps.push({ step: 'schedule', ok: false, detail: (err as Error).message });
    }
    const [beat] = await ctx.db.update(agents).set({ lastHeartbeat: new Date(), bootstrap: [...steps, { step: 'heartbeat', ok: true, detail: 'recorded' }] }).where(eq(agents.id, agent.id)).returning();
    steps.push({ step: 'heartbeat', ok: true, detail: 'recorded' });
    return reply.status(201).send(ok({ agent: agentView(beat!), steps }));
  });

  app.get('/agents', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Agents'], summary: 'List agents', querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(Type.String({ maxLength: 200 })), role: Type.Optional(Type.String({ maxLength: 60 })), q: Type.Optional(Type.String({ maxLength: 100 })) }), response: { 200: ListEnvelope(AgentSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const where: SQL[] = [eq(agents.orgId, orgOf(request))];
    const statuses = csv(request.query.status);
    if (statuses) where.push(inArray(agents.status, statuses));
    if (request.query.role) where.push(eq(agents.role, request.query.role));
    if (request.query.q?.trim()) {
      const like = `%${request.query.q.trim().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      where.push(or(ilike(agents.name, like), ilike(agents.displayName, like), ilike(agents.role, like))!);
    }
    const cond = and(...where);
    const rows = await ctx.db.select().from(agents).where(cond).orderBy(desc(agents.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(agents).where(cond)) as [{ n: number }];
    return list(rows.map(agentView), n, p);
  });

  for (const action of ['stop', 'start', 'restart'] as const) {
    app.post(`/agents/:name/${action}`, {
      config: { scope: 'agents:write' },
      schema: { tags: ['Agents'], summary: `${action[0]!.toUpperCase()}${action.slice(1)} an agent`, params: NameParam, body: Type.Object({ note: Type.Optional(Type.String({ maxLength: 1_000 })) }), response: { 200: Envelope(AgentSchema) } },
      preValidation: async (request) => { request.body ??= {}; },
    }, async (request) => {
      checkName(request.params.name);
      const a = await findAgent(ctx, orgOf(request), { name: request.params.name });
      const status = action === 'stop' ? 'paused' : 'active';
      if (action === 'stop') await unschedule(ctx, a); else await schedule(ctx, a);
      const updated = await ctx.db.transaction(async (tx) => {
        const [u] = await tx.update(agents).set({ status, updatedAt: new Date(), ...(action !== 'stop' ? { lastHeartbeat: new Date() } : {}) }).where(eq(agents.id, a.id)).returning();
        const data = { agentId: a.id, name: a.name, status };
        if (action === 'stop') await ctx.outbox.enqueue(tx, 'agents.agent.stopped', { ...data, note: (request.body as { note?: string }).note ?? null }, meta(request));
        else await ctx.outbox.enqueue(tx, action === 'start' ? 'agents.agent.started' : 'agents.agent.restarted', data, meta(request));
        return u!;
      });
      await ctx.queues.connection.del(`${ctx.config.REDIS_PREFIX}:idle:${a.orgId}:${a.name}`);
      return ok(agentView(updated));
    });
  }
}
