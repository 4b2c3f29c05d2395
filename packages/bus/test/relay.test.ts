import { createLogger } from '@aos/core';
import { createDb, createPool, runMigrations, type Pool } from '@aos/db';
import { createNamespace, createTestDatabase, infraUrls, removeNamespace, sleep, waitFor } from '@aos/testkit';
import { DiscardPolicy, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, Outbox, OutboxRelay, streamConfigs, systemMeta, type BusConnection, type BusNames } from '../src/index.js';

const log = createLogger('relay-test', process.env.TEST_LOG_LEVEL ?? 'silent');
const ns = createNamespace();
let db: { url: string; drop: () => Promise<void> };
let pool: Pool;
let bus: BusConnection;
const relays: OutboxRelay[] = [];
const pools: Pool[] = [];

beforeAll(async () => {
  db = await createTestDatabase('relay');
  pool = createPool(db.url);
  await runMigrations(pool);
  bus = await connectBus(infraUrls().natsUrl, ns.bus, 'relay-test', log);
});

afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()));
  await Promise.all(pools.map((p) => p.end()));
  await bus?.nc.close();
  await pool?.end();
  await db?.drop();
  await removeNamespace(ns);
});

/** A relay as a separate process would run it: its own pool and lock session. */
function relay(opts: Partial<ConstructorParameters<typeof OutboxRelay>[0]> = {}): OutboxRelay {
  const own = createPool(db.url, undefined, 3);
  pools.push(own);
  const r = new OutboxRelay({ databaseUrl: db.url, pool: own, bus: Promise.resolve(bus), log, lockName: 'relay-test', lockRetryMs: 100, pollIntervalMs: 200, ...opts });
  relays.push(r);
  return r;
}

async function enqueue(n: number, names: BusNames = ns.bus): Promise<string[]> {
  const outbox = new Outbox('relay-test', names);
  const ids: string[] = [];
  await createDb(pool, {}).transaction(async (tx) => {
    for (let i = 0; i < n; i++) ids.push((await outbox.enqueue(tx, 'platform.probe.recorded', { probeId: i, label: `r-${i}` }, systemMeta(null, null))).id);
  });
  return ids;
}

const pending = async () => Number((await pool.query('SELECT count(*) AS n FROM aos_outbox WHERE published_at IS NULL')).rows[0].n);
const streamMessages = async (stream = ns.bus.stream) => (await bus.jsm.streams.info(stream)).state.messages;

describe('stream configuration', () => {
  it('creates the events and dead-letter streams with the documented settings, and restores drifted ones', async () => {
    for (const want of streamConfigs(ns.bus)) {
      const { config } = await bus.jsm.streams.info(want.name);
      expect(config).toMatchObject({
        subjects: want.subjects, retention: RetentionPolicy.Limits, storage: StorageType.File, discard: DiscardPolicy.Old,
        duplicate_window: 2 * 60 * 1e9, max_age: want.max_age,
      });
    }
    await bus.jsm.streams.update(ns.bus.stream, { duplicate_window: 1e9 });
    const again = await connectBus(infraUrls().natsUrl, ns.bus, 'relay-test-2', log);
    await again.nc.close();
    expect((await bus.jsm.streams.info(ns.bus.stream)).config.duplicate_window).toBe(2 * 60 * 1e9);
  });
});

