import { badRequest, forbidden, notFound } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, eq, ilike, isNull, or } from 'drizzle-orm';
import { rules } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { AgentName, countOf, Deleted, Id, like, literals } from './common.js';

type Rule = typeof rules.$inferSelect;
const RuleSchema = Type.Object({
  id: Type.Integer(), rule: Type.String(), title: Type.String(), scope: Type.String(), agent: Nullable(Type.String()), category: Nullable(Type.String()),
  permanent: Type.Boolean(), created_at: Type.String(), updated_at: Type.String(),
});
const view = (r: Rule) => ({
  id: r.id, rule: r.body, title: r.title, scope: r.scope, agent: r.agent, category: r.category, permanent: r.permanent,
  created_at: r.createdAt.toISOString(), updated_at: r.updatedAt.toISOString(),
});
const Fields = {
  rule: Type.String({ minLength: 1, maxLength: 20_000, description: 'the rule text' }), title: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  scope: Type.Optional(Type.String({ minLength: 1, maxLength: 60, description: "`all` (universal, the default), `agent`, or another grouping" })),
  agent: Type.Optional(Nullable(AgentName)), category: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 60 }))),
};
const titleOf = (rule: string) => rule.split('\n')[0]!.slice(0, 200);

/** Architectural rules the agents follow; permanent ones cannot be deleted. */
export async function ruleRoutes(app: App, ctx: Ctx) {
  const find = async (orgId: string, id: number) => {
    const [r] = await ctx.db.select().from(rules).where(and(eq(rules.orgId, orgId), eq(rules.id, id)));
    if (!r) throw notFound('Rule');
    return r;
  };

  app.get('/rules', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Rules'], summary: 'Rules (filter by scope, agent, category, permanent, q)',
      description: '`agent` returns that agent\'s rules plus the universal ones (no agent).',
      querystring: Type.Object({
        ...PaginationQuery, scope: Type.Optional(Type.String({ maxLength: 60 })), agent: Type.Optional(AgentName), category: Type.Optional(Type.String({ maxLength: 60 })),
        permanent: Type.Optional(literals(['0', '1', 'true', 'false'] as const)), q: Type.Optional(Type.String({ maxLength: 200 })),
      }),
      response: { 200: ListEnvelope(RuleSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const permanent = q.permanent === undefined ? undefined : q.permanent === '1' || q.permanent === 'true';
    const cond = and(eq(rules.orgId, orgOf(request)), q.scope ? eq(rules.scope, q.scope) : undefined, q.agent ? or(eq(rules.agent, q.agent), isNull(rules.agent)) : undefined,
      q.category ? eq(rules.category, q.category) : undefined, permanent !== undefined ? eq(rules.permanent, permanent) : undefined,
      q.q ? or(ilike(rules.title, like(q.q)), ilike(rules.body, like(q.q))) : undefined);
    const rows = await ctx.db.select().from(rules).where(cond).orderBy(asc(rules.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(view), await countOf(ctx, rules, cond), p);
  });

  app.post('/rules', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Rules'], summary: 'Create a rule', body: Type.Object({ ...Fields, permanent: Type.Optional(Type.Boolean()) }, { additionalProperties: false }), response: { 201: Envelope(RuleSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    const [r] = await ctx.db.insert(rules).values({
      orgId: orgOf(request), title: b.title ?? titleOf(b.rule), body: b.rule, scope: b.scope ?? (b.agent ? 'agent' : 'all'), agent: b.agent ?? null, category: b.category ?? null, permanent: b.permanent ?? false,
    }).returning();
    return reply.status(201).send(ok(view(r!)));
  });

  app.patch('/rules/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Rules'], summary: 'Update a rule (permanent cannot be changed)', params: Id, body: Type.Object({ ...Fields, rule: Type.Optional(Fields.rule) }, { additionalProperties: false }), response: { 200: Envelope(RuleSchema) } },
  }, async (request) => {
    const r = await find(orgOf(request), request.params.id);
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    const [u] = await ctx.db.update(rules).set({ body: b.rule, title: b.title, scope: b.scope, agent: b.agent, category: b.category, updatedAt: new Date() }).where(eq(rules.id, r.id)).returning();
    return ok(view(u!));
  });

  app.delete('/rules/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Rules'], summary: 'Delete a rule (permanent rules cannot be deleted: 403)', params: Id, response: { 200: Deleted } },
  }, async (request) => {
    const r = await find(orgOf(request), request.params.id);
    if (r.permanent) throw forbidden('Permanent rules cannot be deleted');
    await ctx.db.delete(rules).where(and(eq(rules.id, r.id), eq(rules.permanent, false)));
    return ok({ id: r.id, deleted: true });
  });
}
