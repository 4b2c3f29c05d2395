import { metaFromPrincipal } from '@aos/bus';
import { OrgRoles, type OrgRole } from '@aos/contracts';
import { badRequest, conflict, forbidden, notFound, unprocessable } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, desc, eq, gt, isNull, sql } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { invites, memberships, organizations, teamMembers, users } from '../db/schema.js';
import { requireRole, roleIn } from '../domain/access.js';
import { opaqueToken, sha256 } from '../domain/crypto.js';
import type { Ctx } from '../service.js';
import { Email } from './auth.js';

const Role = Type.Unsafe<OrgRole>(Type.Union(OrgRoles.map((r) => Type.Literal(r))));
const Slug = Type.String({ minLength: 2, maxLength: 60, pattern: '^[a-z0-9]+(?:-[a-z0-9]+)*$' });
const OrgId = Type.Object({ id: Type.String({ maxLength: 64 }) });

const OrgSchema = Type.Object({
  id: Type.String(), name: Type.String(), slug: Type.String(), avatar_url: Nullable(Type.String()), personal: Type.Boolean(),
  tenant_id: Type.String(), role: Type.String(), member_count: Type.Integer(), created_at: Type.String(),
});
const MemberSchema = Type.Object({ user_id: Type.String(), username: Type.String(), email: Type.String(), role: Type.String(), joined_at: Type.String() });
const InviteSchema = Type.Object({
  id: Type.String(), email: Type.String(), role: Type.String(), team_id: Nullable(Type.String()), expires_at: Type.String(), created_at: Type.String(),
  accept_url: Type.Optional(Type.String()), token: Type.Optional(Type.String()),
});

type Org = typeof organizations.$inferSelect;

export async function orgView(ctx: Ctx, org: Org, role: string) {
  const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(memberships).where(eq(memberships.orgId, org.id))) as [{ n: number }];
  return { id: org.id, name: org.name, slug: org.slug, avatar_url: org.avatarUrl, personal: org.personal, tenant_id: org.tenantId, role, member_count: n, created_at: org.createdAt.toISOString() };
}

/** Creates an invitation (token hashed at rest) and emits the event notifications turns into an e-mail. */
export async function createInvite(ctx: Ctx, request: FastifyRequest, org: Org, email: string, role: OrgRole, teamId: string | null) {
  const token = opaqueToken();
  const expiresAt = new Date(Date.now() + ctx.config.INVITE_TTL_HOURS * 3_600_000);
  const acceptUrl = `${ctx.config.APP_URL.replace(/\/$/, '')}/invites/${token}`;
  const invite = await ctx.db.transaction(async (tx) => {
    const [invitee] = await tx.select({ id: users.id }).from(users).where(eq(sql`lower(${users.email})`, email.toLowerCase()));
    const [row] = await tx.insert(invites).values({ orgId: org.id, teamId, email, role, tokenHash: sha256(token), invitedBy: request.principal.userId, expiresAt }).returning();
    await ctx.outbox.enqueue(tx, 'identity.invite.created', {
      orgId: org.id, tenantId: org.tenantId, inviteId: row!.id, email, role, teamId, invitedBy: request.principal.userId,
      inviteeUserId: invitee?.id ?? null, acceptUrl, expiresAt: expiresAt.toISOString(),
    }, metaFromPrincipal(request.principal));
    return row!;
  });
  return { id: invite.id, email, role, team_id: teamId, expires_at: expiresAt.toISOString(), created_at: invite.createdAt.toISOString(), accept_url: acceptUrl, token };
}

