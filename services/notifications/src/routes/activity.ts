import { badRequest } from '@aos/core';
import { Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type, type TSchema } from '@sinclair/typebox';
import { and, desc, eq, sql, type SQL } from 'drizzle-orm';
import { activityLog } from '../db/schema.js';
import type { Ctx } from '../service.js';

const Actor = Type.Unsafe<'agent' | 'system' | 'user'>(Type.Union([Type.Literal('agent'), Type.Literal('system'), Type.Literal('user')]));
const Nullable = <T extends TSchema>(s: T) => Type.Union([s, Type.Null()]);
const ActivitySchema = Type.Object({
  id: Type.Integer(), event_id: Nullable(Type.String()), actor_type: Type.String(), actor_id: Nullable(Type.String()), action: Type.String(),
  entity_type: Nullable(Type.String()), entity_id: Nullable(Type.String()), metadata: Type.Unknown(), created_at: Type.String(),
});
type Row = typeof activityLog.$inferSelect;
const view = (a: Row) => ({
  id: a.id, event_id: a.eventId, actor_type: a.actorType, actor_id: a.actorId, action: a.action, entity_type: a.entityType,
  entity_id: a.entityId, metadata: a.metadata, created_at: a.createdAt.toISOString(),
});

export async function activityRoutes(app: App, ctx: Ctx) {
  app.get('/activity-log', {
    config: { scope: 'notifications:read' },
    schema: {
      tags: ['Activity log'], summary: 'Activity of the organization, newest first',
      querystring: Type.Object({
        ...PaginationQuery, actor_type: Type.Optional(Actor), actor_id: Type.Optional(Type.String({ maxLength: 200 })),
        action: Type.Optional(Type.String({ maxLength: 200 })), entity_type: Type.Optional(Type.String({ maxLength: 100 })), entity_id: Type.Optional(Type.String({ maxLength: 200 })),
      }),
      response: { 200: ListEnvelope(ActivitySchema) },
    },
  }, async (request) => {
    const q = request.query;
    const p = page(q);
    const where: SQL[] = [eq(activityLog.orgId, orgOf(request))];
    if (q.actor_type) where.push(eq(activityLog.actorType, q.actor_type));
    if (q.actor_id) where.push(eq(activityLog.actorId, q.actor_id));
    if (q.action) where.push(q.action.endsWith('*') ? sql`${activityLog.action} LIKE ${q.action.slice(0, -1).replace(/[\\%_]/g, (c) => `\\${c}`) + '%'}` : eq(activityLog.action, q.action));
    if (q.entity_type) where.push(eq(activityLog.entityType, q.entity_type));
    if (q.entity_id) where.push(eq(activityLog.entityId, q.entity_id));
    const cond = and(...where);
    const [rows, total] = await Promise.all([
      ctx.db.select().from(activityLog).where(cond).orderBy(desc(activityLog.createdAt), desc(activityLog.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: sql<number>`count(*)::int` }).from(activityLog).where(cond).then((r) => r[0]?.n ?? 0),
    ]);
    return list(rows.map(view), total, p);
  });

  app.post('/activity-log', {
    config: { scope: 'notifications:write' },
    schema: {
      tags: ['Activity log'], summary: 'Record an activity manually',
      body: Type.Object({
        actor_type: Actor, actor_id: Type.String({ minLength: 1, maxLength: 200 }), action: Type.String({ minLength: 1, maxLength: 200 }),
        entity_type: Type.Optional(Type.String({ maxLength: 100 })), entity_id: Type.Optional(Type.String({ maxLength: 200 })),
        metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      }, { additionalProperties: false }),
      response: { 201: Envelope(ActivitySchema) },
    },
  }, async (request, reply) => {
    const b = request.body;
    if (JSON.stringify(b.metadata ?? {}).length > 32_768) throw badRequest('metadata is larger than 32 KiB', [{ field: 'metadata' }]);
    const [row] = await ctx.db.insert(activityLog).values({
      orgId: orgOf(request), actorType: b.actor_type, actorId: b.actor_id, action: b.action, entityType: b.entity_type ?? null,
      entityId: b.entity_id ?? null, metadata: { ...(b.metadata ?? {}), recorded_by: request.principal.userId ?? request.principal.apiKeyId },
    }).returning();
    return reply.status(201).send(ok(view(row!)));
  });

  app.get('/activity-log/stats', {
    config: { scope: 'notifications:read' },
    schema: {
      tags: ['Activity log'], summary: 'Counts by action and actor over 24 h and 7 days',
      response: {
        200: Envelope(Type.Object({
          last_24h: Type.Integer(), last_7d: Type.Integer(),
          by_action: Type.Array(Type.Object({ action: Type.String(), last_24h: Type.Integer(), last_7d: Type.Integer() })),
          by_actor: Type.Array(Type.Object({ actor_type: Type.String(), actor_id: Nullable(Type.String()), last_24h: Type.Integer(), last_7d: Type.Integer() })),
        })),
      },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const window = `org_id = $1 AND created_at > now() - interval '7 days'`;
    const [totals, byAction, byActor] = await Promise.all([
      ctx.pool.query(`SELECT count(*) FILTER (WHERE created_at > now() - interval '1 day')::int AS d1, count(*)::int AS d7 FROM activity_log WHERE ${window}`, [orgId]),
      ctx.pool.query(`SELECT action, count(*) FILTER (WHERE created_at > now() - interval '1 day')::int AS d1, count(*)::int AS d7 FROM activity_log WHERE ${window} GROUP BY action ORDER BY d7 DESC, action LIMIT 50`, [orgId]),
      ctx.pool.query(`SELECT actor_type, actor_id, count(*) FILTER (WHERE created_at > now() - interval '1 day')::int AS d1, count(*)::int AS d7 FROM activity_log WHERE ${window} GROUP BY actor_type, actor_id ORDER BY d7 DESC, actor_type LIMIT 50`, [orgId]),
    ]);
    return ok({
      last_24h: totals.rows[0].d1, last_7d: totals.rows[0].d7,
      by_action: byAction.rows.map((r) => ({ action: r.action, last_24h: r.d1, last_7d: r.d7 })),
      by_actor: byActor.rows.map((r) => ({ actor_type: r.actor_type, actor_id: r.actor_id, last_24h: r.d1, last_7d: r.d7 })),
    });
  });
}
