import { metaFromPrincipal } from '@aos/bus';
import { OrgRoles, type OrgRole } from '@aos/contracts';
import { badRequest, conflict, forbidden, notFound, unprocessable } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, desc, eq, isNull, sql } from 'drizzle-orm';
import { invites, memberships, organizations, users } from '../db/schema.js';
import { requireRole, roleIn } from '../domain/access.js';
import { opaqueToken } from '../domain/crypto.js';
import { acceptInvite, createInvite, inviteView, orgMeta, pendingInvite } from '../domain/invites.js';
import { enforceSeatLimit } from '../domain/seats.js';
import { ownerCount, removeMember, softDeleteOrg } from '../domain/orgs.js';
import type { ITx } from '../domain/users.js';
import type { Ctx } from '../service.js';
import { Email } from './auth.js';

export const Role = Type.Unsafe<OrgRole>(Type.Union(OrgRoles.map((r) => Type.Literal(r))));
const Slug = Type.String({ minLength: 2, maxLength: 60, pattern: '^[a-z0-9]+(?:-[a-z0-9]+)*$' });
const Name = Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' });
/** http(s) only: a `javascript:` URL is a valid URI but must never reach an `href`. */
const AvatarUrl = Type.String({ format: 'uri', maxLength: 2_000, pattern: '^https?://' });
const OrgId = Type.Object({ id: Type.String({ maxLength: 64 }) });

const OrgSchema = Type.Object({
  id: Type.String(), name: Type.String(), slug: Type.String(), avatar_url: Nullable(Type.String()), personal: Type.Boolean(),
  tenant_id: Type.String(), role: Type.String(), member_count: Type.Integer(), created_at: Type.String(),
});
const MemberSchema = Type.Object({ user_id: Type.String(), username: Type.String(), email: Type.String(), role: Type.String(), joined_at: Type.String() });
export const InviteSchema = Type.Object({
  id: Type.String(), email: Type.String(), role: Type.String(), team_id: Nullable(Type.String()), expires_at: Type.String(), created_at: Type.String(),
  accept_url: Type.Optional(Type.String({ description: 'Returned once, when the invitation is created' })), token: Type.Optional(Type.String()),
});

type Org = typeof organizations.$inferSelect;

export async function orgView(ctx: Ctx, org: Org, role: string) {
  const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(memberships).where(eq(memberships.orgId, org.id))) as [{ n: number }];
  return { id: org.id, name: org.name, slug: org.slug, avatar_url: org.avatarUrl, personal: org.personal, tenant_id: org.tenantId, role, member_count: n, created_at: org.createdAt.toISOString() };
}

const slugFrom = (name: string) => name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 50).replace(/-$/, '');

