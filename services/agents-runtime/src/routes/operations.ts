import { Queues } from '@aos/contracts';
import { badRequest, conflict, notFound } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq } from 'drizzle-orm';
import { discoveryEngines, discoveryRuns, factoryConfig } from '../db/schema.js';
import type { FactoryPool } from '../jobs/factory.js';
import type { Ctx } from '../service.js';

const QUEUES = Object.values(Queues) as string[];
const QueueName = Type.String({ minLength: 1, maxLength: 60 });
const checkQueue = (q: string) => {
  if (!QUEUES.includes(q)) throw badRequest(`Queue "${q}" is not in the allow-list`, [{ allowed: QUEUES }]);
  return q as (typeof Queues)[keyof typeof Queues];
};
type Engine = typeof discoveryEngines.$inferSelect;
const engineView = (e: Engine, stats?: { runs: number; findings: number; tokens: number; cost_usd: number }) => ({
  id: e.id, slug: e.slug, name: e.name, description: e.description, layer: e.layer, schedule_interval_ms: e.scheduleIntervalMs, model: e.model,
  enabled: e.enabled, last_run_at: e.lastRunAt?.toISOString() ?? null, created_at: e.createdAt.toISOString(), ...(stats ? { stats } : {}),
});
const EngineSchema = Type.Object({
  id: Type.Integer(), slug: Type.String(), name: Type.String(), description: Nullable(Type.String()), layer: Type.String(), schedule_interval_ms: Type.Integer(),
  model: Type.String(), enabled: Type.Boolean(), last_run_at: Nullable(Type.String()), created_at: Type.String(),
  stats: Type.Optional(Type.Object({ runs: Type.Integer(), findings: Type.Integer(), tokens: Type.Integer(), cost_usd: Type.Number() })),
  recent_runs: Type.Optional(Type.Array(Type.Unknown())),
});
const Slug = Type.Object({ slug: Type.String({ maxLength: 80, pattern: '^[a-z0-9]+(?:-[a-z0-9]+)*$' }) });
export const engineScheduler = (e: Engine) => `discovery-${e.id}`;

