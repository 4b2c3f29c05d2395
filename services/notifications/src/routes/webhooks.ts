import { EventCatalog } from '@aos/contracts';
import { badRequest, conflict, notFound, unprocessable } from '@aos/core';
import { Envelope, IdParam, ListEnvelope, list, Nullable, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, count, desc, eq, sql } from 'drizzle-orm';
import { webhookDeliveries, webhooks } from '../db/schema.js';
import { assertSafeTarget, BlockedTargetError } from '../domain/ssrf.js';
import { sealSecret, secretKey } from '../domain/secret-box.js';
import { generateSecret } from '../domain/webhooks.js';
import { enqueueDelivery, targetPolicy } from '../jobs/webhook-delivery.js';
import type { Ctx } from '../service.js';
import { IdempotencyHeaders } from './idempotency.js';

const WebhookSchema = Type.Object({
  id: Type.Integer(), url: Type.String(), description: Nullable(Type.String()), events: Type.Array(Type.String()),
  active: Type.Boolean(), consecutive_failures: Type.Integer(), disabled_at: Nullable(Type.String()), disabled_reason: Nullable(Type.String()),
  created_at: Type.String(), updated_at: Type.String(),
});
const WithSecret = Type.Intersect([WebhookSchema, Type.Object({ secret: Type.String({ description: 'Shown only once' }) })]);

const DeliverySchema = Type.Object({
  id: Type.Integer(), webhook_id: Type.Integer(), event_id: Type.String(), event_type: Type.String(), status: Type.String(),
  attempts: Type.Integer(), redeliveries: Type.Integer(), response_status: Nullable(Type.Integer()), error: Nullable(Type.String()),
  duration_ms: Nullable(Type.Integer()), last_attempt_at: Nullable(Type.String()), delivered_at: Nullable(Type.String()), created_at: Type.String(),
});

const view = (w: typeof webhooks.$inferSelect) => ({
  id: w.id, url: w.url, description: w.description, events: w.events, active: w.active, consecutive_failures: w.consecutiveFailures,
  disabled_at: w.disabledAt?.toISOString() ?? null, disabled_reason: w.disabledReason, created_at: w.createdAt.toISOString(), updated_at: w.updatedAt.toISOString(),
});
const deliveryView = (d: typeof webhookDeliveries.$inferSelect) => ({
  id: d.id, webhook_id: d.webhookId, event_id: d.eventId, event_type: d.eventType, status: d.status, attempts: d.attempts,
  redeliveries: d.redeliveries, response_status: d.responseStatus, error: d.error, duration_ms: d.durationMs,
  last_attempt_at: d.lastAttemptAt?.toISOString() ?? null, delivered_at: d.deliveredAt?.toISOString() ?? null, created_at: d.createdAt.toISOString(),
});

const EventPattern = Type.String({ minLength: 1, maxLength: 100, pattern: '^(\\*|[a-z_]+(\\.[a-z_]+)*(\\.\\*)?)$' });
const Url = Type.String({ minLength: 1, maxLength: 2_000 });
const CreateBody = Type.Object({
  url: Url,
  events: Type.Array(EventPattern, { minItems: 1, maxItems: 100, uniqueItems: true }),
  description: Type.Optional(Type.String({ maxLength: 500 })),
  active: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });
const UpdateBody = Type.Partial(CreateBody, { additionalProperties: false });

const known = Object.keys(EventCatalog);
function checkEvents(events: string[]) {
  const unknown = events.filter((e) => e !== '*' && (e.endsWith('.*') ? !known.some((k) => k.startsWith(e.slice(0, -1))) : !known.includes(e)));
  if (unknown.length) throw badRequest(`Unknown event types: ${unknown.join(', ')}`, unknown.map((e) => ({ field: 'events', value: e })));
}

