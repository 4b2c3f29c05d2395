import { badRequest } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, gte, ilike, inArray, lt, lte } from 'drizzle-orm';
import { LogSources, logs } from '../db/schema.js';
import { AGENT_NAME } from '../domain/agents.js';
import { LogLevels } from '../domain/logs.js';
import type { Ctx } from '../service.js';
import { AgentName, countOf, enumList, like, literals, windowTotal } from './common.js';

const LogSchema = Type.Object({
  id: Type.Integer(), agent: Type.String(), level: literals(LogLevels), message: Type.String(), meta: Type.Unknown(), created_at: Type.String(),
  source: literals(LogSources), file: Type.Union([Type.String(), Type.Null()], { description: 'the log file the line belongs to (source file)' }),
});

/** `<agent>/<YYYY-MM-DD>.log`: an agent's own log lines of one UTC day. */
const FILE_NAME = `^${AGENT_NAME.slice(1, -1)}/\\d{4}-\\d{2}-\\d{2}\\.log$`;
const fileOf = (agent: string, at: Date) => `${agent}/${at.toISOString().slice(0, 10)}.log`;
const view = (l: typeof logs.$inferSelect) => ({
  id: l.id, agent: l.agent, level: l.level as (typeof LogLevels)[number], message: l.message, meta: l.meta, created_at: l.createdAt.toISOString(),
  source: l.source as (typeof LogSources)[number], file: l.source === 'file' ? fileOf(l.agent, l.createdAt) : null,
});

/** The agent and UTC day a file name stands for; a date that does not exist is a 400. Nothing here touches a filesystem. */
function parseFile(name: string) {
  const [agent, day] = name.slice(0, -'.log'.length).split('/') as [string, string];
  const from = new Date(`${day}T00:00:00.000Z`);
  if (Number.isNaN(from.getTime()) || from.toISOString().slice(0, 10) !== day) throw badRequest(`No such day: ${day}`, [{ field: 'file' }]);
  return { agent, from, to: new Date(from.getTime() + 86_400_000) };
}

/**
 * Agent log lines, all in the database, from two sources: `file` — each agent's own log, which
 * the runtime writes (bootstrap, lifecycle, runs, cycles; what the agent's log files held where
 * agents ran as local processes), listed by `/logs/files` as one file per agent and UTC day —
 * and `db`, the entries clients store with `POST /logs`. `GET /logs` merges both by default.
 */
