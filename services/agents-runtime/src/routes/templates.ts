import { conflict, badRequest, notFound } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, eq, ilike, isNull, or } from 'drizzle-orm';
import { templates } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { countOf, Deleted, Id, like, Slug } from './common.js';

type Tpl = typeof templates.$inferSelect;
const TemplateSchema = Type.Object({
  id: Type.Integer(), name: Type.String(), slug: Type.String(), description: Nullable(Type.String()), icon: Nullable(Type.String()), category: Nullable(Type.String()),
  model: Nullable(Type.String()), interval_sec: Nullable(Type.Integer()), identity: Nullable(Type.String()), tools: Type.Array(Type.String()), capabilities: Type.Array(Type.String()),
  config: Type.Unknown(), is_featured: Type.Boolean(), sort_order: Type.Integer(), created_at: Type.String(), updated_at: Type.String(),
});
const view = (t: Tpl) => ({
  id: t.id, name: t.name, slug: t.slug, description: t.description, icon: t.icon, category: t.category, model: t.model, interval_sec: t.intervalSec,
  identity: t.identity, tools: t.tools, capabilities: t.capabilities, config: t.config, is_featured: t.isFeatured, sort_order: t.sortOrder,
  created_at: t.createdAt.toISOString(), updated_at: t.updatedAt.toISOString(),
});
const Fields = {
  description: Type.Optional(Type.String({ maxLength: 5_000 })), icon: Type.Optional(Type.String({ maxLength: 16 })), category: Type.Optional(Type.String({ maxLength: 60 })),
  model: Type.Optional(Type.String({ maxLength: 100 })), interval_sec: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 86_400 })), identity: Type.Optional(Type.String({ maxLength: 50_000 })),
  tools: Type.Optional(Type.Array(Type.String({ maxLength: 100 }), { maxItems: 100 })), capabilities: Type.Optional(Type.Array(Type.String({ maxLength: 100 }), { maxItems: 100 })),
  config: Type.Optional(Type.Record(Type.String(), Type.Unknown())), is_featured: Type.Optional(Type.Boolean()), sort_order: Type.Optional(Type.Integer({ minimum: -100_000, maximum: 100_000 })),
};
const values = (b: { [K in keyof typeof Fields]?: unknown }) => ({
  description: b.description as string | undefined, icon: b.icon as string | undefined, category: b.category as string | undefined, model: b.model as string | undefined,
  intervalSec: b.interval_sec as number | undefined, identity: b.identity as string | undefined, tools: b.tools as string[] | undefined, capabilities: b.capabilities as string[] | undefined,
  config: b.config, isFeatured: b.is_featured as boolean | undefined, sortOrder: b.sort_order as number | undefined,
});

/** Agent templates (`/v1/public/templates`): slug unique among live templates of the org, DELETE archives. */
export async function templateRoutes(app: App, ctx: Ctx) {
  const find = async (orgId: string, id: number) => {
    const [t] = await ctx.db.select().from(templates).where(and(eq(templates.orgId, orgId), eq(templates.id, id), isNull(templates.archivedAt)));
    if (!t) throw notFound('Template');
    return t;
  };

  app.get('/v1/public/templates', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Public API'], summary: 'List agent templates', querystring: Type.Object({ ...PaginationQuery, category: Type.Optional(Type.String({ maxLength: 60 })), featured: Type.Optional(Type.Boolean()), q: Type.Optional(Type.String({ maxLength: 100 })) }), response: { 200: ListEnvelope(TemplateSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const cond = and(eq(templates.orgId, orgOf(request)), isNull(templates.archivedAt), q.category ? eq(templates.category, q.category) : undefined,
      q.featured !== undefined ? eq(templates.isFeatured, q.featured) : undefined, q.q ? or(ilike(templates.name, like(q.q)), ilike(templates.slug, like(q.q)), ilike(templates.description, like(q.q))) : undefined);
    const rows = await ctx.db.select().from(templates).where(cond).orderBy(asc(templates.sortOrder), asc(templates.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(view), await countOf(ctx, templates, cond), p);
  });

  app.post('/v1/public/templates', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Public API'], summary: 'Create a template (slug unique)', body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100 }), slug: Slug, ...Fields }, { additionalProperties: false }), response: { 201: Envelope(TemplateSchema) } },
  }, async (request, reply) => {
    try {
      const [t] = await ctx.db.insert(templates).values({ orgId: orgOf(request), name: request.body.name, slug: request.body.slug, ...values(request.body) }).returning();
      return reply.status(201).send(ok(view(t!)));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`A template with slug "${request.body.slug}" already exists`);
      throw err;
    }
  });

  app.get('/v1/public/templates/:id', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Public API'], summary: 'Get a template', params: Id, response: { 200: Envelope(TemplateSchema) } },
  }, async (request) => ok(view(await find(orgOf(request), request.params.id))));

  app.patch('/v1/public/templates/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Public API'], summary: 'Update a template', params: Id, body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })), ...Fields }, { additionalProperties: false }), response: { 200: Envelope(TemplateSchema) } },
  }, async (request) => {
    const t = await find(orgOf(request), request.params.id);
    if (Object.keys(request.body).length === 0) throw badRequest('Nothing to update');
    const [u] = await ctx.db.update(templates).set({ name: request.body.name, ...values(request.body), updatedAt: new Date() }).where(eq(templates.id, t.id)).returning();
    return ok(view(u!));
  });

  app.delete('/v1/public/templates/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Public API'], summary: 'Archive a template (soft delete; its slug becomes free)', params: Id, response: { 200: Deleted } },
  }, async (request) => {
    const t = await find(orgOf(request), request.params.id);
    await ctx.db.update(templates).set({ archivedAt: new Date(), updatedAt: new Date() }).where(eq(templates.id, t.id));
    return ok({ id: t.id, deleted: true });
  });
}
