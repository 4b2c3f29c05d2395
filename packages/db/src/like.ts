/** `text` as a literal inside a LIKE/ILIKE pattern: its `\`, `%` and `_` escaped (Postgres' default escape is `\`). */
export const escapeLike = (text: string): string => text.replace(/[\\%_]/g, (c) => `\\${c}`);
