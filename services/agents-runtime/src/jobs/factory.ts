import { Queues } from '@aos/contracts';
import type { QueueKit } from '@aos/queue';

type Worker = ReturnType<QueueKit['allWorkers']>[number];
import { factoryConfig } from '../db/schema.js';
import type { Ctx } from '../service.js';

export interface FactoryJob { type?: 'echo' | 'sleep'; delay_ms?: number; [k: string]: unknown }

interface Slot { id: number; worker: Worker; processed: number; failed: number; startedAt: Date }

/**
 * The factory: a pool of BullMQ workers on the `factory` queue whose size and concurrency
 * change live (PATCH /factory-workers/config) without dropping in-flight jobs.
 */
export class FactoryPool {
  private slots: Slot[] = [];
  private nextId = 1;
  concurrency = 2;

  constructor(private readonly ctx: Ctx) {}

  async init() {
    const [cfg] = await this.ctx.db.insert(factoryConfig).values({ id: 1 }).onConflictDoNothing().returning();
    const current = cfg ?? (await this.ctx.db.select().from(factoryConfig))[0]!;
    await this.resize(current.workerCount, current.concurrency);
    this.ctx.shutdown.add('factory workers', () => this.resize(0, this.concurrency));
  }

  private start(): Slot {
    const slot = { id: this.nextId++, processed: 0, failed: 0, startedAt: new Date() } as Slot;
    slot.worker = this.ctx.queues.worker<FactoryJob>(Queues.factory, async (payload) => {
      if (payload.type === 'sleep') await new Promise((r) => setTimeout(r, Math.min(payload.delay_ms ?? 100, 60_000)));
      return { echoed: payload, worker: slot.id };
    }, { concurrency: this.concurrency, name: `factory-${slot.id}` }) as unknown as Worker;
    slot.worker.on('completed', () => { slot.processed++; });
    slot.worker.on('failed', () => { slot.failed++; });
    return slot;
  }

  /** Grows or shrinks the pool; removed workers finish their active jobs first. */
  async resize(count: number, concurrency: number) {
    if (concurrency !== this.concurrency) {
      this.concurrency = concurrency;
      for (const s of this.slots) s.worker.concurrency = concurrency;
    }
    while (this.slots.length < count) this.slots.push(this.start());
    const removed = this.slots.splice(count);
    await Promise.all(removed.map((s) => s.worker.close()));
  }

  describe() {
    return this.slots.map((s) => ({
      id: s.id, name: `factory-${s.id}`, state: s.worker.isRunning() ? (s.worker.isPaused() ? 'paused' : 'running') : 'stopped',
      concurrency: s.worker.concurrency, processed: s.processed, failed: s.failed, started_at: s.startedAt.toISOString(),
    }));
  }
}

const pools = new WeakMap<Ctx, FactoryPool>();
/** The process's factory pool (routes and job start-up share it). */
export function factoryFor(ctx: Ctx): FactoryPool {
  let pool = pools.get(ctx);
  if (!pool) pools.set(ctx, (pool = new FactoryPool(ctx)));
  return pool;
}
