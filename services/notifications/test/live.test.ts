import { createLogger } from '@aos/core';
import { createPool, type Pool } from '@aos/db';
import { createTestDatabase, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiveHub, type LiveEvent } from '../src/domain/live.js';
import { NOTIFY_CHANNEL } from '../src/domain/notifications.js';

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let pool: Pool;
const log = createLogger('live-test', 'silent');

beforeAll(async () => {
  db = await createTestDatabase('live');
  pool = createPool(db.url, log, 4);
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

const notify = (e: LiveEvent) => pool.query('SELECT pg_notify($1, $2)', [NOTIFY_CHANNEL, JSON.stringify(e)]);
/** Ends the server session that LISTENs, as a Postgres restart or a dropped database would. */
const killListener = () => pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'`);
/** Ends every session of the hub's pool (from a connection of its own), as dropping the database does. */
async function killPoolSessions() {
  const killer = createPool(db.url, log, 1);
  await killer.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`);
  await killer.end();
}

describe('live notifications hub', () => {
  it('reconnects when its listening session is killed and keeps delivering', async () => {
    const hub = new LiveHub(pool, log);
    const seen: number[] = [];
    hub.subscribe((e) => seen.push(e.id));
    await hub.ensure();
    await notify({ id: 1, orgId: 'o', userId: null });
    await waitFor(async () => seen.includes(1), { message: 'first notification' });
    await killListener();
    await waitFor(async () => {
      await notify({ id: 2, orgId: 'o', userId: null });
      return seen.includes(2);
    }, { timeoutMs: 10_000, message: 'a notification after the reconnect' });
    await hub.stop();
  });

  it('once stopped, a later error on its old connection is ignored (no double release) and nothing is delivered', async () => {
    const hub = new LiveHub(pool, log);
    const seen: number[] = [];
    hub.subscribe((e) => seen.push(e.id));
    await hub.ensure();
    await hub.stop();
    await killPoolSessions(); // an uncaught "Release called on client which has already been released" would fail the run
    await notify({ id: 3, orgId: 'o', userId: null });
    // The pool's remaining connections carry no LISTEN nor handler of the hub.
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %' AND state = 'idle'`);
    expect(rows[0].n).toBe(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toEqual([]);
  });
});
