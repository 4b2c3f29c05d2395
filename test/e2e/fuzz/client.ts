import type { App } from '@aos/http';
import type { LightMyRequestResponse } from 'fastify';

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface Caller {
  label: string;
  token: string;
  orgId: string;
  userId: string;
  email: string;
}

export interface Call {
  method: Method;
  url: string;
  headers?: Record<string, string>;
  /** A value is sent as JSON; a string or Buffer is sent as is (with the headers given). */
  body?: unknown;
  raw?: string | Buffer;
}

let address = 0;
/**
 * Anonymous callers are rate-limited per client address: each anonymous request comes from its
 * own address in 10.0.0.0/8 so the fuzzing volume is not what gets refused.
 */
const nextAddress = () => {
  address += 1;
  return `10.${(address >> 16) & 255}.${(address >> 8) & 255}.${address & 255}`;
};

/** Sends a request through the gateway; streams (SSE) answer as soon as their headers are sent. */
export async function send(gateway: App, caller: Caller | null, call: Call): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { ...(caller ? { authorization: `Bearer ${caller.token}` } : {}), ...call.headers };
  let payload: string | Buffer | undefined = call.raw;
  if (payload === undefined && call.body !== undefined) {
    payload = JSON.stringify(call.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await gateway.inject({
    method: call.method, url: call.url, headers, ...(payload !== undefined ? { payload } : {}),
    remoteAddress: caller ? '127.0.0.1' : nextAddress(), payloadAsStream: true,
  });
  const type = String(res.headers['content-type'] ?? '');
  const stream = res.stream();
  if (type.startsWith('text/event-stream')) {
    stream.destroy();
    return Object.assign(res, { body: '', payload: '' });
  }
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  const body = Buffer.concat(chunks).toString('utf8');
  return Object.assign(res, { body, payload: body, json: () => JSON.parse(body) as unknown });
}

export const dataOf = <T = Record<string, unknown>>(res: LightMyRequestResponse) => (res.json() as { data: T }).data;
