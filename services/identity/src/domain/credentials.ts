import { eq, sql } from 'drizzle-orm';
import { credentials } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { Vault } from './crypto.js';

/** The vault from the settings; a malformed key stops the service at start, naming the setting. */
export const vaultOf = (ctx: Ctx) => Vault.fromConfig(ctx.config.CREDENTIALS_KEY, ctx.config.CREDENTIALS_KEY_ID, ctx.config.CREDENTIALS_PREVIOUS_KEYS);

/** Re-seals every value still under a previous key with the current one (run at start; idempotent). */
export async function resealCredentials(ctx: Ctx, vault: Vault): Promise<number> {
  let resealed = 0;
  const stale = await ctx.db.select({ key: credentials.key }).from(credentials).where(sql`${credentials.keyId} <> ${vault.keyId}`);
  for (const { key } of stale) {
    await ctx.db.transaction(async (tx) => {
      const [row] = await tx.select().from(credentials).where(eq(credentials.key, key)).for('update');
      if (!row || row.keyId === vault.keyId) return;
      const value = vault.open(row.key, row);
      if (value === null) {
        ctx.log.warn({ credential: row.key, keyId: row.keyId }, 'credential sealed with a key that is not configured; left as is');
        return;
      }
      await tx.update(credentials).set({ ...vault.seal(row.key, value) }).where(eq(credentials.key, row.key));
      resealed++;
    });
  }
  return resealed;
}

