import { listDeadLetters, subjectFor } from '@aos/bus';
import { adminPrincipal, createTcpProxy, startTestService, userPrincipal, waitFor, sleep, createNamespace, removeNamespace, type TcpProxy } from '@aos/testkit';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { count, reader, readerControl, writer } from './fixtures/services.js';

const ns = createNamespace();
const principal = userPrincipal();
let natsProxy: TcpProxy;
let w: Awaited<ReturnType<typeof startTestService<typeof writer.schema, typeof writer.config>>>;
let r: Awaited<ReturnType<typeof startTestService<typeof reader.schema, typeof reader.config>>>;

const write = (label: string, extra: Record<string, unknown> = {}) =>
  w.inject(principal, { method: 'POST', url: '/probes', payload: { label, ...extra } });
const projected = (label: string) => count(r.ctx.pool, 'SELECT count(*) AS n FROM probe_projection WHERE label = $1', [label]);

beforeAll(async () => {
  // The writer reaches NATS through a proxy the tests can take down; the reader connects directly.
  natsProxy = await createTcpProxy(process.env.NATS_URL ?? 'nats://127.0.0.1:4222');
  w = await startTestService(writer, { namespace: ns, env: { NATS_URL: natsProxy.url('nats:'), BUS_MAX_DELIVER: '3' } });
  r = await startTestService(reader, { namespace: ns, env: { BUS_MAX_DELIVER: '3', BUS_BACKOFF_BASE_MS: '200' } });
});

afterAll(async () => {
  await w?.close();
  await r?.close();
  await natsProxy?.close();
  await removeNamespace(ns);
});

