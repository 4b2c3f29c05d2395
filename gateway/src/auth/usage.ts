import { ANONYMOUS, INTERNAL_TOKEN_HEADER, type Principal } from '@aos/contracts';
import type { Logger } from '@aos/core';
import { signInternalToken, type Key } from '@aos/http';

export interface UsageEntry { api_key_id: string; method: string; path: string; status: number; latency_ms: number; at: string }

const GATEWAY: Principal = { ...ANONYMOUS, kind: 'service', service: 'gateway' };

/** Batches API-key usage to identity every second (or 200 entries); a failed flush is dropped with a warning, never blocking requests. */
export class UsageLog {
  private buffer: UsageEntry[] = [];
  private timer: NodeJS.Timeout;

  constructor(private readonly identityUrl: string, private readonly key: Key, private readonly log: Logger) {
    this.timer = setInterval(() => void this.flush(), 1_000);
    this.timer.unref();
  }

  record(entry: UsageEntry) {
    this.buffer.push(entry);
    if (this.buffer.length >= 200) void this.flush();
  }

  async flush(): Promise<void> {
    if (this.buffer.length === 0) return;
    const entries = this.buffer.splice(0, 500);
    try {
      const res = await fetch(new URL('/internal/api-keys/usage', this.identityUrl), {
        method: 'POST',
        headers: { 'content-type': 'application/json', [INTERNAL_TOKEN_HEADER]: await signInternalToken(this.key, GATEWAY) },
        body: JSON.stringify({ entries }),
        signal: AbortSignal.timeout(5_000),
      });
      if (!res.ok) throw new Error(`identity answered ${res.status}`);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, dropped: entries.length }, 'api key usage not recorded');
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
