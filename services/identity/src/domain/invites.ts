import { metaFromPrincipal, type EventMeta } from '@aos/bus';
import type { OrgRole, Principal } from '@aos/contracts';
import { conflict } from '@aos/core';
import { and, eq, gt, isNull, sql } from 'drizzle-orm';
import { invites, memberships, organizations, teamMembers, teams, users } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { opaqueToken, sha256 } from './crypto.js';
import { enforceSeatLimit } from './seats.js';
import { NIL_UUID, type ITx } from './users.js';

type Org = typeof organizations.$inferSelect;
type Invite = typeof invites.$inferSelect;

/** Event metadata of a change in `org` (which need not be the org the caller acts in). */
export const orgMeta = (principal: Principal, org: { id: string; tenantId: string }): EventMeta => ({ ...metaFromPrincipal(principal), orgId: org.id, tenantId: org.tenantId });

export const inviteView = (i: Invite) => ({
  id: i.id, email: i.email, role: i.role, team_id: i.teamId, expires_at: i.expiresAt.toISOString(), created_at: i.createdAt.toISOString(),
});

/** Pending: neither accepted nor expired. */
export const pendingInvite = () => and(isNull(invites.acceptedAt), gt(invites.expiresAt, new Date()));

/**
 * Creates an invitation (token hashed at rest) and emits the event notifications turns into an
 * e-mail, alike for addresses with an account and without. 409 when the address already belongs to a member (of the team, for team invites) or
 * already has a pending invitation for the same org and team; 402 PLAN_LIMIT_REACHED when the seat it
 * reserves is not free under the org's plan.
 */
export async function createInvite(ctx: Ctx, principal: Principal, org: Org, email: string, role: OrgRole, teamId: string | null) {
  const token = opaqueToken();
  const expiresAt = new Date(Date.now() + ctx.config.INVITE_TTL_HOURS * 3_600_000);
  const acceptUrl = `${ctx.config.APP_URL.replace(/\/$/, '')}/invites/${token}`;
  const invite = await ctx.db.transaction(async (tx) => {
    // Serialises invitations to one address of one org, so two concurrent requests cannot both pass the check.
    await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtext(${`identity:invite:${org.id}:${email.toLowerCase()}`}))`);
    const [invitee] = await tx.select({ id: users.id }).from(users).where(eq(sql`lower(${users.email})`, email.toLowerCase()));
    // The same queries with an account or without: the time taken does not tell either.
    const inviteeId = invitee?.id ?? NIL_UUID;
    const [member] = teamId
      ? await tx.select({ id: teamMembers.userId }).from(teamMembers).where(and(eq(teamMembers.teamId, teamId), eq(teamMembers.userId, inviteeId)))
      : await tx.select({ id: memberships.userId }).from(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, inviteeId)));
    if (member) throw conflict(teamId ? 'This user is already in the team' : 'This user is already a member', [{ field: 'email' }]);
    const [open] = await tx.select({ id: invites.id }).from(invites).where(and(
      eq(invites.orgId, org.id), eq(sql`lower(${invites.email})`, email.toLowerCase()),
      teamId ? eq(invites.teamId, teamId) : isNull(invites.teamId), pendingInvite(),
    ));
    if (open) throw conflict('An invitation to this address is already pending', [{ field: 'email', invite_id: open.id }]);
    // The invitation reserves a seat, unless it only brings a member of the org into a team.
    const [orgMember] = teamId
      ? await tx.select({ id: memberships.userId }).from(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, inviteeId)))
      : [];
    if (!orgMember) await enforceSeatLimit(tx, org.id, email);
    const [row] = await tx.insert(invites).values({ orgId: org.id, teamId, email, role, tokenHash: sha256(token), invitedBy: principal.userId, expiresAt }).returning();
    await ctx.outbox.enqueue(tx, 'identity.invite.created', {
      orgId: org.id, tenantId: org.tenantId, inviteId: row!.id, email, role, teamId, invitedBy: principal.userId,
      inviteeUserId: invitee?.id ?? null, acceptUrl, expiresAt: expiresAt.toISOString(),
    }, orgMeta(principal, org));
    return row!;
  });
  return { ...inviteView(invite), accept_url: acceptUrl, token };
}

/**
 * Accepts a pending invitation for `user` (single use, before expiry, only for the address it was
 * sent to, only while the org exists). Joins the org (keeping a stronger existing role) and the
 * team when there is one. `null` when the invitation cannot be used; 402 PLAN_LIMIT_REACHED when
 * joining would take the org past its plan's seats (the invitation stays pending).
 */
export async function acceptInvite(ctx: Ctx, tx: ITx, token: string, user: { id: string; email: string }, meta: EventMeta) {
  const [invite] = await tx.select().from(invites).where(eq(invites.tokenHash, sha256(token))).for('update');
  if (!invite || invite.acceptedAt || invite.expiresAt <= new Date()) return null;
  if (user.email.toLowerCase() !== invite.email.toLowerCase()) return null;
  const [org] = await tx.select().from(organizations).where(and(eq(organizations.id, invite.orgId), isNull(organizations.deletedAt)));
  if (!org) return null;
  const [member] = await tx.select({ id: memberships.userId }).from(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, user.id)));
  // Before any write: a caller may go on with its transaction after a 402 (registration does).
  if (!member) await enforceSeatLimit(tx, org.id, invite.email);
  const m = { ...meta, orgId: org.id, tenantId: org.tenantId };
  await tx.update(invites).set({ acceptedAt: new Date(), acceptedBy: user.id }).where(eq(invites.id, invite.id));
  const [added] = await tx.insert(memberships).values({ orgId: org.id, userId: user.id, role: invite.role }).onConflictDoNothing().returning();
  const [existing] = added ? [added] : await tx.select().from(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, user.id)));
  let teamId: string | null = null;
  if (invite.teamId) {
    const [team] = await tx.select({ id: teams.id }).from(teams).where(and(eq(teams.id, invite.teamId), eq(teams.orgId, org.id)));
    if (team) {
      teamId = team.id;
      const [joined] = await tx.insert(teamMembers).values({ teamId: team.id, userId: user.id }).onConflictDoNothing().returning();
      if (joined) await ctx.outbox.enqueue(tx, 'identity.team_member.added', { orgId: org.id, tenantId: org.tenantId, teamId: team.id, userId: user.id }, m);
    }
  }
  await ctx.outbox.enqueue(tx, 'identity.invite.accepted', { orgId: org.id, tenantId: org.tenantId, inviteId: invite.id, userId: user.id }, m);
  if (added) await ctx.outbox.enqueue(tx, 'identity.member.added', { orgId: org.id, tenantId: org.tenantId, userId: user.id, role: invite.role }, m);
  return { org_id: org.id, role: existing!.role, team_id: teamId };
}
