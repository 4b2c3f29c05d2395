import { enforcePlanLimit } from '@aos/db';
import { sql } from 'drizzle-orm';
import type { ITx } from './users.js';

/**
 * Seats the organization uses: its members, plus one per address with a pending invitation that
 * is not a member's (an invitation reserves its seat, so accepting one rarely fails). `joining`
 * is the address taking the seat now: its own invitations are the seat it takes, not another.
 */
async function seatsUsed(tx: ITx, orgId: string, joining: string | null): Promise<number> {
  const { rows } = await tx.execute<{ n: number }>(sql`
    SELECT (SELECT count(*) FROM memberships WHERE org_id = ${orgId})
         + (SELECT count(DISTINCT lower(i.email)) FROM invites i
             WHERE i.org_id = ${orgId} AND i.accepted_at IS NULL AND i.expires_at > now()
               AND lower(i.email) IS DISTINCT FROM lower(${joining}::text)
               AND NOT EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id
                                WHERE m.org_id = ${orgId} AND lower(u.email) = lower(i.email)))::int AS n`);
  return Number(rows[0]!.n);
}

/**
 * 402 PLAN_LIMIT_REACHED when one more seat (a member added, an invitation accepted or sent to an
 * address that is not a member's) would take the organization past its plan's `seats`. Call it
 * in the transaction that adds the member or the invitation.
 */
export const enforceSeatLimit = (tx: ITx, orgId: string, joiningEmail: string | null) =>
  enforcePlanLimit(tx, orgId, 'seats', () => seatsUsed(tx, orgId, joiningEmail));
