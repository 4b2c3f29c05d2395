import type { EventMeta } from '@aos/bus';
import { and, eq, isNull, sql } from 'drizzle-orm';
import { apiKeys, memberships, organizations, teamMembers, teams } from '../db/schema.js';
import type { Ctx } from '../service.js';
import type { ITx } from './users.js';

type Org = typeof organizations.$inferSelect;

/**
 * Soft-deletes an organization and revokes its API keys (each key's revocation event evicts
 * it from the gateway's cache at once, instead of it living on there until the cache expires).
 */
export async function softDeleteOrg(ctx: Ctx, tx: ITx, org: Org, meta: EventMeta) {
  const now = new Date();
  await tx.update(organizations).set({ deletedAt: now, updatedAt: now }).where(eq(organizations.id, org.id));
  const revoked = await tx.update(apiKeys).set({ revokedAt: now, isActive: false, previousKeyHash: null, previousValidUntil: null, updatedAt: now })
    .where(and(eq(apiKeys.orgId, org.id), isNull(apiKeys.revokedAt))).returning({ id: apiKeys.id });
  const m = { ...meta, orgId: org.id, tenantId: org.tenantId };
  for (const k of revoked) {
    await ctx.outbox.enqueue(tx, 'identity.api_key.revoked', { orgId: org.id, tenantId: org.tenantId, apiKeyId: k.id, reason: 'org_deleted' }, m);
  }
  await ctx.outbox.enqueue(tx, 'identity.org.deleted', { orgId: org.id, tenantId: org.tenantId }, m);
}

/** Removes a member from an organization and from its teams. */
export async function removeMember(ctx: Ctx, tx: ITx, org: Org, userId: string, meta: EventMeta) {
  await tx.delete(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, userId)));
  await tx.delete(teamMembers).where(and(eq(teamMembers.userId, userId), sql`${teamMembers.teamId} IN (SELECT ${teams.id} FROM ${teams} WHERE ${teams.orgId} = ${org.id})`));
  await ctx.outbox.enqueue(tx, 'identity.member.removed', { orgId: org.id, tenantId: org.tenantId, userId }, { ...meta, orgId: org.id, tenantId: org.tenantId });
}

export const ownerCount = async (tx: ITx | Ctx['db'], orgId: string) =>
  ((await (tx as ITx).select({ n: sql<number>`count(*)::int` }).from(memberships).where(and(eq(memberships.orgId, orgId), eq(memberships.role, 'owner')))) as [{ n: number }])[0].n;
