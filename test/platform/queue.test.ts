import { Queues } from '@aos/contracts';
import { createLogger, initTracing, withSpan } from '@aos/core';
import { QueueKit } from '@aos/queue';
import { createNamespace, removeNamespace, sleep, waitFor } from '@aos/testkit';
import { trace } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ns = createNamespace();
let kit: QueueKit;

beforeAll(() => {
  initTracing('queue-test');
  kit = new QueueKit(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', ns.redisPrefix, createLogger('queue-test', 'silent'));
});
afterAll(async () => {
  await kit.close().catch(() => {});
  await removeNamespace(ns);
});

describe('QueueKit (BullMQ)', () => {
  it('runs a job inside the trace of whoever enqueued it, once per job id', async () => {
    const seen: { payload: unknown; traceId?: string }[] = [];
    kit.worker<{ n: number }>(Queues.factory, async (payload) => {
      seen.push({ payload, traceId: trace.getActiveSpan()?.spanContext().traceId });
    });
    const traceId = await withSpan('enqueue', async (span) => {
      await kit.add(Queues.factory, 'probe', { n: 1 }, { jobId: 'same-id' });
      await kit.add(Queues.factory, 'probe', { n: 1 }, { jobId: 'same-id' });
      return span.spanContext().traceId;
    });
    await waitFor(() => seen.length === 1);
    await sleep(300);
    expect(seen).toEqual([{ payload: { n: 1 }, traceId }]);
  });

  it('lets an in-flight job finish on close', async () => {
    const local = new QueueKit(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', `${ns.redisPrefix}:b`, createLogger('queue-test', 'silent'));
    let finished = false;
    let started = false;
    local.worker(Queues.email, async () => {
      started = true;
      await sleep(500);
      finished = true;
    });
    await local.add(Queues.email, 'slow', {});
    await waitFor(() => started);
    await local.close();
    expect(finished).toBe(true);
  });

  it('closes every Redis connection it opened, those it gave its workers too', async () => {
    const local = new QueueKit(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', `${ns.redisPrefix}:c`, createLogger('queue-test', 'silent'));
    const workers = [local.worker(Queues.email, async () => {}), local.worker(Queues.factory, async () => {})];
    await Promise.all(workers.map((w) => w.waitUntilReady()));
    await local.close();
    // BullMQ leaves a connection it was given open on close (it is "shared"): ours to end.
    const connections = [local.connection, ...workers.map((w) => w.opts.connection as { status?: string })];
    await waitFor(() => connections.every((c) => c.status === 'end'), { timeoutMs: 3_000, message: 'every connection ended' })
      .catch(() => expect(connections.map((c) => c.status)).toEqual(connections.map(() => 'end')));
  });
});