export async function organizationRoutes(app: App, ctx: Ctx) {
  const meta = (r: FastifyRequest) => metaFromPrincipal(r.principal);

  app.get('/organizations', {
    config: { scope: 'org:read' },
    schema: { tags: ['Organizations'], summary: 'Organizations the caller belongs to', querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(OrgSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const userId = request.principal.userId;
    if (request.principal.kind === 'api_key' || !userId) {
      const { org, role } = await roleIn(ctx.db, request, request.principal.orgId ?? '');
      return list([await orgView(ctx, org, role)], 1, p);
    }
    const cond = and(eq(memberships.userId, userId), isNull(organizations.deletedAt));
    const rows = await ctx.db.select({ org: organizations, role: memberships.role }).from(memberships)
      .innerJoin(organizations, eq(organizations.id, memberships.orgId)).where(cond)
      .orderBy(desc(organizations.personal), asc(organizations.createdAt), asc(organizations.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(memberships).innerJoin(organizations, eq(organizations.id, memberships.orgId)).where(cond)) as [{ n: number }];
    return list(await Promise.all(rows.map((r) => orgView(ctx, r.org, r.role))), n, p);
  });

  app.post('/organizations', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Organizations'], summary: "Create an organization in the caller's tenant (caller becomes owner)",
      body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' }), slug: Type.Optional(Slug), avatar_url: Type.Optional(Type.String({ format: 'uri', maxLength: 2_000 })) }, { additionalProperties: false }),
      response: { 201: Envelope(OrgSchema) },
    },
  }, async (request, reply) => {
    const p = request.principal;
    if (p.kind !== 'user' || !p.userId || !p.tenantId) throw forbidden('Only users can create organizations');
    const b = request.body;
    const slug = b.slug ?? (b.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 50) || 'org');
    try {
      const org = await ctx.db.transaction(async (tx) => {
        const [o] = await tx.insert(organizations).values({ tenantId: p.tenantId!, name: b.name.trim(), slug, avatarUrl: b.avatar_url ?? null, createdBy: p.userId }).returning();
        await tx.insert(memberships).values({ orgId: o!.id, userId: p.userId!, role: 'owner' });
        await ctx.outbox.enqueue(tx, 'identity.org.created', { orgId: o!.id, tenantId: o!.tenantId, name: o!.name, slug: o!.slug }, meta(request));
        await ctx.outbox.enqueue(tx, 'identity.member.added', { orgId: o!.id, tenantId: o!.tenantId, userId: p.userId!, role: 'owner' }, meta(request));
        return o!;
      });
      return reply.status(201).send(ok(await orgView(ctx, org, 'owner')));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`The slug "${slug}" is taken`, [{ field: 'slug' }]);
      throw err;
    }
  });

  app.get('/organizations/:id', {
    config: { scope: 'org:read' },
    schema: { tags: ['Organizations'], summary: 'Organization with member count', params: OrgId, response: { 200: Envelope(OrgSchema) } },
  }, async (request) => {
    const { org, role } = await roleIn(ctx.db, request, request.params.id);
    return ok(await orgView(ctx, org, role));
  });

  app.patch('/organizations/:id', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Organizations'], summary: 'Update name, slug or avatar (admin+)', params: OrgId,
      body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' })), slug: Type.Optional(Slug), avatar_url: Type.Optional(Nullable(Type.String({ format: 'uri', maxLength: 2_000 }))) }, { additionalProperties: false }),
      response: { 200: Envelope(OrgSchema) },
    },
  }, async (request) => {
    const { org, role } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const b = request.body;
    const changes = Object.keys(b);
    if (changes.length === 0) throw badRequest('Nothing to update');
    try {
      const updated = await ctx.db.transaction(async (tx) => {
        const [o] = await tx.update(organizations).set({ name: b.name?.trim(), slug: b.slug, avatarUrl: b.avatar_url, updatedAt: new Date() }).where(eq(organizations.id, org.id)).returning();
        await ctx.outbox.enqueue(tx, 'identity.org.updated', { orgId: org.id, tenantId: org.tenantId, changes }, meta(request));
        return o!;
      });
      return ok(await orgView(ctx, updated, role));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('This slug is taken', [{ field: 'slug' }]);
      throw err;
    }
  });

  app.delete('/organizations/:id', {
    config: { scope: 'org:write' },
    schema: { tags: ['Organizations'], summary: 'Soft-delete (owner only; not the personal organization)', params: OrgId, response: { 200: Envelope(Type.Object({ id: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const { org } = await requireRole(ctx.db, request, request.params.id, 'owner');
    if (org.personal) throw unprocessable('The personal organization cannot be deleted; delete the account instead');
    await ctx.db.transaction(async (tx) => {
      await tx.update(organizations).set({ deletedAt: new Date() }).where(eq(organizations.id, org.id));
      await ctx.outbox.enqueue(tx, 'identity.org.deleted', { orgId: org.id, tenantId: org.tenantId }, meta(request));
    });
    return ok({ id: org.id, deleted: true });
  });

  app.get('/organizations/:id/members', {
    config: { scope: 'org:read' },
    schema: { tags: ['Organizations'], summary: 'Members', params: OrgId, querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(MemberSchema) } },
  }, async (request) => {
    const { org } = await roleIn(ctx.db, request, request.params.id);
    const p = page(request.query);
    const rows = await ctx.db.select({ m: memberships, u: users }).from(memberships).innerJoin(users, eq(users.id, memberships.userId))
      .where(eq(memberships.orgId, org.id)).orderBy(asc(memberships.createdAt), asc(users.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(memberships).where(eq(memberships.orgId, org.id))) as [{ n: number }];
    return list(rows.map(({ m, u }) => ({ user_id: u.id, username: u.username, email: u.email, role: m.role, joined_at: m.createdAt.toISOString() })), n, p);
  });

  app.post('/organizations/:id/members', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Organizations'], summary: 'Add an existing user by id or e-mail (admin+)', params: OrgId,
      body: Type.Object({ user_id: Type.Optional(Type.String({ format: 'uuid' })), email: Type.Optional(Email), role: Type.Optional(Role) }, { additionalProperties: false }),
      response: { 201: Envelope(MemberSchema) },
    },
  }, async (request, reply) => {
    const { org, role: callerRole } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const role = request.body.role ?? 'member';
    if (role === 'owner' && callerRole !== 'owner') throw forbidden('Only an owner can add owners');
    const { user_id: userId, email } = request.body;
    if (!userId && !email) throw badRequest('user_id or email is required');
    const [user] = await ctx.db.select().from(users).where(userId ? eq(users.id, userId) : eq(sql`lower(${users.email})`, email!.toLowerCase()));
    if (!user) throw notFound('User');
    try {
      const m = await ctx.db.transaction(async (tx) => {
        const [row] = await tx.insert(memberships).values({ orgId: org.id, userId: user.id, role }).returning();
        await ctx.outbox.enqueue(tx, 'identity.member.added', { orgId: org.id, tenantId: org.tenantId, userId: user.id, role }, meta(request));
        return row!;
      });
      return reply.status(201).send(ok({ user_id: user.id, username: user.username, email: user.email, role: m.role, joined_at: m.createdAt.toISOString() }));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('Already a member');
      throw err;
    }
  });

  const MemberParams = Type.Object({ id: Type.String({ maxLength: 64 }), userId: Type.String({ format: 'uuid' }) });

  const ownersLeft = async (orgId: string) =>
    ((await ctx.db.select({ n: sql<number>`count(*)::int` }).from(memberships).where(and(eq(memberships.orgId, orgId), eq(memberships.role, 'owner')))) as [{ n: number }])[0].n;

  app.patch('/organizations/:id/members/:userId', {
    config: { scope: 'org:write' },
    schema: { tags: ['Organizations'], summary: 'Change a member role (admin+; owners only by owners)', params: MemberParams, body: Type.Object({ role: Role }, { additionalProperties: false }), response: { 200: Envelope(MemberSchema) } },
  }, async (request) => {
    const { org, role: callerRole } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const [current] = await ctx.db.select({ m: memberships, u: users }).from(memberships).innerJoin(users, eq(users.id, memberships.userId))
      .where(and(eq(memberships.orgId, org.id), eq(memberships.userId, request.params.userId)));
    if (!current) throw notFound('Member');
    const role = request.body.role;
    if ((role === 'owner' || current.m.role === 'owner') && callerRole !== 'owner') throw forbidden('Only an owner can grant or change the owner role');
    if (current.m.role === 'owner' && role !== 'owner' && (await ownersLeft(org.id)) <= 1) throw unprocessable('An organization keeps at least one owner');
    await ctx.db.transaction(async (tx) => {
      await tx.update(memberships).set({ role }).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, current.u.id)));
      await ctx.outbox.enqueue(tx, 'identity.member.role_changed', { orgId: org.id, tenantId: org.tenantId, userId: current.u.id, role }, meta(request));
    });
    return ok({ user_id: current.u.id, username: current.u.username, email: current.u.email, role, joined_at: current.m.createdAt.toISOString() });
  });

  app.delete('/organizations/:id/members/:userId', {
    config: { scope: 'org:write' },
    schema: { tags: ['Organizations'], summary: 'Remove a member (admin+; anyone may leave)', params: MemberParams, response: { 200: Envelope(Type.Object({ user_id: Type.String(), removed: Type.Boolean() })) } },
  }, async (request) => {
    const self = request.params.userId === request.principal.userId;
    const { org, role: callerRole } = self ? await roleIn(ctx.db, request, request.params.id) : await requireRole(ctx.db, request, request.params.id, 'admin');
    const [current] = await ctx.db.select().from(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, request.params.userId)));
    if (!current) throw notFound('Member');
    if (current.role === 'owner' && !self && callerRole !== 'owner') throw forbidden('Only an owner can remove an owner');
    if (current.role === 'owner' && (await ownersLeft(org.id)) <= 1) throw unprocessable('An organization keeps at least one owner');
    await ctx.db.transaction(async (tx) => {
      await tx.delete(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, current.userId)));
      await ctx.outbox.enqueue(tx, 'identity.member.removed', { orgId: org.id, tenantId: org.tenantId, userId: current.userId }, meta(request));
    });
    return ok({ user_id: current.userId, removed: true });
  });

  app.get('/organizations/:id/invites', {
    config: { scope: 'org:read' },
    schema: { tags: ['Organizations'], summary: 'Pending invitations (admin+)', params: OrgId, querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(InviteSchema) } },
  }, async (request) => {
    const { org } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const p = page(request.query);
    const cond = and(eq(invites.orgId, org.id), isNull(invites.acceptedAt), gt(invites.expiresAt, new Date()));
    const rows = await ctx.db.select().from(invites).where(cond).orderBy(desc(invites.createdAt), desc(invites.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(invites).where(cond)) as [{ n: number }];
    return list(rows.map((i) => ({ id: i.id, email: i.email, role: i.role, team_id: i.teamId, expires_at: i.expiresAt.toISOString(), created_at: i.createdAt.toISOString() })), n, p);
  });

  app.post('/organizations/:id/invites', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Organizations'], summary: 'Invite by e-mail (admin+); the link is e-mailed and returned once', params: OrgId,
      body: Type.Object({ email: Email, role: Type.Optional(Role) }, { additionalProperties: false }), response: { 201: Envelope(InviteSchema) },
    },
  }, async (request, reply) => {
    const { org, role: callerRole } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const role = request.body.role ?? 'member';
    if (role === 'owner' && callerRole !== 'owner') throw forbidden('Only an owner can invite owners');
    return reply.status(201).send(ok(await createInvite(ctx, request, org, request.body.email, role, null)));
  });

  app.post('/organizations/invites/:token/accept', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Organizations'], summary: "Accept an invitation (single use, before expiry, for the invitee's e-mail)",
      params: Type.Object({ token: Type.String({ minLength: 10, maxLength: 200 }) }),
      response: { 200: Envelope(Type.Object({ org_id: Type.String(), role: Type.String(), team_id: Nullable(Type.String()) })) },
    },
  }, async (request) => {
    const userId = request.principal.userId;
    if (request.principal.kind !== 'user' || !userId) throw forbidden('Only users can accept invitations');
    const result = await ctx.db.transaction(async (tx) => {
      const [invite] = await tx.select().from(invites).where(eq(invites.tokenHash, sha256(request.params.token))).for('update');
      if (!invite || invite.acceptedAt || invite.expiresAt < new Date()) return null;
      const [user] = await tx.select().from(users).where(eq(users.id, userId));
      if (!user || user.email.toLowerCase() !== invite.email.toLowerCase()) return null;
      const [org] = await tx.select().from(organizations).where(and(eq(organizations.id, invite.orgId), isNull(organizations.deletedAt)));
      if (!org) return null;
      await tx.update(invites).set({ acceptedAt: new Date(), acceptedBy: userId }).where(eq(invites.id, invite.id));
      const [added] = await tx.insert(memberships).values({ orgId: org.id, userId, role: invite.role }).onConflictDoNothing().returning();
      if (invite.teamId) {
        await tx.insert(teamMembers).values({ teamId: invite.teamId, userId }).onConflictDoNothing();
        await ctx.outbox.enqueue(tx, 'identity.team_member.added', { orgId: org.id, tenantId: org.tenantId, teamId: invite.teamId, userId }, meta(request));
      }
      await ctx.outbox.enqueue(tx, 'identity.invite.accepted', { orgId: org.id, tenantId: org.tenantId, inviteId: invite.id, userId }, meta(request));
      if (added) await ctx.outbox.enqueue(tx, 'identity.member.added', { orgId: org.id, tenantId: org.tenantId, userId, role: invite.role }, meta(request));
      return { org_id: org.id, role: added?.role ?? invite.role, team_id: invite.teamId };
    });
    if (!result) throw notFound('Invitation');
    return ok(result);
  });
}
