import { Queues } from '@aos/contracts';
import { defineService } from '@aos/runtime';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writer } from '../../../test/platform/fixtures/services.js';
import {
  createNamespace, createTcpProxy, createTestDatabase, ensureInfra, infraUrls, removeRegistered, sleep, startTestService, sweepStale, uniqueId,
} from '../src/index.js';
import { connectBus } from '@aos/bus';
import { createLogger } from '@aos/core';

/** The testkit leaves nothing behind: not after a normal close, a failed start, a close before NATS answered, or a killed run. */
const urls = infraUrls();
const admin = new pg.Client({ connectionString: urls.databaseUrl });
const redis = new Redis(urls.redisUrl, { lazyConnect: true });
let nc: Awaited<ReturnType<typeof connect>>;

beforeAll(async () => {
  await admin.connect();
  await redis.connect();
  nc = await connect({ servers: urls.natsUrl });
});
afterAll(async () => {
  await admin.end();
  redis.disconnect();
  await nc.close();
});

const databaseExists = async (name: string) => (await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1;
const databasesLike = async (pattern: string) => (await admin.query('SELECT datname FROM pg_database WHERE datname LIKE $1', [pattern])).rows.length;
const streamExists = async (name: string) => {
  const jsm = await jetstreamManager(nc);
  return jsm.streams.info(name).then(() => true, () => false);
};
const keysWith = async (prefix: string) => (await redis.keys(`${prefix}:*`)).length;
const dbName = (url: string) => new URL(url).pathname.slice(1);

describe('testkit cleanup', () => {
  it('close() drops the database and removes the namespace\'s streams and Redis keys', async () => {
    const svc = await startTestService(writer);
    await svc.ctx.bus;
    await svc.ctx.queues.add(Queues.factory, 'probe', { n: 1 });
    const { stream, deadLetterStream } = svc.namespace.bus;
    expect(await databaseExists(dbName(svc.databaseUrl))).toBe(true);
    expect(await streamExists(stream)).toBe(true);
    expect(await keysWith(svc.namespace.redisPrefix)).toBeGreaterThan(0);
    await svc.close();
    expect(await databaseExists(dbName(svc.databaseUrl))).toBe(false);
    expect(await streamExists(stream)).toBe(false);
    expect(await streamExists(deadLetterStream)).toBe(false);
    expect(await keysWith(svc.namespace.redisPrefix)).toBe(0);
  });

  it('a service that fails to start leaves no database behind', async () => {
    const label = `broken_${uniqueId()}`;
    const broken = defineService({ ...writer, name: label, migrationsFolder: fileURLToPath(new URL('./no-such-migrations', import.meta.url)) });
    await expect(startTestService(broken)).rejects.toThrow();
    expect(await databasesLike(`aos_t_${label}_%`)).toBe(0);
  });

  it('a service closed before NATS answered never creates its streams afterwards', async () => {
    const proxy = await createTcpProxy(urls.natsUrl);
    proxy.down();
    try {
      const svc = await startTestService(writer, { env: { NATS_URL: proxy.url('nats:') } });
      await svc.close();
      proxy.up();
      await sleep(2_500); // past the 1 s first-connect retry, twice
      expect(await streamExists(svc.namespace.bus.stream)).toBe(false);
    } finally {
      await proxy.close();
    }
  });

  it('the run registry removes what a test created and never cleaned up', async () => {
    const ns = createNamespace();
    const db = await createTestDatabase('forgotten');
    const bus = await connectBus(urls.natsUrl, ns.bus, 'forgotten', createLogger('t', 'silent'));
    await bus.nc.close();
    await redis.set(`${ns.redisPrefix}:x`, '1');
    const removed = await removeRegistered(`ns ${ns.id}\ndb ${db.url}\nns ${ns.id}\n`);
    expect(removed).toEqual({ databases: 1, namespaces: 1 });
    expect(await databaseExists(dbName(db.url))).toBe(false);
    expect(await streamExists(ns.bus.stream)).toBe(false);
    expect(await keysWith(ns.redisPrefix)).toBe(0);
  });

  it('the stale sweep removes old leftovers and keeps anything younger than the cut-off', async () => {
    const ns = createNamespace();
    const db = await createTestDatabase('stale');
    const bus = await connectBus(urls.natsUrl, ns.bus, 'stale', createLogger('t', 'silent'));
    await bus.nc.close();
    await redis.set(`${ns.redisPrefix}:x`, '1');
    const mine = (name: string) => name.includes(ns.id) || name === dbName(db.url);
    expect(await sweepStale(60 * 60 * 1000, { only: mine })).toEqual({ databases: 0, streams: 0, keys: 0 });
    expect(await streamExists(ns.bus.stream)).toBe(true);
    expect(await sweepStale(0, { only: mine })).toEqual({ databases: 1, streams: 2, keys: 1 });
    expect(await databaseExists(dbName(db.url))).toBe(false);
    expect(await streamExists(ns.bus.stream)).toBe(false);
    expect(await streamExists(ns.bus.deadLetterStream)).toBe(false);
    expect(await keysWith(ns.redisPrefix)).toBe(0);
  });
});

describe('ensureInfra', () => {
  it('says what is unreachable and how to start each when nothing answers', async () => {
    const err = await ensureInfra({
      TEST_DATABASE_URL: 'postgres://postgres:hunter2@127.0.0.1:1/postgres', NATS_URL: 'nats://127.0.0.1:2', REDIS_URL: 'redis://127.0.0.1:3',
    }, { containers: false }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/^Test dependencies not reachable: postgres, nats, redis/);
    expect(err?.message).toContain('postgres at postgres://postgres:***@127.0.0.1:1/postgres');
    expect(err?.message).toContain('nats at nats://127.0.0.1:2');
    expect(err?.message).toContain('pg_ctlcluster');
    expect(err?.message).toContain('nats-server');
    expect(err?.message).toContain('redis-server');
    expect(err?.message).not.toContain('hunter2');
  });

  it('returns the servers in the environment when they answer', async () => {
    const { urls: found } = await ensureInfra(process.env, { containers: false });
    expect(found).toEqual(infraUrls());
  });
});
