import { headers as natsHeaders } from '@nats-io/nats-core';
import pg from 'pg';
import type { Logger } from '@aos/core';
import { ensureStreams, isNoResponders, type BusConnection } from './connection.js';

export interface RelayOptions {
  /** Connection string for the relay's own session (LISTEN + advisory lock). */
  databaseUrl: string;
  pool: pg.Pool;
  /** Resolves once the broker is connected; the relay waits for it. */
  bus: Promise<BusConnection>;
  log: Logger;
  /** Advisory lock key: one active relay per service database. */
  lockName: string;
  batchSize?: number;
  pollIntervalMs?: number;
  /** How often a standby relay tries to take the lock over (default 5 s). */
  lockRetryMs?: number;
  /** Published rows older than this are deleted. */
  retentionHours?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Publishes outbox rows to JetStream in commit order, woken by LISTEN/NOTIFY with a
 * polling fallback. Each row is marked sent only after its PubAck; `Nats-Msg-Id` is the
 * event id, so a crash between ack and mark makes a duplicate the broker drops.
 */
export class OutboxRelay {
  private stopped = false;
  private loop: Promise<void> | null = null;
  private session: pg.Client | null = null;
  private wake: (() => void) | null = null;
  /** A NOTIFY that arrived while the relay was busy: the next wait returns at once. */
  private notified = false;
  private lastCleanup = 0;
  /** True while this process holds the lock and is the active relay. */
  active = false;

  constructor(private readonly opts: RelayOptions) {}

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    await this.closeSession();
  }

  /** Publishes everything pending now; returns the number of events published. */
  async drain(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.publishBatch();
      total += n;
      if (n < (this.opts.batchSize ?? 100)) return total;
    }
  }

  private async run(): Promise<void> {
    const { log } = this.opts;
    let failures = 0;
    while (!this.stopped) {
      try {
        if (!this.active) {
          this.active = await this.acquire();
          if (!this.active) {
            await this.sleepOrWake(this.opts.lockRetryMs ?? 5_000);
            continue;
          }
          log.info('outbox relay active');
        } else if (!(await this.sessionAlive())) {
          // The lock lived in that session: another relay may hold it now.
          log.warn('outbox relay lost its lock session; re-acquiring');
          this.active = false;
          await this.closeSession();
          continue;
        }
        await this.drain();
        await this.cleanup();
        failures = 0;
        await this.sleepOrWake(this.opts.pollIntervalMs ?? 1_000);
      } catch (err) {
        failures++;
        log.warn({ err: (err as Error).message, failures }, 'outbox relay error; retrying');
        if (this.session && !(await this.sessionAlive())) {
          this.active = false;
          await this.closeSession();
        }
        await this.sleepOrWake(Math.min(200 * 2 ** failures, 5_000));
      }
    }
  }

  private async acquire(): Promise<boolean> {
    await this.closeSession();
    const client = new pg.Client({ connectionString: this.opts.databaseUrl, connectionTimeoutMillis: 5_000 });
    client.on('error', () => { this.active = false; });
    client.on('notification', () => {
      this.notified = true;
      this.wake?.();
    });
    await client.connect();
    const { rows } = await client.query<{ locked: boolean }>(
      'SELECT pg_try_advisory_lock(hashtext($1)) AS locked', [`aos:outbox-relay:${this.opts.lockName}`]);
    if (!rows[0]?.locked) {
      await client.end().catch(() => {});
      return false;
    }
    await client.query('LISTEN aos_outbox');
    this.session = client;
    return true;
  }

  private async sessionAlive(): Promise<boolean> {
    try {
      await this.session?.query('SELECT 1');
      return true;
    } catch {
      return false;
    }
  }

  private async closeSession(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (s) await s.end().catch(() => {});
  }

  private sleepOrWake(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.notified) {
      this.notified = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      // Ending by the timer too, this wait stops being the one a NOTIFY wakes: a NOTIFY during the
      // next pass must stay `notified` (a stale wake would clear it and delay the event a poll).
      const wake = () => { this.notified = false; done(); };
      const done = () => {
        clearTimeout(timer);
        if (this.wake === wake) this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = wake;
    });
  }

  private async publishBatch(): Promise<number> {
    const { pool } = this.opts;
    const limit = this.opts.batchSize ?? 100;
    const { rows } = await pool.query<{ id: string; subject: string; envelope: unknown; headers: Record<string, string> }>(
      `SELECT id, subject, envelope, headers FROM aos_outbox
        WHERE published_at IS NULL ORDER BY created_at, id LIMIT $1`, [limit]);
    if (rows.length === 0) return 0;
    const { js } = await withTimeout(this.opts.bus, 5_000, 'broker not connected');
    const results = await Promise.allSettled(rows.map((row) => {
      const h = natsHeaders();
      for (const [k, v] of Object.entries(row.headers ?? {})) h.set(k, v);
      return js.publish(row.subject, JSON.stringify(row.envelope), { msgID: row.id, headers: h, timeout: 5_000 });
    }));
    const sent: string[] = [];
    const failed: { id: string; error: string }[] = [];
    results.forEach((r, i) => {
      const id = rows[i]!.id;
      if (r.status === 'fulfilled') sent.push(id);
      else failed.push({ id, error: String((r.reason as Error)?.message ?? r.reason).slice(0, 500) });
    });
    if (sent.length > 0) {
      await pool.query('UPDATE aos_outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1::uuid[])', [sent]);
    }
    if (failed.length > 0) {
      // Nobody answers for the subject: the stream is gone (a broker that lost its store). Recreate it.
      if (results.some((r) => r.status === 'rejected' && isNoResponders(r.reason))) {
        const bus = await this.opts.bus;
        await ensureStreams(bus.jsm, bus.names).catch((err: Error) => this.opts.log.warn({ err: err.message }, 'could not recreate streams'));
      }
      await pool.query(
        `UPDATE aos_outbox o SET attempts = o.attempts + 1, last_error = f.error
           FROM unnest($1::uuid[], $2::text[]) AS f(id, error) WHERE o.id = f.id`,
        [failed.map((f) => f.id), failed.map((f) => f.error)]);
      throw new Error(`${failed.length} of ${rows.length} events not acknowledged: ${failed[0]!.error}`);
    }
    return sent.length;
  }

  private async cleanup(): Promise<void> {
    if (Date.now() - this.lastCleanup < 10 * 60_000) return;
    this.lastCleanup = Date.now();
    const hours = this.opts.retentionHours ?? 72;
    await this.opts.pool.query(`DELETE FROM aos_outbox WHERE published_at < now() - make_interval(hours => $1)`, [hours]);
    // The stream keeps events 7 days; an inbox row older than 30 days can never be matched again.
    await this.opts.pool.query(`DELETE FROM aos_inbox WHERE processed_at < now() - interval '30 days'`);
  }

  /** Pending (unpublished) outbox rows: the relay's backlog. */
  async backlog(): Promise<number> {
    const { rows } = await this.opts.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM aos_outbox WHERE published_at IS NULL');
    return rows[0]?.n ?? 0;
  }
}

export { sleep };

export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(message)), ms); }),
  ]).finally(() => clearTimeout(timer));
}
