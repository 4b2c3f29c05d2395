import { AppError, badRequest, notFound } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, eq, ilike, or } from 'drizzle-orm';
import { agents, automations } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { AgentName, countOf, Deleted, Id, like, literals, SafePath } from './common.js';

type Auto = typeof automations.$inferSelect;
const Status = literals(['active', 'inactive', 'disabled'] as const);
const AutoSchema = Type.Object({ id: Type.Integer(), name: Type.String(), agent_name: Type.String(), type: Type.String(), path: Type.String(), label: Nullable(Type.String()), status: Status, created_at: Type.String(), updated_at: Type.String() });
const view = (a: Auto) => ({ id: a.id, name: a.name, agent_name: a.agentName, type: a.type, path: a.path, label: a.label, status: a.status as 'active', created_at: a.createdAt.toISOString(), updated_at: a.updatedAt.toISOString() });
const Fields = {
  name: Type.String({ minLength: 1, maxLength: 100 }), agent_name: AgentName, type: Type.String({ minLength: 1, maxLength: 30, pattern: '^[a-z0-9_-]+$' }),
  path: SafePath, label: Type.Optional(Type.String({ maxLength: 200 })), status: Type.Optional(Status),
};

/** Automation records (scripts and schedules that run an agent). */
export async function automationRoutes(app: App, ctx: Ctx) {
  const find = async (orgId: string, id: number) => {
    const [a] = await ctx.db.select().from(automations).where(and(eq(automations.orgId, orgId), eq(automations.id, id)));
    if (!a) throw notFound('Automation');
    return a;
  };

  app.get('/automations', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Automations'], summary: 'Automations (agent_name, type, status, q)', querystring: Type.Object({ ...PaginationQuery, agent_name: Type.Optional(AgentName), type: Type.Optional(Type.String({ maxLength: 30 })), status: Type.Optional(Status), q: Type.Optional(Type.String({ maxLength: 100 })) }), response: { 200: ListEnvelope(AutoSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const cond = and(eq(automations.orgId, orgOf(request)), q.agent_name ? eq(automations.agentName, q.agent_name) : undefined, q.type ? eq(automations.type, q.type) : undefined,
      q.status ? eq(automations.status, q.status) : undefined, q.q ? or(ilike(automations.name, like(q.q)), ilike(automations.label, like(q.q))) : undefined);
    const rows = await ctx.db.select().from(automations).where(cond).orderBy(asc(automations.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(view), await countOf(ctx, automations, cond), p);
  });

  app.post('/automations', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Automations'], summary: 'Create an automation record', body: Type.Object(Fields, { additionalProperties: false }), response: { 201: Envelope(AutoSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    const [agent] = await ctx.db.select({ id: agents.id }).from(agents).where(and(eq(agents.orgId, orgOf(request)), eq(agents.name, b.agent_name)));
    if (!agent) throw new AppError('NOT_FOUND', `Agent "${b.agent_name}" not found`, [{ field: 'agent_name' }]);
    const [a] = await ctx.db.insert(automations).values({ orgId: orgOf(request), name: b.name, agentName: b.agent_name, type: b.type, path: b.path, label: b.label ?? null, status: b.status ?? 'active' }).returning();
    return reply.status(201).send(ok(view(a!)));
  });

  app.get('/automations/:id', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Automations'], summary: 'An automation', params: Id, response: { 200: Envelope(AutoSchema) } },
  }, async (request) => ok(view(await find(orgOf(request), request.params.id))));

  app.patch('/automations/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Automations'], summary: 'Update an automation', params: Id, body: Type.Object({ name: Type.Optional(Fields.name), type: Type.Optional(Fields.type), path: Type.Optional(SafePath), label: Type.Optional(Nullable(Type.String({ maxLength: 200 }))), status: Fields.status }, { additionalProperties: false }), response: { 200: Envelope(AutoSchema) } },
  }, async (request) => {
    const a = await find(orgOf(request), request.params.id);
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    const [u] = await ctx.db.update(automations).set({ name: b.name, type: b.type, path: b.path, label: b.label, status: b.status, updatedAt: new Date() }).where(eq(automations.id, a.id)).returning();
    return ok(view(u!));
  });

  app.delete('/automations/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Automations'], summary: 'Delete an automation', params: Id, response: { 200: Deleted } },
  }, async (request) => {
    const a = await find(orgOf(request), request.params.id);
    await ctx.db.delete(automations).where(eq(automations.id, a.id));
    return ok({ id: a.id, deleted: true });
  });
}