describe('outbox → JetStream → durable consumer', () => {
  it('delivers a committed write to the other service exactly once, with the trace', async () => {
    const res = await write('first');
    expect(res.statusCode).toBe(201);
    const traceId = res.headers['x-trace-id'];
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(await count(w.ctx.pool, 'SELECT count(*) AS n FROM aos_outbox')).toBeGreaterThanOrEqual(1);

    await waitFor(() => projected('first'), { message: 'projection of "first"' });
    await sleep(300);
    expect(await projected('first')).toBe(1);
    const { rows } = await r.ctx.pool.query('SELECT trace_id FROM probe_projection WHERE label = $1', ['first']);
    expect(rows[0].trace_id).toBe(traceId);
    await waitFor(async () => (await count(w.ctx.pool, 'SELECT count(*) AS n FROM aos_outbox WHERE published_at IS NULL')) === 0);
  });

  it('publishes nothing for a rolled-back transaction', async () => {
    const res = await write('rolled-back', { failAfterEnqueue: true });
    expect(res.statusCode).toBe(422);
    expect(await count(w.ctx.pool, "SELECT count(*) AS n FROM aos_outbox WHERE envelope->'data'->>'label' = 'rolled-back'")).toBe(0);
    expect(await count(w.ctx.pool, "SELECT count(*) AS n FROM probes WHERE label = 'rolled-back'")).toBe(0);
    // A later committed write arrives; the rolled-back one never does.
    await write('after-rollback');
    await waitFor(() => projected('after-rollback'));
    expect(await projected('rolled-back')).toBe(0);
  });

  it('keeps events while NATS is down and delivers each once when it is back', async () => {
    natsProxy.down();
    const labels = Array.from({ length: 20 }, (_, i) => `offline-${i}`);
    for (const label of labels) expect((await write(label)).statusCode).toBe(201);
    await sleep(1_000);
    expect(await count(w.ctx.pool, "SELECT count(*) AS n FROM aos_outbox WHERE published_at IS NULL AND envelope->'data'->>'label' LIKE 'offline-%'")).toBe(20);
    expect(await count(r.ctx.pool, "SELECT count(*) AS n FROM probe_projection WHERE label LIKE 'offline-%'")).toBe(0);

    natsProxy.up();
    await waitFor(async () => (await count(r.ctx.pool, "SELECT count(*) AS n FROM probe_projection WHERE label LIKE 'offline-%'")) >= 20,
      { timeoutMs: 30_000, message: 'all offline writes projected' });
    await sleep(500);
    const { rows } = await r.ctx.pool.query("SELECT label, count(*)::int AS n FROM probe_projection WHERE label LIKE 'offline-%' GROUP BY label");
    expect(rows).toHaveLength(20);
    expect(rows.every((row) => row.n === 1)).toBe(true);
  });

  it('has no second effect when an already-processed event is delivered again', async () => {
    await write('replayed');
    await waitFor(() => projected('replayed'));
    const { rows } = await w.ctx.pool.query("SELECT envelope FROM aos_outbox WHERE envelope->'data'->>'label' = 'replayed'");
    const envelope = rows[0].envelope;
    const bus = await r.ctx.bus;
    // A different Nats-Msg-Id gets past the broker's dedupe window: only the inbox stands in the way.
    await bus.js.publish(subjectFor(bus.names, 'platform.probe.recorded'), JSON.stringify(envelope), { msgID: `replay-${envelope.id}`, headers: natsHeaders() });
    await waitFor(async () => (await count(r.ctx.pool, 'SELECT count(*) AS n FROM aos_inbox WHERE event_id = $1', [envelope.id])) === 1);
    await sleep(500);
    expect(await projected('replayed')).toBe(1);
  });

  it('retries a failing handler, dead-letters it after N deliveries, and keeps other events flowing', async () => {
    const poison = await write('poison-1');
    expect(poison.statusCode).toBe(201);
    await write('healthy-after-poison');
    await waitFor(() => projected('healthy-after-poison'), { message: 'healthy event behind the poison one' });

    const bus = await r.ctx.bus;
    const letters = await waitFor(async () => {
      const all = await listDeadLetters(bus);
      return all.find((l) => (l.event as { data?: { label?: string } })?.data?.label === 'poison-1');
    }, { timeoutMs: 15_000, message: 'poison event in the dead-letter stream' });
    expect(letters.deliveries).toBe(3);
    expect(letters.error).toContain('cannot project poison-1');
    expect(letters.consumer).toContain('probe-projection');

    const eventId = (letters.event as { id: string }).id;
    expect(await count(r.ctx.pool, 'SELECT count(*) AS n FROM handler_attempts WHERE event_id = $1', [eventId])).toBe(3);
    // Exponential backoff between deliveries: ≥ 200 ms, then ≥ 400 ms (BUS_BACKOFF_BASE_MS 200).
    const { rows: gaps } = await r.ctx.pool.query<{ ms: number }>(
      `SELECT extract(epoch FROM at - lag(at) OVER (ORDER BY at)) * 1000 AS ms FROM handler_attempts WHERE event_id = $1 ORDER BY at`, [eventId]);
    const [gap1, gap2] = gaps.slice(1).map((g) => Number(g.ms));
    expect(gap1).toBeGreaterThanOrEqual(190);
    expect(gap2).toBeGreaterThanOrEqual(390);
    await sleep(500);
    expect(await count(r.ctx.pool, 'SELECT count(*) AS n FROM handler_attempts WHERE event_id = $1', [eventId])).toBe(3);
    expect(await projected('poison-1')).toBe(0);

    // Operators see it through the service's admin route too.
    const res = await r.inject(adminPrincipal(), { method: 'GET', url: '/internal/dead-letters' });
    expect(res.statusCode).toBe(200);
    expect(res.json().data.some((l: { event: { id: string } }) => l.event.id === eventId)).toBe(true);
    expect((await r.inject(userPrincipal(), { method: 'GET', url: '/internal/dead-letters' })).statusCode).toBe(403);
  });
});

