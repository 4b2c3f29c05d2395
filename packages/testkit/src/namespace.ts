import type { BusNames } from '@aos/bus';
import { dropDatabase, ensureDatabase } from '@aos/db';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { infraUrls } from './infra.js';

export const uniqueId = () => randomBytes(5).toString('hex');

/** A test's own slice of the shared servers: NATS subjects/streams and a Redis key prefix. */
export interface TestNamespace {
  id: string;
  bus: BusNames;
  redisPrefix: string;
}

export function createNamespace(): TestNamespace {
  const id = uniqueId();
  return {
    id,
    bus: { subjectRoot: `t${id}`, stream: `T${id}_EVENTS`, deadLetterStream: `T${id}_DLQ` },
    redisPrefix: `t${id}`,
  };
}

export async function removeNamespace(ns: TestNamespace): Promise<void> {
  const urls = infraUrls();
  const nc = await connect({ servers: urls.natsUrl.split(','), timeout: 3_000 }).catch(() => null);
  if (nc) {
    try {
      const jsm = await jetstreamManager(nc);
      for (const s of [ns.bus.stream, ns.bus.deadLetterStream]) await jsm.streams.delete(s).catch(() => {});
    } finally {
      await nc.close();
    }
  }
  const redis = new Redis(urls.redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${ns.redisPrefix}:*`, 'COUNT', 500);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } catch {
    // best effort
  } finally {
    redis.disconnect();
  }
}

/** A fresh, empty database for one test file; dropped by the returned function. */
export async function createTestDatabase(label: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const admin = new URL(infraUrls().databaseUrl);
  const name = `aos_t_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${uniqueId()}`;
  admin.pathname = `/${name}`;
  const url = admin.toString();
  await ensureDatabase(url);
  return { url, drop: () => dropDatabase(url) };
}
