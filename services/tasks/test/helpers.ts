import type { Principal } from '@aos/contracts';
import { listDeadLetters } from '@aos/bus';
import { startTestService, userPrincipal, waitFor } from '@aos/testkit';
import { service } from '../src/service.js';

export type Svc = Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;

export async function startTasks(): Promise<Svc> {
  return startTestService(service);
}

/** A small client bound to one principal. */
export function client(svc: Svc, principal: Principal = userPrincipal()) {
  const call = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
    svc.inject(principal, { method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
  return {
    principal,
    get: (url: string) => call('GET', url),
    post: (url: string, body: unknown = {}) => call('POST', url, body),
    patch: (url: string, body: unknown) => call('PATCH', url, body),
    del: (url: string) => call('DELETE', url),
    /** Walks a task through in_progress and review to done. */
    async complete(id: number, resolution?: string) {
      for (const status of ['in_progress', 'review']) await call('PATCH', `/tasks/${id}`, { status });
      const res = await call('PATCH', `/tasks/${id}`, { status: 'done', ...(resolution ? { resolution } : {}) });
      if (res.statusCode !== 200) throw new Error(`complete failed ${res.statusCode} ${res.body}`);
    },
    async task(body: Record<string, unknown>) {
      const res = await call('POST', '/tasks', body);
      if (res.statusCode !== 201) throw new Error(`create failed ${res.statusCode} ${res.body}`);
      return res.json().data as { id: number; status: string; title: string };
    },
  };
}

export async function outboxTypes(svc: Svc): Promise<string[]> {
  const { rows } = await svc.ctx.pool.query<{ type: string }>('SELECT type FROM aos_outbox ORDER BY created_at, id');
  return rows.map((r) => r.type);
}

/** True when the outbox is empty and every consumer has handled and acked all it was given. */
async function quiet(svc: Svc): Promise<boolean> {
  const { rows } = await svc.ctx.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM aos_outbox WHERE published_at IS NULL');
  if (rows[0]!.n > 0) return false;
  const bus = await svc.ctx.bus;
  const consumers = await (await bus.jsm.consumers.list(bus.names.stream)).next();
  return consumers.every((c) => c.num_pending === 0 && c.num_ack_pending === 0);
}

/** Waits until every event published so far, and every event its handlers published, has been handled. */
export async function settled(svc: Svc): Promise<void> {
  await waitFor(async () => (await quiet(svc)) && (await quiet(svc)), { message: 'events settled', intervalMs: 25 });
}

/** Dead-lettered events of this test's namespace. */
export async function deadLetters(svc: Svc) {
  return listDeadLetters(await svc.ctx.bus);
}
