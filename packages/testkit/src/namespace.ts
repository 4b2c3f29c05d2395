import type { BusNames } from '@aos/bus';
import { dropDatabase, ensureDatabase } from '@aos/db';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import pg from 'pg';
import { infraUrls } from './infra.js';

export const uniqueId = () => randomBytes(5).toString('hex');

/** A test's own slice of the shared servers: NATS subjects/streams and a Redis key prefix. */
export interface TestNamespace {
  id: string;
  bus: BusNames;
  redisPrefix: string;
}

/** Env var naming the file where this test run lists what it created (set by the global setup). */
export const REGISTRY_ENV = 'AOS_TESTKIT_REGISTRY';

/** Notes a created resource in the run's registry, so the run's teardown removes it even if the test did not. */
function register(kind: 'ns' | 'db', value: string): void {
  const file = process.env[REGISTRY_ENV];
  if (file) appendFileSync(file, `${kind} ${value}\n`);
}

export function namespaceFromId(id: string): TestNamespace {
  return { id, bus: { subjectRoot: `t${id}`, stream: `T${id}_EVENTS`, deadLetterStream: `T${id}_DLQ` }, redisPrefix: `t${id}` };
}

export function createNamespace(): TestNamespace {
  const ns = namespaceFromId(uniqueId());
  register('ns', ns.id);
  return ns;
}

/** Removes a namespace's streams and Redis keys. Idempotent; best effort when a server is down. */
export async function removeNamespace(ns: TestNamespace): Promise<void> {
  await removeNamespaces([ns]);
}

export async function removeNamespaces(namespaces: TestNamespace[]): Promise<void> {
  if (namespaces.length === 0) return;
  const urls = infraUrls();
  const nc = await connect({ servers: urls.natsUrl.split(','), timeout: 3_000 }).catch(() => null);
  if (nc) {
    try {
      const jsm = await jetstreamManager(nc);
      for (const ns of namespaces) {
        for (const s of [ns.bus.stream, ns.bus.deadLetterStream]) await jsm.streams.delete(s).catch(() => {});
      }
    } finally {
      await nc.close();
    }
  }
  const redis = new Redis(urls.redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await redis.connect();
    for (const ns of namespaces) await deleteKeys(redis, `${ns.redisPrefix}:*`);
  } catch {
    // best effort
  } finally {
    redis.disconnect();
  }
}

async function deleteKeys(redis: Redis, pattern: string, keep: (key: string) => Promise<boolean> = async () => false): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
    cursor = next;
    const doomed: string[] = [];
    for (const key of keys) if (!(await keep(key))) doomed.push(key);
    if (doomed.length) deleted += await redis.del(...doomed);
  } while (cursor !== '0');
  return deleted;
}

/** A fresh, empty database for one test file; dropped by the returned function. */
export async function createTestDatabase(label: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const admin = new URL(infraUrls().databaseUrl);
  const name = `aos_t_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase().slice(0, 40)}_${uniqueId()}`;
  admin.pathname = `/${name}`;
  const url = admin.toString();
  register('db', url);
  await ensureDatabase(url);
  return { url, drop: () => dropDatabase(url) };
}

/** Everything the run's registry lists (databases and namespaces), removed. Returns what was listed. */
export async function removeRegistered(registry: string): Promise<{ databases: number; namespaces: number }> {
  const lines = registry.split('\n').map((l) => l.trim()).filter(Boolean);
  const dbs = [...new Set(lines.filter((l) => l.startsWith('db ')).map((l) => l.slice(3)))];
  const ids = [...new Set(lines.filter((l) => l.startsWith('ns ')).map((l) => l.slice(3)))];
  for (const url of dbs) await dropDatabase(url).catch(() => {});
  await removeNamespaces(ids.map(namespaceFromId));
  return { databases: dbs.length, namespaces: ids.length };
}

const TEST_STREAM = /^T[0-9a-f]{10}_(EVENTS|DLQ)$/;
const TEST_KEY = /^t[0-9a-f]{10}:/;

/**
 * Removes what killed test runs left behind on the shared servers: test databases,
 * streams and Redis keys older than `maxAgeMs` (far longer than any run, so a run still
 * going on this machine is never touched). `only` narrows the sweep to matching names
 * (database, stream or key). Returns how many of each were removed.
 */
export async function sweepStale(
  maxAgeMs: number, opts: { only?: (name: string) => boolean } = {},
): Promise<{ databases: number; streams: number; keys: number }> {
  const only = opts.only ?? (() => true);
  const urls = infraUrls();
  const removed = { databases: 0, streams: 0, keys: 0 };
  const client = new pg.Client({ connectionString: urls.databaseUrl, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    // A database's PG_VERSION file is written when it is created (reading it needs superuser; else nothing is swept).
    // missing_ok: a database another run drops meanwhile must not fail the whole query.
    const { rows } = await client.query<{ datname: string }>(
      `SELECT datname FROM pg_database
        WHERE datname ~ '^aos_t_' AND (pg_stat_file('base/' || oid || '/PG_VERSION', true)).modification < now() - make_interval(secs => $1)`,
      [maxAgeMs / 1000]);
    for (const { datname } of rows.filter((r) => only(r.datname))) {
      const url = new URL(urls.databaseUrl);
      url.pathname = `/${datname}`;
      await dropDatabase(url.toString()).then(() => { removed.databases++; }, () => {});
    }
  } catch {
    // not permitted or not reachable: nothing to sweep here
  } finally {
    await client.end().catch(() => {});
  }
  const nc = await connect({ servers: urls.natsUrl.split(','), timeout: 3_000 }).catch(() => null);
  if (nc) {
    try {
      const jsm = await jetstreamManager(nc);
      const cutoff = Date.now() - maxAgeMs;
      for await (const s of jsm.streams.list()) {
        if (TEST_STREAM.test(s.config.name) && only(s.config.name) && Date.parse(s.created) < cutoff) {
          if (await jsm.streams.delete(s.config.name).catch(() => false)) removed.streams++;
        }
      }
    } catch {
      // best effort
    } finally {
      await nc.close();
    }
  }
  const redis = new Redis(urls.redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await redis.connect();
    const idleSeconds = maxAgeMs / 1000;
    removed.keys = await deleteKeys(redis, 't*:*', async (key) => {
      if (!TEST_KEY.test(key) || !only(key)) return true;
      const idle = (await redis.object('IDLETIME', key)) as number | null;
      return idle === null || idle < idleSeconds;
    });
  } catch {
    // best effort
  } finally {
    redis.disconnect();
  }
  return removed;
}
