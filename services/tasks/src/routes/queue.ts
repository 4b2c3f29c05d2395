import { badRequest, conflict, notFound } from '@aos/core';
import { Envelope, IdParam, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, inArray, sql, type SQL } from 'drizzle-orm';
import { queueJobs } from '../db/schema.js';
import { csvFilter } from '../domain/model.js';
import { CLAIM_SQL, EXPIRE_LAST_LEASES_SQL } from '../domain/queue.js';
import type { Ctx } from '../service.js';

type Job = typeof queueJobs.$inferSelect;
const JobStatuses = ['pending', 'claimed', 'completed', 'dead'] as const;
const Name = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._:-]+$' });
const Worker = Type.String({ minLength: 1, maxLength: 200 });

const JobSchema = Type.Object({
  id: Type.Integer(), queue_name: Type.String(), task_type: Type.String(), payload: Type.Unknown(), priority: Type.Integer(),
  status: Type.String(), attempts: Type.Integer(), max_attempts: Type.Integer(), timeout_seconds: Type.Integer(),
  idempotency_key: Type.Union([Type.String(), Type.Null()]), worker_id: Type.Union([Type.String(), Type.Null()]),
  lease_expires_at: Type.Union([Type.String(), Type.Null()]), available_at: Type.String(), last_error: Type.Union([Type.String(), Type.Null()]),
  result: Type.Unknown(), created_at: Type.String(), updated_at: Type.String(), completed_at: Type.Union([Type.String(), Type.Null()]),
});

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
function view(j: Job | Record<string, unknown>) {
  const r = j as Record<string, unknown>;
  const get = (camel: string, snake: string) => r[camel] ?? r[snake] ?? null;
  return {
    id: Number(r.id), queue_name: get('queueName', 'queue_name') as string, task_type: get('taskType', 'task_type') as string,
    payload: r.payload, priority: r.priority as number, status: r.status as string, attempts: r.attempts as number,
    max_attempts: get('maxAttempts', 'max_attempts') as number, timeout_seconds: get('timeoutSeconds', 'timeout_seconds') as number,
    idempotency_key: get('idempotencyKey', 'idempotency_key') as string | null, worker_id: get('workerId', 'worker_id') as string | null,
    lease_expires_at: iso(get('leaseExpiresAt', 'lease_expires_at') as Date | null), available_at: iso(get('availableAt', 'available_at') as Date)!,
    last_error: get('lastError', 'last_error') as string | null, result: r.result ?? null,
    created_at: iso(get('createdAt', 'created_at') as Date)!, updated_at: iso(get('updatedAt', 'updated_at') as Date)!,
    completed_at: iso(get('completedAt', 'completed_at') as Date | null),
  };
}

/**
 * A Postgres work queue: `claim` hands each job to one worker (FOR UPDATE SKIP LOCKED) with
 * a lease; an expired lease makes the job claimable again; failures retry with backoff until
 * `max_attempts`, then the job is dead.
 */
