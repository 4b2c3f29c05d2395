import { Queues, type QueueName } from '@aos/contracts';
import { badRequest, splitList } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import type { Ctx } from '../service.js';
import { literals } from './common.js';

const QUEUES = Object.values(Queues) as string[];
const QueueParam = Type.String({ minLength: 1, maxLength: 60, pattern: '^[a-z0-9-]+$' });
const JobStates = ['waiting', 'active', 'completed', 'failed', 'delayed', 'paused', 'prioritized', 'waiting-children'] as const;
const JobName = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_.:-]+$' });
const Data = Type.Record(Type.String(), Type.Unknown());
const MAX_DATA = 256 * 1024;
const JobSchema = Type.Object({ id: Nullable(Type.String()), name: Type.String(), data: Type.Unknown(), attempts_made: Type.Integer(), failed_reason: Nullable(Type.String()), timestamp: Type.String(), processed_on: Nullable(Type.String()), finished_on: Nullable(Type.String()) });
const SchedulerSchema = Type.Object({ id: Type.String(), name: Type.String(), pattern: Nullable(Type.String()), every: Nullable(Type.Integer()), next: Nullable(Type.String()), iterations: Type.Integer() });

/**
 * BullMQ administration for platform admins. Every queue of `@aos/contracts` can be read;
 * only the ones in BULL_ADMIN_SUBMIT_QUEUES accept hand-made jobs (a job hand-written into
 * e.g. `email` or `auto-topup` would send mail or charge a card).
 */
