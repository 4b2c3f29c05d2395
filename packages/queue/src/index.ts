import type { QueueName } from '@aos/contracts';
import { contextFromCarrier, currentTraceCarrier, withSpan, type Logger } from '@aos/core';
import { SpanKind } from '@opentelemetry/api';
import { Queue, Worker, type Job, type JobsOptions, type WorkerOptions } from 'bullmq';
import { Redis } from 'ioredis';

export { UnrecoverableError, type Job } from 'bullmq';
export { Redis } from 'ioredis';

/** What every job carries: its payload and the trace context of whoever enqueued it. */
export interface JobEnvelope<T> {
  payload: T;
  trace: Record<string, string>;
}

export const defaultJobOptions: JobsOptions = {
  attempts: 5,
  backoff: { type: 'exponential', delay: 1_000 },
  removeOnComplete: { age: 24 * 3600, count: 1_000 },
  removeOnFail: { age: 7 * 24 * 3600 },
};

/** BullMQ requires `maxRetriesPerRequest: null` on connections used by workers. */
export function createRedis(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, lazyConnect: false });
}

/**
 * Queues and workers of one process on one Redis connection and key prefix (tests use
 * their own prefix). `close()` stops workers first (they finish or return in-flight jobs),
 * then queues, then the connection.
 */
export class QueueKit {
  readonly connection: Redis;
  private readonly queues = new Map<string, Queue>();
  private readonly workers: Worker[] = [];
  /** The connections given to workers: BullMQ does not close a connection it was given. */
  private readonly workerConnections: Redis[] = [];

  constructor(redisUrl: string, readonly prefix: string, private readonly log: Logger) {
    this.connection = createRedis(redisUrl);
    this.connection.on('error', (err) => this.log.warn({ err: err.message }, 'redis error'));
  }

  queue(name: QueueName): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: this.connection, prefix: this.prefix, defaultJobOptions });
      q.on('error', (err) => this.log.warn({ err: err.message, queue: name }, 'queue error'));
      this.queues.set(name, q);
    }
    return q;
  }

  /** Adds a job; pass `jobId` to make the add idempotent (a second add with the same id is ignored). */
  async add<T>(name: QueueName, jobName: string, payload: T, opts: JobsOptions = {}): Promise<Job<JobEnvelope<T>>> {
    const data: JobEnvelope<T> = { payload, trace: currentTraceCarrier() };
    return this.queue(name).add(jobName, data, opts);
  }

  /** Starts a worker; the processor runs inside a span continuing the enqueuer's trace. */
  worker<T, R = unknown>(
    name: QueueName,
    processor: (payload: T, job: Job<JobEnvelope<T>>) => Promise<R>,
    opts: Omit<WorkerOptions, 'connection' | 'prefix'> = {},
  ): Worker<JobEnvelope<T>, R> {
    // A worker blocks its connection; it gets a duplicate of ours.
    const connection = this.connection.duplicate();
    this.workerConnections.push(connection);
    const worker = new Worker<JobEnvelope<T>, R>(name, async (job) =>
      withSpan(`job ${name}:${job.name}`, () => processor(job.data.payload, job), {
        kind: SpanKind.CONSUMER,
        parent: contextFromCarrier(job.data.trace),
        attributes: { 'job.id': job.id ?? '', 'job.attempt': job.attemptsMade + 1 },
      }), { concurrency: 1, ...opts, connection, prefix: this.prefix });
    worker.on('error', (err) => this.log.warn({ err: err.message, queue: name }, 'worker error'));
    worker.on('failed', (job, err) => this.log.warn({ err: err.message, queue: name, jobId: job?.id, attempts: job?.attemptsMade }, 'job failed'));
    this.workers.push(worker as Worker);
    return worker;
  }

  allWorkers(): readonly Worker[] {
    return this.workers;
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.connection.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.workers.map((w) => w.close()));
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    await Promise.all([this.connection, ...this.workerConnections].map((c) => c.quit().catch(() => c.disconnect())));
  }
}
