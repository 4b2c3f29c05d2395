import { AppError, badRequest, conflict, forbidden, notFound } from '@aos/core';
import { Envelope, IdParam, ListEnvelope, list, Nullable, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, count, desc, eq, gt, inArray, isNull, ne, or, sql, type SQL } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { notificationReceipts as receipts, notifications, orgMembers } from '../db/schema.js';
import { LiveHub, type LiveEvent } from '../domain/live.js';
import { createNotification, notificationView } from '../domain/notifications.js';
import type { Ctx } from '../service.js';
import { IdempotencyHeaders } from './idempotency.js';

const NotificationType = Type.Union([Type.Literal('info'), Type.Literal('warning'), Type.Literal('error'), Type.Literal('success')]);

export const NotificationSchema = Type.Object({
  id: Type.Integer(), user_id: Nullable(Type.String()), type: Type.String(), kind: Type.String(), title: Type.String(),
  message: Type.String(), source: Nullable(Type.String()), link: Nullable(Type.String()), read: Type.Boolean(),
  read_at: Nullable(Type.String()), event_id: Nullable(Type.String()), created_at: Type.String(),
});

const CreateBody = Type.Object({
  title: Type.String({ minLength: 1, maxLength: 300 }),
  message: Type.String({ minLength: 1, maxLength: 5_000 }),
  type: Type.Optional(NotificationType),
  source: Type.Optional(Type.String({ maxLength: 100 })),
  // Relative app paths or http(s) URLs only: a `javascript:` link would run in the web client.
  link: Type.Optional(Type.String({ maxLength: 2_000, pattern: '^(/(?!/)|https?://)' })),
  user_id: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'Recipient (default: the caller); another user needs the admin role' })),
  broadcast: Type.Optional(Type.Boolean({ description: 'Visible to every member of the organization (admin role)' })),
}, { additionalProperties: false });

const ListQuery = Type.Object({
  read: Type.Optional(Type.Boolean()),
  type: Type.Optional(Type.String({ description: 'Comma-separated: info,warning,error,success' })),
  kind: Type.Optional(Type.String({ maxLength: 50 })),
  ...PaginationQuery,
});

const TYPES = ['info', 'warning', 'error', 'success'];

/** Who reads: the user, or the API key itself when it acts for no user. */
export function readerOf(request: FastifyRequest): string | null {
  return request.principal.userId ?? request.principal.apiKeyId ?? null;
}

/** Joins the caller's receipt of org-wide notifications (their own read/dismiss state). */
const receiptJoin = (reader: string | null) =>
  and(eq(receipts.notificationId, notifications.id), eq(receipts.userId, reader ?? ''));

/** What the caller sees: their own notifications and the org-wide ones they did not dismiss. */
export function visibleTo(request: FastifyRequest): SQL {
  const orgId = orgOf(request);
  const reader = readerOf(request);
  const broadcast = and(isNull(notifications.userId), isNull(receipts.dismissedAt));
  return and(eq(notifications.orgId, orgId), reader ? or(eq(notifications.userId, reader), broadcast) : broadcast)!;
}

const isRead = sql<boolean>`(CASE WHEN ${notifications.userId} IS NULL THEN ${receipts.readAt} IS NOT NULL ELSE ${notifications.read} END)`;
const readAtOf = sql<Date | null>`(CASE WHEN ${notifications.userId} IS NULL THEN ${receipts.readAt} ELSE ${notifications.readAt} END)`;

type Joined = { n: typeof notifications.$inferSelect; read: boolean; readAt: Date | string | null };
const joinedView = (r: Joined) => ({
  ...notificationView(r.n), read: r.read, read_at: r.readAt === null ? null : new Date(r.readAt).toISOString(),
});

function requireReader(request: FastifyRequest): string {
  const reader = readerOf(request);
  if (!reader) throw badRequest('This principal has no user to keep read state for');
  return reader;
}

