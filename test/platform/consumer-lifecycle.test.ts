import { EventConsumers } from '@aos/bus';
import { createLogger } from '@aos/core';
import { createNamespace, createTcpProxy, removeNamespace, sleep, startTestService, userPrincipal, waitFor, type TcpProxy } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { count, reader, readerControl, writer } from './fixtures/services.js';

/** Consumers under stress: failing transactions, a broker outage, a lost consumer, a stop with messages buffered. */
const ns = createNamespace();
const principal = userPrincipal();
let natsProxy: TcpProxy;
let w: Awaited<ReturnType<typeof startTestService<typeof writer.schema, typeof writer.config>>>;
let r: Awaited<ReturnType<typeof startTestService<typeof reader.schema, typeof reader.config>>>;

const write = async (label: string) => expect((await w.inject(principal, { method: 'POST', url: '/probes', payload: { label } })).statusCode).toBe(201);
const projected = (like: string) => count(r.ctx.pool, 'SELECT count(*) AS n FROM probe_projection WHERE label LIKE $1', [like]);
const attempts = (like: string) => count(r.ctx.pool,
  "SELECT count(*) AS n FROM handler_attempts a JOIN aos_inbox i USING (event_id) WHERE i.consumer = 'probe-reader:probe-projection' AND a.event_id IN (SELECT event_id FROM probe_projection WHERE label LIKE $1)", [like]);
const published = async () => (await count(w.ctx.pool, 'SELECT count(*) AS n FROM aos_outbox WHERE published_at IS NULL')) === 0;

beforeAll(async () => {
  // The reader reaches NATS through a proxy the tests cut; the writer connects directly.
  natsProxy = await createTcpProxy(process.env.NATS_URL ?? 'nats://127.0.0.1:4222');
  w = await startTestService(writer, { namespace: ns });
  r = await startTestService(reader, { namespace: ns, env: { NATS_URL: natsProxy.url('nats:') } });
});

afterAll(async () => {
  await w?.close();
  await r?.close();
  await natsProxy?.close();
  await removeNamespace(ns);
});

describe('event consumers', () => {
  it('roll back a handler whose transaction fails midway: no inbox row, no effect, redelivered and then handled once', async () => {
    await write('flaky-1');
    await waitFor(() => projected('flaky-1'), { message: 'flaky event handled on its second delivery' });
    const { rows } = await r.ctx.pool.query("SELECT event_id FROM probe_projection WHERE label = 'flaky-1'");
    expect(rows).toHaveLength(1);
    expect(await count(r.ctx.pool, 'SELECT count(*) AS n FROM handler_attempts WHERE event_id = $1', [rows[0].event_id])).toBe(2);
    expect(await count(r.ctx.pool, 'SELECT count(*) AS n FROM aos_inbox WHERE event_id = $1', [rows[0].event_id])).toBe(1);
  });

  it('resume after the connection to NATS is cut and restored, without a restart', async () => {
    natsProxy.down();
    for (let i = 0; i < 5; i++) await write(`cut-${i}`);
    await waitFor(published, { message: 'writer published while the reader is cut off' });
    await sleep(300);
    expect(await projected('cut-%')).toBe(0);
    natsProxy.up();
    await waitFor(async () => (await projected('cut-%')) === 5, { timeoutMs: 20_000, message: 'events consumed after the reconnect' });
    expect(await attempts('cut-%')).toBe(5);
  });

  it('recreate their durable consumer when the broker lost it, without handling old events again', async () => {
    const bus = await w.ctx.bus;
    const mine = await waitFor(async () => {
      const durables: string[] = [];
      for await (const c of bus.jsm.consumers.list(ns.bus.stream)) durables.push(c.name);
      const found = durables.filter((d) => d.startsWith('probe-reader--'));
      return found.length > 0 ? found : null;
    }, { message: 'the reader\'s durable consumer' });
    expect(mine).toHaveLength(1);
    const before = await projected('%');
    await bus.jsm.consumers.delete(ns.bus.stream, mine[0]!);
    await write('after-delete');
    await waitFor(() => projected('after-delete'), { timeoutMs: 30_000, message: 'event consumed by the recreated consumer' });
    // The new consumer starts from the stream's beginning; the inbox keeps old events from a second effect.
    await waitFor(async () => (await bus.jsm.consumers.info(ns.bus.stream, mine[0]!)).num_pending === 0);
    expect(await projected('%')).toBe(before + 1);
  });

  it('finish the handler in flight on stop and hand buffered messages back at once (nak), not after the ack wait', async () => {
    const release = readerControl.hold();
    const handled = () => count(r.ctx.pool, 'SELECT count(*) AS n FROM handler_attempts');
    const before = await handled();
    for (let i = 0; i < 5; i++) await write(`hold-${i}`);
    await waitFor(async () => (await handled()) === before + 1, { message: 'first held event in its handler' });
    const bus = await r.ctx.bus;
    const durable = 'probe-reader--probe-projection--platform_probe_recorded';
    await waitFor(async () => (await bus.jsm.consumers.info(ns.bus.stream, durable)).num_ack_pending === 5, { message: 'all five delivered to the process' });

    const stopping = r.ctx.consumers.stop();
    release();
    await stopping;
    expect(await projected('hold-%')).toBe(1); // the in-flight one finished

    // The next consumer gets them right away (the ack wait is 30 s).
    const next = new EventConsumers({ service: 'probe-reader', bus: w.ctx.bus, db: r.ctx.db, log: createLogger('next', 'silent'), maxDeliver: 5, backoffBaseMs: 50 });
    await next.start(reader.handlers!(r.ctx));
    try {
      await waitFor(async () => (await projected('hold-%')) === 5, { timeoutMs: 10_000, message: 'returned messages handled by the next consumer' });
      await sleep(500);
      } finally {
      await next.stop();
    }
  });
});
