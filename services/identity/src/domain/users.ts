import { and, asc, desc, eq, isNull } from 'drizzle-orm';
import type { Db, Tx } from '@aos/db';
import { memberships, organizations, refreshTokens, type users } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { opaqueToken, sha256 } from './crypto.js';
import { signAccessToken, type Signer } from './tokens.js';

export type ITx = Tx<typeof schema>;
export type IExec = ITx | Db<typeof schema>;
export type UserRow = typeof users.$inferSelect;
/** Stands in for "no user" where a query runs either way (the same work with an account or without). */
export const NIL_UUID = '00000000-0000-0000-0000-000000000000';

/** Platform roles of the reference API; only `admin` grants platform-wide operations, `member` means none. */
export const PlatformRoles = ['admin', 'editor', 'viewer', 'builder', 'agent', 'demo', 'member'] as const;

export const userView = (u: UserRow) => ({
  id: u.id, username: u.username, email: u.email, role: u.platformRoles.includes('admin') ? 'admin' : u.platformRoles[0] ?? 'member',
  platform_roles: u.platformRoles, avatar_url: u.avatarUrl, tenant_id: u.tenantId, created_at: u.createdAt.toISOString(),
});

/** The user's personal organization (their default acting org). */
export async function personalOrg(db: IExec, userId: string) {
  const [row] = await (db as ITx).select({ id: organizations.id, role: memberships.role, tenantId: organizations.tenantId })
    .from(memberships).innerJoin(organizations, eq(organizations.id, memberships.orgId))
    .where(and(eq(memberships.userId, userId), isNull(organizations.deletedAt)))
    .orderBy(desc(organizations.personal), asc(memberships.createdAt)).limit(1);
  return row ?? null;
}

/**
 * A new session: a 15 min access token for the default org and a rotating refresh token (new
 * family unless given). The access token's `sid` is the family, so logging out ends both.
 */
export async function issueSession(db: IExec, signer: Signer, user: UserRow, ttlDays: number, familyId?: string) {
  // Right after "revoke everything" the gateway refuses tokens issued before the next whole second.
  const wait = (user.tokensNotBefore?.getTime() ?? 0) - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, 1_000)));
  const org = await personalOrg(db, user.id);
  const sessionId = familyId ?? crypto.randomUUID();
  const access = await signAccessToken(signer, {
    userId: user.id, tenantId: user.tenantId, orgId: org?.id ?? '', orgRole: org?.role ?? 'viewer', roles: user.platformRoles, sessionId,
  });
  const refresh = opaqueToken();
  await (db as ITx).insert(refreshTokens).values({
    userId: user.id, familyId: sessionId, tokenHash: sha256(refresh), expiresAt: new Date(Date.now() + ttlDays * 86_400_000),
  });
  return { access, refresh, orgId: org?.id ?? null };
}
