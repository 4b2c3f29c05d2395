import { Queues } from '@aos/contracts';
import { badRequest, notFound, splitList } from '@aos/core';
import { Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type, type TSchema } from '@sinclair/typebox';
import { and, desc, eq, sql } from 'drizzle-orm';
import { randomBytes } from 'node:crypto';
import { webhookDeliveries, webhooks } from '../db/schema.js';
import { assertDeliverable } from '../domain/ssrf.js';
import { webhookJobOptions } from '../events/handlers.js';
import type { Ctx } from '../service.js';

const Nullable = <T extends TSchema>(s: T) => Type.Union([s, Type.Null()]);
const EventPattern = Type.String({ minLength: 1, maxLength: 100, pattern: '^(\\*|[a-z_]+(\\.[a-z_]+)*(\\.\\*)?)$' });
const WebhookSchema = Type.Object({
  id: Type.Integer(), url: Type.String(), description: Nullable(Type.String()), event_types: Type.Array(Type.String()), is_active: Type.Boolean(),
  consecutive_failures: Type.Integer(), disabled_at: Nullable(Type.String()), created_at: Type.String(), secret: Type.Optional(Type.String()),
});
const DeliverySchema = Type.Object({
  id: Type.Integer(), event_id: Type.String(), event_type: Type.String(), status: Type.String(), attempts: Type.Integer(),
  response_status: Nullable(Type.Integer()), error: Nullable(Type.String()), created_at: Type.String(), delivered_at: Nullable(Type.String()),
});
type Hook = typeof webhooks.$inferSelect;
const view = (w: Hook, withSecret = false) => ({
  id: w.id, url: w.url, description: w.description, event_types: w.eventTypes, is_active: w.isActive, consecutive_failures: w.consecutiveFailures,
  disabled_at: w.disabledAt?.toISOString() ?? null, created_at: w.createdAt.toISOString(), ...(withSecret ? { secret: w.secret } : {}),
});
const deliveryView = (d: typeof webhookDeliveries.$inferSelect) => ({
  id: d.id, event_id: d.eventId, event_type: d.eventType, status: d.status, attempts: d.attempts, response_status: d.responseStatus,
  error: d.error, created_at: d.createdAt.toISOString(), delivered_at: d.deliveredAt?.toISOString() ?? null,
});
const Id = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) });

