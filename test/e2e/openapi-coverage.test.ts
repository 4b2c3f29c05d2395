import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFullStack } from './stack.js';

let stack: Awaited<ReturnType<typeof startFullStack>>;

beforeAll(async () => {
  stack = await startFullStack({ background: false });
});
afterAll(async () => {
  await stack?.close();
});

describe('the aggregated OpenAPI document', () => {
  it('contains every endpoint of reference/endpoints.tsv', async () => {
    const doc = (await stack.gateway.inject({ method: 'GET', url: '/api/docs/openapi.json' })).json();
    expect(doc['x-unavailable-services']).toEqual([]);
    const rows = readFileSync(new URL('../../../shared/reference/endpoints.tsv', import.meta.url), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t'));
    expect(rows.length).toBeGreaterThan(150);
    const missing = rows.filter(([method, path]) => !doc.paths[`/api${path}`]?.[method!.toLowerCase()]).map(([m, p, , o]) => `${m} ${p} (${o})`);
    expect(missing).toEqual([]);
  });
});
