import { metaFromPrincipal } from '@aos/bus';
import { OrgRoles, type OrgRole } from '@aos/contracts';
import { badRequest, conflict, forbidden, notFound, unprocessable } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, desc, eq, gt, isNull, sql } from 'drizzle-orm';
import { invites, memberships, organizations, teamMembers, teams, users } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { Email } from './auth.js';
import { createInvite } from './organizations.js';

const Id = Type.Object({ id: Type.String({ format: 'uuid' }) });
const Member = Type.Object({ user_id: Type.String(), username: Type.String(), email: Type.String(), role: Type.String(), joined_at: Type.String() });
const TeamSchema = Type.Object({
  id: Type.String(), name: Type.String(), description: Type.Union([Type.String(), Type.Null()]), member_count: Type.Integer(),
  created_at: Type.String(), members: Type.Optional(Type.Array(Member)),
});
type Team = typeof teams.$inferSelect;
const Role = Type.Unsafe<OrgRole>(Type.Union(OrgRoles.map((r) => Type.Literal(r))));

/** Teams group members of the organization the caller acts in. */
export async function teamRoutes(app: App, ctx: Ctx) {
  const admin = { scope: 'org:write' as const, minRole: 'admin' as const };
  const counts = async (ids: string[]) => {
    if (!ids.length) return new Map<string, number>();
    const rows = await ctx.db.select({ id: teamMembers.teamId, n: sql<number>`count(*)::int` }).from(teamMembers).where(sql`${teamMembers.teamId} IN ${ids}`).groupBy(teamMembers.teamId);
    return new Map(rows.map((r) => [r.id, r.n]));
  };
  const view = (t: Team, n: number) => ({ id: t.id, name: t.name, description: t.description, member_count: n, created_at: t.createdAt.toISOString() });
  const find = async (orgId: string, id: string) => {
    const [t] = await ctx.db.select().from(teams).where(and(eq(teams.orgId, orgId), eq(teams.id, id)));
    if (!t) throw notFound('Team');
    return t;
  };
  const members = async (teamId: string) => (await ctx.db.select({ m: teamMembers, u: users }).from(teamMembers).innerJoin(users, eq(users.id, teamMembers.userId))
    .where(eq(teamMembers.teamId, teamId)).orderBy(asc(teamMembers.createdAt), asc(users.id)))
    .map(({ m, u }) => ({ user_id: u.id, username: u.username, email: u.email, role: m.role, joined_at: m.createdAt.toISOString() }));

  app.get('/teams', {
    config: { scope: 'org:read' },
    schema: { tags: ['Teams'], summary: 'Teams with member counts', querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(TeamSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const p = page(request.query);
    const rows = await ctx.db.select().from(teams).where(eq(teams.orgId, orgId)).orderBy(asc(teams.name), asc(teams.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(teams).where(eq(teams.orgId, orgId))) as [{ n: number }];
    const c = await counts(rows.map((r) => r.id));
    return list(rows.map((t) => view(t, c.get(t.id) ?? 0)), n, p);
  });

  app.post('/teams', {
    config: admin,
    schema: { tags: ['Teams'], summary: 'Create a team (admin+)', body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' }), description: Type.Optional(Type.String({ maxLength: 1_000 })) }, { additionalProperties: false }), response: { 201: Envelope(TeamSchema) } },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    try {
      const t = await ctx.db.transaction(async (tx) => {
        const [row] = await tx.insert(teams).values({ orgId, name: request.body.name.trim(), description: request.body.description ?? null }).returning();
        await ctx.outbox.enqueue(tx, 'identity.team.created', { orgId, tenantId: request.principal.tenantId ?? '', teamId: row!.id, name: row!.name }, metaFromPrincipal(request.principal));
        return row!;
      });
      return reply.status(201).send(ok(view(t, 0)));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('A team with this name exists');
      throw err;
    }
  });

  app.get('/teams/:id', {
    config: { scope: 'org:read' },
    schema: { tags: ['Teams'], summary: 'Team with members', params: Id, response: { 200: Envelope(TeamSchema) } },
  }, async (request) => {
    const t = await find(orgOf(request), request.params.id);
    const m = await members(t.id);
    return ok({ ...view(t, m.length), members: m });
  });

  app.patch('/teams/:id', {
    config: admin,
    schema: { tags: ['Teams'], summary: 'Rename or describe (admin+)', params: Id, body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' })), description: Type.Optional(Type.Union([Type.String({ maxLength: 1_000 }), Type.Null()])) }, { additionalProperties: false }), response: { 200: Envelope(TeamSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const t = await find(orgId, request.params.id);
    if (Object.keys(request.body).length === 0) throw badRequest('Nothing to update');
    try {
      const [u] = await ctx.db.update(teams).set({ name: request.body.name?.trim(), description: request.body.description, updatedAt: new Date() }).where(eq(teams.id, t.id)).returning();
      await ctx.db.transaction((tx) => ctx.outbox.enqueue(tx, 'identity.team.updated', { orgId, tenantId: request.principal.tenantId ?? '', teamId: t.id }, metaFromPrincipal(request.principal)));
      return ok(view(u!, (await counts([t.id])).get(t.id) ?? 0));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('A team with this name exists');
      throw err;
    }
  });

  app.delete('/teams/:id', {
    config: admin,
    schema: { tags: ['Teams'], summary: 'Delete a team (admin+)', params: Id, response: { 200: Envelope(Type.Object({ id: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const t = await find(orgId, request.params.id);
    await ctx.db.transaction(async (tx) => {
      await tx.delete(teams).where(eq(teams.id, t.id));
      await ctx.outbox.enqueue(tx, 'identity.team.deleted', { orgId, tenantId: request.principal.tenantId ?? '', teamId: t.id }, metaFromPrincipal(request.principal));
    });
    return ok({ id: t.id, deleted: true });
  });

  app.get('/teams/:id/members', {
    config: { scope: 'org:read' },
    schema: { tags: ['Teams'], summary: 'Team members', params: Id, response: { 200: ListEnvelope(Member) } },
  }, async (request) => {
    const t = await find(orgOf(request), request.params.id);
    const m = await members(t.id);
    return list(m, m.length, { limit: m.length, offset: 0 });
  });

  app.post('/teams/:id/members', {
    config: admin,
    schema: { tags: ['Teams'], summary: 'Add an organization member to the team (admin+)', params: Id, body: Type.Object({ user_id: Type.String({ format: 'uuid' }), role: Type.Optional(Type.String({ maxLength: 30, pattern: '^[a-z_]+$' })) }, { additionalProperties: false }), response: { 201: Envelope(Member) } },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const t = await find(orgId, request.params.id);
    const [m] = await ctx.db.select({ u: users }).from(memberships).innerJoin(users, eq(users.id, memberships.userId)).where(and(eq(memberships.orgId, orgId), eq(memberships.userId, request.body.user_id)));
    if (!m) throw unprocessable('The user is not a member of this organization');
    const [row] = await ctx.db.insert(teamMembers).values({ teamId: t.id, userId: m.u.id, role: request.body.role ?? 'member' }).onConflictDoNothing().returning();
    if (!row) throw conflict('Already in the team');
    await ctx.db.transaction((tx) => ctx.outbox.enqueue(tx, 'identity.team_member.added', { orgId, tenantId: request.principal.tenantId ?? '', teamId: t.id, userId: m.u.id }, metaFromPrincipal(request.principal)));
    return reply.status(201).send(ok({ user_id: m.u.id, username: m.u.username, email: m.u.email, role: row.role, joined_at: row.createdAt.toISOString() }));
  });

  const InviteSchema = Type.Object({ id: Type.String(), email: Type.String(), role: Type.String(), team_id: Type.Union([Type.String(), Type.Null()]), expires_at: Type.String(), created_at: Type.String(), accept_url: Type.Optional(Type.String()), token: Type.Optional(Type.String()) });

  app.get('/teams/:id/invites', {
    config: { scope: 'org:read', minRole: 'admin' },
    schema: { tags: ['Teams'], summary: 'Pending team invitations (admin+)', params: Id, response: { 200: ListEnvelope(InviteSchema) } },
  }, async (request) => {
    const t = await find(orgOf(request), request.params.id);
    const rows = await ctx.db.select().from(invites).where(and(eq(invites.teamId, t.id), isNull(invites.acceptedAt), gt(invites.expiresAt, new Date()))).orderBy(desc(invites.createdAt));
    return list(rows.map((i) => ({ id: i.id, email: i.email, role: i.role, team_id: i.teamId, expires_at: i.expiresAt.toISOString(), created_at: i.createdAt.toISOString() })), rows.length, { limit: rows.length, offset: 0 });
  });

  app.post('/teams/:id/invites', {
    config: admin,
    schema: { tags: ['Teams'], summary: 'Invite by e-mail into the organization and this team (admin+)', params: Id, body: Type.Object({ email: Email, role: Type.Optional(Role) }, { additionalProperties: false }), response: { 201: Envelope(InviteSchema) } },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const t = await find(orgId, request.params.id);
    const role = request.body.role ?? 'member';
    if (role === 'owner' && request.principal.orgRole !== 'owner') throw forbidden('Only an owner can invite owners');
    const [org] = await ctx.db.select().from(organizations).where(eq(organizations.id, orgId));
    if (!org) throw notFound('Organization');
    return reply.status(201).send(ok(await createInvite(ctx, request, org, request.body.email, role, t.id)));
  });
}
