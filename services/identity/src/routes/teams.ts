import { AppError, badRequest, conflict, forbidden, notFound } from '@aos/core';
import { escapeLike, isUniqueViolation } from '@aos/db';
import { Envelope, ListEnvelope, list, Nullable, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, desc, eq, ilike, sql } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { invites, memberships, teamMembers, teams, users } from '../db/schema.js';
import { requireRole, roleIn } from '../domain/access.js';
import { createInvite, inviteView, orgMeta, pendingInvite } from '../domain/invites.js';
import type { Ctx } from '../service.js';
import { Email } from './auth.js';
import { InviteSchema, Role } from './organizations.js';

const Id = Type.Object({ id: Type.String({ format: 'uuid' }) });
const TeamRole = Type.Union([Type.Literal('owner'), Type.Literal('admin'), Type.Literal('member')]);
const Member = Type.Object({ user_id: Type.String(), username: Type.String(), email: Type.String(), role: Type.String(), joined_at: Type.String() });
const TeamSchema = Type.Object({
  id: Type.String(), name: Type.String(), description: Nullable(Type.String()), member_count: Type.Integer(),
  created_at: Type.String(), members: Type.Optional(Type.Array(Member)),
});
const Name = Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' });
type Team = typeof teams.$inferSelect;


/**
 * Teams group members of the organization the caller acts in (the JWT's org or `X-Org-Id`;
 * an API key's own org). Reading needs membership, changes the admin role (`org:write` for keys).
 */