export async function queueRoutes(app: App, ctx: Ctx) {
  const write = { scope: 'tasks:write' as const };

  app.post('/task-queue/submit', {
    config: write,
    schema: {
      tags: ['Task queue'], summary: 'Submit a job (same idempotency_key → same job)',
      body: Type.Object({
        task_type: Name, payload: Type.Optional(Type.Record(Type.String(), Type.Unknown())), queue_name: Type.Optional(Name),
        priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })), max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
        timeout_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })), idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
        delay_seconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 30 * 86_400 })),
        tenant_id: Type.Optional(Type.Unknown({ description: 'Ignored: jobs belong to the caller\'s organization' })),
      }),
      response: { 201: Envelope(JobSchema), 200: Envelope(JobSchema) },
    },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    if (JSON.stringify(b.payload ?? {}).length > 256 * 1024) throw badRequest('payload is larger than 256 KiB', [{ field: 'payload' }]);
    const values = {
      orgId, queueName: b.queue_name ?? 'default', taskType: b.task_type, payload: b.payload ?? {}, priority: b.priority ?? 0,
      maxAttempts: b.max_attempts ?? 3, timeoutSeconds: b.timeout_seconds ?? 300, idempotencyKey: b.idempotency_key ?? null,
      availableAt: new Date(Date.now() + (b.delay_seconds ?? 0) * 1000),
    };
    const [created] = await ctx.db.insert(queueJobs).values(values).onConflictDoNothing().returning();
    if (created) return reply.status(201).send(ok(view(created)));
    const [existing] = await ctx.db.select().from(queueJobs).where(and(eq(queueJobs.orgId, orgId), eq(queueJobs.idempotencyKey, b.idempotency_key!)));
    return reply.status(200).send(ok(view(existing!)));
  });

  app.post('/task-queue/claim', {
    config: write,
    schema: {
      tags: ['Task queue'], summary: 'Claim the next job(s) (SKIP LOCKED); data is null when the queue is empty',
      body: Type.Object({ worker_id: Worker, queue_name: Type.Optional(Name), task_type: Type.Optional(Name), batch_size: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })) }),
      response: { 200: Type.Object({ data: Type.Union([JobSchema, Type.Array(JobSchema), Type.Null()]) }) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const b = request.body;
    const queue = b.queue_name ?? 'default';
    const batch = b.batch_size ?? 1;
    await ctx.pool.query(EXPIRE_LAST_LEASES_SQL, [orgId, queue]);
    const { rows } = await ctx.pool.query(CLAIM_SQL, [orgId, queue, b.task_type ?? null, batch, b.worker_id]);
    const jobs = rows.sort((x, y) => y.priority - x.priority || Number(x.id) - Number(y.id)).map(view);
    if (b.batch_size === undefined) return { data: jobs[0] ?? null };
    return { data: jobs.length ? jobs : null };
  });

  const findJob = async (orgId: string, id: number) => {
    const [job] = await ctx.db.select().from(queueJobs).where(and(eq(queueJobs.orgId, orgId), eq(queueJobs.id, id)));
    if (!job) throw notFound('Job');
    return job;
  };
  const claimedBy = (job: Job, workerId: string) => {
    if (job.status !== 'claimed' || job.workerId !== workerId) throw conflict(`Job ${job.id} is not claimed by ${workerId}`, [{ status: job.status }]);
    return job;
  };
  const owned = async (orgId: string, id: number, workerId: string) => claimedBy(await findJob(orgId, id), workerId);

  app.post('/task-queue/:id/complete', {
    config: write,
    schema: {
      tags: ['Task queue'], summary: 'Complete a claimed job (a retry by the same worker returns the completed job)', params: IdParam,
      body: Type.Object({ worker_id: Worker, result: Type.Optional(Type.Unknown()) }), response: { 200: Envelope(JobSchema) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const current = await findJob(orgId, request.params.id);
    if (current.status === 'completed' && current.workerId === request.body.worker_id) return ok(view(current));
    claimedBy(current, request.body.worker_id);
    const [job] = await ctx.db.update(queueJobs).set({ status: 'completed', result: request.body.result ?? null, completedAt: new Date(), updatedAt: new Date(), leaseExpiresAt: null })
      .where(and(eq(queueJobs.id, request.params.id), eq(queueJobs.status, 'claimed'), eq(queueJobs.workerId, request.body.worker_id))).returning();
    if (!job) throw conflict('Job lease was lost');
    return ok(view(job));
  });

  app.post('/task-queue/:id/fail', {
    config: write,
    schema: {
      tags: ['Task queue'], summary: 'Report a failure: retried with backoff until max_attempts, then dead', params: IdParam,
      body: Type.Object({ worker_id: Worker, error: Type.String({ maxLength: 5_000 }), retry_in_seconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400 })) }),
      response: { 200: Envelope(JobSchema) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const b = request.body;
    const job = await owned(orgId, request.params.id, b.worker_id);
    const dead = job.attempts >= job.maxAttempts;
    const delay = b.retry_in_seconds ?? Math.min(2 ** job.attempts, 3_600);
    const [updated] = await ctx.db.update(queueJobs).set({
      status: dead ? 'dead' : 'pending', lastError: b.error, workerId: null, leaseExpiresAt: null, updatedAt: new Date(),
      availableAt: new Date(Date.now() + delay * 1000),
    }).where(and(eq(queueJobs.id, job.id), eq(queueJobs.status, 'claimed'), eq(queueJobs.workerId, b.worker_id))).returning();
    if (!updated) throw conflict('Job lease was lost');
    return ok(view(updated));
  });

  app.post('/task-queue/:id/heartbeat', {
    config: write,
    schema: { tags: ['Task queue'], summary: 'Extend the lease of a claimed job', params: IdParam, body: Type.Object({ worker_id: Worker }), response: { 200: Envelope(JobSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    await owned(orgId, request.params.id, request.body.worker_id);
    const { rows } = await ctx.pool.query(
      `UPDATE queue_jobs SET lease_expires_at = now() + make_interval(secs => timeout_seconds), updated_at = now()
        WHERE id = $1 AND status = 'claimed' AND worker_id = $2 RETURNING *`, [request.params.id, request.body.worker_id]);
    if (!rows[0]) throw conflict('Job lease was lost');
    return ok(view(rows[0]));
  });

  app.get('/task-queue/:id', {
    config: { scope: 'tasks:read' },
    schema: { tags: ['Task queue'], summary: 'Get a job', params: IdParam, response: { 200: Envelope(JobSchema) } },
  }, async (request) => ok(view(await findJob(orgOf(request), request.params.id))));

  app.get('/task-queue', {
    config: { scope: 'tasks:read' },
    schema: {
      tags: ['Task queue'], summary: 'List jobs',
      querystring: Type.Object({ ...PaginationQuery, queue_name: Type.Optional(Name), task_type: Type.Optional(Name), status: Type.Optional(Type.String({ maxLength: 100 })) }),
      response: { 200: ListEnvelope(JobSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const where: SQL[] = [eq(queueJobs.orgId, orgOf(request))];
    if (request.query.queue_name) where.push(eq(queueJobs.queueName, request.query.queue_name));
    if (request.query.task_type) where.push(eq(queueJobs.taskType, request.query.task_type));
    const statuses = csvFilter('status', request.query.status, JobStatuses);
    if (statuses) where.push(inArray(queueJobs.status, statuses));
    const cond = and(...where);
    const [rows, total] = await Promise.all([
      ctx.db.select().from(queueJobs).where(cond).orderBy(desc(queueJobs.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: sql<number>`count(*)::int` }).from(queueJobs).where(cond).then((r) => r[0]?.n ?? 0),
    ]);
    return list(rows.map(view), total, p);
  });
}
