import { notFound } from '@aos/core';
import { Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type, type TSchema } from '@sinclair/typebox';
import { and, desc, eq, isNull, or, sql, type SQL } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import pg from 'pg';
import { notifications } from '../db/schema.js';
import type { Ctx } from '../service.js';

const Types = ['info', 'warning', 'error', 'success'] as const;
const TypeSchema = Type.Unsafe<(typeof Types)[number]>(Type.Union(Types.map((t) => Type.Literal(t))));
const Nullable = <T extends TSchema>(s: T) => Type.Union([s, Type.Null()]);

const NotificationSchema = Type.Object({
  id: Type.Integer(), type: Type.String(), title: Type.String(), message: Type.String(), source: Nullable(Type.String()),
  link: Nullable(Type.String()), read: Type.Boolean(), read_at: Nullable(Type.String()), user_id: Nullable(Type.String()), created_at: Type.String(),
});
type Row = typeof notifications.$inferSelect;
const view = (n: Row) => ({
  id: n.id, type: n.type, title: n.title, message: n.message, source: n.source, link: n.link, read: n.readAt !== null,
  read_at: n.readAt?.toISOString() ?? null, user_id: n.userId, created_at: n.createdAt.toISOString(),
});

/** A caller sees notifications addressed to them (in any org) and those for everyone in the org they act in. */
function visibleTo(request: FastifyRequest): SQL {
  const orgId = orgOf(request);
  const userId = request.principal.userId;
  const orgWide = and(eq(notifications.orgId, orgId), isNull(notifications.userId))!;
  return userId ? or(eq(notifications.userId, userId), orgWide)! : orgWide;
}

/** One LISTEN connection per process fans new notifications out to open SSE streams. */
class NotificationStreams {
  private client: pg.Client | null = null;
  private readonly listeners = new Set<(n: { id: number; org_id: string; user_id: string | null }) => void>();
  constructor(private readonly ctx: Ctx) {}
  async subscribe(fn: (n: { id: number; org_id: string; user_id: string | null }) => void): Promise<() => void> {
    if (!this.client) {
      const client = new pg.Client({ connectionString: this.ctx.config.DATABASE_URL });
      client.on('notification', (msg) => {
        try {
          const payload = JSON.parse(msg.payload ?? '{}');
          for (const l of this.listeners) l(payload);
        } catch { /* ignore malformed */ }
      });
      client.on('error', () => { this.client = null; });
      this.client = client;
      await client.connect();
      await client.query('LISTEN aos_notifications');
      this.ctx.shutdown.add('notification streams', () => client.end());
    }
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

export async function notificationRoutes(app: App, ctx: Ctx) {
  const read = { scope: 'notifications:read' as const };
  const write = { scope: 'notifications:write' as const };
  const streams = new NotificationStreams(ctx);

  app.get('/notifications', {
    config: read,
    schema: {
      tags: ['Notifications'], summary: 'List notifications, newest first',
      querystring: Type.Object({ ...PaginationQuery, read: Type.Optional(Type.Boolean()), type: Type.Optional(TypeSchema) }),
      response: { 200: ListEnvelope(NotificationSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const where: SQL[] = [visibleTo(request)];
    if (request.query.read !== undefined) where.push(request.query.read ? sql`${notifications.readAt} IS NOT NULL` : isNull(notifications.readAt));
    if (request.query.type) where.push(eq(notifications.type, request.query.type));
    const cond = and(...where);
    const [rows, total] = await Promise.all([
      ctx.db.select().from(notifications).where(cond).orderBy(desc(notifications.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: sql<number>`count(*)::int` }).from(notifications).where(cond).then((r) => r[0]?.n ?? 0),
    ]);
    return list(rows.map(view), total, p);
  });

  app.post('/notifications', {
    config: write,
    schema: {
      tags: ['Notifications'], summary: 'Create a notification (for the caller, or the whole org with `broadcast`)',
      body: Type.Object({
        title: Type.String({ minLength: 1, maxLength: 300 }), message: Type.String({ minLength: 1, maxLength: 5_000 }), type: Type.Optional(TypeSchema),
        source: Type.Optional(Type.String({ maxLength: 100 })), link: Type.Optional(Type.String({ maxLength: 2_000 })), broadcast: Type.Optional(Type.Boolean()),
      }, { additionalProperties: false }),
      response: { 201: Envelope(NotificationSchema) },
    },
  }, async (request, reply) => {
    const b = request.body;
    const [row] = await ctx.db.insert(notifications).values({
      orgId: orgOf(request), userId: b.broadcast ? null : request.principal.userId, type: b.type ?? 'info', title: b.title, message: b.message,
      source: b.source ?? null, link: b.link ?? null,
    }).returning();
    return reply.status(201).send(ok(view(row!)));
  });

  app.get('/notifications/unread-count', {
    config: read,
    schema: { tags: ['Notifications'], summary: 'Unread count', response: { 200: Envelope(Type.Object({ count: Type.Integer() })) } },
  }, async (request) => {
    const [r] = await ctx.db.select({ n: sql<number>`count(*)::int` }).from(notifications).where(and(visibleTo(request), isNull(notifications.readAt)));
    return ok({ count: r?.n ?? 0 });
  });

  app.patch('/notifications/read-all', {
    config: write,
    schema: { tags: ['Notifications'], summary: 'Mark all as read', response: { 200: Envelope(Type.Object({ updated: Type.Integer() })) } },
  }, async (request) => {
    const rows = await ctx.db.update(notifications).set({ readAt: new Date() }).where(and(visibleTo(request), isNull(notifications.readAt))).returning({ id: notifications.id });
    return ok({ updated: rows.length });
  });

  const Id = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) });
  app.patch('/notifications/:id/read', {
    config: write,
    schema: { tags: ['Notifications'], summary: 'Mark one as read', params: Id, response: { 200: Envelope(NotificationSchema) } },
  }, async (request) => {
    const [row] = await ctx.db.update(notifications).set({ readAt: sql`coalesce(${notifications.readAt}, now())` })
      .where(and(visibleTo(request), eq(notifications.id, request.params.id))).returning();
    if (!row) throw notFound('Notification');
    return ok(view(row));
  });

  app.delete('/notifications/:id', {
    config: write,
    schema: { tags: ['Notifications'], summary: 'Delete one', params: Id, response: { 200: Envelope(Type.Object({ id: Type.Integer(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const rows = await ctx.db.delete(notifications).where(and(visibleTo(request), eq(notifications.id, request.params.id))).returning({ id: notifications.id });
    if (rows.length === 0) throw notFound('Notification');
    return ok({ id: request.params.id, deleted: true });
  });

  app.get('/notifications/stream', {
    config: read,
    schema: { tags: ['Notifications'], summary: 'Server-sent events: each new notification for the caller as it is created' },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const userId = request.principal.userId;
    const res = reply.raw;
    // Listening before the stream opens: nothing created after the client sees ": connected" is missed.
    const unsubscribe = await streams.subscribe(async (n) => {
      const mine = n.user_id ? n.user_id === userId : n.org_id === orgId;
      if (!mine) return;
      const [row] = await ctx.db.select().from(notifications).where(eq(notifications.id, n.id));
      if (row) res.write(`id: ${row.id}\nevent: notification\ndata: ${JSON.stringify(view(row))}\n\n`);
    });
    reply.hijack();
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-trace-id': request.id });
    res.write(': connected\n\n');
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    request.raw.on('close', () => {
      clearInterval(heartbeat);
      unsubscribe();
    });
  });
}
