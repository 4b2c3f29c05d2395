import { defineHandler } from '@aos/bus';
import { eq } from 'drizzle-orm';
import { notifications, orgs, users, webhooks } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { jsonWithoutNul } from '../domain/sanitize.js';

type Handled = 'identity.user.registered' | 'identity.user.deleted' | 'identity.org.created' | 'identity.org.deleted';

/**
 * Users and orgs projection: maps task assignees (usernames) and e-mails to accounts, knows
 * platform admins and org names. A deleted user loses their notifications; a deleted org its
 * notifications and webhooks (the activity log is kept as the org's audit trail until retention).
 */
export const usersProjection = () => defineHandler<Handled, typeof schema>({
  name: 'users-projection',
  events: ['identity.user.registered', 'identity.user.deleted', 'identity.org.created', 'identity.org.deleted'],
  async handle(raw, tx) {
    const event = jsonWithoutNul(raw);
    if (event.type === 'identity.user.registered') {
      const d = event.data;
      const values = { userId: d.userId, username: d.username, email: d.email, personalOrgId: d.personalOrgId, platformRoles: d.platformRoles };
      await tx.insert(users).values(values).onConflictDoUpdate({ target: users.userId, set: values });
    } else if (event.type === 'identity.user.deleted') {
      await tx.delete(users).where(eq(users.userId, event.data.userId));
      await tx.delete(notifications).where(eq(notifications.userId, event.data.userId));
    } else if (event.type === 'identity.org.created') {
      const { orgId, name, slug } = event.data;
      await tx.insert(orgs).values({ orgId, name, slug }).onConflictDoUpdate({ target: orgs.orgId, set: { name, slug } });
    } else if (event.type === 'identity.org.deleted') {
      await tx.delete(orgs).where(eq(orgs.orgId, event.data.orgId));
      await tx.delete(notifications).where(eq(notifications.orgId, event.data.orgId));
      await tx.delete(webhooks).where(eq(webhooks.orgId, event.data.orgId));
    }
  },
});
