import { waitFor } from '@aos/testkit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack } from './stack.js';

let stack: Awaited<ReturnType<typeof startStack>>;
beforeAll(async () => { stack = await startStack(); });
afterAll(() => stack?.close());

const api = (method: 'GET' | 'POST', url: string, opts: { token?: string; body?: unknown } = {}) =>
  stack.gateway.inject({ method, url, ...(opts.body !== undefined ? { payload: opts.body as object } : {}), headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {} });

describe('sessions through the gateway', () => {
  it('a new login right after logout everywhere works', async () => {
    const id = randomUUID().slice(0, 8);
    const body = { username: `u_${id}`, email: `${id}@example.com`, password: 'correct horse battery', terms_accepted: true, privacy_accepted: true };
    const u = (await api('POST', '/api/auth/register', { body })).json().data;
    expect((await api('POST', '/api/auth/logout', { token: u.token, body: { all_devices: true } })).statusCode).toBe(200);
    const fresh = (await api('POST', '/api/auth/login', { body: { email: body.email, password: body.password } })).json().data;
    await waitFor(async () => (await api('GET', '/api/auth/me', { token: u.token })).statusCode === 401, { message: 'old token refused' });
    expect((await api('GET', '/api/auth/me', { token: fresh.token })).statusCode).toBe(200);
  });
});