const hubs = new WeakMap<Ctx, LiveHub>();
export function liveHub(ctx: Ctx): LiveHub {
  let hub = hubs.get(ctx);
  if (!hub) {
    hub = new LiveHub(ctx.pool, ctx.log);
    hubs.set(ctx, hub);
    const h = hub;
    ctx.shutdown.add('live notifications', () => h.stop());
  }
  return hub;
}

export function notificationRoutes(app: App, ctx: Ctx) {
  const read = { scope: 'notifications:read' as const };
  const write = { scope: 'notifications:write' as const };

  app.get('/notifications', {
    schema: { tags: ['Notifications'], summary: 'List notifications', querystring: ListQuery, response: { 200: ListEnvelope(NotificationSchema) } },
    config: read,
  }, async (request) => {
    const q = request.query;
    const p = page(q);
    const types = q.type?.split(',').map((s) => s.trim()).filter(Boolean);
    if (types?.some((t) => !TYPES.includes(t))) throw badRequest('type must be one of info, warning, error, success', [{ field: 'type' }]);
    const reader = readerOf(request);
    const where = and(
      visibleTo(request),
      q.read === undefined ? undefined : q.read ? isRead : sql`NOT ${isRead}`,
      types?.length ? inArray(notifications.type, types) : undefined,
      q.kind ? eq(notifications.kind, q.kind) : undefined,
    );
    const [rows, [total]] = await Promise.all([
      ctx.db.select({ n: notifications, read: isRead, readAt: readAtOf }).from(notifications).leftJoin(receipts, receiptJoin(reader))
        .where(where).orderBy(desc(notifications.createdAt), desc(notifications.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: count() }).from(notifications).leftJoin(receipts, receiptJoin(reader)).where(where),
    ]);
    return list(rows.map(joinedView), total?.n ?? 0, p);
  });

  app.post('/notifications', {
    schema: { tags: ['Notifications'], summary: 'Create a notification', headers: IdempotencyHeaders, body: CreateBody, response: { 201: Envelope(NotificationSchema), 200: Envelope(NotificationSchema) } },
    config: write,
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    const p = request.principal;
    const isAdmin = p.platformRoles.includes('admin') || p.orgRole === 'owner' || p.orgRole === 'admin';
    const self = readerOf(request);
    let userId: string | null = b.user_id ?? self;
    if (b.broadcast) {
      if (b.user_id) throw badRequest('user_id and broadcast are exclusive', [{ field: 'broadcast' }]);
      if (!isAdmin) throw forbidden('Only organization admins can notify the whole organization');
      userId = null;
    } else if (b.user_id && b.user_id !== self) {
      if (!isAdmin) throw forbidden('Only organization admins can notify another user');
      // Identity's memberships as its events report them: only a member of this organization is a recipient.
      const [member] = await ctx.db.select({ role: orgMembers.role }).from(orgMembers)
        .where(and(eq(orgMembers.orgId, orgId), eq(orgMembers.userId, b.user_id), ne(orgMembers.role, 'removed')));
      if (!member) throw new AppError('NOT_FOUND', 'No such member of this organization', [{ field: 'user_id' }]);
    }
    if (!userId && !b.broadcast) throw badRequest('This principal has no user: give user_id or broadcast', [{ field: 'user_id' }]);
    // Per org and caller: a notification is not visible org-wide, so another member's request with the same key
    // must neither be answered with it nor be swallowed by it (a key never holds a space: the caller stays apart).
    const header = request.headers['idempotency-key'];
    const idempotencyKey = header ? `${self ?? ''} ${header}` : null;
    const row = await ctx.db.transaction((tx) => createNotification(tx, ctx.outbox, {
      orgId, userId, type: b.type ?? 'info', kind: 'manual', title: b.title, message: b.message, source: b.source ?? null, link: b.link ?? null, idempotencyKey,
    }, p.tenantId));
    if (row) return reply.status(201).send(ok(notificationView(row)));
    const [first] = await ctx.db.select().from(notifications).where(and(eq(notifications.orgId, orgId), eq(notifications.idempotencyKey, idempotencyKey ?? '')));
    if (!first) throw conflict('A notification with this Idempotency-Key was created and removed since');
    return reply.status(200).send(ok(notificationView(first)));
  });

  app.get('/notifications/unread-count', {
    schema: { tags: ['Notifications'], summary: 'Get unread notification count', response: { 200: Envelope(Type.Object({ count: Type.Integer() })) } },
    config: read,
  }, async (request) => {
    const [r] = await ctx.db.select({ n: count() }).from(notifications).leftJoin(receipts, receiptJoin(readerOf(request)))
      .where(and(visibleTo(request), sql`NOT ${isRead}`));
    return ok({ count: r?.n ?? 0 });
  });

  app.patch('/notifications/read-all', {
    schema: { tags: ['Notifications'], summary: 'Mark all notifications as read', response: { 200: Envelope(Type.Object({ success: Type.Boolean(), updated: Type.Integer() })) } },
    config: write,
  }, async (request) => {
    const orgId = orgOf(request);
    const reader = requireReader(request);
    const updated = await ctx.db.transaction(async (tx) => {
      const own = await tx.update(notifications).set({ read: true, readAt: new Date() })
        .where(and(eq(notifications.orgId, orgId), eq(notifications.userId, reader), eq(notifications.read, false))).returning({ id: notifications.id });
      const shared = await tx.execute(sql`
        INSERT INTO notification_receipts (notification_id, user_id, read_at)
        SELECT n.id, ${reader}, now() FROM notifications n
        LEFT JOIN notification_receipts r ON r.notification_id = n.id AND r.user_id = ${reader}
        WHERE n.org_id = ${orgId} AND n.user_id IS NULL AND r.read_at IS NULL AND r.dismissed_at IS NULL
        ON CONFLICT (notification_id, user_id) DO UPDATE SET read_at = now()`);
      return own.length + (shared.rowCount ?? 0);
    });
    return ok({ success: true, updated });
  });

  /** A notification the caller may see (their own, or org-wide and not dismissed), else 404. */
  const findVisible = async (request: FastifyRequest, reader: string, id: number) => {
    const [found] = await ctx.db.select({ n: notifications }).from(notifications).leftJoin(receipts, receiptJoin(reader))
      .where(and(visibleTo(request), eq(notifications.id, id)));
    if (!found) throw notFound('Notification');
    return found;
  };

  app.patch('/notifications/:id/read', {
    schema: { tags: ['Notifications'], summary: 'Mark one notification as read', params: IdParam, response: { 200: Envelope(NotificationSchema) } },
    config: write,
  }, async (request) => {
    const reader = requireReader(request);
    const found = await findVisible(request, reader, request.params.id);
    if (found.n.userId === null) {
      const now = new Date();
      const [r] = await ctx.db.insert(receipts).values({ notificationId: found.n.id, userId: reader, readAt: now })
        .onConflictDoUpdate({ target: [receipts.notificationId, receipts.userId], set: { readAt: sql`coalesce(${receipts.readAt}, now())` } })
        .returning({ readAt: receipts.readAt });
      return ok(joinedView({ n: found.n, read: true, readAt: r?.readAt ?? now }));
    }
    const [row] = await ctx.db.update(notifications)
      .set({ read: true, readAt: sql`coalesce(${notifications.readAt}, now())` })
      .where(and(eq(notifications.orgId, found.n.orgId), eq(notifications.id, found.n.id))).returning();
    if (!row) throw notFound('Notification');
    return ok(notificationView(row));
  });

  app.delete('/notifications/:id', {
    schema: { tags: ['Notifications'], summary: 'Delete a notification', params: IdParam, response: { 200: Envelope(Type.Object({ success: Type.Boolean(), id: Type.Integer() })) } },
    config: write,
  }, async (request) => {
    const reader = requireReader(request);
    const found = await findVisible(request, reader, request.params.id);
    if (found.n.userId === null) {
      // An org-wide notification is dismissed for the caller only.
      await ctx.db.insert(receipts).values({ notificationId: found.n.id, userId: reader, dismissedAt: new Date() })
        .onConflictDoUpdate({ target: [receipts.notificationId, receipts.userId], set: { dismissedAt: new Date() } });
    } else {
      await ctx.db.delete(notifications).where(and(eq(notifications.orgId, found.n.orgId), eq(notifications.id, found.n.id)));
    }
    return ok({ success: true, id: found.n.id });
  });

  const streams = new Set<() => void>();
  /** Open streams per caller (this instance): a client leaking EventSources cannot pin connections without bound. */
  const perCaller = new Map<string, number>();
  app.addHook('preClose', async () => { for (const end of [...streams]) end(); });

  app.get('/notifications/stream', {
    schema: { tags: ['Notifications'], summary: 'Live stream (SSE) of new notifications for the caller', produces: ['text/event-stream'] },
    config: read,
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const userId = readerOf(request);
    const caller = `${orgId}:${userId ?? ''}`;
    const open = perCaller.get(caller) ?? 0;
    if (open >= ctx.config.SSE_MAX_STREAMS_PER_CALLER) {
      throw new AppError('RATE_LIMITED', `At most ${ctx.config.SSE_MAX_STREAMS_PER_CALLER} open streams per caller; close one first`);
    }
    const hub = liveHub(ctx);
    await hub.ensure();
    perCaller.set(caller, open + 1);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive', 'x-accel-buffering': 'no', 'x-trace-id': request.id,
    });
    res.write(': connected\nretry: 3000\n\n');
    let closed = false;
    const send = (row: typeof notifications.$inferSelect) => {
      if (!closed) res.write(`id: ${row.id}\nevent: notification\ndata: ${JSON.stringify(notificationView(row))}\n\n`);
    };
    // A reconnecting EventSource sends the last id it saw: what it missed is replayed first
    // (bounded); live notifications arriving meanwhile wait, and none is sent twice.
    const lastId = Number(request.headers['last-event-id']);
    const replay = Number.isSafeInteger(lastId) && lastId > 0;
    let held: LiveEvent[] | null = replay ? [] : null;
    const replayed = new Set<number>();
    let inOrder: Promise<void> = Promise.resolve();
    const onLive = (e: LiveEvent) => {
      if (closed || e.orgId !== orgId || (e.userId !== null && e.userId !== userId)) return;
      if (held) { held.push(e); return; }
      if (replayed.has(e.id)) return;
      // Chained: notifications go out in the order Postgres delivered their NOTIFYs (commit order).
      inOrder = inOrder.then(() => ctx.db.select().from(notifications).where(and(eq(notifications.id, e.id), eq(notifications.orgId, orgId))))
        .then(([row]) => { if (row) send(row); }, (err: Error) => request.log.warn({ err: err.message }, 'stream lookup failed'));
    };
    const unsubscribe = hub.subscribe(onLive);
    const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), ctx.config.SSE_HEARTBEAT_MS);
    const end = () => {
      if (closed) return;
      closed = true;
      const left = (perCaller.get(caller) ?? 1) - 1;
      if (left > 0) perCaller.set(caller, left);
      else perCaller.delete(caller);
      clearInterval(heartbeat);
      unsubscribe();
      streams.delete(end);
      res.end();
    };
    streams.add(end);
    res.on('close', end);
    res.on('error', end);
    if (replay) {
      try {
        const missed = await ctx.db.select({ n: notifications }).from(notifications).leftJoin(receipts, receiptJoin(userId))
          .where(and(visibleTo(request), gt(notifications.id, lastId))).orderBy(asc(notifications.id)).limit(100);
        for (const row of missed) {
          replayed.add(row.n.id);
          send(row.n);
        }
      } catch (err) {
        request.log.warn({ err: (err as Error).message }, 'stream replay failed');
      }
      const waiting = held ?? [];
      held = null;
      for (const e of waiting) onLive(e);
    }
  });
}
