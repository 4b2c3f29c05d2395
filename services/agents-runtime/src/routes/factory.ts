import { Queues } from '@aos/contracts';
import { badRequest } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { factoryConfig } from '../db/schema.js';
import type { FactoryPool } from '../jobs/factory.js';
import type { Ctx } from '../service.js';

const WorkerSchema = Type.Object({
  name: Type.String(), process: Nullable(Type.String()), local: Type.Boolean(), state: Type.String(), concurrency: Nullable(Type.Integer()),
  processed: Nullable(Type.Integer()), failed: Nullable(Type.Integer()), started_at: Nullable(Type.String()), connected_seconds: Type.Integer(), idle_seconds: Type.Integer(),
});
const Metrics = Type.Object({ completed_total: Type.Integer(), failed_total: Type.Integer(), completed_last_hour: Type.Integer(), failed_last_hour: Type.Integer() });

/** The platform-wide factory worker pool (platform admins). */
export async function factoryRoutes(app: App, ctx: Ctx, factory: FactoryPool) {
  const settings = async () => (await ctx.db.select().from(factoryConfig))[0] ?? { workerCount: 2, concurrency: 2 };

  app.get('/factory-workers', {
    config: { scope: 'agents:read', platformAdmin: true },
    schema: { tags: ['Factory'], summary: 'Factory workers of every process (BullMQ client list) with state and metrics', querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(WorkerSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const workers = await factory.all();
    return list(workers.slice(p.offset, p.offset + p.limit), workers.length, p);
  });

  app.get('/factory-workers/stats', {
    config: { scope: 'agents:read', platformAdmin: true },
    schema: {
      tags: ['Factory'], summary: 'Factory summary: configured and connected workers, capacity, job counts, throughput',
      response: { 200: Envelope(Type.Object({ worker_count: Type.Integer(), concurrency: Type.Integer(), connected_workers: Type.Integer(), local_workers: Type.Integer(), capacity: Type.Integer(), processed: Type.Integer(), failed: Type.Integer(), metrics: Metrics, queue: Type.Record(Type.String(), Type.Integer()) })) },
    },
  }, async () => {
    const [cfg, workers, metrics, queue] = await Promise.all([settings(), factory.all(), factory.metrics(), ctx.queues.queue(Queues.factory).getJobCounts()]);
    const local = factory.local();
    return ok({
      worker_count: cfg.workerCount, concurrency: cfg.concurrency, connected_workers: workers.length, local_workers: local.length, capacity: workers.length * cfg.concurrency,
      processed: local.reduce((n, w) => n + w.processed, 0), failed: local.reduce((n, w) => n + w.failed, 0), metrics, queue,
    });
  });

  app.patch('/factory-workers/config', {
    config: { scope: 'agents:write', platformAdmin: true },
    schema: {
      tags: ['Factory'], summary: 'Change worker count and concurrency live, in every process',
      body: Type.Object({ worker_count: Type.Optional(Type.Integer({ minimum: 0, maximum: 32 })), concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })), max_concurrent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'alias of concurrency' })) }, { additionalProperties: false }),
      response: { 200: Envelope(Type.Object({ worker_count: Type.Integer(), concurrency: Type.Integer() })) },
    },
  }, async (request) => {
    const b = request.body;
    if (b.concurrency !== undefined && b.max_concurrent !== undefined && b.concurrency !== b.max_concurrent) throw badRequest('concurrency and max_concurrent differ; give one');
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    const current = await settings();
    const next = { workerCount: b.worker_count ?? current.workerCount, concurrency: b.concurrency ?? b.max_concurrent ?? current.concurrency };
    await factory.configure(next);
    return ok({ worker_count: next.workerCount, concurrency: next.concurrency });
  });

  app.get('/factory-workers/health-summary', {
    config: { scope: 'agents:read', platformAdmin: true },
    schema: {
      tags: ['Factory'], summary: 'Factory health: workers, backlog, failures, alerts',
      response: { 200: Envelope(Type.Object({ healthy: Type.Boolean(), running: Type.Integer(), stopped: Type.Integer(), connected_workers: Type.Integer(), waiting: Type.Integer(), active: Type.Integer(), failed: Type.Integer(), redis: Type.String(), process: Type.Object({ pid: Type.Integer(), workers: Type.Array(Type.String()) }), alerts: Type.Array(Type.String()) })) },
    },
  }, async () => {
    const redis = await ctx.queues.ping();
    if (!redis) return ok({ healthy: false, running: 0, stopped: 0, connected_workers: 0, waiting: 0, active: 0, failed: 0, redis: 'error', process: { pid: process.pid, workers: [] }, alerts: ['redis unreachable'] });
    const [cfg, workers, counts] = await Promise.all([settings(), factory.all(), ctx.queues.queue(Queues.factory).getJobCounts('waiting', 'active', 'failed', 'prioritized')]);
    const local = factory.local();
    const running = local.filter((w) => w.state === 'running').length;
    const waiting = (counts.waiting ?? 0) + (counts.prioritized ?? 0);
    const capacity = Math.max(1, workers.length * cfg.concurrency);
    const alerts = [
      ...(cfg.workerCount > 0 && workers.length === 0 ? ['no factory worker is connected'] : []),
      ...(running < local.length ? [`${local.length - running} local worker(s) not running`] : []),
      ...(waiting > capacity * 10 ? [`backlog: ${waiting} waiting jobs for a capacity of ${capacity}`] : []),
      ...((counts.failed ?? 0) > 0 ? [`${counts.failed} failed job(s) kept in the queue`] : []),
    ];
    return ok({
      healthy: alerts.filter((a) => !a.includes('failed job')).length === 0, running, stopped: local.length - running, connected_workers: workers.length,
      waiting, active: counts.active ?? 0, failed: counts.failed ?? 0, redis: 'connected', process: { pid: process.pid, workers: local.map((w) => w.name) }, alerts,
    });
  });
}
