import { parseEnvelope } from '@aos/bus';
import type { Logger } from '@aos/core';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import type { Redis } from 'ioredis';
import { cacheKeys } from '../auth/authenticate.js';
import type { GatewayConfig } from '../config.js';

/**
 * Keeps the gateway's Redis state in step with identity and billing: revoked tokens,
 * evicted API keys and memberships, rate-limit tiers. One durable consumer shared by all
 * gateway replicas (their state is the shared Redis); every effect is idempotent.
 */
const RESTART_DELAY_MS = 500;
const REPLAY_MARGIN_MS = 5_000;

/**
 * Sets the tier (and its negotiated rate limits, or none) only when this event is not older
 * than the one that set the current tier (redeliveries come late).
 */
const SET_TIER_IF_NEWER = `
local at = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) < at then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] == '' then redis.call('DEL', KEYS[3]) else redis.call('SET', KEYS[3], ARGV[3]) end
return 1`;

/** Only Enterprise limits are negotiated per organization; the other tiers' are the gateway's table. */
function customRateLimits(tier: string, limits: unknown): string {
  if (tier !== 'enterprise' || !limits || typeof limits !== 'object') return '';
  const { requestsPerMinute, requestsPerHour } = limits as { requestsPerMinute?: unknown; requestsPerHour?: unknown };
  const valid = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : null);
  const minute = valid(requestsPerMinute);
  const hour = valid(requestsPerHour);
  return minute === null && hour === null ? '' : JSON.stringify({ minute, hour });
}

export class CacheEvents {
  private nc: NatsConnection | null = null;
  private readonly running = new Set<ConsumerMessages>();
  private readonly loops: Promise<void>[] = [];
  private stopped = false;

  constructor(private readonly config: GatewayConfig, private readonly redis: Redis, private readonly log: Logger) {}

  async start(): Promise<void> {
    const { config } = this;
    this.nc = await connect({ servers: config.NATS_URL.split(','), name: 'gateway', maxReconnectAttempts: -1, waitOnFirstConnect: true });
    const jsm = await jetstreamManager(this.nc);
    const root = config.BUS_SUBJECT_ROOT;
    for (const [name, filter] of [['gateway--identity', `${root}.identity.>`], ['gateway--billing', `${root}.billing.subscription.changed`]] as const) {
      await this.ensureConsumer(jsm, name, filter);
      this.loops.push(this.consumeLoop(jsm, name, filter));
    }
  }

  /** Creates the durable consumer if missing: from new events, or (recreated after a loss) from `since`, a little before the loss. */
  private async ensureConsumer(jsm: JetStreamManager, name: string, filter: string, since?: Date): Promise<void> {
    const start = since
      ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(since.getTime() - REPLAY_MARGIN_MS).toISOString() }
      : { deliver_policy: DeliverPolicy.New };
    await jsm.consumers.add(this.config.BUS_STREAM, {
      durable_name: name, ack_policy: AckPolicy.Explicit, ...start, filter_subject: filter, ack_wait: nanos(30_000),
    }).catch((err: Error) => {
      if (!/already exists/i.test(err.message)) throw err;
    });
  }

  /** Consumes until stopped; a consumer the broker lost is recreated rather than left stalled. */
  private async consumeLoop(jsm: JetStreamManager, name: string, filter: string): Promise<void> {
    const js = jetstream(this.nc!);
    let first = true;
    // Events since this instant are replayed if the consumer has to be recreated (every effect is idempotent).
    let since = new Date();
    while (!this.stopped) {
      try {
        if (!first) await this.ensureConsumer(jsm, name, filter, since);
        first = false;
        const consumer = await js.consumers.get(this.config.BUS_STREAM, name);
        const messages = await consumer.consume({ max_messages: 100, expires: 10_000, abort_on_missing_resource: true });
        this.running.add(messages);
        if (this.stopped) await messages.close();
        try {
          for await (const m of messages) {
            await this.handle(m);
            since = new Date(Math.max(since.getTime(), Math.floor(m.info.timestampNanos / 1_000_000)));
          }
        } finally {
          this.running.delete(messages);
        }
      } catch (err) {
        if (this.stopped) break;
        this.log.warn({ err: (err as Error).message, consumer: name }, 'gateway event consumer ended; recreating');
      }
      if (!this.stopped) await new Promise((r) => setTimeout(r, RESTART_DELAY_MS));
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    let event;
    try {
      event = parseEnvelope(m.data);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'malformed event dropped');
      m.term();
      return;
    }
    try {
      await this.apply(event);
      m.ack();
    } catch (err) {
      // Redis is away: retry until it is back. Dropping a revocation would leave a revoked key cached.
      this.log.warn({ err: (err as Error).message, type: event.type }, 'gateway cache event failed; retrying');
      m.nak(Math.min(1_000 * m.info.deliveryCount, 10_000));
    }
  }

  private async apply(event: ReturnType<typeof parseEnvelope>): Promise<void> {
    const keys = cacheKeys(this.config.REDIS_PREFIX);
    const d = event.data as Record<string, string | null>;
    switch (event.type) {
      case 'identity.api_key.revoked':
      case 'identity.api_key.rotated':
      case 'identity.api_key.updated': {
        const index = keys.apiKeyIndex(d.apiKeyId!);
        const shas = await this.redis.smembers(index);
        // Counted in the same transaction: a verification already on its way is not cached (see FILL_UNLESS_EVICTED).
        await this.redis.multi().incr(keys.evictions('apiKey')).del(index, ...shas.map((s) => keys.apiKey(s))).exec();
        break;
      }
      case 'identity.session.revoked': {
        const seconds = Math.ceil((Date.parse(d.expiresAt!) - Date.now()) / 1000);
        if (seconds > 0) await this.redis.set(keys.revokedJti(d.jti!), '1', 'EX', seconds);
        break;
      }
      case 'identity.user.tokens_revoked':
        // Access tokens live 15 minutes: the marker may expire after that.
        await this.redis.set(keys.notBefore(d.userId!), String(Date.parse(d.notBefore!)), 'EX', 16 * 60);
        break;
      case 'identity.user.deleted':
        await this.redis.set(keys.notBefore(d.userId!), String(Date.now()), 'EX', 16 * 60);
        break;
      case 'identity.member.added':
      case 'identity.member.role_changed':
      case 'identity.member.removed':
        await this.redis.multi().incr(keys.evictions('member')).del(keys.member(d.userId!, d.orgId!)).exec();
        break;
      case 'billing.subscription.changed':
        if (event.orgId) {
          const tier = String(d.tier).toLowerCase();
          await this.redis.eval(SET_TIER_IF_NEWER, 3, keys.tier(event.orgId), keys.tierAt(event.orgId), keys.tierLimits(event.orgId),
            tier, Date.parse(event.occurredAt), customRateLimits(tier, (event.data as { limits?: unknown }).limits));
        }
        break;
      default:
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const m of this.running) await m.close().catch(() => {});
    await Promise.allSettled(this.loops);
    await this.nc?.drain().catch(() => {});
  }
}
