import { subjectFor } from '@aos/bus';
import type { EventData, EventType } from '@aos/contracts';
import { startTestService, type TestServiceOptions } from '@aos/testkit';
import { v7 as uuidv7 } from 'uuid';
import { service } from '../src/service.js';

export type Svc = Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;

export const startNotifications = (opts: TestServiceOptions = {}): Promise<Svc> => startTestService(service, opts);

export function envelope<T extends EventType>(type: T, data: EventData<T>, orgId: string | null, extra: { actor?: { type: 'user' | 'agent' | 'system'; id: string | null }; tenantId?: string } = {}) {
  return {
    id: uuidv7(), type, version: 1, source: type.split('.')[0]!, occurredAt: new Date().toISOString(),
    tenantId: extra.tenantId ?? null, orgId, actor: extra.actor ?? { type: 'system' as const, id: null }, data,
  };
}

/** Publishes like a service's outbox relay would (msgID = event id unless given). */
export async function publish(svc: Svc, env: ReturnType<typeof envelope>, msgID: string = env.id) {
  const bus = await svc.ctx.bus;
  await bus.js.publish(subjectFor(bus.names, env.type), JSON.stringify(env), { msgID });
}

export const count = async (svc: Svc, sql: string, params: unknown[] = []) => Number((await svc.ctx.pool.query(sql, params)).rows[0].n);
