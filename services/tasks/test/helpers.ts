import type { Principal } from '@aos/contracts';
import { startTestService, userPrincipal } from '@aos/testkit';
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
