import { forbidden, unauthorized, notFound } from '@aos/core';
import { ok, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, eq, gt, isNull, lt, or } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { apiKeys, apiKeyUsage, memberships, organizations, users } from '../db/schema.js';
import { apiKeyHash, looksLikeApiKey } from '../domain/crypto.js';
import type { Signer } from '../domain/tokens.js';
import type { Ctx } from '../service.js';

const serviceOnly = async (request: FastifyRequest) => {
  if (request.principal.kind !== 'service') throw forbidden('Internal route');
};

/** Routes the gateway calls: JWKS, API-key verification, membership resolution, usage log. */
export async function internalRoutes(app: App, ctx: Ctx, signer: Signer) {
  app.get('/internal/jwks', { config: { auth: 'none' }, schema: { hide: true } }, async (_req, reply) => {
    reply.header('cache-control', 'public, max-age=300');
    return { keys: signer.jwks };
  });

  app.post('/internal/api-keys/verify', {
    preHandler: serviceOnly,
    schema: { hide: true, body: Type.Object({ key: Type.String({ maxLength: 200 }) }) },
  }, async (request) => {
    const key = request.body.key;
    if (!looksLikeApiKey(key)) throw unauthorized('Invalid API key');
    const hash = apiKeyHash(ctx.config.API_KEY_PEPPER, key);
    const now = new Date();
    const [row] = await ctx.db.select().from(apiKeys).where(and(
      or(eq(apiKeys.keyHash, hash), and(eq(apiKeys.previousKeyHash, hash), gt(apiKeys.previousValidUntil, now))),
      eq(apiKeys.isActive, true), isNull(apiKeys.revokedAt), isNull(apiKeys.deletedAt),
      or(isNull(apiKeys.expiresAt), gt(apiKeys.expiresAt, now)),
    ));
    if (!row) throw unauthorized('Invalid API key');
    const [org] = await ctx.db.select({ deletedAt: organizations.deletedAt }).from(organizations).where(eq(organizations.id, row.orgId));
    if (!org || org.deletedAt) throw unauthorized('Invalid API key');
    if (!row.lastUsedAt || now.getTime() - row.lastUsedAt.getTime() > 60_000) {
      await ctx.db.update(apiKeys).set({ lastUsedAt: now }).where(eq(apiKeys.id, row.id));
    }
    const graceEnds = row.previousKeyHash === hash ? row.previousValidUntil : null;
    const expiries = [row.expiresAt, graceEnds].filter((d): d is Date => !!d).map((d) => d.getTime());
    return ok({
      api_key_id: row.id, org_id: row.orgId, tenant_id: row.tenantId, user_id: row.createdBy, scopes: row.scopes,
      expires_at: expiries.length ? new Date(Math.min(...expiries)).toISOString() : null,
    });
  });

  app.post('/internal/memberships/resolve', {
    preHandler: serviceOnly,
    schema: { hide: true, body: Type.Object({ user_id: Type.String({ format: 'uuid' }), org_id: Type.String({ format: 'uuid' }) }) },
  }, async (request) => {
    const [row] = await ctx.db.select({ role: memberships.role, tenantId: organizations.tenantId, roles: users.platformRoles })
      .from(memberships).innerJoin(organizations, eq(organizations.id, memberships.orgId)).innerJoin(users, eq(users.id, memberships.userId))
      .where(and(eq(memberships.userId, request.body.user_id), eq(memberships.orgId, request.body.org_id), isNull(organizations.deletedAt)));
    if (!row) throw notFound('Membership');
    return ok({ org_id: request.body.org_id, tenant_id: row.tenantId, org_role: row.role, platform_roles: row.roles });
  });

  app.post('/internal/api-keys/usage', {
    preHandler: serviceOnly,
    schema: {
      hide: true,
      body: Type.Object({
        entries: Type.Array(Type.Object({
          api_key_id: Type.String({ format: 'uuid' }), method: Type.String({ maxLength: 10 }), path: Type.String({ maxLength: 2_000 }),
          status: Type.Integer({ minimum: 100, maximum: 599 }), latency_ms: Type.Integer({ minimum: 0, maximum: 3_600_000 }), at: Type.String({ format: 'date-time' }),
        }), { maxItems: 500 }),
      }),
    },
  }, async (request, reply) => {
    const entries = request.body.entries;
    if (entries.length > 0) {
      await ctx.db.transaction(async (tx) => {
        await tx.insert(apiKeyUsage).values(entries.map((e) => ({
          apiKeyId: e.api_key_id, method: e.method, path: e.path, status: e.status, latencyMs: e.latency_ms, at: new Date(e.at),
        })));
        // The gateway caches verified keys, so verification alone would leave last_used_at minutes behind.
        const latest = new Map<string, number>();
        for (const e of entries) latest.set(e.api_key_id, Math.max(latest.get(e.api_key_id) ?? 0, Date.parse(e.at)));
        for (const [id, ms] of latest) {
          const at = new Date(ms);
          await tx.update(apiKeys).set({ lastUsedAt: at }).where(and(eq(apiKeys.id, id), or(isNull(apiKeys.lastUsedAt), lt(apiKeys.lastUsedAt, at))));
        }
      });
    }
    return reply.status(202).send(ok({ accepted: request.body.entries.length }));
  });
}
