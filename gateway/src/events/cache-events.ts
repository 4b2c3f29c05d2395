import { parseEnvelope } from '@aos/bus';
import type { Logger } from '@aos/core';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages } from '@nats-io/jetstream';
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
export class CacheEvents {
  private nc: NatsConnection | null = null;
  private readonly running: ConsumerMessages[] = [];
  private stopped = false;

  constructor(private readonly config: GatewayConfig, private readonly redis: Redis, private readonly log: Logger) {}

  async start(): Promise<void> {
    const { config } = this;
    this.nc = await connect({ servers: config.NATS_URL.split(','), name: 'gateway', maxReconnectAttempts: -1, waitOnFirstConnect: true });
    const jsm = await jetstreamManager(this.nc);
    const js = jetstream(this.nc);
    const root = config.BUS_SUBJECT_ROOT;
    for (const [name, filter] of [['gateway--identity', `${root}.identity.>`], ['gateway--billing', `${root}.billing.subscription.changed`]] as const) {
      await jsm.consumers.add(config.BUS_STREAM, {
        durable_name: name, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, filter_subject: filter, ack_wait: nanos(30_000),
      }).catch(async (err: Error) => {
        if (!/already exists/i.test(err.message)) throw err;
      });
      const consumer = await js.consumers.get(config.BUS_STREAM, name);
      const messages = await consumer.consume({ max_messages: 100 });
      this.running.push(messages);
      void (async () => {
        for await (const m of messages) {
          let event;
          try {
            event = parseEnvelope(m.data);
          } catch (err) {
            this.log.warn({ err: (err as Error).message }, 'malformed event dropped');
            m.term();
            continue;
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
      })().catch((err: Error) => { if (!this.stopped) this.log.error({ err: err.message }, 'gateway event loop ended'); });
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
        await this.redis.del(index, ...shas.map((s) => keys.apiKey(s)));
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
        await this.redis.del(keys.member(d.userId!, d.orgId!));
        break;
      case 'billing.subscription.changed':
        if (event.orgId) await this.redis.set(keys.tier(event.orgId), String(d.tier).toLowerCase());
        break;
      default:
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const m of this.running) await m.close().catch(() => {});
    await this.nc?.drain().catch(() => {});
  }
}
