import { defineHandler } from '@aos/bus';
import { eq, sql } from 'drizzle-orm';
import { deletedUsers, notifications, orgMembers, orgs, users, webhooks } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import type { STx } from '../domain/notifications.js';
import { jsonWithoutNul } from '../domain/sanitize.js';

type Handled = 'identity.user.registered' | 'identity.user.deleted' | 'identity.org.created' | 'identity.org.deleted'
  | 'identity.member.added' | 'identity.member.role_changed' | 'identity.member.removed';

const REMOVED = 'removed';

/** Identity deleted this user: a registration or membership consumed after the deletion brings nothing back. */
const isDeleted = async (tx: STx, userId: string) => (await tx.select().from(deletedUsers).where(eq(deletedUsers.userId, userId))).length > 0;

/** Sets a membership unless a newer event already did (consumers of different types race). */
async function setMembership(tx: STx, orgId: string, userId: string, role: string, at: Date) {
  await tx.insert(orgMembers).values({ orgId, userId, role, changedAt: at }).onConflictDoUpdate({
    target: [orgMembers.orgId, orgMembers.userId], set: { role, changedAt: at }, setWhere: sql`${orgMembers.changedAt} <= ${at}`,
  });
}

/**
 * Users, orgs and memberships projection: maps task assignees (usernames) and e-mails to
 * accounts, knows platform admins, org names, owners and admins. A deleted user loses their
 * notifications and is kept out for good; a deleted org its notifications and webhooks (the
 * activity log is kept as the org's audit trail until retention).
 */
export const usersProjection = () => defineHandler<Handled, typeof schema>({
  name: 'users-projection',
  events: ['identity.user.registered', 'identity.user.deleted', 'identity.org.created', 'identity.org.deleted',
    'identity.member.added', 'identity.member.role_changed', 'identity.member.removed'],
  async handle(raw, tx) {
    const event = jsonWithoutNul(raw);
    const at = new Date(event.occurredAt);
    switch (event.type) {
      case 'identity.user.registered': {
        const d = event.data;
        if (await isDeleted(tx, d.userId)) return;
        const values = { userId: d.userId, username: d.username, email: d.email, personalOrgId: d.personalOrgId, platformRoles: d.platformRoles };
        await tx.insert(users).values(values).onConflictDoUpdate({ target: users.userId, set: values });
        await setMembership(tx, d.personalOrgId, d.userId, 'owner', at);
        break;
      }
      case 'identity.user.deleted': {
        const { userId } = event.data;
        await tx.insert(deletedUsers).values({ userId, deletedAt: at }).onConflictDoNothing();
        await tx.delete(users).where(eq(users.userId, userId));
        await tx.delete(notifications).where(eq(notifications.userId, userId));
        await tx.update(orgMembers).set({ role: REMOVED, changedAt: at }).where(eq(orgMembers.userId, userId));
        break;
      }
      case 'identity.member.added':
      case 'identity.member.role_changed':
        if (await isDeleted(tx, event.data.userId)) return;
        await setMembership(tx, event.data.orgId, event.data.userId, event.data.role, at);
        break;
      case 'identity.member.removed':
        await setMembership(tx, event.data.orgId, event.data.userId, REMOVED, at);
        break;
      case 'identity.org.created': {
        const { orgId, name, slug } = event.data;
        await tx.insert(orgs).values({ orgId, name, slug }).onConflictDoUpdate({ target: orgs.orgId, set: { name, slug } });
        break;
      }
      case 'identity.org.deleted':
        await tx.delete(orgs).where(eq(orgs.orgId, event.data.orgId));
        await tx.delete(orgMembers).where(eq(orgMembers.orgId, event.data.orgId));
        await tx.delete(notifications).where(eq(notifications.orgId, event.data.orgId));
        await tx.delete(webhooks).where(eq(webhooks.orgId, event.data.orgId));
        break;
    }
  },
});
