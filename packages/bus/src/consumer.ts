import { EnvelopeSchema, EventCatalog, isEventType, type EventEnvelope, type EventOf, type EventType } from '@aos/contracts';
import { contextFromCarrier, withSpan } from '@aos/core';
import { inbox, type Db, type Tx } from '@aos/db';
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { headers as natsHeaders, nanos } from '@nats-io/nats-core';
import { SpanKind } from '@opentelemetry/api';
import { Value } from '@sinclair/typebox/value';
import type { Logger } from '@aos/core';
import type { BusConnection } from './connection.js';
import { deadLetterRoot, subjectFor } from './names.js';
import { sleep, withTimeout } from './relay.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySchema = Record<string, any>;

export interface HandlerContext {
  log: Logger;
  /** 1 on first delivery. */
  deliveryCount: number;
  /**
   * Runs `fn` once the handler's transaction has committed, before the ack: for side
   * effects that must see the committed rows (e.g. enqueueing a job that reads them).
   * A failure there makes the event be redelivered (the inbox then skips the handler).
   */
  afterCommit(fn: () => Promise<unknown>): void;
}

/**
 * A durable consumer of one or more event types. `name` is part of the durable consumer
 * name and the inbox key: renaming it makes the consumer start over from the stream's start.
 */
export interface EventHandler<T extends EventType, S extends AnySchema = AnySchema> {
  name: string;
  events: readonly T[] | 'all';
  /** Runs in the transaction that records the event in the inbox; throw to retry. */
  handle(event: EventOf<T>, tx: Tx<S>, ctx: HandlerContext): Promise<void>;
  /** Messages processed at once per event type (default 1, which keeps stream order). */
  concurrency?: number;
}

export function defineHandler<T extends EventType, S extends AnySchema = AnySchema>(h: EventHandler<T, S>): EventHandler<T, S> {
  return h;
}

export interface ConsumerOptions<S extends AnySchema> {
  service: string;
  bus: Promise<BusConnection>;
  db: Db<S>;
  log: Logger;
  /** Deliveries before an event goes to the dead-letter stream (default 5). */
  maxDeliver?: number;
  /** First redelivery delay; doubles each time, capped at 60 s (default 1 s). */
  backoffBaseMs?: number;
  ackWaitMs?: number;
}

type Running = { durable: string; messages: ConsumerMessages | null; inflight: Set<Promise<void>>; done: Promise<void> };

export const durableName = (service: string, handler: string, type: string | null) =>
  `${service}--${handler}${type ? `--${type.replaceAll('.', '_')}` : '--all'}`;

/**
 * Runs event handlers as durable JetStream pull consumers with explicit ack. Each event
 * is handled in one DB transaction together with its inbox row, so a redelivered event
 * that was already handled has no second effect. Failures are nak'ed with exponential
 * backoff; after `maxDeliver` deliveries the event goes to the dead-letter stream.
 */
export class EventConsumers<S extends AnySchema> {
  private readonly running: Running[] = [];
  private stopped = false;

  constructor(private readonly opts: ConsumerOptions<S>) {}

  async start(handlers: EventHandler<EventType, S>[]): Promise<void> {
    const bus = await this.opts.bus;
    for (const handler of handlers) {
      const types = handler.events === 'all' ? [null] : handler.events;
      for (const type of types) {
        const durable = durableName(this.opts.service, handler.name, type);
        const filter = type ? subjectFor(bus.names, type) : `${bus.names.subjectRoot}.>`;
        await this.ensureConsumer(bus, durable, filter);
        const running: Running = { durable, messages: null, inflight: new Set(), done: Promise.resolve() };
        running.done = this.consumeLoop(bus, handler, running);
        this.running.push(running);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const r of this.running) await r.messages?.close().catch(() => {});
    await Promise.allSettled(this.running.map((r) => withTimeout(r.done, 15_000, 'consumer stop timed out')));
  }

  private async ensureConsumer(bus: BusConnection, durable: string, filter: string) {
    const config = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: filter,
      ack_wait: nanos(this.opts.ackWaitMs ?? 30_000),
      max_deliver: -1,
      max_ack_pending: 1_000,
    };
    try {
      await bus.jsm.consumers.add(bus.names.stream, config);
    } catch (err) {
      if (!/already exists/i.test(String((err as Error).message))) throw err;
      await bus.jsm.consumers.update(bus.names.stream, durable, { ack_wait: config.ack_wait, max_ack_pending: config.max_ack_pending });
    }
  }

  private async consumeLoop(bus: BusConnection, handler: EventHandler<EventType, S>, running: Running): Promise<void> {
    const concurrency = handler.concurrency ?? 1;
    while (!this.stopped) {
      try {
        const consumer = await bus.js.consumers.get(bus.names.stream, running.durable);
        const messages = await consumer.consume({ max_messages: Math.max(concurrency * 2, 10) });
        running.messages = messages;
        for await (const m of messages) {
          const p = this.process(bus, handler, running.durable, m).finally(() => running.inflight.delete(p));
          running.inflight.add(p);
          if (running.inflight.size >= concurrency) await Promise.race(running.inflight);
        }
        await Promise.allSettled(running.inflight);
      } catch (err) {
        if (this.stopped) break;
        this.opts.log.warn({ err: (err as Error).message, consumer: running.durable }, 'consumer loop error; restarting');
        await sleep(1_000);
      }
    }
    await Promise.allSettled(running.inflight);
  }

