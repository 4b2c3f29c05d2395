import { Queues } from '@aos/contracts';
import { badRequest, conflict, notFound } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, desc, eq } from 'drizzle-orm';
import { discoveryEngines, discoveryRuns } from '../db/schema.js';
import { engineScheduler, syncEngine } from '../domain/schedules.js';
import type { Ctx } from '../service.js';
import { Provider } from './agents.js';
import { countOf, Slug } from './common.js';

type Engine = typeof discoveryEngines.$inferSelect;
interface Stats { runs: number; failed_runs: number; findings: number; tokens: number; cost_usd: number }
const StatsSchema = Type.Object({ runs: Type.Integer(), failed_runs: Type.Integer(), findings: Type.Integer(), tokens: Type.Integer(), cost_usd: Type.Number() });
const RunSchema = Type.Object({ id: Type.Integer(), trigger: Type.String(), status: Type.String(), findings: Type.Integer(), tokens: Type.Integer(), cost_usd: Type.Number(), duration_ms: Type.Integer(), error: Nullable(Type.String()), created_at: Type.String() });
const EngineSchema = Type.Object({
  id: Type.Integer(), slug: Type.String(), name: Type.String(), description: Nullable(Type.String()), layer: Type.String(), schedule_interval_ms: Type.Integer(),
  model: Type.String(), provider: Type.String(), enabled: Type.Boolean(), scheduled: Type.Boolean(), next_run_at: Nullable(Type.String()), last_run_at: Nullable(Type.String()),
  created_at: Type.String(), updated_at: Type.String(), stats: StatsSchema, recent_runs: Type.Optional(Type.Array(RunSchema)),
});
const SlugParam = Type.Object({ slug: Slug });
const Body = {
  description: Type.Optional(Type.String({ maxLength: 2_000 })), layer: Type.String({ minLength: 1, maxLength: 60 }),
  schedule_interval_ms: Type.Optional(Type.Integer({ minimum: 1_000, maximum: 30 * 86_400_000 })), model: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  provider: Type.Optional(Provider), enabled: Type.Optional(Type.Boolean()),
};