describe('dead letters for operators', () => {
  const admin = adminPrincipal();
  const deadLetters = async (query = '') => (await r.inject(admin, { method: 'GET', url: `/internal/dead-letters${query}` })).json();
  const letterOf = async (label: string) => waitFor(async () => (await deadLetters()).data
    .find((l: { event: { data?: { label?: string } } | string }) => typeof l.event === 'object' && l.event?.data?.label === label) as { seq: number; event: { id: string }; service: string } | undefined,
  { timeoutMs: 15_000, message: `dead letter of ${label}` });
  const redrive = (seq: number, principal = admin) => r.inject(principal, { method: 'POST', url: `/internal/dead-letters/${seq}/redrive` });

  it('lists them paginated (limit capped at 200), with the owning service', async () => {
    await write('poison-list');
    const letter = await letterOf('poison-list');
    expect(letter.service).toBe('probe-reader');
    const page = await deadLetters('?limit=1000&offset=0');
    expect(page.meta).toMatchObject({ limit: 200, offset: 0 });
    expect(page.meta.total).toBeGreaterThanOrEqual(1);
    expect((await deadLetters(`?offset=${page.meta.total}`)).data).toEqual([]);
    // The writer has no consumers: its own list is empty, `service=all` shows everyone's.
    expect((await w.inject(admin, { method: 'GET', url: '/internal/dead-letters' })).json().data).toEqual([]);
    expect((await w.inject(admin, { method: 'GET', url: '/internal/dead-letters?service=all' })).json().meta.total).toBe(page.meta.total);
    expect((await r.inject(admin, { method: 'GET', url: '/internal/dead-letters?limit=-1' })).statusCode).toBe(400);
  });

  it('re-drives a dead letter once its cause is fixed: handled once, removed from the list, a second re-drive is 404', async () => {
    await write('poison-redrive');
    const letter = await letterOf('poison-redrive');
    // Still failing: 422 with the handler's error, the dead letter stays.
    const again = await redrive(letter.seq);
    expect(again.statusCode).toBe(422);
    expect(again.json().error.message).toContain('cannot project poison-redrive');
    expect((await deadLetters()).data.some((l: { seq: number }) => l.seq === letter.seq)).toBe(true);
    expect((await redrive(letter.seq, userPrincipal())).statusCode).toBe(403);
    expect((await w.inject(admin, { method: 'POST', url: `/internal/dead-letters/${letter.seq}/redrive` })).json().error)
      .toMatchObject({ code: 'CONFLICT', message: expect.stringContaining('probe-reader') });

    readerControl.cured.add('poison-redrive');
    const ok = await redrive(letter.seq);
    expect(ok.statusCode).toBe(200);
    expect(ok.json().data).toMatchObject({ seq: letter.seq, eventId: letter.event.id, outcome: 'processed' });
    expect(await projected('poison-redrive')).toBe(1);
    expect((await deadLetters()).data.some((l: { seq: number }) => l.seq === letter.seq)).toBe(false);
    expect((await redrive(letter.seq)).statusCode).toBe(404);
    expect(await projected('poison-redrive')).toBe(1);
  });

  it('dead-letters malformed and schema-violating events at their first delivery; they cannot be re-driven', async () => {
    const bus = await r.ctx.bus;
    const subject = subjectFor(bus.names, 'platform.probe.recorded');
    const bad = { id: '0190a4d2-0000-7000-8000-000000000001', type: 'platform.probe.recorded', version: 1, source: 'test', occurredAt: new Date().toISOString(),
      tenantId: null, orgId: null, actor: { type: 'system', id: null }, data: { probeId: 'not-a-number', label: 'bad-schema' } };
    await bus.js.publish(subject, 'not json at all', { msgID: `garbage-${ns.id}` });
    await bus.js.publish(subject, JSON.stringify(bad), { msgID: `schema-${ns.id}` });
    await write('after-garbage');
    await waitFor(() => projected('after-garbage'), { message: 'events after the malformed ones still flow' });
    const letters = await waitFor(async () => {
      const all = (await deadLetters()).data as Array<{ seq: number; deliveries: number; error: string; event: unknown }>;
      const garbage = all.find((l) => l.event === 'not json at all');
      const schema = all.find((l) => (l.event as { id?: string })?.id === bad.id);
      return garbage && schema ? { garbage, schema } : null;
    }, { timeoutMs: 15_000, message: 'both in the dead-letter stream' });
    expect(letters.garbage).toMatchObject({ deliveries: 1, error: 'event is not valid JSON' });
    expect(letters.schema).toMatchObject({ deliveries: 1, error: expect.stringContaining('/probeId') });
    const res = await redrive(letters.schema.seq);
    expect(res.statusCode).toBe(422);
    expect(res.json().error.message).toContain('cannot be re-driven');
  });

  it('re-driving an event its consumer has handled since has no second effect', async () => {
    await write('poison-handled');
    const letter = await letterOf('poison-handled');
    readerControl.cured.add('poison-handled');
    // Handled meanwhile (e.g. re-published by hand): the inbox has it.
    await r.ctx.pool.query("INSERT INTO aos_inbox (consumer, event_id, event_type) VALUES ('probe-reader:probe-projection', $1, 'platform.probe.recorded')", [letter.event.id]);
    const res = await redrive(letter.seq);
    expect(res.json().data.outcome).toBe('already_processed');
    expect(await projected('poison-handled')).toBe(0);
    expect((await redrive(letter.seq)).statusCode).toBe(404);
  });
});