export async function bullQueueRoutes(app: App, ctx: Ctx) {
  const writable = splitList(ctx.config.BULL_ADMIN_SUBMIT_QUEUES).filter((q) => QUEUES.includes(q));
  const readable = (q: string) => {
    if (!QUEUES.includes(q)) throw badRequest(`Queue "${q}" is not in the allow-list`, [{ field: 'queue', allowed: QUEUES }]);
    return q as QueueName;
  };
  const submittable = (q: string) => {
    if (!writable.includes(q)) throw badRequest(`Queue "${q}" does not accept submitted jobs`, [{ field: 'queue', allowed: writable }]);
    return q as QueueName;
  };
  const checkData = (data: unknown) => {
    if (JSON.stringify(data).length > MAX_DATA) throw badRequest('data is larger than 256 KiB', [{ field: 'data' }]);
  };
  const read = { platformAdmin: true, scope: 'agents:read' as const };
  const write = { platformAdmin: true, scope: 'agents:write' as const };

  app.post('/bull-queue/submit', {
    config: write,
    schema: {
      tags: ['Queue'], summary: 'Submit a job to an allow-listed queue',
      body: Type.Object({
        queue: QueueParam, name: JobName, data: Data, priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 2_097_152 })), attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 50 })),
        backoff: Type.Optional(Type.Object({ type: literals(['fixed', 'exponential'] as const), delay: Type.Integer({ minimum: 0, maximum: 86_400_000 }) }, { additionalProperties: false })),
        delay: Type.Optional(Type.Integer({ minimum: 0, maximum: 30 * 86_400_000 })), job_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.-]+$' })),
      }, { additionalProperties: false }),
      response: { 201: Envelope(Type.Object({ id: Type.String(), queue: Type.String(), name: Type.String() })) },
    },
  }, async (request, reply) => {
    const b = request.body;
    const queue = submittable(b.queue);
    checkData(b.data);
    // BullMQ numbers its own jobs and refuses a custom id that reads as an integer (it would throw, a 500).
    if (b.job_id !== undefined && String(parseInt(b.job_id, 10)) === b.job_id) throw badRequest('job_id must not be an integer', [{ field: 'job_id' }]);
    const job = await ctx.queues.add(queue, b.name, b.data, { priority: b.priority, attempts: b.attempts, backoff: b.backoff, delay: b.delay, jobId: b.job_id });
    return reply.status(201).send(ok({ id: job.id!, queue, name: b.name }));
  });

  app.post('/bull-queue/submit-scheduled', {
    config: write,
    schema: {
      tags: ['Queue'], summary: 'Submit a delayed job, or a recurring one (cron `repeat` or `every` ms; one scheduler per name)',
      body: Type.Object({ queue: QueueParam, name: JobName, data: Data, delay: Type.Optional(Type.Integer({ minimum: 0, maximum: 30 * 86_400_000 })), repeat: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })), every: Type.Optional(Type.Integer({ minimum: 1_000, maximum: 30 * 86_400_000 })) }, { additionalProperties: false }),
      response: { 201: Envelope(Type.Object({ id: Type.String(), queue: Type.String(), scheduler: Nullable(Type.String()), next: Nullable(Type.String()) })) },
    },
  }, async (request, reply) => {
    const b = request.body;
    const queue = submittable(b.queue);
    checkData(b.data);
    if (b.repeat && b.every) throw badRequest('Give repeat (cron) or every, not both');
    if (!b.repeat && !b.every && b.delay === undefined) throw badRequest('Give delay, repeat (cron) or every');
    if (b.repeat || b.every) {
      const id = `admin-${b.name}`;
      try {
        await ctx.queues.queue(queue).upsertJobScheduler(id, b.repeat ? { pattern: b.repeat } : { every: b.every! }, { name: b.name, data: { payload: b.data, trace: {} } });
      } catch (err) {
        throw badRequest(`Invalid schedule: ${(err as Error).message.slice(0, 200)}`, [{ field: b.repeat ? 'repeat' : 'every' }]);
      }
      const scheduler = await ctx.queues.queue(queue).getJobScheduler(id);
      return reply.status(201).send(ok({ id, queue, scheduler: id, next: scheduler?.next ? new Date(scheduler.next).toISOString() : null }));
    }
    const job = await ctx.queues.add(queue, b.name, b.data, { delay: b.delay });
    return reply.status(201).send(ok({ id: job.id!, queue, scheduler: null, next: new Date(job.timestamp + (b.delay ?? 0)).toISOString() }));
  });

  app.get('/bull-queue/stats', {
    config: read,
    schema: { tags: ['Queue'], summary: 'Job counts per queue', querystring: Type.Object({ queue: Type.Optional(QueueParam) }), response: { 200: Envelope(Type.Record(Type.String(), Type.Record(Type.String(), Type.Integer()))) } },
  }, async (request) => {
    const names = request.query.queue ? [readable(request.query.queue)] : (QUEUES as QueueName[]);
    return ok(Object.fromEntries(await Promise.all(names.map(async (n) => [n, await ctx.queues.queue(n).getJobCounts()] as const))));
  });

  app.get('/bull-queue/:queue/jobs', {
    config: read,
    schema: {
      tags: ['Queue'], summary: 'Jobs of a queue in one state (start/end as BullMQ ranges, or limit/offset)', params: Type.Object({ queue: QueueParam }),
      querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(literals(JobStates)), start: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })), end: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })) }),
      response: { 200: ListEnvelope(JobSchema) },
    },
  }, async (request) => {
    const queue = ctx.queues.queue(readable(request.params.queue));
    const q = request.query;
    const p = page(q);
    const start = q.start ?? p.offset;
    if (q.end !== undefined && q.end < start) throw badRequest('end must not be before start', [{ field: 'end' }]);
    const end = Math.min(q.end ?? start + p.limit - 1, start + 199);
    // BullMQ keeps the jobs of a paused queue in its wait list: `paused` reads that list.
    const state = q.status === 'paused' || !q.status ? 'waiting' : q.status;
    const [jobs, total] = await Promise.all([queue.getJobs([state], start, end), queue.getJobCountByTypes(state)]);
    const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);
    return list(jobs.filter(Boolean).map((j) => ({
      id: j.id ?? null, name: j.name, data: (j.data as { payload?: unknown })?.payload ?? j.data, attempts_made: j.attemptsMade, failed_reason: j.failedReason ?? null,
      timestamp: new Date(j.timestamp).toISOString(), processed_on: iso(j.processedOn), finished_on: iso(j.finishedOn),
    })), total, { limit: end - start + 1, offset: start });
  });

  app.get('/bull-queue/:queue/schedulers', {
    config: read,
    schema: { tags: ['Queue'], summary: 'Recurring jobs (job schedulers) of a queue', params: Type.Object({ queue: QueueParam }), querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(SchedulerSchema) } },
  }, async (request) => {
    const queue = ctx.queues.queue(readable(request.params.queue));
    const p = page(request.query);
    const [rows, total] = await Promise.all([queue.getJobSchedulers(p.offset, p.offset + p.limit - 1, true), queue.getJobSchedulersCount()]);
    return list(rows.map((s) => ({ id: s.id ?? s.key, name: s.name, pattern: s.pattern ?? null, every: s.every ? Number(s.every) : null, next: s.next ? new Date(s.next).toISOString() : null, iterations: s.iterationCount ?? 0 })), total, p);
  });

  app.delete('/bull-queue/:queue/schedulers/:id', {
    config: write,
    schema: { tags: ['Queue'], summary: 'Remove a recurring job submitted through submit-scheduled', params: Type.Object({ queue: QueueParam, id: Type.String({ minLength: 1, maxLength: 120, pattern: '^admin-[A-Za-z0-9_.:-]+$' }) }), response: { 200: Envelope(Type.Object({ id: Type.String(), removed: Type.Boolean() })) } },
  }, async (request) => {
    const queue = ctx.queues.queue(submittable(request.params.queue));
    return ok({ id: request.params.id, removed: await queue.removeJobScheduler(request.params.id) });
  });
}