/** Outbound webhooks: org admins register endpoints; each matching event is POSTed, signed, by a BullMQ job. */
export async function webhookRoutes(app: App, ctx: Ctx) {
  const policy = () => ({ allowPrivate: ctx.config.WEBHOOK_ALLOW_PRIVATE_TARGETS, allowedHosts: splitList(ctx.config.WEBHOOK_ALLOWED_HOSTS) });
  const admin = { scope: 'notifications:write' as const, minRole: 'admin' as const };
  const find = async (orgId: string, id: number) => {
    const [w] = await ctx.db.select().from(webhooks).where(and(eq(webhooks.orgId, orgId), eq(webhooks.id, id)));
    if (!w) throw notFound('Webhook');
    return w;
  };

  app.post('/webhooks', {
    config: admin,
    schema: {
      tags: ['Webhooks'], summary: 'Register an endpoint (the signing secret is shown once)',
      body: Type.Object({ url: Type.String({ minLength: 1, maxLength: 2_000 }), event_types: Type.Array(EventPattern, { minItems: 1, maxItems: 100 }), description: Type.Optional(Type.String({ maxLength: 500 })) }, { additionalProperties: false }),
      response: { 201: Envelope(WebhookSchema) },
    },
  }, async (request, reply) => {
    const url = await assertDeliverable(request.body.url, policy());
    const [w] = await ctx.db.insert(webhooks).values({
      orgId: orgOf(request), url: url.toString(), eventTypes: [...new Set(request.body.event_types)], description: request.body.description ?? null,
      secret: `whsec_${randomBytes(32).toString('base64url')}`, createdBy: request.principal.userId,
    }).returning();
    return reply.status(201).send(ok(view(w!, true)));
  });

  app.get('/webhooks', {
    config: { scope: 'notifications:read', minRole: 'admin' },
    schema: { tags: ['Webhooks'], summary: 'List endpoints', querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(WebhookSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const cond = eq(webhooks.orgId, orgOf(request));
    const [rows, total] = await Promise.all([
      ctx.db.select().from(webhooks).where(cond).orderBy(desc(webhooks.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: sql<number>`count(*)::int` }).from(webhooks).where(cond).then((r) => r[0]?.n ?? 0),
    ]);
    return list(rows.map((w) => view(w)), total, p);
  });

  app.get('/webhooks/:id', {
    config: { scope: 'notifications:read', minRole: 'admin' },
    schema: { tags: ['Webhooks'], summary: 'Get an endpoint', params: Id, response: { 200: Envelope(WebhookSchema) } },
  }, async (request) => ok(view(await find(orgOf(request), request.params.id))));

  app.patch('/webhooks/:id', {
    config: admin,
    schema: {
      tags: ['Webhooks'], summary: 'Update an endpoint (re-enabling resets the failure count)', params: Id,
      body: Type.Object({ url: Type.Optional(Type.String({ minLength: 1, maxLength: 2_000 })), event_types: Type.Optional(Type.Array(EventPattern, { minItems: 1, maxItems: 100 })), description: Type.Optional(Nullable(Type.String({ maxLength: 500 }))), is_active: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
      response: { 200: Envelope(WebhookSchema) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const current = await find(orgId, request.params.id);
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    const set: Partial<typeof webhooks.$inferInsert> = { updatedAt: new Date() };
    if (b.url !== undefined) set.url = (await assertDeliverable(b.url, policy())).toString();
    if (b.event_types) set.eventTypes = [...new Set(b.event_types)];
    if (b.description !== undefined) set.description = b.description;
    if (b.is_active !== undefined) {
      set.isActive = b.is_active;
      if (b.is_active && !current.isActive) Object.assign(set, { consecutiveFailures: 0, disabledAt: null });
    }
    const [w] = await ctx.db.update(webhooks).set(set).where(eq(webhooks.id, current.id)).returning();
    return ok(view(w!));
  });

  app.delete('/webhooks/:id', {
    config: admin,
    schema: { tags: ['Webhooks'], summary: 'Delete an endpoint', params: Id, response: { 200: Envelope(Type.Object({ id: Type.Integer(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const w = await find(orgOf(request), request.params.id);
    await ctx.db.delete(webhooks).where(eq(webhooks.id, w.id));
    return ok({ id: w.id, deleted: true });
  });

  app.get('/webhooks/:id/deliveries', {
    config: { scope: 'notifications:read', minRole: 'admin' },
    schema: { tags: ['Webhooks'], summary: 'Delivery log, newest first', params: Id, querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(DeliverySchema) } },
  }, async (request) => {
    const w = await find(orgOf(request), request.params.id);
    const p = page(request.query);
    const cond = eq(webhookDeliveries.webhookId, w.id);
    const [rows, total] = await Promise.all([
      ctx.db.select().from(webhookDeliveries).where(cond).orderBy(desc(webhookDeliveries.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: sql<number>`count(*)::int` }).from(webhookDeliveries).where(cond).then((r) => r[0]?.n ?? 0),
    ]);
    return list(rows.map(deliveryView), total, p);
  });

  app.post('/webhooks/:id/deliveries/:deliveryId/redeliver', {
    config: admin,
    schema: {
      tags: ['Webhooks'], summary: 'Deliver an event again', params: Type.Object({ id: Id.properties.id, deliveryId: Id.properties.id }),
      response: { 202: Envelope(DeliverySchema) },
    },
  }, async (request, reply) => {
    const w = await find(orgOf(request), request.params.id);
    const [d] = await ctx.db.update(webhookDeliveries).set({ status: 'pending', error: null })
      .where(and(eq(webhookDeliveries.webhookId, w.id), eq(webhookDeliveries.id, request.params.deliveryId))).returning();
    if (!d) throw notFound('Delivery');
    await ctx.queues.add(Queues.webhookDelivery, d.eventType, { deliveryId: d.id }, webhookJobOptions(ctx, d.id, `-r${Date.now()}`));
    return reply.status(202).send(ok(deliveryView(d)));
  });
}