  private async process(bus: BusConnection, handler: EventHandler<EventType, S>, durable: string, m: JsMsg): Promise<void> {
    const deliveryCount = m.info.deliveryCount;
    const log = this.opts.log.child({ consumer: durable, seq: m.seq, delivery: deliveryCount });
    let envelope: EventEnvelope;
    try {
      envelope = parseEnvelope(m.data);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'malformed event; dead-lettering');
      await this.deadLetter(bus, durable, m, (err as Error).message);
      return;
    }
    const carrier: Record<string, string> = {};
    for (const key of m.headers?.keys() ?? []) carrier[key.toLowerCase()] = m.headers!.get(key);
    await withSpan(`consume ${envelope.type}`, async (span) => {
      span.setAttribute('messaging.consumer', durable);
      span.setAttribute('aos.event_id', envelope.id);
      try {
        const committed: Array<() => Promise<unknown>> = [];
        await this.opts.db.transaction(async (tx) => {
          const fresh = await tx.insert(inbox)
            .values({ consumer: `${this.opts.service}:${handler.name}`, eventId: envelope.id, eventType: envelope.type })
            .onConflictDoNothing()
            .returning({ eventId: inbox.eventId });
          if (fresh.length === 0) return; // already handled: ack again, no second effect
          await handler.handle(envelope as EventOf<EventType>, tx, { log, deliveryCount, afterCommit: (fn) => committed.push(fn) });
        });
        for (const fn of committed) await fn();
        m.ack();
      } catch (err) {
        const max = this.opts.maxDeliver ?? 5;
        if (deliveryCount >= max) {
          log.error({ err, eventId: envelope.id, type: envelope.type }, `handler failed ${deliveryCount} times; dead-lettering`);
          await this.deadLetter(bus, durable, m, (err as Error).message ?? String(err));
        } else {
          const delay = Math.min((this.opts.backoffBaseMs ?? 1_000) * 2 ** (deliveryCount - 1), 60_000);
          log.warn({ err: (err as Error).message, eventId: envelope.id, retryInMs: delay }, 'handler failed; will retry');
          m.nak(delay);
        }
        throw err;
      }
    }, { kind: SpanKind.CONSUMER, parent: contextFromCarrier(carrier) }).catch(() => {});
  }

  private async deadLetter(bus: BusConnection, durable: string, m: JsMsg, error: string): Promise<void> {
    const h = natsHeaders();
    h.set('Aos-Original-Subject', m.subject);
    h.set('Aos-Consumer', durable);
    h.set('Aos-Deliveries', String(m.info.deliveryCount));
    h.set('Aos-Error', error.replace(/[\r\n]+/g, ' ').slice(0, 1_000));
    try {
      await bus.js.publish(`${deadLetterRoot(bus.names)}.${durable}`, m.data, { headers: h, msgID: `${durable}:${m.seq}` });
      m.term();
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message, consumer: durable }, 'dead-letter publish failed; will retry');
      m.nak(5_000);
    }
  }
}

/** Parses and validates an event: the envelope, a known type, and the data against the catalog schema. */
export function parseEnvelope(data: Uint8Array): EventEnvelope {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(data));
  } catch {
    throw new Error('event is not valid JSON');
  }
  if (!Value.Check(EnvelopeSchema, value)) throw new Error('event envelope is invalid');
  const env = value as EventEnvelope;
  if (!isEventType(env.type)) throw new Error(`unknown event type ${env.type}`);
  const schema = EventCatalog[env.type].schema;
  if (!Value.Check(schema, env.data)) {
    const first = [...Value.Errors(schema, env.data)][0];
    throw new Error(`event ${env.type} data invalid at ${first?.path ?? '/'}: ${first?.message ?? 'mismatch'}`);
  }
  return env;
}

export interface DeadLetter {
  seq: number;
  subject: string;
  consumer: string;
  originalSubject: string;
  deliveries: number;
  error: string;
  event: unknown;
  time: string;
}

/** The newest dead-lettered events, for operators. */
export async function listDeadLetters(bus: BusConnection, limit = 50): Promise<DeadLetter[]> {
  const info = await bus.jsm.streams.info(bus.names.deadLetterStream);
  const out: DeadLetter[] = [];
  for (let seq = info.state.last_seq; seq >= info.state.first_seq && seq > 0 && out.length < limit; seq--) {
    try {
      const msg = await bus.jsm.streams.getMessage(bus.names.deadLetterStream, { seq });
      if (!msg) continue;
      let event: unknown = null;
      try { event = msg.json(); } catch { event = msg.string(); }
      out.push({
        seq,
        subject: msg.subject,
        consumer: msg.header.get('Aos-Consumer'),
        originalSubject: msg.header.get('Aos-Original-Subject'),
        deliveries: Number(msg.header.get('Aos-Deliveries')),
        error: msg.header.get('Aos-Error'),
        event,
        time: msg.time.toISOString(),
      });
    } catch {
      // deleted message: skip
    }
  }
  return out;
}