export function webhookRoutes(app: App, ctx: Ctx) {
  const admin = { minRole: 'admin' as const };
  const checkUrl = async (url: string) => {
    try {
      return (await assertSafeTarget(url, targetPolicy(ctx))).toString();
    } catch (err) {
      if (err instanceof BlockedTargetError) throw unprocessable(`Webhook URL refused: ${err.message}`, [{ field: 'url' }]);
      throw err;
    }
  };
  const load = async (orgId: string, id: number) => {
    const [w] = await ctx.db.select().from(webhooks).where(and(eq(webhooks.orgId, orgId), eq(webhooks.id, id)));
    if (!w) throw notFound('Webhook');
    return w;
  };

  app.get('/webhooks', {
    schema: { tags: ['Webhooks'], summary: 'List outbound webhooks', querystring: Type.Object({ active: Type.Optional(Type.Boolean()), ...PaginationQuery }), response: { 200: ListEnvelope(WebhookSchema) } },
    config: { ...admin, scope: 'notifications:read' },
  }, async (request) => {
    const p = page(request.query);
    const where = and(eq(webhooks.orgId, orgOf(request)), request.query.active === undefined ? undefined : eq(webhooks.active, request.query.active));
    const [rows, [total]] = await Promise.all([
      ctx.db.select().from(webhooks).where(where).orderBy(desc(webhooks.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: count() }).from(webhooks).where(where),
    ]);
    return list(rows.map(view), total?.n ?? 0, p);
  });

  app.post('/webhooks', {
    schema: {
      tags: ['Webhooks'], summary: 'Register an outbound webhook (the secret is returned once)', headers: IdempotencyHeaders, body: CreateBody,
      response: { 201: Envelope(WithSecret), 200: Envelope(WebhookSchema) },
    },
    config: { ...admin, scope: 'notifications:write' },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    checkEvents(b.events);
    const url = await checkUrl(b.url);
    const secret = generateSecret();
    const idempotencyKey = request.headers['idempotency-key'] ?? null;
    const [row] = await ctx.db.insert(webhooks).values({
      orgId, url, events: b.events, description: b.description ?? null, secret: sealSecret(secret, secretKey(ctx.config.WEBHOOK_SECRET_KEY)), active: b.active ?? true, createdBy: request.principal.userId, idempotencyKey,
    }).onConflictDoNothing().returning();
    if (row) return reply.status(201).send(ok({ ...view(row), secret }));
    // A retry gets the webhook, not its secret again (shown once: rotate it if the first answer was lost).
    const [first] = await ctx.db.select().from(webhooks).where(and(eq(webhooks.orgId, orgId), eq(webhooks.idempotencyKey, idempotencyKey ?? '')));
    if (!first) throw conflict('A webhook with this Idempotency-Key was created and deleted since');
    return reply.status(200).send(ok(view(first)));
  });

  app.get('/webhooks/:id', {
    schema: { tags: ['Webhooks'], summary: 'Get a webhook', params: IdParam, response: { 200: Envelope(WebhookSchema) } },
    config: { ...admin, scope: 'notifications:read' },
  }, async (request) => ok(view(await load(orgOf(request), request.params.id))));

  app.patch('/webhooks/:id', {
    schema: { tags: ['Webhooks'], summary: 'Update a webhook (re-enabling resets the failure count)', params: IdParam, body: UpdateBody, response: { 200: Envelope(WebhookSchema) } },
    config: { ...admin, scope: 'notifications:write' },
  }, async (request) => {
    const orgId = orgOf(request);
    await load(orgId, request.params.id);
    const b = request.body;
    if (b.events) checkEvents(b.events);
    const set: Partial<typeof webhooks.$inferInsert> = { updatedAt: new Date() };
    if (b.url !== undefined) set.url = await checkUrl(b.url);
    if (b.events !== undefined) set.events = b.events;
    if (b.description !== undefined) set.description = b.description;
    if (b.active !== undefined) {
      set.active = b.active;
      if (b.active) Object.assign(set, { consecutiveFailures: 0, disabledAt: null, disabledReason: null });
    }
    const [row] = await ctx.db.update(webhooks).set(set).where(and(eq(webhooks.orgId, orgId), eq(webhooks.id, request.params.id))).returning();
    if (!row) throw notFound('Webhook');
    return ok(view(row));
  });

  app.post('/webhooks/:id/rotate-secret', {
    schema: { tags: ['Webhooks'], summary: 'Replace the signing secret (returned once)', params: IdParam, response: { 200: Envelope(WithSecret) } },
    config: { ...admin, scope: 'notifications:write' },
  }, async (request) => {
    const orgId = orgOf(request);
    const secret = generateSecret();
    const [row] = await ctx.db.update(webhooks).set({ secret: sealSecret(secret, secretKey(ctx.config.WEBHOOK_SECRET_KEY)), updatedAt: new Date() })
      .where(and(eq(webhooks.orgId, orgId), eq(webhooks.id, request.params.id))).returning();
    if (!row) throw notFound('Webhook');
    return ok({ ...view(row), secret });
  });

  app.delete('/webhooks/:id', {
    schema: { tags: ['Webhooks'], summary: 'Delete a webhook and its delivery log', params: IdParam, response: { 200: Envelope(Type.Object({ success: Type.Boolean(), id: Type.Integer() })) } },
    config: { ...admin, scope: 'notifications:write' },
  }, async (request) => {
    const [row] = await ctx.db.delete(webhooks).where(and(eq(webhooks.orgId, orgOf(request)), eq(webhooks.id, request.params.id))).returning({ id: webhooks.id });
    if (!row) throw notFound('Webhook');
    return ok({ success: true, id: row.id });
  });

  app.get('/webhooks/:id/deliveries', {
    schema: {
      tags: ['Webhooks'], summary: 'Delivery log of a webhook (newest first)', params: IdParam,
      querystring: Type.Object({
        status: Type.Optional(Type.Union(['pending', 'retrying', 'succeeded', 'failed'].map((s) => Type.Literal(s)))),
        event_type: Type.Optional(Type.String({ maxLength: 100 })), ...PaginationQuery,
      }),
      response: { 200: ListEnvelope(DeliverySchema) },
    },
    config: { ...admin, scope: 'notifications:read' },
  }, async (request) => {
    const orgId = orgOf(request);
    await load(orgId, request.params.id);
    const q = request.query;
    const p = page(q);
    const where = and(eq(webhookDeliveries.orgId, orgId), eq(webhookDeliveries.webhookId, request.params.id),
      q.status ? eq(webhookDeliveries.status, q.status) : undefined, q.event_type ? eq(webhookDeliveries.eventType, q.event_type) : undefined);
    const [rows, [total]] = await Promise.all([
      ctx.db.select().from(webhookDeliveries).where(where).orderBy(desc(webhookDeliveries.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: count() }).from(webhookDeliveries).where(where),
    ]);
    return list(rows.map(deliveryView), total?.n ?? 0, p);
  });

  app.post('/webhooks/:id/deliveries/:deliveryId/redeliver', {
    schema: {
      tags: ['Webhooks'], summary: 'Deliver an event again (same event id, fresh signature)',
      params: Type.Object({ id: IdParam.properties.id, deliveryId: IdParam.properties.id }),
      response: { 202: Envelope(DeliverySchema) },
    },
    config: { ...admin, scope: 'notifications:write' },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const w = await load(orgId, request.params.id);
    if (!w.active) throw conflict('Webhook is disabled; enable it first');
    const [row] = await ctx.db.update(webhookDeliveries)
      .set({ status: 'pending', redeliveries: sql`${webhookDeliveries.redeliveries} + 1`, error: null })
      .where(and(eq(webhookDeliveries.orgId, orgId), eq(webhookDeliveries.webhookId, w.id), eq(webhookDeliveries.id, request.params.deliveryId),
        sql`${webhookDeliveries.status} IN ('succeeded', 'failed')`))
      .returning();
    if (!row) {
      const [exists] = await ctx.db.select({ id: webhookDeliveries.id }).from(webhookDeliveries)
        .where(and(eq(webhookDeliveries.orgId, orgId), eq(webhookDeliveries.webhookId, w.id), eq(webhookDeliveries.id, request.params.deliveryId)));
      if (!exists) throw notFound('Delivery');
      throw conflict('Delivery is still in progress');
    }
    await enqueueDelivery(ctx, { webhookId: w.id, eventId: row.eventId, eventType: row.eventType, redeliveries: row.redeliveries });
    return reply.status(202).send(ok(deliveryView(row)));
  });
}
