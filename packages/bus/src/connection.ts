import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, DiscardPolicy, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import type { Logger } from '@aos/core';
import { deadLetterRoot, type BusNames } from './names.js';

export interface BusConnection {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: BusNames;
}

/** Connects and keeps reconnecting forever: a service must keep serving (and queueing events in its outbox) while NATS is away. */
export async function connectBus(url: string, names: BusNames, name: string, log: Logger): Promise<BusConnection> {
  const nc = await connect({
    servers: url.split(','),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1_000,
    waitOnFirstConnect: true,
  });
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') {
        log.info({ nats: s.type }, `nats ${s.type}`);
      }
    }
  })();
  const js = jetstream(nc, { timeout: 5_000 });
  const jsm = await jetstreamManager(nc, { timeout: 5_000 });
  await ensureStreams(jsm, names);
  return { nc, js, jsm, names };
}

const DAY_NS = nanos(24 * 60 * 60 * 1000);

/**
 * One events stream and one dead-letter stream. File storage; 7 days of events (the
 * inbox tables, not the broker, make consumers idempotent beyond the 2 min dedupe window).
 */
export async function ensureStreams(jsm: JetStreamManager, names: BusNames): Promise<void> {
  await ensureStream(jsm, {
    name: names.stream,
    subjects: [`${names.subjectRoot}.>`],
    max_age: 7 * DAY_NS,
    duplicate_window: nanos(2 * 60 * 1000),
  });
  await ensureStream(jsm, {
    name: names.deadLetterStream,
    subjects: [`${deadLetterRoot(names)}.>`],
    max_age: 30 * DAY_NS,
    duplicate_window: nanos(2 * 60 * 1000),
  });
}

async function ensureStream(jsm: JetStreamManager, cfg: { name: string; subjects: string[]; max_age: number; duplicate_window: number }) {
  try {
    await jsm.streams.info(cfg.name);
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
