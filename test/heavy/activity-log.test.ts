import { sleep, waitFor } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { count, envelope, publish, startNotifications, type Svc } from '../../services/notifications/test/helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startNotifications(); });
afterAll(() => svc?.close());

describe('activity log under volume', () => {
  it('10,000 events → 10,000 rows, no duplicates, no loss', async () => {
    const orgId = 'heavy-org';
    const events = Array.from({ length: 10_000 }, (_, i) => envelope('platform.probe.recorded', { probeId: i, label: `p${i}` }, orgId));
    const t0 = performance.now();
    for (let i = 0; i < events.length; i += 500) await Promise.all(events.slice(i, i + 500).map((e) => publish(svc, e)));
    // A tenth of them delivered twice (past the broker's dedupe window: new message ids).
    for (let i = 0; i < 1_000; i += 500) await Promise.all(events.slice(i, i + 500).map((e) => publish(svc, e, `${e.id}-dup`)));
    await waitFor(async () => (await count(svc, "SELECT count(*) AS n FROM activity_log WHERE org_id = 'heavy-org'")) >= 10_000, { timeoutMs: 300_000, intervalMs: 250 });
    const seconds = (performance.now() - t0) / 1000;
    await sleep(1_000);
    expect(await count(svc, "SELECT count(*) AS n FROM activity_log WHERE org_id = 'heavy-org'")).toBe(10_000);
    expect(await count(svc, "SELECT count(DISTINCT event_id) AS n FROM activity_log WHERE org_id = 'heavy-org'")).toBe(10_000);
    console.log(`activity log: 10,000 events (+1,000 redeliveries) in ${seconds.toFixed(1)} s = ${(10_000 / seconds).toFixed(0)} events/s`);
  }, 600_000);
});
