import { describe, expect, it } from 'vitest';
import { activityVolume } from '../../services/notifications/test/volume.js';

/** Runs only with `pnpm test:heavy`. */
describe('activity log volume', () => {
  it('10,000 events → 10,000 activity rows, no duplicates, no loss', async () => {
    const r = await activityVolume(10_000, { timeoutMs: 300_000 });
    try {
      process.stdout.write(`activity log: 10000 events published in ${r.publishedMs} ms, all recorded after ${r.elapsedMs} ms → ${r.rate} events/s\n`);
      expect(r.total).toBe(10_000);
      expect(r.distinct).toBe(10_000);
      expect(r.missing).toBe(0);
    } finally {
      await r.svc.close();
    }
  }, 600_000);
});
