import { metaFromPrincipal } from '@aos/bus';
import { forbidden, notFound, conflict, badRequest } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { Envelope, ListEnvelope, list, ok, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, eq, ilike, or, sql } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { organizations, users } from '../db/schema.js';
import { personalOrg, userView } from '../domain/users.js';
import type { Ctx } from '../service.js';
import { Email, UserSchema } from './auth.js';

const Id = Type.Object({ id: Type.String({ format: 'uuid' }) });
const Deleted = Envelope(Type.Object({ id: Type.String(), deleted: Type.Boolean() }));

/** Users: platform admins manage everyone; a user may read themself and erase their own account. */
export async function userRoutes(app: App, ctx: Ctx) {
  const erase = async (request: FastifyRequest, userId: string) => {
    await ctx.db.transaction(async (tx) => {
      const [user] = await tx.select().from(users).where(eq(users.id, userId)).for('update');
      if (!user) throw notFound('User');
      const personal = await personalOrg(tx, userId);
      if (personal) await tx.update(organizations).set({ deletedAt: new Date() }).where(and(eq(organizations.id, personal.id), eq(organizations.personal, true)));
      await tx.delete(users).where(eq(users.id, userId));
      const meta = metaFromPrincipal(request.principal);
      await ctx.outbox.enqueue(tx, 'identity.user.deleted', { userId, tenantId: user.tenantId }, meta);
      await ctx.outbox.enqueue(tx, 'identity.user.tokens_revoked', { userId, notBefore: new Date().toISOString() }, meta);
    });
  };

  app.get('/users', {
    config: { platformAdmin: true },
    schema: { tags: ['Users'], summary: 'All users (platform admin)', querystring: Type.Object({ ...PaginationQuery, q: Type.Optional(Type.String({ maxLength: 100 })) }), response: { 200: ListEnvelope(UserSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query.q?.trim();
    const cond = q ? or(ilike(users.username, `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`), ilike(users.email, `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)) : undefined;
    const rows = await ctx.db.select().from(users).where(cond).orderBy(asc(users.createdAt), asc(users.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(users).where(cond)) as [{ n: number }];
    return list(rows.map(userView), n, p);
  });

  app.delete('/users/me', {
    schema: { tags: ['Users'], summary: 'Erase my account (GDPR); other services delete or anonymise my data', response: { 200: Deleted } },
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
      tags: ['Users'], summary: 'Update username, e-mail or role (platform admin)', params: Id,
      body: Type.Object({
        username: Type.Optional(Type.String({ minLength: 3, maxLength: 32, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$' })), email: Type.Optional(Email),
        role: Type.Optional(Type.Union(['admin', 'editor', 'viewer', 'builder', 'agent', 'demo', 'member'].map((r) => Type.Literal(r)))),
      }, { additionalProperties: false }),
      response: { 200: Envelope(UserSchema) },
    },
  }, async (request) => {
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    if (b.role && b.role !== 'admin' && request.params.id === request.principal.userId) throw forbidden('You cannot remove your own admin role');
    try {
      const updated = await ctx.db.transaction(async (tx) => {
        const [u] = await tx.update(users).set({
          username: b.username, email: b.email, platformRoles: b.role ? (b.role === 'admin' ? ['admin'] : []) : undefined, updatedAt: new Date(),
        }).where(eq(users.id, request.params.id)).returning();
        if (!u) throw notFound('User');
        await ctx.outbox.enqueue(tx, 'identity.user.updated', { userId: u.id, changes: Object.keys(b) }, metaFromPrincipal(request.principal));
        return u;
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
