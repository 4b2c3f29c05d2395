import { badRequest } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, gte, ilike, inArray, lte } from 'drizzle-orm';
import { logs } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { AgentName, countOf, enumList, like, literals, windowTotal } from './common.js';

const Levels = ['debug', 'info', 'warn', 'error'] as const;
const LogSchema = Type.Object({ id: Type.Integer(), agent: Type.String(), level: literals(Levels), message: Type.String(), meta: Type.Unknown(), created_at: Type.String(), source: Type.Literal('db') });
const view = (l: typeof logs.$inferSelect) => ({ id: l.id, agent: l.agent, level: l.level as (typeof Levels)[number], message: l.message, meta: l.meta, created_at: l.createdAt.toISOString(), source: 'db' as const });

/** Agent log lines, stored in the database (this deployment keeps no log files). */
export async function logRoutes(app: App, ctx: Ctx) {
  app.post('/logs', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Logs'], summary: 'Store an agent log entry', body: Type.Object({ agent: AgentName, message: Type.String({ minLength: 1, maxLength: 20_000 }), level: Type.Optional(literals(Levels)), meta: Type.Optional(Type.Record(Type.String(), Type.Unknown())) }, { additionalProperties: false }), response: { 201: Envelope(LogSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    if (JSON.stringify(b.meta ?? {}).length > 16_384) throw badRequest('meta is larger than 16 KiB', [{ field: 'meta' }]);
    const [l] = await ctx.db.insert(logs).values({ orgId: orgOf(request), agent: b.agent, level: b.level ?? 'info', message: b.message, meta: b.meta ?? {} }).returning();
    return reply.status(201).send(ok(view(l!)));
  });

  app.get('/logs', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Logs'], summary: 'Log lines, newest first (agent, level comma list, q, since/until)',
      description: '`source=file` lists nothing: every line lives in the database.',
      querystring: Type.Object({
        ...PaginationQuery, agent: Type.Optional(AgentName), level: Type.Optional(Type.String({ maxLength: 60 })), q: Type.Optional(Type.String({ maxLength: 200 })),
        source: Type.Optional(literals(['db', 'file', 'all'] as const)), since: Type.Optional(Type.String({ format: 'date-time' })), until: Type.Optional(Type.String({ format: 'date-time' })),
      }),
      response: { 200: ListEnvelope(LogSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    if (q.source === 'file') return list([], 0, p);
    const levels = enumList(q.level, Levels, 'level');
    const cond = and(eq(logs.orgId, orgOf(request)), q.agent ? eq(logs.agent, q.agent) : undefined, levels ? inArray(logs.level, levels) : undefined,
      q.q ? ilike(logs.message, like(q.q)) : undefined, q.since ? gte(logs.createdAt, new Date(q.since)) : undefined, q.until ? lte(logs.createdAt, new Date(q.until)) : undefined);
    const rows = await ctx.db.select().from(logs).where(cond).orderBy(desc(logs.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(view), await countOf(ctx, logs, cond), p);
  });

  app.get('/logs/files', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Logs'], summary: 'Log sources: one per agent with stored lines', querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(Type.Object({ name: Type.String(), lines: Type.Integer(), last_at: Type.String() })) } },
  }, async (request) => {
    const p = page(request.query);
    const { rows } = await ctx.pool.query(
      `SELECT agent AS name, count(*)::int AS lines, max(created_at) AS last_at, count(*) OVER ()::int AS total
         FROM agent_logs WHERE org_id = $1 GROUP BY agent ORDER BY agent LIMIT $2 OFFSET $3`, [orgOf(request), p.limit, p.offset]);
    const total = await windowTotal(rows, p, async () => (await ctx.pool.query('SELECT count(DISTINCT agent)::int AS n FROM agent_logs WHERE org_id = $1', [orgOf(request)])).rows[0].n);
    return list(rows.map((r) => ({ name: r.name, lines: r.lines, last_at: new Date(r.last_at).toISOString() })), total, p);
  });
}
