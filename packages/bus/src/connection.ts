import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, DiscardPolicy, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '@aos/core';
import { deadLetterRoot, type BusNames } from './names.js';

export interface BusConnection {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: BusNames;
}

export interface ConnectBusOptions {
  /** Aborting gives up a connection still being made (a service stopping before NATS came up). */
  signal?: AbortSignal;
  /** Pause between first-connect attempts while NATS is unreachable (default 1 s). */
  retryMs?: number;
}

/**
 * Connects and keeps reconnecting forever: a service must keep serving (and queueing events
 * in its outbox) while NATS is away. Until the first connection succeeds it retries every
 * `retryMs`; once connected, the client reconnects by itself after any outage.
 */
export async function connectBus(url: string, names: BusNames, name: string, log: Logger, opts: ConnectBusOptions = {}): Promise<BusConnection> {
  const { signal } = opts;
  let nc: NatsConnection | undefined;
  for (let attempt = 1; !nc; attempt++) {
    if (signal?.aborted) throw new Error('nats connection abandoned: shutting down');
    try {
      nc = await connect({ servers: url.split(','), name, maxReconnectAttempts: -1, reconnectTimeWait: 1_000, waitOnFirstConnect: false, timeout: 3_000 });
    } catch (err) {
      if (attempt === 1) log.warn({ err: (err as Error).message }, 'nats not reachable; retrying until it is');
      await abortableSleep(opts.retryMs ?? 1_000, signal);
    }
  }
  const conn = nc;
  try {
    if (signal?.aborted) throw new Error('nats connection abandoned: shutting down');
    void (async () => {
      for await (const s of conn.status()) {
        if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') log.info({ nats: s.type }, `nats ${s.type}`);
      }
    })();
    const js = jetstream(conn, { timeout: 5_000 });
    const jsm = await jetstreamManager(conn, { timeout: 5_000 });
    await ensureStreams(jsm, names);
    return { nc: conn, js, jsm, names };
  } catch (err) {
    await conn.close().catch(() => {});
    throw err;
  }
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() { clearTimeout(timer); signal?.removeEventListener('abort', done); resolve(); }
    signal?.addEventListener('abort', done, { once: true });
  });
}

const DAY_NS = nanos(24 * 60 * 60 * 1000);
/** The broker drops a re-published `Nats-Msg-Id` inside this window; the inbox covers the rest. */
export const DUPLICATE_WINDOW_MS = 2 * 60 * 1000;

/** The stream settings AOS relies on (also re-applied to an existing stream whose settings drifted). */
export function streamConfigs(names: BusNames): Array<Pick<StreamConfig, 'name' | 'subjects' | 'max_age' | 'duplicate_window'>> {
  return [
    { name: names.stream, subjects: [`${names.subjectRoot}.>`], max_age: 7 * DAY_NS, duplicate_window: nanos(DUPLICATE_WINDOW_MS) },
    { name: names.deadLetterStream, subjects: [`${deadLetterRoot(names)}.>`], max_age: 30 * DAY_NS, duplicate_window: nanos(DUPLICATE_WINDOW_MS) },
  ];
}

/**
 * One events stream and one dead-letter stream: limits retention (7 and 30 days; consumers
 * keep their own position, so events are not removed once acked), file storage, one
 * replica locally. Durability of an acked publish depends on the server's `sync_interval`
 * (infra/nats/nats.conf: `always`, so an acknowledged event is on disk).
 */
export async function ensureStreams(jsm: JetStreamManager, names: BusNames): Promise<void> {
  for (const cfg of streamConfigs(names)) await ensureStream(jsm, cfg);
}

async function ensureStream(jsm: JetStreamManager, cfg: ReturnType<typeof streamConfigs>[number]) {
  try {
    const info = await jsm.streams.info(cfg.name);
    const c = info.config;
    const drifted = c.max_age !== cfg.max_age || c.duplicate_window !== cfg.duplicate_window
      || JSON.stringify(c.subjects ?? []) !== JSON.stringify(cfg.subjects);
    if (drifted) await jsm.streams.update(cfg.name, { subjects: cfg.subjects, max_age: cfg.max_age, duplicate_window: cfg.duplicate_window });
    return;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  try {
    await jsm.streams.add({
      ...cfg,
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      num_replicas: 1,
    });
  } catch (err) {
    // Another process created it between our info and add.
    if (!/already in use/i.test(String((err as Error).message))) throw err;
  }
}

export function isNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; message?: string; name?: string };
  return e?.name === 'StreamNotFoundError' || e?.name === 'ConsumerNotFoundError' || /not found/i.test(e?.message ?? '');
}

/**
 * A publish nobody answered: no stream captures the subject (or JetStream is not ready).
 * nats.js reports it as "jetstream is not enabled".
 */
export function isNoResponders(err: unknown): boolean {
  const e = err as { name?: string; message?: string };
  return e?.name === 'NoRespondersError' || e?.name === 'JetStreamNotEnabled' || /no responders|jetstream is not enabled/i.test(e?.message ?? '');
}
