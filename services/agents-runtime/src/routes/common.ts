import { badRequest } from '@aos/core';
import { csv } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { AGENT_NAME } from '../domain/agents.js';

export const literals = <T extends string>(values: readonly T[]) => Type.Union(values.map((v) => Type.Literal(v)));

/** Serial ids are 32-bit: larger ones are a 400, not a database error. */
export const Id = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) });
export const AgentName = Type.String({ minLength: 1, maxLength: 63, pattern: AGENT_NAME });
export const Slug = Type.String({ minLength: 1, maxLength: 80, pattern: '^[a-z0-9]+(?:-[a-z0-9]+)*$' });

/** ILIKE pattern matching `q` literally. */
export const like = (q: string) => `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/** Comma-separated enum filter (`?status=a,b`); an unknown value is a 400, not an empty page. */
export function enumList(value: string | undefined, allowed: readonly string[], field: string): string[] | undefined {
  const items = csv(value);
  const bad = items?.filter((v) => !allowed.includes(v)) ?? [];
  if (bad.length) throw badRequest(`Unknown ${field}: ${bad.join(', ')}`, [{ field, allowed }]);
  return items;
}
