import { subjectFor } from '@aos/bus';
import type { Actor, EventData, EventEnvelope, EventType } from '@aos/contracts';
import type { Pool } from '@aos/db';
import { randomUUID } from 'node:crypto';
import type { Ctx } from '../src/service.js';

export function envelope<T extends EventType>(type: T, data: EventData<T>, opts: { orgId?: string | null; tenantId?: string | null; actor?: Actor; id?: string; occurredAt?: Date } = {}): EventEnvelope<T> {
  return {
    id: opts.id ?? randomUUID(), type, version: 1, source: 'test', occurredAt: (opts.occurredAt ?? new Date()).toISOString(),
    tenantId: opts.tenantId ?? null, orgId: opts.orgId === undefined ? null : opts.orgId,
    actor: opts.actor ?? { type: 'system', id: null }, data,
  };
}

/** Publishes as another service would; `msgID` defaults to the event id (pass another to get past broker dedupe). */
export async function publish(ctx: Ctx, env: EventEnvelope, msgID = env.id): Promise<void> {
  const bus = await ctx.bus;
  await bus.js.publish(subjectFor(bus.names, env.type), JSON.stringify(env), { msgID });
}

/** The same envelope twice, with different broker message ids: only the inbox can dedupe it. */
export async function publishTwice(ctx: Ctx, env: EventEnvelope): Promise<void> {
  await publish(ctx, env);
  await publish(ctx, env, `again-${env.id}`);
}

export async function count(pool: Pool, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await pool.query(sql, params);
  return Number(rows[0].n);
}

/** Waits until every given consumer has recorded the event in its inbox. */
export async function handledBy(pool: Pool, eventId: string, consumers: string[]): Promise<boolean> {
  const n = await count(pool, 'SELECT count(*) AS n FROM aos_inbox WHERE event_id = $1 AND consumer = ANY($2)', [eventId, consumers.map((c) => `notifications:${c}`)]);
  return n === consumers.length;
}
