import { badRequest, conflict } from '@aos/core';
import { Envelope, ListEnvelope, list, Nullable, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, count, desc, eq, gte, lt, sql, type SQL } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import { costRecords } from '../db/schema.js';
import { costProduct } from '../domain/costs.js';

type CostRow = typeof costRecords.$inferSelect;

const Kind = Type.Union([Type.Literal('infra'), Type.Literal('ai')]);
const Label = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:/-]*$' });
const Source = Type.String({ minLength: 1, maxLength: 100, pattern: '^(?!agents\\.run\\.completed$)[A-Za-z0-9][A-Za-z0-9_.:/-]*$', description: 'who billed it (aws, vercel…); agents.run.completed is reserved' });

export const CostSchema = Type.Object({
  id: Type.Integer(), kind: Type.String(), source: Type.String(), reference_id: Type.String(), amount_usd: Type.Number(),
  tokens: Type.Integer(), model: Nullable(Type.String()), product: Nullable(Type.String()), task_id: Nullable(Type.String()),
  description: Nullable(Type.String()), occurred_at: Type.String(),
});

const costView = (c: CostRow & { resolvedProduct?: string | null }) => ({
  id: c.id, kind: c.kind, source: c.source, reference_id: c.referenceId, amount_usd: Number(c.amountUsd), tokens: c.tokens, model: c.model,
  product: c.resolvedProduct ?? c.product, task_id: c.taskId, description: c.description, occurred_at: c.occurredAt.toISOString(),
});

/**
 * Recorded costs behind the overview's spend. AI costs of agent runs arrive by event
 * (`agents.run.completed`); infrastructure bills (hosting, databases, e-mail…) and AI used
 * outside AOS are recorded here, once per `reference_id` (e.g. the provider's invoice line).
 */
export async function costRoutes(app: App, ctx: Ctx) {
  app.post('/billing/costs', {
    config: { scope: 'billing:write', minRole: 'admin' },
    schema: {
      tags: ['Billing'], summary: 'Record an infrastructure (or external AI) cost; idempotent by reference_id',
      body: Type.Object({
        kind: Type.Optional(Type.Union([Type.Literal('infra'), Type.Literal('ai')], { default: 'infra' })),
        source: Source,
        reference_id: Type.String({ minLength: 1, maxLength: 200 }),
        amount_usd: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 100_000_000, description: 'USD, up to 6 decimals' }),
        occurred_at: Type.Optional(Type.String({ format: 'date-time' })),
        product: Type.Optional(Label),
        model: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
        tokens: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000_000 })),
        description: Type.Optional(Type.String({ maxLength: 500 })),
      }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ cost: CostSchema, replayed: Type.Boolean() })), 201: Envelope(Type.Object({ cost: CostSchema, replayed: Type.Boolean() })) },
    },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    const kind = b.kind ?? 'infra';
    const occurredAt = b.occurred_at ? new Date(b.occurred_at) : new Date();
    if (occurredAt.getTime() > Date.now() + 24 * 3600_000) throw badRequest('occurred_at lies more than a day in the future', [{ field: 'occurred_at' }]);
    const amountUsd = Math.round(b.amount_usd * 1e6) / 1e6;
    const [inserted] = await ctx.db.insert(costRecords).values({
      orgId, kind, source: b.source, referenceId: b.reference_id, amountUsd, tokens: b.tokens ?? 0, model: b.model ?? null,
      product: b.product ?? null, description: b.description ?? null, occurredAt,
    }).onConflictDoNothing().returning();
    if (inserted) return reply.status(201).send(ok({ cost: costView(inserted), replayed: false }));
    const [existing] = await ctx.db.select().from(costRecords)
      .where(and(eq(costRecords.orgId, orgId), eq(costRecords.source, b.source), eq(costRecords.referenceId, b.reference_id)));
    if (!existing || Number(existing.amountUsd) !== amountUsd || existing.kind !== kind) {
      throw conflict(`reference_id "${b.reference_id}" was already recorded for this source with another amount or kind`, [{ field: 'reference_id', id: existing?.id ?? null }]);
    }
    return ok({ cost: costView(existing), replayed: true });
  });

  app.get('/billing/costs', {
    config: { scope: 'billing:read' },
    schema: {
      tags: ['Billing'], summary: 'Recorded costs, newest first (filters: kind, source, product, model, from, to)',
      querystring: Type.Object({
        ...PaginationQuery, kind: Type.Optional(Kind), source: Type.Optional(Type.String({ maxLength: 100 })), product: Type.Optional(Type.String({ maxLength: 100 })),
        model: Type.Optional(Type.String({ maxLength: 100 })),
        from: Type.Optional(Type.String({ format: 'date-time' })), to: Type.Optional(Type.String({ format: 'date-time' })),
      }),
      response: { 200: ListEnvelope(CostSchema) },
    },
  }, async (request) => {
    const q = request.query;
    const p = page(q);
    const where: SQL[] = [eq(costRecords.orgId, orgOf(request))];
    if (q.kind) where.push(eq(costRecords.kind, q.kind));
    if (q.source) where.push(eq(costRecords.source, q.source));
    if (q.product) where.push(sql`${costProduct} = ${q.product}`);
    if (q.model) where.push(eq(costRecords.model, q.model));
    if (q.from) where.push(gte(costRecords.occurredAt, new Date(q.from)));
    if (q.to) where.push(lt(costRecords.occurredAt, new Date(q.to)));
    const [rows, [total]] = await Promise.all([
      ctx.db.select({ cost: costRecords, product: costProduct }).from(costRecords).where(and(...where)).orderBy(desc(costRecords.occurredAt), desc(costRecords.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: count() }).from(costRecords).where(and(...where)),
    ]);
    return list(rows.map((r) => costView({ ...r.cost, resolvedProduct: r.product })), Number(total?.n ?? 0), p);
  });
}