export async function logRoutes(app: App, ctx: Ctx) {
  app.post('/logs', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Logs'], summary: 'Store an agent log entry (source db)', body: Type.Object({ agent: AgentName, message: Type.String({ minLength: 1, maxLength: 20_000 }), level: Type.Optional(literals(LogLevels)), meta: Type.Optional(Type.Record(Type.String(), Type.Unknown())) }, { additionalProperties: false }), response: { 201: Envelope(LogSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    if (JSON.stringify(b.meta ?? {}).length > 16_384) throw badRequest('meta is larger than 16 KiB', [{ field: 'meta' }]);
    const [l] = await ctx.db.insert(logs).values({ orgId: orgOf(request), agent: b.agent, level: b.level ?? 'info', message: b.message, meta: b.meta ?? {}, source: 'db' }).returning();
    return reply.status(201).send(ok(view(l!)));
  });

  app.get('/logs', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Logs'], summary: 'Log lines of both sources merged, newest first (agent, level comma list, q, since/until, source, file)',
      description: '`source=file`: the agents\' own logs, written by the runtime; `source=db`: entries stored with POST /logs; `all` (default): both. `file` (a name from GET /logs/files) reads one log file.',
      querystring: Type.Object({
        ...PaginationQuery, agent: Type.Optional(AgentName), level: Type.Optional(Type.String({ maxLength: 60 })), q: Type.Optional(Type.String({ maxLength: 200 })),
        source: Type.Optional(literals(['db', 'file', 'all'] as const)), since: Type.Optional(Type.String({ format: 'date-time' })), until: Type.Optional(Type.String({ format: 'date-time' })),
        file: Type.Optional(Type.String({ maxLength: 80, pattern: FILE_NAME, description: '`<agent>/<YYYY-MM-DD>.log`' })),
      }),
      response: { 200: ListEnvelope(LogSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const levels = enumList(q.level, LogLevels, 'level');
    if (q.file && q.source === 'db') throw badRequest('A log file holds source=file lines only', [{ field: 'source' }]);
    const file = q.file ? parseFile(q.file) : null;
    const source = file ? 'file' : q.source && q.source !== 'all' ? q.source : null;
    const agent = file?.agent ?? q.agent;
    if (file && q.agent && q.agent !== file.agent) return list([], 0, p);
    const cond = and(eq(logs.orgId, orgOf(request)), source ? eq(logs.source, source) : undefined, agent ? eq(logs.agent, agent) : undefined,
      levels ? inArray(logs.level, levels) : undefined, q.q ? ilike(logs.message, like(q.q)) : undefined,
      q.since ? gte(logs.createdAt, new Date(q.since)) : undefined, q.until ? lte(logs.createdAt, new Date(q.until)) : undefined,
      file ? gte(logs.createdAt, file.from) : undefined, file ? lt(logs.createdAt, file.to) : undefined);
    const rows = await ctx.db.select().from(logs).where(cond).orderBy(desc(logs.createdAt), desc(logs.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(view), await countOf(ctx, logs, cond), p);
  });

  app.get('/logs/files', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Logs'], summary: 'Available log files: one per agent and UTC day of its own log, newest day first',
      description: '`size_bytes` counts the lines\' message bytes plus a newline each; `GET /logs?file=<name>` reads a file.',
      querystring: Type.Object({ ...PaginationQuery, agent: Type.Optional(AgentName) }),
      response: {
        200: ListEnvelope(Type.Object({
          name: Type.String(), agent: Type.String(), date: Type.String(), lines: Type.Integer(), size_bytes: Type.Integer(),
          levels: Type.Record(Type.String(), Type.Integer()), first_at: Type.String(), last_at: Type.String(),
        })),
      },
    },
  }, async (request) => {
    const p = page(request.query);
    const params = [orgOf(request), request.query.agent ?? null];
    const files = `FROM agent_logs WHERE org_id = $1 AND source = 'file' AND ($2::text IS NULL OR agent = $2)`;
    const day = `(created_at AT TIME ZONE 'UTC')::date`;
    const { rows } = await ctx.pool.query(
      `SELECT agent, to_char(${day}, 'YYYY-MM-DD') AS date, count(*)::int AS lines, sum(octet_length(message) + 1)::bigint AS size_bytes,
              count(*) FILTER (WHERE level = 'debug')::int AS debug, count(*) FILTER (WHERE level = 'info')::int AS info,
              count(*) FILTER (WHERE level = 'warn')::int AS warn, count(*) FILTER (WHERE level = 'error')::int AS error,
              min(created_at) AS first_at, max(created_at) AS last_at, count(*) OVER ()::int AS total
         ${files} GROUP BY agent, ${day} ORDER BY ${day} DESC, agent LIMIT $3 OFFSET $4`, [...params, p.limit, p.offset]);
    const total = await windowTotal(rows, p, async () => (await ctx.pool.query(`SELECT count(DISTINCT (agent, ${day}))::int AS n ${files}`, params)).rows[0].n);
    return list(rows.map((r) => ({
      name: `${r.agent}/${r.date}.log`, agent: r.agent, date: r.date, lines: r.lines, size_bytes: Number(r.size_bytes),
      levels: { debug: r.debug, info: r.info, warn: r.warn, error: r.error }, first_at: new Date(r.first_at).toISOString(), last_at: new Date(r.last_at).toISOString(),
    })), total, p);
  });
}