export async function organizationRoutes(app: App, ctx: Ctx) {
  /** Locks the organization row: member changes that must keep one owner run one at a time. */
  const lockOrg = (tx: ITx, orgId: string) =>
    tx.select({ id: organizations.id }).from(organizations).where(eq(organizations.id, orgId)).for('update');

  app.get('/organizations', {
    config: { scope: 'org:read' },
    schema: { tags: ['Organizations'], summary: 'Organizations the caller belongs to', querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(OrgSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const userId = request.principal.userId;
    if (request.principal.kind === 'api_key' || !userId) {
      const { org, role } = await roleIn(ctx.db, request, request.principal.orgId ?? '');
      return list(p.offset === 0 ? [await orgView(ctx, org, role)] : [], 1, p);
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
      description: 'Without a slug one is derived from the name (with a random suffix when taken); a slug given and taken is 409.',
      body: Type.Object({ name: Name, slug: Type.Optional(Slug), avatar_url: Type.Optional(AvatarUrl) }, { additionalProperties: false }),
      response: { 201: Envelope(OrgSchema) },
    },
  }, async (request, reply) => {
    const p = request.principal;
    if (p.kind !== 'user' || !p.userId || !p.tenantId) throw forbidden('Only users can create organizations');
    const b = request.body;
    const base = slugFrom(b.name).length >= 2 ? slugFrom(b.name) : 'org';
    const insert = (slug: string) => ctx.db.transaction(async (tx) => {
      const [o] = await tx.insert(organizations).values({ tenantId: p.tenantId!, name: b.name.trim(), slug, avatarUrl: b.avatar_url ?? null, createdBy: p.userId }).returning();
      await tx.insert(memberships).values({ orgId: o!.id, userId: p.userId!, role: 'owner' });
      await ctx.outbox.enqueue(tx, 'identity.org.created', { orgId: o!.id, tenantId: o!.tenantId, name: o!.name, slug: o!.slug }, orgMeta(p, o!));
      await ctx.outbox.enqueue(tx, 'identity.member.added', { orgId: o!.id, tenantId: o!.tenantId, userId: p.userId!, role: 'owner' }, orgMeta(p, o!));
      return o!;
    });
    for (let attempt = 0; ; attempt++) {
      const slug = b.slug ?? (attempt === 0 ? base : `${base}-${opaqueToken().replace(/[^a-z0-9]/g, '').slice(0, 6) || 'x'}`);
      try {
        return reply.status(201).send(ok(await orgView(ctx, await insert(slug), 'owner')));
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        if (b.slug || attempt >= 3) throw conflict(`The slug "${slug}" is taken`, [{ field: 'slug' }]);
      }
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
      body: Type.Object({ name: Type.Optional(Name), slug: Type.Optional(Slug), avatar_url: Type.Optional(Nullable(AvatarUrl)) }, { additionalProperties: false }),
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
        await ctx.outbox.enqueue(tx, 'identity.org.updated', { orgId: org.id, tenantId: org.tenantId, changes }, orgMeta(request.principal, org));
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
    schema: {
      tags: ['Organizations'], summary: 'Soft-delete (owner only; not the personal organization); its API keys are revoked', params: OrgId,
      response: { 200: Envelope(Type.Object({ id: Type.String(), deleted: Type.Boolean() })) },
    },
  }, async (request) => {
    const { org } = await requireRole(ctx.db, request, request.params.id, 'owner');
    if (org.personal) throw unprocessable('The personal organization cannot be deleted; delete the account instead');
    await ctx.db.transaction((tx) => softDeleteOrg(ctx, tx, org, orgMeta(request.principal, org)));
    return ok({ id: org.id, deleted: true });
  });

  app.get('/organizations/:id/members', {
    config: { scope: 'org:read' },
    schema: {
      tags: ['Organizations'], summary: 'Members', params: OrgId,
      querystring: Type.Object({ ...PaginationQuery, role: Type.Optional(Role) }), response: { 200: ListEnvelope(MemberSchema) },
    },
  }, async (request) => {
    const { org } = await roleIn(ctx.db, request, request.params.id);
    const p = page(request.query);
    const cond = and(eq(memberships.orgId, org.id), request.query.role ? eq(memberships.role, request.query.role) : undefined);
    const rows = await ctx.db.select({ m: memberships, u: users }).from(memberships).innerJoin(users, eq(users.id, memberships.userId))
      .where(cond).orderBy(asc(memberships.createdAt), asc(users.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(memberships).where(cond)) as [{ n: number }];
    return list(rows.map(({ m, u }) => ({ user_id: u.id, username: u.username, email: u.email, role: m.role, joined_at: m.createdAt.toISOString() })), n, p);
  });

  app.post('/organizations/:id/members', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Organizations'], summary: 'Add a user by id, or invite one by e-mail (admin+; owners only by owners)', params: OrgId,
      description: 'By `user_id`: the user joins at once (201, the member; 404 for an unknown id). By `email`: an invitation is'
        + ' e-mailed (202, the invitation) whether or not the address has an account, so the answer never tells; the person'
        + ' joins on accepting it. 409 when the user is already a member or the address has a pending invitation.',
      body: Type.Object({ user_id: Type.Optional(Type.String({ format: 'uuid' })), email: Type.Optional(Email), role: Type.Optional(Role) }, { additionalProperties: false }),
      response: { 201: Envelope(MemberSchema), 202: Envelope(Type.Object({ status: Type.Literal('invited'), invite: InviteSchema })) },
    },
  }, async (request, reply) => {
    const { org, role: callerRole } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const role = request.body.role ?? 'member';
    if (role === 'owner' && callerRole !== 'owner') throw forbidden('Only an owner can add owners');
    const { user_id: userId, email } = request.body;
    if (!userId === !email) throw badRequest('Give either user_id or email', [{ field: userId ? 'email' : 'user_id' }]);
    if (email) {
      // As Auth0 and Stripe do: adding someone by e-mail is an invitation, for an address with an account or without.
      return reply.status(202).send(ok({ status: 'invited' as const, invite: await createInvite(ctx, request.principal, org, email, role, null) }));
    }
    const [user] = await ctx.db.select().from(users).where(eq(users.id, userId!));
    if (!user) throw notFound('User');
    try {
      const m = await ctx.db.transaction(async (tx) => {
        const [already] = await tx.select({ id: memberships.userId }).from(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, user.id)));
        if (already) throw conflict('Already a member');
        await enforceSeatLimit(tx, org.id, user.email);
        const [row] = await tx.insert(memberships).values({ orgId: org.id, userId: user.id, role }).returning();
        await ctx.outbox.enqueue(tx, 'identity.member.added', { orgId: org.id, tenantId: org.tenantId, userId: user.id, role }, orgMeta(request.principal, org));
        return row!;
      });
      return reply.status(201).send(ok({ user_id: user.id, username: user.username, email: user.email, role: m.role, joined_at: m.createdAt.toISOString() }));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('Already a member');
      throw err;
    }
  });

  const MemberParams = Type.Object({ id: Type.String({ maxLength: 64 }), userId: Type.String({ format: 'uuid' }) });

  app.patch('/organizations/:id/members/:userId', {
    config: { scope: 'org:write' },
    schema: { tags: ['Organizations'], summary: 'Change a member role (admin+; owners only by owners)', params: MemberParams, body: Type.Object({ role: Role }, { additionalProperties: false }), response: { 200: Envelope(MemberSchema) } },
  }, async (request) => {
    const { org, role: callerRole } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const role = request.body.role;
    const result = await ctx.db.transaction(async (tx) => {
      await lockOrg(tx, org.id);
      const [current] = await tx.select({ m: memberships, u: users }).from(memberships).innerJoin(users, eq(users.id, memberships.userId))
        .where(and(eq(memberships.orgId, org.id), eq(memberships.userId, request.params.userId)));
      if (!current) throw notFound('Member');
      if ((role === 'owner' || current.m.role === 'owner') && callerRole !== 'owner') throw forbidden('Only an owner can grant or change the owner role');
      if (current.m.role === 'owner' && role !== 'owner' && (await ownerCount(tx, org.id)) <= 1) throw unprocessable('An organization keeps at least one owner');
      await tx.update(memberships).set({ role }).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, current.u.id)));
      await ctx.outbox.enqueue(tx, 'identity.member.role_changed', { orgId: org.id, tenantId: org.tenantId, userId: current.u.id, role }, orgMeta(request.principal, org));
      return current;
    });
    return ok({ user_id: result.u.id, username: result.u.username, email: result.u.email, role, joined_at: result.m.createdAt.toISOString() });
  });

  app.delete('/organizations/:id/members/:userId', {
    config: { scope: 'org:write' },
    schema: { tags: ['Organizations'], summary: 'Remove a member, also from the teams (admin+; anyone may leave)', params: MemberParams, response: { 200: Envelope(Type.Object({ user_id: Type.String(), removed: Type.Boolean() })) } },
  }, async (request) => {
    const self = request.params.userId === request.principal.userId && request.principal.kind === 'user';
    const { org, role: callerRole } = self ? await roleIn(ctx.db, request, request.params.id) : await requireRole(ctx.db, request, request.params.id, 'admin');
    await ctx.db.transaction(async (tx) => {
      await lockOrg(tx, org.id);
      const [current] = await tx.select().from(memberships).where(and(eq(memberships.orgId, org.id), eq(memberships.userId, request.params.userId)));
      if (!current) throw notFound('Member');
      if (current.role === 'owner' && !self && callerRole !== 'owner') throw forbidden('Only an owner can remove an owner');
      if (current.role === 'owner' && (await ownerCount(tx, org.id)) <= 1) throw unprocessable('An organization keeps at least one owner');
      await removeMember(ctx, tx, org, current.userId, orgMeta(request.principal, org));
    });
    return ok({ user_id: request.params.userId, removed: true });
  });

  app.get('/organizations/:id/invites', {
    config: { scope: 'org:read' },
    schema: { tags: ['Organizations'], summary: 'Pending invitations (admin+)', params: OrgId, querystring: Type.Object(PaginationQuery), response: { 200: ListEnvelope(InviteSchema) } },
  }, async (request) => {
    const { org } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const p = page(request.query);
    const cond = and(eq(invites.orgId, org.id), pendingInvite());
    const rows = await ctx.db.select().from(invites).where(cond).orderBy(desc(invites.createdAt), desc(invites.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(invites).where(cond)) as [{ n: number }];
    return list(rows.map(inviteView), n, p);
  });

  app.post('/organizations/:id/invites', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Organizations'], summary: 'Invite by e-mail (admin+); the link is e-mailed and returned once', params: OrgId,
      description: '409 when the address is already a member or has a pending invitation.',
      body: Type.Object({ email: Email, role: Type.Optional(Role) }, { additionalProperties: false }), response: { 201: Envelope(InviteSchema) },
    },
  }, async (request, reply) => {
    const { org, role: callerRole } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const role = request.body.role ?? 'member';
    if (role === 'owner' && callerRole !== 'owner') throw forbidden('Only an owner can invite owners');
    return reply.status(201).send(ok(await createInvite(ctx, request.principal, org, request.body.email, role, null)));
  });

  app.delete('/organizations/:id/invites/:inviteId', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['Organizations'], summary: 'Cancel a pending invitation (admin+)', params: Type.Object({ id: Type.String({ maxLength: 64 }), inviteId: Type.String({ format: 'uuid' }) }),
      response: { 200: Envelope(Type.Object({ id: Type.String(), deleted: Type.Boolean() })) },
    },
  }, async (request) => {
    const { org } = await requireRole(ctx.db, request, request.params.id, 'admin');
    const rows = await ctx.db.delete(invites).where(and(eq(invites.orgId, org.id), eq(invites.id, request.params.inviteId), pendingInvite())).returning({ id: invites.id });
    if (!rows.length) throw notFound('Invitation');
    return ok({ id: request.params.inviteId, deleted: true });
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
      const [user] = await tx.select({ id: users.id, email: users.email }).from(users).where(eq(users.id, userId));
      return user ? acceptInvite(ctx, tx, request.params.token, user, metaFromPrincipal(request.principal)) : null;
    });
    if (!result) throw notFound('Invitation');
    return ok(result);
  });
}