/** Discovery engines: each enabled engine is a BullMQ job scheduler; runs record findings, tokens and cost. */
export async function discoveryRoutes(app: App, ctx: Ctx) {
  const queue = () => ctx.queues.queue(Queues.discovery);
  const find = async (orgId: string, slug: string) => {
    const [e] = await ctx.db.select().from(discoveryEngines).where(and(eq(discoveryEngines.orgId, orgId), eq(discoveryEngines.slug, slug)));
    if (!e) throw notFound('Discovery engine');
    return e;
  };
  const sync = (e: Engine) => syncEngine(ctx, e);
  const statsOf = async (ids: number[]): Promise<Map<number, Stats>> => {
    if (ids.length === 0) return new Map();
    const { rows } = await ctx.pool.query(
      `SELECT engine_id, count(*)::int AS runs, count(*) FILTER (WHERE status = 'failed')::int AS failed_runs, coalesce(sum(findings),0)::int AS findings,
              coalesce(sum(tokens),0)::int AS tokens, coalesce(sum(cost_usd),0)::float AS cost_usd
         FROM discovery_runs WHERE engine_id = ANY($1::int[]) GROUP BY engine_id`, [ids]);
    return new Map(rows.map(({ engine_id: id, ...s }) => [id as number, s as Stats]));
  };
  const view = async (e: Engine, stats: Stats | undefined) => {
    const scheduler = await queue().getJobScheduler(engineScheduler(e));
    return {
      id: e.id, slug: e.slug, name: e.name, description: e.description, layer: e.layer, schedule_interval_ms: e.scheduleIntervalMs, model: e.model, provider: e.provider,
      enabled: e.enabled, scheduled: !!scheduler, next_run_at: scheduler?.next ? new Date(scheduler.next).toISOString() : null, last_run_at: e.lastRunAt?.toISOString() ?? null,
      created_at: e.createdAt.toISOString(), updated_at: e.updatedAt.toISOString(), stats: stats ?? { runs: 0, failed_runs: 0, findings: 0, tokens: 0, cost_usd: 0 },
    };
  };

  app.get('/discovery-engines', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Discovery'], summary: 'Discovery engines with run stats', querystring: Type.Object({ ...PaginationQuery, layer: Type.Optional(Type.String({ maxLength: 60 })), enabled: Type.Optional(Type.Boolean()) }), response: { 200: ListEnvelope(EngineSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const cond = and(eq(discoveryEngines.orgId, orgOf(request)), q.layer ? eq(discoveryEngines.layer, q.layer) : undefined, q.enabled !== undefined ? eq(discoveryEngines.enabled, q.enabled) : undefined);
    const rows = await ctx.db.select().from(discoveryEngines).where(cond).orderBy(asc(discoveryEngines.slug)).limit(p.limit).offset(p.offset);
    const stats = await statsOf(rows.map((e) => e.id));
    return list(await Promise.all(rows.map((e) => view(e, stats.get(e.id)))), await countOf(ctx, discoveryEngines, cond), p);
  });

  app.post('/discovery-engines', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Discovery'], summary: 'Create an engine (a BullMQ repeatable job when enabled)', body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100 }), slug: Type.Optional(Slug), ...Body }, { additionalProperties: false }), response: { 201: Envelope(EngineSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    const slug = b.slug ?? (b.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60).replace(/-$/, '') || 'engine');
    let e: Engine;
    try {
      [e] = await ctx.db.insert(discoveryEngines).values({
        orgId: orgOf(request), slug, name: b.name, description: b.description ?? null, layer: b.layer, scheduleIntervalMs: b.schedule_interval_ms ?? 3_600_000,
        model: b.model ?? 'offline-1', provider: b.provider ?? ctx.config.LLM_DEFAULT_PROVIDER, enabled: b.enabled ?? true,
      }).returning() as [Engine];
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`An engine with slug "${slug}" exists`);
      throw err;
    }
    await sync(e);
    return reply.status(201).send(ok(await view(e, undefined)));
  });

  app.get('/discovery-engines/efficiency', {
    config: { scope: 'agents:read' },
    schema: {
      tags: ['Discovery'], summary: 'Per-engine cost, waste (runs without findings) and compute', querystring: Type.Object(PaginationQuery),
      response: { 200: ListEnvelope(Type.Object({ slug: Type.String(), runs: Type.Integer(), failed_runs: Type.Integer(), findings: Type.Integer(), wasted_runs: Type.Integer(), waste_ratio: Type.Number(), tokens: Type.Integer(), cost_usd: Type.Number(), cost_per_finding_usd: Nullable(Type.Number()), compute_minutes: Type.Number() })) },
    },
  }, async (request) => {
    const p = page(request.query);
    const orgId = orgOf(request);
    const { rows } = await ctx.pool.query(
      `SELECT e.slug, count(r.id)::int AS runs, count(r.id) FILTER (WHERE r.status = 'failed')::int AS failed_runs, coalesce(sum(r.findings),0)::int AS findings,
              count(r.id) FILTER (WHERE r.findings = 0)::int AS wasted_runs, coalesce(sum(r.tokens),0)::int AS tokens,
              coalesce(sum(r.cost_usd),0)::float AS cost_usd, coalesce(sum(r.duration_ms),0)::float / 60000 AS compute_minutes
         FROM discovery_engines e LEFT JOIN discovery_runs r ON r.engine_id = e.id WHERE e.org_id = $1 GROUP BY e.id ORDER BY e.slug LIMIT $2 OFFSET $3`, [orgId, p.limit, p.offset]);
    const data = rows.map((r) => ({ ...r, waste_ratio: r.runs ? r.wasted_runs / r.runs : 0, cost_per_finding_usd: r.findings ? r.cost_usd / r.findings : null }));
    return list(data, await countOf(ctx, discoveryEngines, eq(discoveryEngines.orgId, orgId)), p);
  });

  app.get('/discovery-engines/:slug', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Discovery'], summary: 'An engine with its 20 most recent runs', params: SlugParam, response: { 200: Envelope(EngineSchema) } },
  }, async (request) => {
    const e = await find(orgOf(request), request.params.slug);
    const runs = await ctx.db.select().from(discoveryRuns).where(eq(discoveryRuns.engineId, e.id)).orderBy(desc(discoveryRuns.id)).limit(20);
    return ok({
      ...(await view(e, (await statsOf([e.id])).get(e.id))),
      recent_runs: runs.map((r) => ({ id: r.id, trigger: r.trigger, status: r.status, findings: r.findings, tokens: r.tokens, cost_usd: r.costUsd, duration_ms: r.durationMs, error: r.error, created_at: r.createdAt.toISOString() })),
    });
  });

  app.patch('/discovery-engines/:slug', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Discovery'], summary: 'Update an engine and sync its schedule', params: SlugParam, body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })), ...Body, layer: Type.Optional(Body.layer) }, { additionalProperties: false }), response: { 200: Envelope(EngineSchema) } },
  }, async (request) => {
    const e = await find(orgOf(request), request.params.slug);
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    const [u] = await ctx.db.update(discoveryEngines).set({ name: b.name, description: b.description, layer: b.layer, scheduleIntervalMs: b.schedule_interval_ms, model: b.model, provider: b.provider, enabled: b.enabled, updatedAt: new Date() })
      .where(eq(discoveryEngines.id, e.id)).returning();
    await sync(u!);
    return ok(await view(u!, (await statsOf([e.id])).get(e.id)));
  });

  app.delete('/discovery-engines/:slug', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Discovery'], summary: 'Delete an engine and its schedule', params: SlugParam, response: { 200: Envelope(Type.Object({ slug: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const e = await find(orgOf(request), request.params.slug);
    await queue().removeJobScheduler(engineScheduler(e));
    await ctx.db.delete(discoveryEngines).where(eq(discoveryEngines.id, e.id));
    return ok({ slug: e.slug, deleted: true });
  });

  app.post('/discovery-engines/:slug/run', {
    config: { scope: 'agents:execute' },
    schema: { tags: ['Discovery'], summary: 'Queue a run now', params: SlugParam, response: { 200: Envelope(Type.Object({ job_id: Type.String(), queued: Type.Boolean() })) } },
  }, async (request) => {
    const e = await find(orgOf(request), request.params.slug);
    const job = await ctx.queues.add(Queues.discovery, 'manual', { engineId: e.id, trigger: 'manual' }, { jobId: `discovery-${e.id}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`, attempts: 2 });
    return ok({ job_id: job.id!, queued: true });
  });
}