export async function teamRoutes(app: App, ctx: Ctx) {
  const reader = (request: FastifyRequest) => roleIn(ctx.db, request, orgOf(request));
  const admin = (request: FastifyRequest) => requireRole(ctx.db, request, orgOf(request), 'admin');
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
  const memberRows = (teamId: string) => ctx.db.select({ m: teamMembers, u: users }).from(teamMembers).innerJoin(users, eq(users.id, teamMembers.userId))
    .where(eq(teamMembers.teamId, teamId)).orderBy(asc(teamMembers.createdAt), asc(users.id));
  const memberView = ({ m, u }: { m: typeof teamMembers.$inferSelect; u: typeof users.$inferSelect }) =>
    ({ user_id: u.id, username: u.username, email: u.email, role: m.role, joined_at: m.createdAt.toISOString() });

  app.get('/teams', {
    config: { scope: 'org:read' },
    schema: {
      tags: ['Teams'], summary: 'Teams with member counts', querystring: Type.Object({ ...PaginationQuery, name: Type.Optional(Type.String({ maxLength: 100, description: 'Case-insensitive substring of the name' })) }),
      response: { 200: ListEnvelope(TeamSchema) },
    },
  }, async (request) => {
    const { org } = await reader(request);
    const p = page(request.query);
    const name = request.query.name?.trim();
    const cond = and(eq(teams.orgId, org.id), name ? ilike(teams.name, `%${escapeLike(name)}%`) : undefined);
    const rows = await ctx.db.select().from(teams).where(cond).orderBy(asc(teams.name), asc(teams.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(teams).where(cond)) as [{ n: number }];
    const c = await counts(rows.map((r) => r.id));
    return list(rows.map((t) => view(t, c.get(t.id) ?? 0)), n, p);
  });

  app.post('/teams', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Teams'], summary: 'Create a team (admin+); a user creating it becomes its owner',
      body: Type.Object({ name: Name, description: Type.Optional(Type.String({ maxLength: 1_000 })) }, { additionalProperties: false }), response: { 201: Envelope(TeamSchema) },
    },
  }, async (request, reply) => {
    const { org } = await admin(request);
    const creator = request.principal.kind === 'user' ? request.principal.userId : null;
    try {
      const { team, members } = await ctx.db.transaction(async (tx) => {
        const [row] = await tx.insert(teams).values({ orgId: org.id, name: request.body.name.trim(), description: request.body.description ?? null }).returning();
        const meta = orgMeta(request.principal, org);
        await ctx.outbox.enqueue(tx, 'identity.team.created', { orgId: org.id, tenantId: org.tenantId, teamId: row!.id, name: row!.name }, meta);
        // A platform admin acting in an org they do not belong to creates the team without joining it.
        const [member] = creator ? await tx.select().from(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, creator))) : [];
        if (member) {
          await tx.insert(teamMembers).values({ teamId: row!.id, userId: member.userId, role: 'owner' });
          await ctx.outbox.enqueue(tx, 'identity.team_member.added', { orgId: org.id, tenantId: org.tenantId, teamId: row!.id, userId: member.userId }, meta);
        }
        return { team: row!, members: member ? 1 : 0 };
      });
      return reply.status(201).send(ok(view(team, members)));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('A team with this name exists', [{ field: 'name' }]);
      throw err;
    }
  });

  app.get('/teams/:id', {
    config: { scope: 'org:read' },
    schema: { tags: ['Teams'], summary: 'Team with members', params: Id, response: { 200: Envelope(TeamSchema) } },
  }, async (request) => {
    const { org } = await reader(request);
    const t = await find(org.id, request.params.id);
    const m = (await memberRows(t.id)).map(memberView);
    return ok({ ...view(t, m.length), members: m });
  });

  app.patch('/teams/:id', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Teams'], summary: 'Rename or describe (admin+)', params: Id,
      body: Type.Object({ name: Type.Optional(Name), description: Type.Optional(Nullable(Type.String({ maxLength: 1_000 }))) }, { additionalProperties: false }),
      response: { 200: Envelope(TeamSchema) },
    },
  }, async (request) => {
    const { org } = await admin(request);
    const t = await find(org.id, request.params.id);
    if (Object.keys(request.body).length === 0) throw badRequest('Nothing to update');
    try {
      const updated = await ctx.db.transaction(async (tx) => {
        const [u] = await tx.update(teams).set({ name: request.body.name?.trim(), description: request.body.description, updatedAt: new Date() }).where(eq(teams.id, t.id)).returning();
        await ctx.outbox.enqueue(tx, 'identity.team.updated', { orgId: org.id, tenantId: org.tenantId, teamId: t.id }, orgMeta(request.principal, org));
        return u!;
      });
      return ok(view(updated, (await counts([t.id])).get(t.id) ?? 0));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('A team with this name exists', [{ field: 'name' }]);
      throw err;
    }
  });

  app.delete('/teams/:id', {
    config: { scope: 'org:write' },
    schema: { tags: ['Teams'], summary: 'Delete a team and its pending invitations (admin+)', params: Id, response: { 200: Envelope(Type.Object({ id: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const { org } = await admin(request);
    const t = await find(org.id, request.params.id);
    await ctx.db.transaction(async (tx) => {
      await tx.delete(teams).where(eq(teams.id, t.id));
      await ctx.outbox.enqueue(tx, 'identity.team.deleted', { orgId: org.id, tenantId: org.tenantId, teamId: t.id }, orgMeta(request.principal, org));
    });
    return ok({ id: t.id, deleted: true });
  });

  app.get('/teams/:id/members', {
    config: { scope: 'org:read' },
    schema: { tags: ['Teams'], summary: 'Team members', params: Id, querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(Member) } },
  }, async (request) => {
    const { org } = await reader(request);
    const t = await find(org.id, request.params.id);
    const p = page(request.query);
    const rows = await memberRows(t.id).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(teamMembers).where(eq(teamMembers.teamId, t.id))) as [{ n: number }];
    return list(rows.map(memberView), n, p);
  });

  app.post('/teams/:id/members', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Teams'], summary: 'Add an organization member to the team (admin+)', params: Id,
      body: Type.Object({ user_id: Type.String({ format: 'uuid' }), role: Type.Optional(TeamRole) }, { additionalProperties: false }), response: { 201: Envelope(Member) },
    },
  }, async (request, reply) => {
    const { org } = await admin(request);
    const t = await find(org.id, request.params.id);
    const [m] = await ctx.db.select({ u: users }).from(memberships).innerJoin(users, eq(users.id, memberships.userId)).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, request.body.user_id)));
    if (!m) throw new AppError('NOT_FOUND', 'No such member of this organization', [{ field: 'user_id' }]);
    const row = await ctx.db.transaction(async (tx) => {
      const [added] = await tx.insert(teamMembers).values({ teamId: t.id, userId: m.u.id, role: request.body.role ?? 'member' }).onConflictDoNothing().returning();
      if (!added) throw conflict('Already in the team');
      await ctx.outbox.enqueue(tx, 'identity.team_member.added', { orgId: org.id, tenantId: org.tenantId, teamId: t.id, userId: m.u.id }, orgMeta(request.principal, org));
      return added;
    });
    return reply.status(201).send(ok(memberView({ m: row, u: m.u })));
  });

  app.delete('/teams/:id/members/:userId', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Teams'], summary: 'Remove a member from the team (admin+; anyone may leave)', params: Type.Object({ id: Type.String({ format: 'uuid' }), userId: Type.String({ format: 'uuid' }) }),
      response: { 200: Envelope(Type.Object({ user_id: Type.String(), removed: Type.Boolean() })) },
    },
  }, async (request) => {
    const self = request.principal.kind === 'user' && request.principal.userId === request.params.userId;
    const { org } = self ? await reader(request) : await admin(request);
    const t = await find(org.id, request.params.id);
    await ctx.db.transaction(async (tx) => {
      const rows = await tx.delete(teamMembers).where(and(eq(teamMembers.teamId, t.id), eq(teamMembers.userId, request.params.userId))).returning();
      if (!rows.length) throw notFound('Team member');
      await ctx.outbox.enqueue(tx, 'identity.team_member.removed', { orgId: org.id, tenantId: org.tenantId, teamId: t.id, userId: request.params.userId }, orgMeta(request.principal, org));
    });
    return ok({ user_id: request.params.userId, removed: true });
  });

  app.get('/teams/:id/invites', {
    config: { scope: 'org:read' },
    schema: { tags: ['Teams'], summary: 'Pending team invitations (admin+)', params: Id, querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(InviteSchema) } },
  }, async (request) => {
    const { org } = await admin(request);
    const t = await find(org.id, request.params.id);
    const p = page(request.query);
    const cond = and(eq(invites.teamId, t.id), pendingInvite());
    const rows = await ctx.db.select().from(invites).where(cond).orderBy(desc(invites.createdAt), desc(invites.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(invites).where(cond)) as [{ n: number }];
    return list(rows.map(inviteView), n, p);
  });

  app.post('/teams/:id/invites', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Teams'], summary: 'Invite by e-mail into the organization and this team (admin+)', params: Id,
      description: '`role` is the organization role the invitee gets if not a member yet. 409 when already in the team or invited to it.',
      body: Type.Object({ email: Email, role: Type.Optional(Role) }, { additionalProperties: false }), response: { 201: Envelope(InviteSchema) },
    },
  }, async (request, reply) => {
    const { org, role: callerRole } = await admin(request);
    const t = await find(org.id, request.params.id);
    const role = request.body.role ?? 'member';
    if (role === 'owner' && callerRole !== 'owner') throw forbidden('Only an owner can invite owners');
    return reply.status(201).send(ok(await createInvite(ctx, request.principal, org, request.body.email, role, t.id)));
  });
}
