import { EventCatalog, type Actor, type EventData, type EventEnvelope, type EventType, type Principal } from '@aos/contracts';
import { currentTraceCarrier } from '@aos/core';
import { outbox, type Executor } from '@aos/db';
import { Value } from '@sinclair/typebox/value';
import { v7 as uuidv7 } from 'uuid';
import { subjectFor, type BusNames } from './names.js';

export interface EventMeta {
  tenantId: string | null;
  orgId: string | null;
  actor: Actor;
}

/** Event metadata for a change made on behalf of an HTTP caller. */
export function metaFromPrincipal(principal: Principal): EventMeta {
  const actor: Actor = principal.kind === 'api_key'
    ? { type: 'api_key', id: principal.apiKeyId }
    : principal.kind === 'user'
      ? { type: 'user', id: principal.userId }
      : principal.kind === 'service'
        ? { type: 'service', id: principal.service ?? null }
        : { type: 'system', id: null };
  return { tenantId: principal.tenantId, orgId: principal.orgId, actor };
}

export const systemMeta = (tenantId: string | null, orgId: string | null): EventMeta => ({
  tenantId, orgId, actor: { type: 'system', id: null },
});

export class InvalidEventError extends Error {
  constructor(type: string, readonly problems: string[]) {
    super(`event ${type} does not match its schema: ${problems.join('; ')}`);
  }
}

/**
 * Writes events into the outbox inside the caller's transaction. Nothing reaches the
 * broker unless that transaction commits; the relay publishes afterwards.
 */
export class Outbox {
  constructor(private readonly source: string, private readonly names: BusNames) {}

  async enqueue<T extends EventType>(tx: Executor, type: T, data: EventData<T>, meta: EventMeta): Promise<EventEnvelope<T>> {
    const def = EventCatalog[type];
    if (!Value.Check(def.schema, data)) {
      throw new InvalidEventError(type, [...Value.Errors(def.schema, data)].slice(0, 5).map((e) => `${e.path} ${e.message}`));
    }
    const envelope: EventEnvelope<T> = {
      id: uuidv7(),
      type,
      version: def.version,
      source: this.source,
      occurredAt: new Date().toISOString(),
      tenantId: meta.tenantId,
      orgId: meta.orgId,
      actor: meta.actor,
      data,
    };
    await tx.insert(outbox).values({
      id: envelope.id,
      subject: subjectFor(this.names, type),
      type,
      envelope,
      headers: currentTraceCarrier(),
    });
    return envelope;
  }
}