/** Factory workers, discovery engines and the BullMQ admin routes. */
export async function operationRoutes(app: App, ctx: Ctx, factory: FactoryPool) {
  // ---- factory workers (platform-wide pool) ----
  app.get('/factory-workers', {
    config: { scope: 'agents:read', platformAdmin: true },
    schema: { tags: ['Factory'], summary: 'Factory workers with state and metrics', response: { 200: ListEnvelope(Type.Object({ id: Type.Integer(), name: Type.String(), state: Type.String(), concurrency: Type.Integer(), processed: Type.Integer(), failed: Type.Integer(), started_at: Type.String() })) } },
  }, async () => {
    const workers = factory.describe();
    return list(workers, workers.length, { limit: workers.length, offset: 0 });
  });
  app.get('/factory-workers/stats', {
    config: { scope: 'agents:read', platformAdmin: true },
    schema: { tags: ['Factory'], summary: 'Factory summary', response: { 200: Envelope(Type.Object({ workers: Type.Integer(), concurrency: Type.Integer(), capacity: Type.Integer(), processed: Type.Integer(), failed: Type.Integer(), queue: Type.Record(Type.String(), Type.Integer()) })) } },
  }, async () => {
    const workers = factory.describe();
    const queue = await ctx.queues.queue(Queues.factory).getJobCounts();
    return ok({ workers: workers.length, concurrency: factory.concurrency, capacity: workers.length * factory.concurrency, processed: workers.reduce((n, w) => n + w.processed, 0), failed: workers.reduce((n, w) => n + w.failed, 0), queue });
  });
  app.patch('/factory-workers/config', {
    config: { scope: 'agents:write', platformAdmin: true },
    schema: { tags: ['Factory'], summary: 'Change worker count and concurrency live', body: Type.Object({ worker_count: Type.Optional(Type.Integer({ minimum: 0, maximum: 32 })), concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })) }, { additionalProperties: false }), response: { 200: Envelope(Type.Object({ worker_count: Type.Integer(), concurrency: Type.Integer() })) } },
  }, async (request) => {
    const [current] = await ctx.db.select().from(factoryConfig);
    const workerCount = request.body.worker_count ?? current!.workerCount;
    const concurrency = request.body.concurrency ?? current!.concurrency;
    await ctx.db.update(factoryConfig).set({ workerCount, concurrency, updatedAt: new Date() }).where(eq(factoryConfig.id, 1));
    await factory.resize(workerCount, concurrency);
    return ok({ worker_count: workerCount, concurrency });
  });
  app.get('/factory-workers/health-summary', {
    config: { scope: 'agents:read', platformAdmin: true },
    schema: { tags: ['Factory'], summary: 'Factory health', response: { 200: Envelope(Type.Object({ healthy: Type.Boolean(), running: Type.Integer(), stopped: Type.Integer(), waiting: Type.Integer(), failed: Type.Integer(), redis: Type.String() })) } },
  }, async () => {
    const workers = factory.describe();
    const counts = await ctx.queues.queue(Queues.factory).getJobCounts('waiting', 'failed');
    const redis = await ctx.queues.ping();
    const running = workers.filter((w) => w.state === 'running').length;
    return ok({ healthy: redis && running === workers.length, running, stopped: workers.length - running, waiting: counts.waiting ?? 0, failed: counts.failed ?? 0, redis: redis ? 'connected' : 'error' });
  });

  // ---- discovery engines ----
  const findEngine = async (orgId: string, slug: string) => {
    const [e] = await ctx.db.select().from(discoveryEngines).where(and(eq(discoveryEngines.orgId, orgId), eq(discoveryEngines.slug, slug)));
    if (!e) throw notFound('Discovery engine');
    return e;
  };
  const sync = async (e: Engine) => {
    const q = ctx.queues.queue(Queues.discovery);
    if (e.enabled) await q.upsertJobScheduler(engineScheduler(e), { every: e.scheduleIntervalMs }, { name: 'scheduled', data: { payload: { engineId: e.id, trigger: 'schedule' }, trace: {} } });
    else await q.removeJobScheduler(engineScheduler(e));
  };
  const stats = async (engineId: number) => {
    const { rows } = await ctx.pool.query('SELECT count(*)::int AS runs, coalesce(sum(findings),0)::int AS findings, coalesce(sum(tokens),0)::int AS tokens, coalesce(sum(cost_usd),0)::float AS cost_usd FROM discovery_runs WHERE engine_id = $1', [engineId]);
    return rows[0] as { runs: number; findings: number; tokens: number; cost_usd: number };
  };
  const EngineBody = {
    description: Type.Optional(Type.String({ maxLength: 2_000 })), layer: Type.String({ minLength: 1, maxLength: 60 }),
    schedule_interval_ms: Type.Optional(Type.Integer({ minimum: 1_000, maximum: 30 * 86_400_000 })), model: Type.Optional(Type.String({ maxLength: 100 })), enabled: Type.Optional(Type.Boolean()),
  };

  app.get('/discovery-engines', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Discovery'], summary: 'Discovery engines with run stats', response: { 200: ListEnvelope(EngineSchema) } },
  }, async (request) => {
    const rows = await ctx.db.select().from(discoveryEngines).where(eq(discoveryEngines.orgId, orgOf(request))).orderBy(discoveryEngines.slug);
    const data = await Promise.all(rows.map(async (e) => engineView(e, await stats(e.id))));
    return list(data, data.length, { limit: data.length, offset: 0 });
  });
  app.post('/discovery-engines', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Discovery'], summary: 'Create an engine (a BullMQ repeatable job)', body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100 }), slug: Type.Optional(Slug.properties.slug), ...EngineBody }, { additionalProperties: false }), response: { 201: Envelope(EngineSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    const slug = b.slug ?? (b.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) || 'engine');
    try {
      const [e] = await ctx.db.insert(discoveryEngines).values({ orgId: orgOf(request), slug, name: b.name, description: b.description ?? null, layer: b.layer, scheduleIntervalMs: b.schedule_interval_ms ?? 3_600_000, model: b.model ?? 'offline-1', enabled: b.enabled ?? true }).returning();
      await sync(e!);
      return reply.status(201).send(ok(engineView(e!)));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`An engine with slug "${slug}" exists`);
      throw err;
    }
  });
  app.get('/discovery-engines/efficiency', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Discovery'], summary: 'Per-engine cost, waste and compute', response: { 200: ListEnvelope(Type.Object({ slug: Type.String(), runs: Type.Integer(), findings: Type.Integer(), wasted_runs: Type.Integer(), waste_ratio: Type.Number(), cost_usd: Type.Number(), cost_per_finding_usd: Nullable(Type.Number()), compute_minutes: Type.Number() })) } },
  }, async (request) => {
    const { rows } = await ctx.pool.query(
      `SELECT e.slug, count(r.id)::int AS runs, coalesce(sum(r.findings),0)::int AS findings, count(r.id) FILTER (WHERE r.findings = 0)::int AS wasted_runs,
              coalesce(sum(r.cost_usd),0)::float AS cost_usd, coalesce(sum(r.duration_ms),0)::float / 60000 AS compute_minutes
         FROM discovery_engines e LEFT JOIN discovery_runs r ON r.engine_id = e.id WHERE e.org_id = $1 GROUP BY e.slug ORDER BY e.slug`, [orgOf(request)]);
    const data = rows.map((r) => ({ ...r, waste_ratio: r.runs ? r.wasted_runs / r.runs : 0, cost_per_finding_usd: r.findings ? r.cost_usd / r.findings : null }));
    return list(data, data.length, { limit: data.length, offset: 0 });
  });
  app.get('/discovery-engines/:slug', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Discovery'], summary: 'An engine with its recent runs', params: Slug, response: { 200: Envelope(EngineSchema) } },
  }, async (request) => {
    const e = await findEngine(orgOf(request), request.params.slug);
    const runs = await ctx.db.select().from(discoveryRuns).where(eq(discoveryRuns.engineId, e.id)).orderBy(desc(discoveryRuns.id)).limit(20);
    return ok({ ...engineView(e, await stats(e.id)), recent_runs: runs.map((r) => ({ id: r.id, trigger: r.trigger, status: r.status, findings: r.findings, tokens: r.tokens, created_at: r.createdAt.toISOString() })) });
  });
  app.patch('/discovery-engines/:slug', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Discovery'], summary: 'Update an engine and its schedule', params: Slug, body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })), ...EngineBody, layer: Type.Optional(EngineBody.layer) }, { additionalProperties: false }), response: { 200: Envelope(EngineSchema) } },
  }, async (request) => {
    const e = await findEngine(orgOf(request), request.params.slug);
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    const [u] = await ctx.db.update(discoveryEngines).set({ name: b.name, description: b.description, layer: b.layer, scheduleIntervalMs: b.schedule_interval_ms, model: b.model, enabled: b.enabled, updatedAt: new Date() }).where(eq(discoveryEngines.id, e.id)).returning();
    await sync(u!);
    return ok(engineView(u!));
  });
  app.delete('/discovery-engines/:slug', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Discovery'], summary: 'Delete an engine and its schedule', params: Slug, response: { 200: Envelope(Type.Object({ slug: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const e = await findEngine(orgOf(request), request.params.slug);
    await ctx.queues.queue(Queues.discovery).removeJobScheduler(engineScheduler(e));
    await ctx.db.delete(discoveryEngines).where(eq(discoveryEngines.id, e.id));
    return ok({ slug: e.slug, deleted: true });
  });
  app.post('/discovery-engines/:slug/run', {
    config: { scope: 'agents:execute' },
    schema: { tags: ['Discovery'], summary: 'Queue a run now', params: Slug, response: { 200: Envelope(Type.Object({ job_id: Type.String(), queued: Type.Boolean() })) } },
  }, async (request) => {
    const e = await findEngine(orgOf(request), request.params.slug);
    const job = await ctx.queues.add(Queues.discovery, 'manual', { engineId: e.id, trigger: 'manual' }, { jobId: `discovery-${e.id}-${Date.now()}`, attempts: 2 });
    return ok({ job_id: job.id!, queued: true });
  });

  // ---- BullMQ admin (platform admins, allow-listed queues) ----
  const admin = { platformAdmin: true, scope: 'agents:write' as const };
  app.post('/bull-queue/submit', {
    config: admin,
    schema: {
      tags: ['Queue'], summary: 'Submit a job to an allow-listed queue',
      body: Type.Object({ queue: QueueName, name: Type.String({ minLength: 1, maxLength: 100 }), data: Type.Record(Type.String(), Type.Unknown()), priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 2_097_152 })), attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 50 })), backoff: Type.Optional(Type.Object({ type: Type.Union([Type.Literal('fixed'), Type.Literal('exponential')]), delay: Type.Integer({ minimum: 0, maximum: 86_400_000 }) })), delay: Type.Optional(Type.Integer({ minimum: 0, maximum: 30 * 86_400_000 })), job_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.:-]+$' })) }, { additionalProperties: false }),
      response: { 201: Envelope(Type.Object({ id: Type.String(), queue: Type.String(), name: Type.String() })) },
    },
  }, async (request, reply) => {
    const b = request.body;
    const queue = checkQueue(b.queue);
    if (JSON.stringify(b.data).length > 256 * 1024) throw badRequest('data is larger than 256 KiB');
    const job = await ctx.queues.add(queue, b.name, b.data, { priority: b.priority, attempts: b.attempts, backoff: b.backoff, delay: b.delay, jobId: b.job_id });
    return reply.status(201).send(ok({ id: job.id!, queue, name: b.name }));
  });
  app.post('/bull-queue/submit-scheduled', {
    config: admin,
    schema: {
      tags: ['Queue'], summary: 'Submit a delayed job or a recurring one (cron `repeat` or `every` ms)',
      body: Type.Object({ queue: QueueName, name: Type.String({ minLength: 1, maxLength: 100 }), data: Type.Record(Type.String(), Type.Unknown()), delay: Type.Optional(Type.Integer({ minimum: 0, maximum: 30 * 86_400_000 })), repeat: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })), every: Type.Optional(Type.Integer({ minimum: 1_000, maximum: 30 * 86_400_000 })) }, { additionalProperties: false }),
      response: { 201: Envelope(Type.Object({ id: Type.String(), queue: Type.String(), scheduler: Type.Union([Type.String(), Type.Null()]) })) },
    },
  }, async (request, reply) => {
    const b = request.body;
    const queue = checkQueue(b.queue);
    if (b.repeat && b.every) throw badRequest('Give repeat (cron) or every, not both');
    if (b.repeat || b.every) {
      const id = `admin-${b.name}`;
      try {
        await ctx.queues.queue(queue).upsertJobScheduler(id, b.repeat ? { pattern: b.repeat } : { every: b.every! }, { name: b.name, data: { payload: b.data, trace: {} } });
      } catch (err) {
        throw badRequest(`Invalid schedule: ${(err as Error).message}`);
      }
      return reply.status(201).send(ok({ id, queue, scheduler: id }));
    }
    const job = await ctx.queues.add(queue, b.name, b.data, { delay: b.delay ?? 0 });
    return reply.status(201).send(ok({ id: job.id!, queue, scheduler: null }));
  });
  app.get('/bull-queue/stats', {
    config: { platformAdmin: true, scope: 'agents:read' },
    schema: { tags: ['Queue'], summary: 'Job counts per queue', querystring: Type.Object({ queue: Type.Optional(QueueName) }), response: { 200: Envelope(Type.Record(Type.String(), Type.Record(Type.String(), Type.Integer()))) } },
  }, async (request) => {
    const names = request.query.queue ? [checkQueue(request.query.queue)] : (QUEUES as (typeof Queues)[keyof typeof Queues][]);
    return ok(Object.fromEntries(await Promise.all(names.map(async (n) => [n, await ctx.queues.queue(n).getJobCounts()] as const))));
  });
  app.get('/bull-queue/:queue/jobs', {
    config: { platformAdmin: true, scope: 'agents:read' },
    schema: { tags: ['Queue'], summary: 'Jobs of a queue', params: Type.Object({ queue: QueueName }), querystring: Type.Object({ status: Type.Optional(Type.Union(['waiting', 'active', 'completed', 'failed', 'delayed', 'paused', 'prioritized'].map((s) => Type.Literal(s)))), start: Type.Optional(Type.Integer({ minimum: 0 })), end: Type.Optional(Type.Integer({ minimum: 0 })) }) },
  }, async (request) => {
    const queue = checkQueue(request.params.queue);
    const start = request.query.start ?? 0;
    const end = Math.min(request.query.end ?? start + 49, start + 199);
    const jobs = await ctx.queues.queue(queue).getJobs([(request.query.status ?? 'waiting') as 'waiting'], start, end);
    return { data: jobs.map((j) => ({ id: j.id, name: j.name, data: (j.data as { payload?: unknown })?.payload ?? j.data, attempts_made: j.attemptsMade, failed_reason: j.failedReason ?? null, timestamp: new Date(j.timestamp).toISOString(), finished_on: j.finishedOn ? new Date(j.finishedOn).toISOString() : null })) };
  });
}
