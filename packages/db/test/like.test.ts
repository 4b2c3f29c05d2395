import { createTestDatabase } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, escapeLike, type Pool } from '../src/index.js';

let db: { url: string; drop: () => Promise<void> };
let pool: Pool;

beforeAll(async () => {
  db = await createTestDatabase('like');
  pool = createPool(db.url, undefined, 1);
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

describe('escapeLike', () => {
  it('makes %, _ and \\ match only themselves in a Postgres LIKE pattern', async () => {
    const values = ['50% off', '50 pct off', 'a_b', 'axb', 'C:\\temp', 'C:temp'];
    const matches = async (needle: string) => (await pool.query<{ v: string }>(
      'SELECT v FROM unnest($1::text[]) AS v WHERE v LIKE $2 ORDER BY v', [values, `%${escapeLike(needle)}%`])).rows.map((r) => r.v);
    expect(await matches('%')).toEqual(['50% off']);
    expect(await matches('_')).toEqual(['a_b']);
    expect(await matches('\\')).toEqual(['C:\\temp']);
    expect(await matches('0% o')).toEqual(['50% off']);
  });
});
