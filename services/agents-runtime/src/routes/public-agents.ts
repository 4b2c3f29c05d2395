import { metaFromPrincipal } from '@aos/bus';
import { badRequest, conflict } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, sql, type SQL } from 'drizzle-orm';
import { agents } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { checkName, findAgent, schedule, unschedule, type AgentRow } from './agents.js';

const PublicStatus = Type.Union(['idle', 'working', 'blocked', 'offline', 'paused'].map((s) => Type.Literal(s)));
const PublicAgent = Type.Object({
  id: Type.Integer(), name: Type.String(), emoji: Nullable(Type.String()), role: Type.String(), status: Type.String(),
  current_task: Nullable(Type.String()), workspace_path: Nullable(Type.String()), last_heartbeat: Nullable(Type.String()), created_at: Type.String(), updated_at: Type.String(),
});
const view = (a: AgentRow) => ({
  id: a.id, name: a.name, emoji: a.emoji, role: a.role, status: a.status, current_task: a.currentTask, workspace_path: a.workspacePath,
  last_heartbeat: a.lastHeartbeat?.toISOString() ?? null, created_at: a.createdAt.toISOString(), updated_at: a.updatedAt.toISOString(),
});
const Id = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) });
const Workspace = Type.String({ maxLength: 300, pattern: '^[A-Za-z0-9_./-]+$' });

function checkWorkspace(path: string | undefined) {
  if (path !== undefined && (path.startsWith('/') || path.split('/').includes('..'))) throw badRequest('workspace_path must be relative and stay inside the workspace root', [{ field: 'workspace_path' }]);
}

export async function publicAgentRoutes(app: App, ctx: Ctx) {
  app.get('/v1/public/agents', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Public API'], summary: 'List agents', querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(Type.String({ maxLength: 30 })), role: Type.Optional(Type.String({ maxLength: 60 })) }), response: { 200: ListEnvelope(PublicAgent) } },
  }, async (request) => {
    const p = page(request.query);
    const where: SQL[] = [eq(agents.orgId, orgOf(request))];
    if (request.query.status) where.push(eq(agents.status, request.query.status));
    if (request.query.role) where.push(eq(agents.role, request.query.role));
    const cond = and(...where);
    const rows = await ctx.db.select().from(agents).where(cond).orderBy(desc(agents.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(agents).where(cond)) as [{ n: number }];
    return list(rows.map(view), n, p);
  });

  app.post('/v1/public/agents', {
    config: { scope: 'agents:write' },
    schema: {
      tags: ['Public API'], summary: 'Create an agent',
      body: Type.Object({ name: Type.String({ maxLength: 200 }), emoji: Type.Optional(Type.String({ maxLength: 16 })), role: Type.String({ minLength: 1, maxLength: 60 }), status: Type.Optional(PublicStatus), workspace_path: Type.Optional(Workspace) }, { additionalProperties: false }),
      response: { 201: Envelope(PublicAgent) },
    },
  }, async (request, reply) => {
    const b = request.body;
    checkName(b.name);
    checkWorkspace(b.workspace_path);
    try {
      const a = await ctx.db.transaction(async (tx) => {
        const [row] = await tx.insert(agents).values({ orgId: orgOf(request), name: b.name, emoji: b.emoji ?? null, role: b.role, status: b.status ?? 'idle', workspacePath: b.workspace_path ?? `workspaces/${b.name}`, provider: ctx.config.LLM_DEFAULT_PROVIDER, ownerUserId: request.principal.userId }).returning();
        await ctx.outbox.enqueue(tx, 'agents.agent.created', { agentId: row!.id, name: row!.name, status: row!.status }, metaFromPrincipal(request.principal));
        return row!;
      });
      return reply.status(201).send(ok(view(a)));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`An agent named "${b.name}" already exists`);
      throw err;
    }
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
    checkWorkspace(b.workspace_path);
    const updated = await ctx.db.transaction(async (tx) => {
      const [u] = await tx.update(agents).set({ emoji: b.emoji, role: b.role, status: b.status, currentTask: b.current_task, workspacePath: b.workspace_path, updatedAt: new Date() }).where(eq(agents.id, a.id)).returning();
      await ctx.outbox.enqueue(tx, 'agents.agent.updated', { agentId: a.id, name: a.name, status: u!.status, changes: Object.keys(b) }, metaFromPrincipal(request.principal));
      return u!;
    });
    if (b.status === 'paused' || b.status === 'offline') await unschedule(ctx, updated);
    else if (b.status && (a.status === 'paused' || a.status === 'offline')) await schedule(ctx, updated);
    return ok(view(updated));
  });

  app.delete('/v1/public/agents/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Public API'], summary: 'Deactivate an agent (status offline)', params: Id, response: { 200: Envelope(PublicAgent) } },
  }, async (request) => {
    const a = await findAgent(ctx, orgOf(request), { id: request.params.id });
    await unschedule(ctx, a);
    const [u] = await ctx.db.update(agents).set({ status: 'offline', updatedAt: new Date() }).where(eq(agents.id, a.id)).returning();
    await ctx.db.transaction((tx) => ctx.outbox.enqueue(tx, 'agents.agent.stopped', { agentId: a.id, name: a.name, status: 'offline', note: 'deactivated' }, metaFromPrincipal(request.principal)));
    return ok(view(u!));
  });
}