describe('outbox relay', () => {
  it('is woken by NOTIFY at commit (no polling needed) and publishes with Nats-Msg-Id = event id', async () => {
    const r = relay({ pollIntervalMs: 60_000 });
    r.start();
    await waitFor(() => r.active, { message: 'relay active' });
    const before = await streamMessages();
    const [id] = await enqueue(1);
    await waitFor(async () => (await pending()) === 0, { timeoutMs: 10_000, message: 'published without waiting for the 60 s poll' });
    expect(await streamMessages()).toBe(before + 1);
    const msg = await bus.jsm.streams.getMessage(ns.bus.stream, { last_by_subj: `${ns.bus.subjectRoot}.platform.probe.recorded` });
    expect(msg?.header.get('Nats-Msg-Id')).toBe(id);
    expect(msg?.json<{ id: string }>().id).toBe(id);

    // A crash between the PubAck and the UPDATE re-publishes the row: the broker drops the duplicate.
    await pool.query('UPDATE aos_outbox SET published_at = NULL WHERE id = $1', [id]);
    await pool.query("SELECT pg_notify('aos_outbox', '')");
    await waitFor(async () => (await pending()) === 0, { timeoutMs: 10_000 });
    expect(await streamMessages()).toBe(before + 1);
    await r.stop();
  });

  it('keeps a NOTIFY that arrives while it publishes after a timed-out wait (the next wait returns at once)', async () => {
    // Holds the relay inside a publish pass, after its SELECT of pending rows, until released.
    let arm: { held: () => void; release: Promise<void> } | null = null;
    const own = createPool(db.url, undefined, 3);
    pools.push(own);
    const gated = new Proxy(own, {
      get(target, prop, receiver) {
        if (prop !== 'query') return Reflect.get(target, prop, receiver);
        return async (...args: Parameters<Pool['query']>) => {
          const result = await (target.query as (...a: unknown[]) => Promise<unknown>)(...args);
          const gate = arm;
          if (gate && String(args[0]).includes('WHERE published_at IS NULL ORDER BY')) {
            arm = null;
            gate.held();
            await gate.release;
          }
          return result;
        };
      },
    });
    const r = relay({ pool: gated, pollIntervalMs: 2_000 });
    r.start();
    await waitFor(() => r.active);
    await sleep(300); // past the first pass: waiting for the poll timer
    let release!: () => void;
    const held = new Promise<void>((resolve) => { arm = { held: resolve, release: new Promise<void>((done) => { release = done; }) }; });
    await held; // the poll timer fired: the relay is in a pass that has already read the (empty) outbox
    await enqueue(1); // its NOTIFY arrives while the relay is busy
    await sleep(300);
    release();
    await waitFor(async () => (await pending()) === 0, { timeoutMs: 1_000, message: 'published at once, not at the next 2 s poll' });
    await r.stop();
  });

  it('falls back to polling when no NOTIFY arrives', async () => {
    const r = relay({ pollIntervalMs: 200 });
    r.start();
    await waitFor(() => r.active);
    await pool.query('ALTER TABLE aos_outbox DISABLE TRIGGER aos_outbox_notify');
    try {
      await enqueue(3);
      await waitFor(async () => (await pending()) === 0, { timeoutMs: 10_000, message: 'published by the polling fallback' });
    } finally {
      await pool.query('ALTER TABLE aos_outbox ENABLE TRIGGER aos_outbox_notify');
      await r.stop();
    }
  });

  it('marks a row sent only after the PubAck: unacknowledged rows stay pending with the error', async () => {
    // Events on a subject no stream captures get no PubAck.
    const orphan: BusNames = { subjectRoot: `${ns.bus.subjectRoot}x`, stream: `${ns.bus.stream}X`, deadLetterStream: `${ns.bus.deadLetterStream}X` };
    const r = relay();
    r.start();
    const [id] = await enqueue(1, orphan);
    const row = await waitFor(async () => (await pool.query('SELECT published_at, attempts, last_error FROM aos_outbox WHERE id = $1 AND attempts >= 2', [id])).rows[0],
      { timeoutMs: 10_000, message: 'two failed attempts' });
    expect(row.published_at).toBeNull();
    expect(row.last_error).toMatch(/no responders|jetstream is not enabled/i);
    expect(await r.backlog()).toBe(1);

    await bus.jsm.streams.add({ name: orphan.stream, subjects: [`${orphan.subjectRoot}.>`], storage: StorageType.File });
    try {
      await waitFor(async () => (await pending()) === 0, { timeoutMs: 15_000, message: 'published once a stream acknowledges' });
      expect(await streamMessages(orphan.stream)).toBe(1);
    } finally {
      await r.stop();
      await bus.jsm.streams.delete(orphan.stream);
    }
  });

  it('recreates a stream the broker lost and publishes into it', async () => {
    const r = relay();
    r.start();
    await waitFor(() => r.active);
    await bus.jsm.streams.delete(ns.bus.stream);
    await enqueue(2);
    await waitFor(async () => (await pending()) === 0, { timeoutMs: 15_000, message: 'published after recreating the stream' });
    expect(await streamMessages()).toBe(2);
    await r.stop();
  });

  it('runs one active relay per service: a standby publishes nothing, and takes over when the active one stops or dies', async () => {
    const a = relay();
    const b = relay();
    a.start();
    b.start();
    await waitFor(() => a.active || b.active, { message: 'one relay active' });
    await sleep(500); // five lock retries of the standby
    expect([a.active, b.active].filter(Boolean)).toHaveLength(1);
    const [first, second] = a.active ? [a, b] : [b, a];

    const before = await streamMessages();
    await enqueue(20);
    await waitFor(async () => (await pending()) === 0, { message: 'published by the active relay' });
    expect(await streamMessages()).toBe(before + 20);
    expect(second.active).toBe(false);

    // Stopping releases the lock: the standby takes over.
    await first.stop();
    await waitFor(() => second.active, { timeoutMs: 5_000, message: 'standby took over after a stop' });
    await enqueue(5);
    await waitFor(async () => (await pending()) === 0);
    expect(await streamMessages()).toBe(before + 25);

    // A relay whose database session dies loses the lock with it; a third relay (a restarted process) takes over.
    const c = relay();
    c.start();
    const { rows } = await pool.query(
      "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())");
    expect(rows).toHaveLength(1);
    await pool.query('SELECT pg_terminate_backend($1)', [rows[0].pid]);
    await waitFor(() => !second.active || c.active, { timeoutMs: 5_000, message: 'killed session noticed' });
    await waitFor(() => [second.active, c.active].filter(Boolean).length === 1, { timeoutMs: 5_000, message: 'exactly one relay active again' });
    await enqueue(5);
    await waitFor(async () => (await pending()) === 0, { message: 'published after the takeover' });
    expect(await streamMessages()).toBe(before + 30);
    await second.stop();
    await c.stop();
  });

  it('deletes published rows after the retention and old inbox rows, keeping the rest', async () => {
    const [old, recent, unpublished] = await enqueue(3);
    await pool.query("UPDATE aos_outbox SET published_at = now() - interval '73 hours' WHERE id = $1", [old]);
    await pool.query("UPDATE aos_outbox SET published_at = now() - interval '71 hours' WHERE id = $1", [recent]);
    await pool.query("INSERT INTO aos_inbox (consumer, event_id, event_type, processed_at) VALUES ('c', $1, 't', now() - interval '31 days'), ('c', $2, 't', now() - interval '29 days')", [old, recent]);
    // The third row is published now by the relay; being new, it stays.
    const r = relay();
    r.start();
    await waitFor(async () => (await pool.query('SELECT 1 FROM aos_outbox WHERE id = $1', [old])).rowCount === 0, { message: 'old published row deleted' });
    await r.stop();
    expect((await pool.query('SELECT id FROM aos_outbox WHERE id = ANY($1)', [[recent, unpublished]])).rowCount).toBe(2);
    expect((await pool.query("SELECT event_id FROM aos_inbox WHERE consumer = 'c'")).rows.map((x) => x.event_id)).toEqual([recent]);
  });
});
