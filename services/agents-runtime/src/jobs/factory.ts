import { Queues } from '@aos/contracts';
import type { QueueKit, Redis } from '@aos/queue';
import { eq } from 'drizzle-orm';
import { hostname } from 'node:os';
import { factoryConfig } from '../db/schema.js';
import type { Ctx } from '../service.js';

type Worker = ReturnType<QueueKit['allWorkers']>[number];

export interface FactoryJob { type?: 'echo' | 'sleep'; delay_ms?: number; [k: string]: unknown }
export interface FactorySettings { workerCount: number; concurrency: number }

interface Slot { id: number; name: string; worker: Worker; processed: number; failed: number; startedAt: Date }

/** Per-minute completed/failed counts BullMQ keeps in Redis for the queue (one week). */
const METRICS_POINTS = 10_080;
const PROCESS = `${hostname()}-${process.pid}`;
let pools = 0;

export const factoryConfigChannel = (ctx: Ctx) => `${ctx.config.REDIS_PREFIX}:factory-config`;

/**
 * The factory: a pool of BullMQ workers on the `factory` queue whose size and concurrency
 * change live without dropping in-flight jobs. A change is stored, then published on Redis:
 * every process's pool (replicas included) applies it.
 */
export class FactoryPool {
  private slots: Slot[] = [];
  private nextId = 1;
  private subscriber: Redis | null = null;
  private applying: Promise<void> = Promise.resolve();
  concurrency = 2;
  /** Names this pool's workers in BullMQ's client list: host, pid and pool (a process normally has one). */
  private readonly tag = `${PROCESS}.${++pools}`;

  constructor(private readonly ctx: Ctx) {}

  async init() {
    const [cfg] = await this.ctx.db.insert(factoryConfig).values({ id: 1 }).onConflictDoNothing().returning();
    const current = cfg ?? (await this.ctx.db.select().from(factoryConfig))[0]!;
    this.subscriber = this.ctx.queues.connection.duplicate();
    this.subscriber.on('error', (err: Error) => this.ctx.log.warn({ err: err.message }, 'factory config subscriber: redis error'));
    await this.subscriber.subscribe(factoryConfigChannel(this.ctx));
    this.subscriber.on('message', (_channel, message) => {
      const s = JSON.parse(message) as FactorySettings;
      void this.apply(s.workerCount, s.concurrency).catch((err: Error) => this.ctx.log.warn({ err: err.message }, 'factory resize failed'));
    });
    await this.apply(current.workerCount, current.concurrency);
    this.ctx.shutdown.add('factory workers', async () => {
      await this.subscriber?.quit().catch(() => {});
      await this.apply(0, this.concurrency);
    });
  }

  /** Stores the settings and tells every process (this one included, awaited) to apply them. */
  async configure(s: FactorySettings) {
    await this.ctx.db.update(factoryConfig).set({ workerCount: s.workerCount, concurrency: s.concurrency, updatedAt: new Date() }).where(eq(factoryConfig.id, 1));
    await this.ctx.queues.connection.publish(factoryConfigChannel(this.ctx), JSON.stringify(s));
    await this.apply(s.workerCount, s.concurrency);
  }

  private start(): Slot {
    const id = this.nextId++;
    const slot = { id, name: `factory-${this.tag}-${id}`, processed: 0, failed: 0, startedAt: new Date() } as Slot;
    slot.worker = this.ctx.queues.worker<FactoryJob>(Queues.factory, async (payload) => {
      if (payload.type === 'sleep') await new Promise((r) => setTimeout(r, Math.min(payload.delay_ms ?? 100, 60_000)));
      return { echoed: payload, worker: slot.name };
    }, { concurrency: this.concurrency, name: slot.name, metrics: { maxDataPoints: METRICS_POINTS } }) as unknown as Worker;
    slot.worker.on('completed', () => { slot.processed++; });
    slot.worker.on('failed', () => { slot.failed++; });
    return slot;
  }

  /** Grows or shrinks this process's pool; removed workers finish their active jobs first. Serialised. */
  apply(count: number, concurrency: number): Promise<void> {
    this.applying = this.applying.catch(() => {}).then(async () => {
      if (concurrency !== this.concurrency) {
        this.concurrency = concurrency;
        for (const s of this.slots) s.worker.concurrency = concurrency;
      }
      while (this.slots.length < count) this.slots.push(this.start());
      const removed = this.slots.splice(count);
      await Promise.all(removed.map(async (s) => {
        await s.worker.close();
        // The worker got its own duplicate connection, which BullMQ treats as shared and leaves open:
        // closed here, or the worker would still be listed (and hold a Redis client) forever.
        await (s.worker.opts.connection as Redis).quit().catch(() => {});
      }));
    });
    return this.applying;
  }

  /** This process's workers with their counters since start. */
  local() {
    return this.slots.map((s) => ({
      name: s.name, state: s.worker.isRunning() ? (s.worker.isPaused() ? 'paused' : 'running') : 'stopped',
      concurrency: s.worker.concurrency, processed: s.processed, failed: s.failed, started_at: s.startedAt.toISOString(),
    }));
  }

  /**
   * Every worker connected to the factory queue, across processes (BullMQ's client list), with
   * this process's counters where the worker is local.
   */
  async all() {
    const local = new Map(this.local().map((w) => [w.name, w]));
    const clients = await this.ctx.queues.queue(Queues.factory).getWorkers();
    const seen = new Set<string>();
    const rows = clients.map((c) => {
      const name = (c.rawname ?? '').split(':w:')[1] ?? c.rawname ?? 'unnamed';
      seen.add(name);
      const mine = local.get(name);
      return {
        name, process: /^factory-(.+)-\d+$/.exec(name)?.[1] ?? null, local: !!mine, state: mine?.state ?? 'running', concurrency: mine?.concurrency ?? null,
        processed: mine?.processed ?? null, failed: mine?.failed ?? null, started_at: mine?.started_at ?? null,
        connected_seconds: Number(c.age ?? 0), idle_seconds: Number(c.idle ?? 0),
      };
    });
    // A local worker whose connection is not (yet) listed still shows.
    for (const w of local.values()) {
      if (!seen.has(w.name)) rows.push({ ...w, process: this.tag, local: true, connected_seconds: 0, idle_seconds: 0 });
    }
    return rows.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Queue-wide counts from BullMQ metrics (all processes, persisted in Redis). */
  async metrics() {
    const q = this.ctx.queues.queue(Queues.factory);
    const [completed, failed] = await Promise.all([q.getMetrics('completed', 0, 59), q.getMetrics('failed', 0, 59)]);
    const sum = (xs: number[]) => xs.reduce((n, x) => n + x, 0);
    return { completed_total: completed.meta.count, failed_total: failed.meta.count, completed_last_hour: sum(completed.data), failed_last_hour: sum(failed.data) };
  }
}

const perContext = new WeakMap<Ctx, FactoryPool>();
/** The process's factory pool (routes and job start-up share it). */
export function factoryFor(ctx: Ctx): FactoryPool {
  let pool = perContext.get(ctx);
  if (!pool) perContext.set(ctx, (pool = new FactoryPool(ctx)));
  return pool;
}
