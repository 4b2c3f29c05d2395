import { metaFromPrincipal } from '@aos/bus';
import { forbidden, notFound, conflict, badRequest } from '@aos/core';
import { escapeLike, isUniqueViolation } from '@aos/db';
import { Envelope, ListEnvelope, list, ok, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, eq, ilike, isNull, like, ne, or, sql } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { invites, loginFailures, memberships, organizations, users } from '../db/schema.js';
import { ownerCount, softDeleteOrg } from '../domain/orgs.js';
import { revocationInstant } from '../domain/tokens.js';
import { PlatformRoles, userView } from '../domain/users.js';
import type { Ctx } from '../service.js';
import { Email, UserSchema, Username } from './auth.js';

const Id = Type.Object({ id: Type.String({ format: 'uuid' }) });
const Deleted = Envelope(Type.Object({ id: Type.String(), deleted: Type.Boolean() }));

/** Users: platform admins manage everyone; a user may read themself and erase their own account. */
export async function userRoutes(app: App, ctx: Ctx) {
  /**
   * Erases a user: their row (memberships, sessions and resets cascade), their personal org and any
   * org they were the only member of (with those orgs' API keys), pending invitations to their address
   * and the login-failure counters naming it. Refused (409) while they are the only owner of an org others still use.
   */
  const erase = async (request: FastifyRequest, userId: string) => {
    await ctx.db.transaction(async (tx) => {
      const [user] = await tx.select().from(users).where(eq(users.id, userId)).for('update');
      if (!user) throw notFound('User');
      const owned = await tx.select({ org: organizations }).from(memberships).innerJoin(organizations, eq(organizations.id, memberships.orgId))
        .where(and(eq(memberships.userId, userId), eq(memberships.role, 'owner'), isNull(organizations.deletedAt))).for('update', { of: organizations });
      const meta = metaFromPrincipal(request.principal);
      const blocking: { id: string; name: string }[] = [];
      for (const { org } of owned) {
        const [{ others }] = (await tx.select({ others: sql<number>`count(*)::int` }).from(memberships).where(and(eq(memberships.orgId, org.id), ne(memberships.userId, userId)))) as [{ others: number }];
        if (org.personal || others === 0) await softDeleteOrg(ctx, tx, org, meta);
        else if ((await ownerCount(tx, org.id)) <= 1) blocking.push({ id: org.id, name: org.name });
      }
      if (blocking.length) {
        throw conflict('This user is the only owner of organizations others still use: transfer ownership or delete them first', blocking.map((o) => ({ org_id: o.id, name: o.name })));
      }
      const email = user.email.toLowerCase();
      await tx.delete(invites).where(and(eq(sql`lower(${invites.email})`, email), isNull(invites.acceptedAt)));
      // The counters auth.ts keeps for the address: `email:<address>` and `email-ip:<address>|<client ip>`.
      await tx.delete(loginFailures).where(or(eq(loginFailures.key, `email:${email}`), like(loginFailures.key, `email-ip:${escapeLike(email)}|%`)));
      await tx.delete(users).where(eq(users.id, userId));
      await ctx.outbox.enqueue(tx, 'identity.user.deleted', { userId, tenantId: user.tenantId }, meta);
      await ctx.outbox.enqueue(tx, 'identity.user.tokens_revoked', { userId, notBefore: revocationInstant().toISOString() }, meta);
    });
  };

  app.get('/users', {
    config: { platformAdmin: true },
    schema: {
      tags: ['Users'], summary: 'All users (platform admin)',
      querystring: Type.Object({ ...PaginationQuery, q: Type.Optional(Type.String({ maxLength: 100, description: 'Substring of username or e-mail' })), role: Type.Optional(Type.Union(PlatformRoles.map((r) => Type.Literal(r)))) }),
      response: { 200: ListEnvelope(UserSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query.q?.trim();
    const role = request.query.role;
    const cond = and(
      q ? or(ilike(users.username, `%${escapeLike(q)}%`), ilike(users.email, `%${escapeLike(q)}%`)) : undefined,
      role ? (role === 'member' ? sql`cardinality(${users.platformRoles}) = 0` : sql`${role} = ANY(${users.platformRoles})`) : undefined,
    );
    const rows = await ctx.db.select().from(users).where(cond).orderBy(asc(users.createdAt), asc(users.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(users).where(cond)) as [{ n: number }];
    return list(rows.map(userView), n, p);
  });

  app.delete('/users/me', {
    schema: {
      tags: ['Users'], summary: 'Erase my account (GDPR); other services delete or anonymise my data',
      description: 'Admin accounts cannot self-delete (403). 409 while you are the only owner of an organization other members still use.',
      response: { 200: Deleted },
    },
  }, async (request) => {
    const p = request.principal;
    if (p.kind !== 'user' || !p.userId) throw forbidden('Only a signed-in user can delete their account');
    if (p.platformRoles.includes('admin')) throw forbidden('Admin accounts cannot be self-deleted');
    await erase(request, p.userId);
    return ok({ id: p.userId, deleted: true });
  });

  app.get('/users/:id', {
    schema: { tags: ['Users'], summary: 'A user (yourself, or anyone for platform admins)', params: Id, response: { 200: Envelope(UserSchema) } },
  }, async (request) => {
    const p = request.principal;
    if (p.userId !== request.params.id && !p.platformRoles.includes('admin')) throw notFound('User');
    const [u] = await ctx.db.select().from(users).where(eq(users.id, request.params.id));
    if (!u) throw notFound('User');
    return ok(userView(u));
  });

  app.patch('/users/:id', {
    config: { platformAdmin: true },
    schema: {
      tags: ['Users'], summary: 'Update username, e-mail or platform role (platform admin)', params: Id,
      description: "A role change voids the user's current access tokens (their next refresh carries the new role).",
      body: Type.Object({ username: Type.Optional(Username), email: Type.Optional(Email), role: Type.Optional(Type.Union(PlatformRoles.map((r) => Type.Literal(r)))) }, { additionalProperties: false }),
      response: { 200: Envelope(UserSchema) },
    },
  }, async (request) => {
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    if (b.role && b.role !== 'admin' && request.params.id === request.principal.userId) throw forbidden('You cannot remove your own admin role');
    try {
      const updated = await ctx.db.transaction(async (tx) => {
        const [before] = await tx.select().from(users).where(eq(users.id, request.params.id)).for('update');
        if (!before) throw notFound('User');
        const platformRoles = b.role === undefined ? before.platformRoles : b.role === 'member' ? [] : [b.role];
        const roleChanged = platformRoles.join() !== before.platformRoles.join();
        const notBefore = roleChanged ? revocationInstant() : undefined;
        const [u] = await tx.update(users).set({ username: b.username, email: b.email, platformRoles, tokensNotBefore: notBefore, updatedAt: new Date() }).where(eq(users.id, before.id)).returning();
        const meta = metaFromPrincipal(request.principal);
        await ctx.outbox.enqueue(tx, 'identity.user.updated', { userId: u!.id, changes: Object.keys(b) }, meta);
        if (notBefore) await ctx.outbox.enqueue(tx, 'identity.user.tokens_revoked', { userId: u!.id, notBefore: notBefore.toISOString() }, meta);
        return u!;
      });
      return ok(userView(updated));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('This e-mail or username is taken');
      throw err;
    }
  });

  app.delete('/users/:id', {
    config: { platformAdmin: true },
    schema: { tags: ['Users'], summary: 'Delete a user (platform admin; not yourself)', params: Id, response: { 200: Deleted } },
  }, async (request) => {
    if (request.params.id === request.principal.userId) throw forbidden('You cannot delete your own account here');
    await erase(request, request.params.id);
    return ok({ id: request.params.id, deleted: true });
  });
}
