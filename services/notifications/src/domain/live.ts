import type { Logger } from '@aos/core';
import type { Pool, PoolClient } from '@aos/db';
import { NOTIFY_CHANNEL } from './notifications.js';

export interface LiveEvent { id: number; orgId: string; userId: string | null }
type Listener = (e: LiveEvent) => void;

/**
 * Fans committed notifications out to the SSE streams of this process. Fed by Postgres
 * LISTEN/NOTIFY (sent inside the creating transaction, so delivered only on commit), which
 * also reaches the streams of every other instance of the service.
 */
export class LiveHub {
  private client: PoolClient | null = null;
  private readonly listeners = new Set<Listener>();
  private stopped = false;
  private connecting: Promise<void> | null = null;

  constructor(private readonly pool: Pool, private readonly log: Logger) {}

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    void this.ensure();
    return () => { this.listeners.delete(fn); };
  }

  get size() { return this.listeners.size; }

  /** Resolves once LISTEN is active. */
  ensure(): Promise<void> {
    if (this.client || this.stopped) return Promise.resolve();
    this.connecting ??= this.connect().finally(() => { this.connecting = null; });
    return this.connecting;
  }

  private async connect(): Promise<void> {
    try {
      const client = await this.pool.connect();
      client.on('notification', (msg) => {
        if (msg.channel !== NOTIFY_CHANNEL || !msg.payload) return;
        let e: LiveEvent;
        try { e = JSON.parse(msg.payload) as LiveEvent; } catch { return; }
        for (const fn of this.listeners) fn(e);
      });
      client.on('error', (err) => {
        if (this.client !== client) return; // already given back (stopped, or a failed LISTEN)
        this.log.warn({ err: err.message }, 'live notifications listener lost; reconnecting');
        this.discard(client);
        if (!this.stopped) setTimeout(() => void this.ensure(), 1_000).unref();
      });
      this.client = client;
      try {
        await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
      } catch (err) {
        this.discard(client);
        throw err;
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'live notifications listener failed; retrying');
      if (!this.stopped) setTimeout(() => void this.ensure(), 1_000).unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.listeners.clear();
    const c = this.client;
    if (c) this.discard(c);
  }

  /**
   * Gives the listening connection back destroyed: it carries a LISTEN and our handlers, which
   * must not follow it into the pool (and an error after this finds it no longer ours).
   */
  private discard(client: PoolClient): void {
    if (this.client === client) this.client = null;
    client.removeAllListeners('notification');
    client.release(true);
  }
}
