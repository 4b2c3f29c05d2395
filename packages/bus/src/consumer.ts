import { EnvelopeSchema, EventCatalog, isEventType, type EventEnvelope, type EventOf, type EventType } from '@aos/contracts';
import { contextFromCarrier, withSpan } from '@aos/core';
import { inbox, type Db, type Tx } from '@aos/db';
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { headers as natsHeaders, nanos } from '@nats-io/nats-core';
import { SpanKind } from '@opentelemetry/api';
import { Value } from '@sinclair/typebox/value';
import type { Logger } from '@aos/core';
import { ensureStreams, isNotFound, type BusConnection } from './connection.js';
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

/** What handling one event came to: its effects committed now, or it had been handled before (inbox). */
export type HandleOutcome = 'processed' | 'already_processed';

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
  /** Durable consumer name → its handler, for re-driving dead letters. */
  private readonly handlers = new Map<string, EventHandler<EventType, S>>();
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
        this.handlers.set(durable, handler);
        const running: Running = { durable, messages: null, inflight: new Set(), done: Promise.resolve() };
        running.done = this.consumeLoop(bus, handler, running, filter);
        this.running.push(running);
      }
    }
  }

  /**
   * Stops pulling; handlers already running finish (bounded), and messages buffered but not
   * started are nak'ed so the broker redelivers them at once (to another replica or the next start).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const r of this.running) await r.messages?.close().catch(() => {});
    await Promise.allSettled(this.running.map((r) => withTimeout(r.done, 15_000, 'consumer stop timed out')));
  }

  /** The handler behind a durable consumer of this process, if any. */
  handlerFor(durable: string): EventHandler<EventType, S> | undefined {
    return this.handlers.get(durable);
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
      if (/already exists/i.test(String((err as Error).message))) {
        await bus.jsm.consumers.update(bus.names.stream, durable, { ack_wait: config.ack_wait, max_ack_pending: config.max_ack_pending });
        return;
      }
      // The broker lost the stream (e.g. restarted without its store): recreate it, then the consumer.
      if (!isNotFound(err)) throw err;
      await ensureStreams(bus.jsm, bus.names);
      await bus.jsm.consumers.add(bus.names.stream, config);
    }
  }

  private async consumeLoop(bus: BusConnection, handler: EventHandler<EventType, S>, running: Running, filter: string): Promise<void> {
    const concurrency = handler.concurrency ?? 1;
    let first = true;
    while (!this.stopped) {
      try {
        // After a failure the consumer (or its stream) may be gone: make sure both exist again.
        if (!first) await this.ensureConsumer(bus, running.durable, filter);
        first = false;
        const consumer = await bus.js.consumers.get(bus.names.stream, running.durable);
        // abort_on_missing_resource: a deleted consumer or stream ends the iterator (and this loop recreates it) instead of stalling.
        const messages = await consumer.consume({ max_messages: Math.max(concurrency * 2, 10), expires: 10_000, abort_on_missing_resource: true });
        running.messages = messages;
        if (this.stopped) await messages.close();
        for await (const m of messages) {
          if (this.stopped) {
            m.nak(); // buffered but not started: back to the broker for immediate redelivery
            continue;
          }
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
        await this.handleOnce(handler, envelope, { log, deliveryCount });
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

  /**
   * Runs `handler` for `envelope` in one transaction with its inbox row; an event the inbox
   * already holds for this handler is not handled again. After-commit work runs last.
   */
  async handleOnce(handler: EventHandler<EventType, S>, envelope: EventEnvelope, ctx: { log: Logger; deliveryCount: number }): Promise<HandleOutcome> {
    const committed: Array<() => Promise<unknown>> = [];
    const outcome = await this.opts.db.transaction(async (tx): Promise<HandleOutcome> => {
      const fresh = await tx.insert(inbox)
        .values({ consumer: `${this.opts.service}:${handler.name}`, eventId: envelope.id, eventType: envelope.type })
        .onConflictDoNothing()
        .returning({ eventId: inbox.eventId });
      if (fresh.length === 0) return 'already_processed';
      await handler.handle(envelope as EventOf<EventType>, tx, { ...ctx, afterCommit: (fn) => committed.push(fn) });
      return 'processed';
    });
    for (const fn of committed) await fn();
    return outcome;
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
  /** The service owning the consumer (the first part of its durable name). */
  service: string;
  originalSubject: string;
  deliveries: number;
  error: string;
  event: unknown;
  time: string;
}

/** `tasks--changelog--tasks_task_completed` → `tasks`. */
export const serviceOfConsumer = (durable: string) => durable.split('--')[0] ?? '';

async function readDeadLetter(bus: BusConnection, seq: number): Promise<DeadLetter | null> {
  return (await readStoredDeadLetter(bus, seq))?.letter ?? null;
}

async function readStoredDeadLetter(bus: BusConnection, seq: number): Promise<{ letter: DeadLetter; data: Uint8Array } | null> {
  let msg;
  try {
    msg = await bus.jsm.streams.getMessage(bus.names.deadLetterStream, { seq });
  } catch (err) {
    if (isNotFound(err)) return null; // deleted (re-driven) or never there
    throw err;
  }
  if (!msg) return null;
  let event: unknown;
  try { event = msg.json(); } catch { event = msg.string(); }
  const consumer = msg.header.get('Aos-Consumer');
  const letter: DeadLetter = {
    seq,
    subject: msg.subject,
    consumer,
    service: serviceOfConsumer(consumer),
    originalSubject: msg.header.get('Aos-Original-Subject'),
    deliveries: Number(msg.header.get('Aos-Deliveries')),
    error: msg.header.get('Aos-Error'),
    event,
    time: msg.time.toISOString(),
  };
  return { letter, data: msg.data };
}

export interface DeadLetterQuery {
  limit?: number;
  offset?: number;
  /** Only dead letters of this service's consumers. */
  service?: string;
}

/**
 * Dead-lettered events, newest first, for operators. Without a `service` filter every
 * service's dead letters are listed (they share one stream). A number as second argument is
 * the limit (the original signature).
 */
export async function listDeadLetters(bus: BusConnection, query: DeadLetterQuery | number = {}): Promise<DeadLetter[]> {
  return (await pageDeadLetters(bus, typeof query === 'number' ? { limit: query } : query)).items;
}

/** A page of dead letters and how many match in all. */
export async function pageDeadLetters(bus: BusConnection, query: DeadLetterQuery = {}): Promise<{ items: DeadLetter[]; total: number }> {
  const limit = query.limit ?? 50;
  const offset = query.offset ?? 0;
  const info = await bus.jsm.streams.info(bus.names.deadLetterStream, { subjects_filter: '>' });
  const prefix = `${deadLetterRoot(bus.names)}.`;
  const matches = (subject: string) => !query.service || serviceOfConsumer(subject.slice(prefix.length)) === query.service;
  const total = Object.entries(info.state.subjects ?? {}).reduce((n, [subject, count]) => n + (matches(subject) ? count : 0), 0);
  const items: DeadLetter[] = [];
  let skipped = 0;
  for (let seq = info.state.last_seq; seq >= info.state.first_seq && seq > 0 && items.length < limit; seq--) {
    const letter = await readDeadLetter(bus, seq);
    if (!letter || !matches(letter.subject)) continue;
    if (skipped++ < offset) continue;
    items.push(letter);
  }
  return { items, total };
}

export class DeadLetterError extends Error {
  constructor(readonly reason: 'not_found' | 'other_service' | 'unknown_consumer' | 'malformed' | 'handler_failed', message: string) {
    super(message);
    this.name = 'DeadLetterError';
  }
}

export interface RedriveResult {
  seq: number;
  consumer: string;
  eventId: string;
  outcome: HandleOutcome;
}

/**
 * Re-runs a dead-lettered event through the consumer that gave up on it, now, in this
 * process: in one transaction with the inbox row, so an event that consumer has handled
 * since (or a second re-drive) has no second effect. Other consumers of the event are not
 * involved. On success the dead letter is removed; when the handler fails again it stays.
 */
export async function redriveDeadLetter<S extends AnySchema>(
  bus: BusConnection, consumers: EventConsumers<S>, service: string, seq: number, log: Logger,
): Promise<RedriveResult> {
  const stored = await readStoredDeadLetter(bus, seq);
  if (!stored) throw new DeadLetterError('not_found', `Dead letter ${seq} not found`);
  const { letter } = stored;
  if (letter.service !== service) {
    throw new DeadLetterError('other_service', `Dead letter ${seq} belongs to the ${letter.service} service; re-drive it there`);
  }
  const handler = consumers.handlerFor(letter.consumer);
  if (!handler) throw new DeadLetterError('unknown_consumer', `Consumer ${letter.consumer} is not running in this process`);
  let envelope: EventEnvelope;
  try {
    envelope = parseEnvelope(stored.data);
  } catch (err) {
    throw new DeadLetterError('malformed', `Dead letter ${seq} cannot be re-driven: ${(err as Error).message}`);
  }
  let outcome: HandleOutcome;
  try {
    outcome = await consumers.handleOnce(handler, envelope, { log: log.child({ consumer: letter.consumer, redrive: seq }), deliveryCount: letter.deliveries + 1 });
  } catch (err) {
    throw new DeadLetterError('handler_failed', `The handler failed again: ${(err as Error).message ?? String(err)}`);
  }
  await bus.jsm.streams.deleteMessage(bus.names.deadLetterStream, seq, false).catch((err: Error) => {
    if (!isNotFound(err)) throw err; // removed by a concurrent re-drive
  });
  log.info({ seq, consumer: letter.consumer, eventId: envelope.id, outcome }, 'dead letter re-driven');
  return { seq, consumer: letter.consumer, eventId: envelope.id, outcome };
}
