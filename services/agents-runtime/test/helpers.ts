import type { Principal } from '@aos/contracts';
import { startTestService, userPrincipal, type TestServiceOptions } from '@aos/testkit';
import { service } from '../src/service.js';

export type Svc = Awaited<ReturnType<typeof startTestService<typeof service.schema, typeof service.config>>>;
export const startAgents = (opts: TestServiceOptions = {}): Promise<Svc> => startTestService(service, opts);

export function client(svc: Svc, principal: Principal = userPrincipal()) {
  const call = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
    svc.inject(principal, { method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
  return {
    principal, call,
    async agent(body: Record<string, unknown>) {
      const res = await call('POST', '/agents', body);
      if (res.statusCode !== 201) throw new Error(`agent ${res.statusCode} ${res.body}`);
      return res.json().data.agent as { id: number; name: string; status: string };
    },
  };
}

export const outbox = async (svc: Svc, type: string) =>
  (await svc.ctx.pool.query('SELECT envelope FROM aos_outbox WHERE type = $1 ORDER BY created_at', [type])).rows.map((r) => r.envelope);
