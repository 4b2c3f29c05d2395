import { TierLimits, type Principal } from '@aos/contracts';
import type { Logger } from '@aos/core';
import type { Redis } from 'ioredis';
import { cacheKeys } from '../auth/authenticate.js';
import type { GatewayConfig } from '../config.js';

/** Requests per minute / hour by tier (contracts' `TierLimits`); Enterprise's defaults are settings. */
export function tierLimits(config: GatewayConfig): Record<string, { minute: number; hour: number }> {
  const of = (tier: 'free' | 'pro' | 'teams') => ({ minute: TierLimits[tier].requests_per_minute!, hour: TierLimits[tier].requests_per_hour! });
  return {
    free: of('free'),
    pro: of('pro'),
    teams: of('teams'),
    enterprise: { minute: config.RATE_LIMIT_ENTERPRISE_PER_MINUTE, hour: config.RATE_LIMIT_ENTERPRISE_PER_HOUR },
  };
}

/**
 * Fixed windows for the minute and the hour, counted atomically in one script: both
 * counters move together, and a request refused by either window is not counted at all.
 * Returns [minute count, hour count, allowed (1/0)].
 */
const SCRIPT = `
local m = tonumber(redis.call('GET', KEYS[1]) or '0')
local h = tonumber(redis.call('GET', KEYS[2]) or '0')
if m >= tonumber(ARGV[1]) or h >= tonumber(ARGV[2]) then return {m, h, 0} end
m = redis.call('INCR', KEYS[1])
if m == 1 then redis.call('EXPIRE', KEYS[1], 61) end
h = redis.call('INCR', KEYS[2])
if h == 1 then redis.call('EXPIRE', KEYS[2], 3601) end
return {m, h, 1}
`;

export interface Decision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Unix seconds when the minute window resets. */
  reset: number;
  retryAfter: number;
}

/**
 * Counts requests in Redis. When Redis cannot answer the limiter fails open (`null`: the request
 * goes through without rate-limit headers, with a warning): limits protect capacity, and refusing
 * every request would turn a cache outage into a full one.
 */
export class RateLimiter {
  constructor(private readonly redis: Redis, private readonly prefix: string, private readonly config: GatewayConfig, private readonly log?: Logger) {}

  subject(principal: Principal, ip: string): { id: string; tier: string } {
    if (principal.kind === 'api_key') return { id: `key:${principal.apiKeyId}`, tier: principal.tier ?? 'free' };
    if (principal.userId) return { id: `user:${principal.userId}`, tier: principal.tier ?? 'free' };
    return { id: `ip:${ip}`, tier: 'free' };
  }

  async check(id: string, perMinute: number, perHour: number): Promise<Decision | null> {
    const now = Date.now();
    const minute = Math.floor(now / 60_000);
    const hour = Math.floor(now / 3_600_000);
    let counts: [number, number, number];
    try {
      counts = (await this.redis.eval(SCRIPT, 2, `${this.prefix}:rl:${id}:m:${minute}`, `${this.prefix}:rl:${id}:h:${hour}`, perMinute, perHour)) as [number, number, number];
    } catch (err) {
      this.log?.warn({ err: (err as Error).message }, 'rate limiter unavailable; request let through');
      return null;
    }
    const [m, h, ok] = counts;
    const minuteReset = (minute + 1) * 60;
    const hourReset = (hour + 1) * 3_600;
    const blockedByHour = h >= perHour && ok === 0;
    const remaining = Math.max(0, Math.min(perMinute - m, perHour - h));
    return {
      allowed: ok === 1,
      limit: perMinute,
      remaining,
      reset: minuteReset,
      retryAfter: Math.max(1, (blockedByHour ? hourReset : minuteReset) - Math.floor(now / 1000)),
    };
  }

  async forPrincipal(principal: Principal, ip: string): Promise<Decision | null> {
    const { id, tier } = this.subject(principal, ip);
    const table = tierLimits(this.config)[tier] ?? tierLimits(this.config).free!;
    const custom = tier === 'enterprise' && principal.orgId ? await this.negotiated(principal.orgId) : null;
    return this.check(id, custom?.minute ?? table.minute, custom?.hour ?? table.hour);
  }

  /** An Enterprise organization's own rate limits (from billing.subscription.changed); unreadable = the configured defaults. */
  private async negotiated(orgId: string): Promise<{ minute: number | null; hour: number | null } | null> {
    const raw = await this.redis.get(cacheKeys(this.prefix).tierLimits(orgId)).catch(() => null);
    if (!raw) return null;
    try {
      return JSON.parse(raw) as { minute: number | null; hour: number | null };
    } catch {
      return null;
    }
  }
}
