import { forbidden, notFound } from '@aos/core';
import { roleAtLeast, type OrgRole } from '@aos/contracts';
import { and, eq, isNull } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { memberships, organizations } from '../db/schema.js';
import type { IExec, ITx } from './users.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The caller's role in `orgId`: their membership for users (platform admins act as owners),
 * for API keys only their own org (`org:write` → admin, else viewer). Not a member → 404,
 * so ids of other organizations reveal nothing.
 */
export async function roleIn(db: IExec, request: FastifyRequest, orgId: string): Promise<{ role: OrgRole; org: typeof organizations.$inferSelect }> {
  if (!UUID.test(orgId)) throw notFound('Organization');
  const [org] = await (db as ITx).select().from(organizations).where(and(eq(organizations.id, orgId), isNull(organizations.deletedAt)));
  if (!org) throw notFound('Organization');
  const p = request.principal;
  if (p.kind === 'api_key') {
    if (p.orgId !== orgId) throw notFound('Organization');
    return { role: p.scopes.includes('*') || p.scopes.includes('org:write') ? 'admin' : 'viewer', org };
  }
  if (!p.userId) throw notFound('Organization');
  const [m] = await (db as ITx).select({ role: memberships.role }).from(memberships).where(and(eq(memberships.orgId, orgId), eq(memberships.userId, p.userId)));
  if (!m) {
    if (p.platformRoles.includes('admin')) return { role: 'owner', org };
    throw notFound('Organization');
  }
  return { role: m.role as OrgRole, org };
}

export async function requireRole(db: IExec, request: FastifyRequest, orgId: string, atLeast: OrgRole) {
  const r = await roleIn(db, request, orgId);
  if (!roleAtLeast(r.role, atLeast)) throw forbidden(`Requires the ${atLeast} role in this organization`);
  return r;
}
