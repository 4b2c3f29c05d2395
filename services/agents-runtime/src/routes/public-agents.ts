import { metaFromPrincipal } from '@aos/bus';
import { badRequest } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, inArray, type SQL } from 'drizzle-orm';
import { agents, AgentStatuses } from '../db/schema.js';
import { checkName, countsAgainstPlan, enforceAgentLimit, evictIdle, findAgent, SAFE_RELATIVE_PATH, schedule, STOPPED, unschedule, type AgentRow } from '../domain/agents.js';
import { createAgent } from '../domain/bootstrap.js';
import { agentLog } from '../domain/logs.js';
import type { Ctx } from '../service.js';
import { AgentStatus } from './agents.js';
import { countOf, enumList, Id, literals } from './common.js';

const PublicStatus = literals(['idle', 'working', 'blocked', 'offline', 'paused'] as const);
const PublicAgent = Type.Object({
  id: Type.Integer(), name: Type.String(), emoji: Nullable(Type.String()), role: Type.String(), status: AgentStatus,
  current_task: Nullable(Type.String()), workspace_path: Nullable(Type.String()), last_heartbeat: Nullable(Type.String()), created_at: Type.String(), updated_at: Type.String(),
});
const view = (a: AgentRow) => ({
  id: a.id, name: a.name, emoji: a.emoji, role: a.role, status: a.status as (typeof AgentStatuses)[number], current_task: a.currentTask, workspace_path: a.workspacePath,
  last_heartbeat: a.lastHeartbeat?.toISOString() ?? null, created_at: a.createdAt.toISOString(), updated_at: a.updatedAt.toISOString(),
});
/** Relative to the workspace root, plain segments only (no `..`, no absolute paths). */
const Workspace = Type.String({ minLength: 1, maxLength: 300, pattern: SAFE_RELATIVE_PATH });

export async function publicAgentRoutes(app: App, ctx: Ctx) {
  app.get('/v1/public/agents', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Public API'], summary: 'List agents', querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(Type.String({ maxLength: 200 })), role: Type.Optional(Type.String({ maxLength: 60 })) }), response: { 200: ListEnvelope(PublicAgent) } },
  }, async (request) => {
    const p = page(request.query);
    const where: SQL[] = [eq(agents.orgId, orgOf(request))];
    const statuses = enumList(request.query.status, AgentStatuses, 'status');
    if (statuses) where.push(inArray(agents.status, statuses));
    if (request.query.role) where.push(eq(agents.role, request.query.role));
    const cond = and(...where);
    const rows = await ctx.db.select().from(agents).where(cond).orderBy(desc(agents.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(view), await countOf(ctx, agents, cond), p);
  });

  app.post('/v1/public/agents', {
    config: { scope: 'agents:write' },
    schema: {
      tags: ['Public API'], summary: 'Create an agent (the same bootstrap as POST /agents)',
      body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }), emoji: Type.Optional(Type.String({ maxLength: 16 })), role: Type.String({ minLength: 1, maxLength: 60 }), status: Type.Optional(PublicStatus), workspace_path: Type.Optional(Workspace) }, { additionalProperties: false }),
      response: { 200: Envelope(PublicAgent), 201: Envelope(PublicAgent) },
    },
  }, async (request, reply) => {
    const b = request.body;
    checkName(b.name);
    const result = await createAgent(ctx, orgOf(request), {
      name: b.name, emoji: b.emoji ?? null, role: b.role, status: b.status ?? 'idle', workspacePath: b.workspace_path ?? null, ownerUserId: request.principal.userId,
    }, metaFromPrincipal(request.principal));
    return reply.status(result.resumed ? 200 : 201).send(ok(view(result.agent)));
  });

  app.get('/v1/public/agents/:id', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Public API'], summary: 'Get an agent', params: Id, response: { 200: Envelope(PublicAgent) } },
  }, async (request) => ok(view(await findAgent(ctx, orgOf(request), { id: request.params.id }))));

  app.patch('/v1/public/agents/:id', {
    config: { scope: 'agents:write' },
    schema: {
      tags: ['Public API'], summary: 'Update an agent', params: Id,
      body: Type.Object({ emoji: Type.Optional(Type.String({ maxLength: 16 })), role: Type.Optional(Type.String({ minLength: 1, maxLength: 60 })), status: Type.Optional(PublicStatus), current_task: Type.Optional(Nullable(Type.String({ maxLength: 500 }))), workspace_path: Type.Optional(Workspace) }, { additionalProperties: false }),
      response: { 200: Envelope(PublicAgent) },
    },
  }, async (request) => {
    const a = await findAgent(ctx, orgOf(request), { id: request.params.id });
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    const stopping = b.status !== undefined && STOPPED.includes(b.status) && !STOPPED.includes(a.status);
    const resuming = b.status !== undefined && !STOPPED.includes(b.status) && STOPPED.includes(a.status);
    const updated = await ctx.db.transaction(async (tx) => {
      // A deactivated (offline) agent counts against the plan again once it has another status.
      if (b.status !== undefined && !countsAgainstPlan(a.status) && countsAgainstPlan(b.status)) await enforceAgentLimit(tx, a.orgId, a.id);
      // As for stop/start: a scheduler goes in before the row says running, and out after it says stopped.
      if (resuming && a.bootstrappedAt) await schedule(ctx, a);
      const [u] = await tx.update(agents).set({ emoji: b.emoji, role: b.role, status: b.status, currentTask: b.current_task, workspacePath: b.workspace_path, updatedAt: new Date() }).where(eq(agents.id, a.id)).returning();
      await ctx.outbox.enqueue(tx, 'agents.agent.updated', { agentId: a.id, name: a.name, status: u!.status, changes: Object.keys(b) }, metaFromPrincipal(request.principal));
      if (u!.status !== a.status) await agentLog(tx, a, 'info', `agent ${a.name} status ${a.status} → ${u!.status} (set by a client)`);
      return u!;
    });
    if (stopping) await unschedule(ctx, a);
    await evictIdle(ctx, a.orgId, [a.name]);
    return ok(view(updated));
  });

  app.delete('/v1/public/agents/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Public API'], summary: 'Deactivate an agent (status offline, schedule removed)', params: Id, response: { 200: Envelope(PublicAgent) } },
  }, async (request) => {
    const a = await findAgent(ctx, orgOf(request), { id: request.params.id });
    if (a.status === 'offline') return ok(view(a));
    const u = await ctx.db.transaction(async (tx) => {
      const [row] = await tx.update(agents).set({ status: 'offline', updatedAt: new Date() }).where(eq(agents.id, a.id)).returning();
      await ctx.outbox.enqueue(tx, 'agents.agent.stopped', { agentId: a.id, name: a.name, status: 'offline', note: 'deactivated' }, metaFromPrincipal(request.principal));
      await agentLog(tx, a, 'info', `agent ${a.name} deactivated (offline)`);
      return row!;
    });
    await unschedule(ctx, a);
    await evictIdle(ctx, a.orgId, [a.name]);
    return ok(view(u));
  });
}
