import { escapeLike } from '@aos/db';
import { badRequest, conflict } from '@aos/core';
import { Envelope, ListEnvelope, list, Nullable, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, count, desc, eq, gte, lte, sql } from 'drizzle-orm';
import { activityLog } from '../db/schema.js';
import { hasNul, nestsDeeperThan } from '../domain/sanitize.js';
import type { Ctx } from '../service.js';
import { IdempotencyHeaders } from './idempotency.js';

const ActorType = Type.Union([Type.Literal('agent'), Type.Literal('system'), Type.Literal('user')]);

const ActivitySchema = Type.Object({
  id: Type.Integer(), actor_type: Type.String(), actor_id: Nullable(Type.String()), action: Type.String(),
  entity_type: Nullable(Type.String()), entity_id: Nullable(Type.String()), metadata: Type.Record(Type.String(), Type.Unknown()),
  event_id: Nullable(Type.String()), created_at: Type.String(),
});

const view = (r: typeof activityLog.$inferSelect) => ({
  id: r.id, actor_type: r.actorType, actor_id: r.actorId, action: r.action, entity_type: r.entityType, entity_id: r.entityId,
  metadata: r.metadata as Record<string, unknown>, event_id: r.eventId, created_at: r.createdAt.toISOString(),
});

const Name = (max = 200) => Type.String({ minLength: 1, maxLength: max });

const CreateBody = Type.Object({
  actor_type: ActorType,
  actor_id: Name(),
  action: Name(),
  entity_type: Type.Optional(Name(100)),
  entity_id: Type.Optional(Name()),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
}, { additionalProperties: false });

const Counts = Type.Object({
  total: Type.Integer(),
  by_action: Type.Array(Type.Object({ action: Type.String(), count: Type.Integer() })),
  by_actor: Type.Array(Type.Object({ actor_type: Type.String(), actor_id: Nullable(Type.String()), count: Type.Integer() })),
  by_actor_type: Type.Array(Type.Object({ actor_type: Type.String(), count: Type.Integer() })),
});

export function activityRoutes(app: App, ctx: Ctx) {
  app.get('/activity-log', {
    schema: {
      tags: ['Activity'], summary: 'List recent activities with filtering',
      querystring: Type.Object({
        actor_type: Type.Optional(ActorType), actor_id: Type.Optional(Name()), action: Type.Optional(Name()),
        entity_type: Type.Optional(Name(100)), entity_id: Type.Optional(Name()),
        since: Type.Optional(Type.String({ format: 'date-time' })), until: Type.Optional(Type.String({ format: 'date-time' })),
        ...PaginationQuery,
      }),
      response: { 200: ListEnvelope(ActivitySchema) },
    },
    config: { scope: 'notifications:read' },
  }, async (request) => {
    const q = request.query;
    const p = page(q);
    // `tasks.*` filters a family of actions.
    const action = q.action?.endsWith('.*') ? sql`${activityLog.action} LIKE ${`${escapeLike(q.action.slice(0, -1))}%`}` : q.action ? eq(activityLog.action, q.action) : undefined;
    const where = and(
      eq(activityLog.orgId, orgOf(request)),
      q.actor_type ? eq(activityLog.actorType, q.actor_type) : undefined,
      q.actor_id ? eq(activityLog.actorId, q.actor_id) : undefined,
      action,
      q.entity_type ? eq(activityLog.entityType, q.entity_type) : undefined,
      q.entity_id ? eq(activityLog.entityId, q.entity_id) : undefined,
      q.since ? gte(activityLog.createdAt, new Date(q.since)) : undefined,
      q.until ? lte(activityLog.createdAt, new Date(q.until)) : undefined,
    );
    const [rows, [total]] = await Promise.all([
      ctx.db.select().from(activityLog).where(where).orderBy(desc(activityLog.createdAt), desc(activityLog.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: count() }).from(activityLog).where(where),
    ]);
    return list(rows.map(view), total?.n ?? 0, p);
  });

  app.post('/activity-log', {
    schema: { tags: ['Activity'], summary: 'Create a new activity record', headers: IdempotencyHeaders, body: CreateBody, response: { 201: Envelope(ActivitySchema), 200: Envelope(ActivitySchema) } },
    config: { scope: 'notifications:write' },
  }, async (request, reply) => {
    const b = request.body;
    if (nestsDeeperThan(b.metadata ?? {}, 32)) throw badRequest('metadata nests too deep (max 32 levels)', [{ field: 'metadata' }]);
    const metadata = { ...(b.metadata ?? {}), recorded_by: { kind: request.principal.kind, id: request.principal.userId ?? request.principal.apiKeyId } };
    if (JSON.stringify(metadata).length > 16_384) throw badRequest('metadata is too large (max 16 KiB)', [{ field: 'metadata' }]);
    if (hasNul(metadata)) throw badRequest('metadata must not contain NUL characters', [{ field: 'metadata' }]);
    const orgId = orgOf(request);
    const idempotencyKey = request.headers['idempotency-key'] ?? null;
    const [row] = await ctx.db.insert(activityLog).values({
      orgId, actorType: b.actor_type, actorId: b.actor_id, action: b.action,
      entityType: b.entity_type ?? null, entityId: b.entity_id ?? null, metadata, idempotencyKey,
    }).onConflictDoNothing().returning();
    if (row) return reply.status(201).send(ok(view(row)));
    const [first] = await ctx.db.select().from(activityLog).where(and(eq(activityLog.orgId, orgId), eq(activityLog.idempotencyKey, idempotencyKey ?? '')));
    if (!first) throw conflict('An activity with this Idempotency-Key was recorded and removed since');
    return reply.status(200).send(ok(view(first)));
  });

  app.get('/activity-log/stats', {
    schema: { tags: ['Activity'], summary: 'Activity summary statistics', response: { 200: Envelope(Type.Object({ last_24h: Counts, last_7d: Counts, generated_at: Type.String() })) } },
    config: { scope: 'notifications:read' },
  }, async (request) => {
    const orgId = orgOf(request);
    const window = async (hours: number) => {
      const where = and(eq(activityLog.orgId, orgId), gte(activityLog.createdAt, sql`now() - make_interval(hours => ${hours})`));
      const [[total], byAction, byActor, byActorType] = await Promise.all([
        ctx.db.select({ n: count() }).from(activityLog).where(where),
        ctx.db.select({ action: activityLog.action, count: count() }).from(activityLog).where(where)
          .groupBy(activityLog.action).orderBy(desc(count()), activityLog.action).limit(50),
        ctx.db.select({ actor_type: activityLog.actorType, actor_id: activityLog.actorId, count: count() }).from(activityLog).where(where)
          .groupBy(activityLog.actorType, activityLog.actorId).orderBy(desc(count()), activityLog.actorType, activityLog.actorId).limit(50),
        ctx.db.select({ actor_type: activityLog.actorType, count: count() }).from(activityLog).where(where)
          .groupBy(activityLog.actorType).orderBy(activityLog.actorType),
      ]);
      return { total: total?.n ?? 0, by_action: byAction, by_actor: byActor, by_actor_type: byActorType };
    };
    const [last_24h, last_7d] = await Promise.all([window(24), window(24 * 7)]);
    return ok({ last_24h, last_7d, generated_at: new Date().toISOString() });
  });
}
