/**
 * Postgres rejects U+0000 in `text` and `jsonb`. Event payloads are validated only by
 * shape, so a NUL in, say, an agent's error message would make every delivery of the event
 * fail until it is dead-lettered; values coming from events are cleaned instead.
 */
export const withoutNul = (s: string) => (s.includes('\u0000') ? s.replaceAll('\u0000', '') : s);

/** `withoutNul` applied to every string and key of a JSON value. */
export function jsonWithoutNul<T>(value: T): T {
  if (typeof value === 'string') return withoutNul(value) as T;
  if (Array.isArray(value)) return value.map(jsonWithoutNul) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [withoutNul(k), jsonWithoutNul(v)])) as T;
  }
  return value;
}

/** True when a JSON value holds a NUL anywhere (API input: refused with a 400, not cleaned). */
export const hasNul = (value: unknown) => JSON.stringify(value ?? null).includes('\\u0000');

/** True when a JSON value nests deeper than `max` (checked without recursion: deep input cannot overflow the stack). */
export function nestsDeeperThan(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}
