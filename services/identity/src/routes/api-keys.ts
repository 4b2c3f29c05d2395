import { metaFromPrincipal } from '@aos/bus';
import { Scopes, type Principal } from '@aos/contracts';
import { AppError, badRequest, conflict, notFound } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, gt, isNotNull, isNull, lte, or, sql } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { apiKeys, apiKeyUsage } from '../db/schema.js';
import { requireRole } from '../domain/access.js';
import { apiKeyHash, generateApiKey, maskApiKey } from '../domain/crypto.js';
import type { Ctx } from '../service.js';

const Scope = Type.Unsafe<string>(Type.Union(Scopes.map((s) => Type.Literal(s))));
const KeySchema = Type.Object({
  id: Type.String(), org_id: Type.String(), name: Type.String(), description: Nullable(Type.String()), scopes: Type.Array(Type.String()),
  key_preview: Type.String(), expires_at: Nullable(Type.String()), is_active: Type.Boolean(), status: Type.String(),
  last_used_at: Nullable(Type.String()), created_by: Nullable(Type.String()), created_at: Type.String(), updated_at: Type.String(),
  previous_key_valid_until: Nullable(Type.String()),
  key: Type.Optional(Type.String({ description: 'The secret, returned once when created, rotated or rolled' })),
});
type Row = typeof apiKeys.$inferSelect;

const KeyStatuses = ['active', 'inactive', 'expired', 'revoked'] as const;
const statusIs = (s: (typeof KeyStatuses)[number]) => {
  const now = new Date();
  const live = and(isNull(apiKeys.revokedAt), eq(apiKeys.isActive, true));
  switch (s) {
    case 'revoked': return isNotNull(apiKeys.revokedAt);
    case 'inactive': return and(isNull(apiKeys.revokedAt), eq(apiKeys.isActive, false));
    case 'expired': return and(live, lte(apiKeys.expiresAt, now));
    default: return and(live, or(isNull(apiKeys.expiresAt), gt(apiKeys.expiresAt, now)));
  }
};
const status = (k: Row) => (k.revokedAt ? 'revoked' : !k.isActive ? 'inactive' : k.expiresAt && k.expiresAt < new Date() ? 'expired' : 'active');
const view = (k: Row, secret?: string) => ({
  id: k.id, org_id: k.orgId, name: k.name, description: k.description, scopes: k.scopes, key_preview: k.masked,
  expires_at: k.expiresAt?.toISOString() ?? null, is_active: k.isActive, status: status(k), last_used_at: k.lastUsedAt?.toISOString() ?? null,
  created_by: k.createdBy, created_at: k.createdAt.toISOString(), updated_at: k.updatedAt.toISOString(),
  previous_key_valid_until: k.previousValidUntil && k.previousValidUntil > new Date() ? k.previousValidUntil.toISOString() : null,
  ...(secret ? { key: secret } : {}),
});

const Params = Type.Object({ orgId: Type.String({ maxLength: 64 }) });
const KeyParams = Type.Object({ orgId: Type.String({ maxLength: 64 }), keyId: Type.String({ format: 'uuid' }) });
const Expires = Nullable(Type.String({ format: 'date-time' }));

/**
 * An API key may manage only keys no stronger than itself: otherwise an `org:write` key could
 * mint (or roll, and so read) a `*` key. Users are limited by their role instead.
 */
function assertWithinCaller(principal: Principal, scopes: readonly string[]) {
  if (principal.kind !== 'api_key' || principal.scopes.includes('*')) return;
  const beyond = scopes.filter((s) => !principal.scopes.includes(s));
  if (beyond.length) throw new AppError('FORBIDDEN', `This API key cannot manage keys with scopes it lacks: ${beyond.join(', ')}`, beyond.map((scope) => ({ scope })));
}

function futureOrNull(value: string | null | undefined): Date | null | undefined {
  if (value === undefined || value === null) return value;
  const d = new Date(value);
  if (d.getTime() <= Date.now()) throw badRequest('expires_at must be in the future', [{ field: 'expires_at' }]);
  return d;
}

/**
 * Organization API keys: shown once, stored as HMAC-SHA256 with a server pepper, masked in
 * listings. Managing keys needs the admin role in the org (or an API key with org:write there).
 */
export async function apiKeyRoutes(app: App, ctx: Ctx) {
  const find = async (request: FastifyRequest) => {
    const params = request.params as { orgId: string; keyId: string };
    const { org } = await requireRole(ctx.db, request, params.orgId, 'admin');
    const [k] = await ctx.db.select().from(apiKeys).where(and(eq(apiKeys.orgId, org.id), eq(apiKeys.id, params.keyId), isNull(apiKeys.deletedAt)));
    if (!k) throw notFound('API key');
    assertWithinCaller(request.principal, k.scopes);
    return { org, key: k };
  };
  const meta = (r: FastifyRequest) => metaFromPrincipal(r.principal);

  app.get('/organizations/:orgId/api-keys', {
    config: { scope: 'org:read' },
    schema: {
      tags: ['API keys'], summary: 'List API keys (masked), newest first', params: Params,
      querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(Type.Union(KeyStatuses.map((s) => Type.Literal(s)))) }),
      response: { 200: ListEnvelope(KeySchema) },
    },
  }, async (request) => {
    const { org } = await requireRole(ctx.db, request, request.params.orgId, 'admin');
    const p = page(request.query);
    const cond = and(eq(apiKeys.orgId, org.id), isNull(apiKeys.deletedAt), request.query.status ? statusIs(request.query.status) : undefined);
    const rows = await ctx.db.select().from(apiKeys).where(cond).orderBy(desc(apiKeys.createdAt), desc(apiKeys.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(apiKeys).where(cond)) as [{ n: number }];
    return list(rows.map((k) => view(k)), n, p);
  });

  app.post('/organizations/:orgId/api-keys', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['API keys'], summary: 'Create an API key (the secret is returned once)', params: Params,
      body: Type.Object({
        name: Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' }), description: Type.Optional(Type.String({ maxLength: 500 })),
        scopes: Type.Optional(Type.Array(Scope, { minItems: 1, maxItems: 50 })), expires_at: Type.Optional(Expires),
      }, { additionalProperties: false }),
      response: { 201: Envelope(KeySchema) },
    },
  }, async (request, reply) => {
    const { org } = await requireRole(ctx.db, request, request.params.orgId, 'admin');
    const b = request.body;
    const scopes = [...new Set(b.scopes ?? ['*'])];
    assertWithinCaller(request.principal, scopes);
    const secret = generateApiKey();
    const row = await ctx.db.transaction(async (tx) => {
      const [k] = await tx.insert(apiKeys).values({
        orgId: org.id, tenantId: org.tenantId, createdBy: request.principal.userId, name: b.name.trim(), description: b.description ?? null,
        scopes, masked: maskApiKey(secret), keyHash: apiKeyHash(ctx.config.API_KEY_PEPPER, secret),
        expiresAt: futureOrNull(b.expires_at) ?? null,
      }).returning();
      await ctx.outbox.enqueue(tx, 'identity.api_key.created', { orgId: org.id, tenantId: org.tenantId, apiKeyId: k!.id }, meta(request));
      return k!;
    });
    return reply.status(201).send(ok(view(row, secret)));
  });

  app.get('/organizations/:orgId/api-keys/:keyId', {
    config: { scope: 'org:read' },
    schema: { tags: ['API keys'], summary: 'API key detail (masked)', params: KeyParams, response: { 200: Envelope(KeySchema) } },
  }, async (request) => ok(view((await find(request)).key)));

  app.patch('/organizations/:orgId/api-keys/:keyId', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['API keys'], summary: 'Update name, description, scopes, expiry or active flag', params: KeyParams,
      body: Type.Object({
        name: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' })), description: Type.Optional(Nullable(Type.String({ maxLength: 500 }))),
        scopes: Type.Optional(Type.Array(Scope, { minItems: 1, maxItems: 50 })), is_active: Type.Optional(Type.Boolean()), expires_at: Type.Optional(Expires),
      }, { additionalProperties: false }),
      response: { 200: Envelope(KeySchema) },
    },
  }, async (request) => {
    const { org, key } = await find(request);
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    if (key.revokedAt) throw conflict('A revoked key cannot be changed');
    if (b.scopes) assertWithinCaller(request.principal, b.scopes);
    const updated = await ctx.db.transaction(async (tx) => {
      const [k] = await tx.update(apiKeys).set({
        name: b.name?.trim(), description: b.description, scopes: b.scopes ? [...new Set(b.scopes)] : undefined, isActive: b.is_active,
        expiresAt: futureOrNull(b.expires_at), updatedAt: new Date(),
      }).where(eq(apiKeys.id, key.id)).returning();
      await ctx.outbox.enqueue(tx, 'identity.api_key.updated', { orgId: org.id, tenantId: org.tenantId, apiKeyId: key.id }, meta(request));
      return k!;
    });
    return ok(view(updated));
  });

  const revoke = (reason: 'revoked' | 'deleted') => async (request: FastifyRequest) => {
    const { org, key } = await find(request);
    const updated = await ctx.db.transaction(async (tx) => {
      const now = new Date();
      const [k] = await tx.update(apiKeys).set({
        revokedAt: key.revokedAt ?? now, isActive: false, previousKeyHash: null, previousValidUntil: null, updatedAt: now,
        ...(reason === 'deleted' ? { deletedAt: now } : {}),
      }).where(eq(apiKeys.id, key.id)).returning();
      await ctx.outbox.enqueue(tx, 'identity.api_key.revoked', { orgId: org.id, tenantId: org.tenantId, apiKeyId: key.id, reason }, meta(request));
      return k!;
    });
    return updated;
  };

  app.delete('/organizations/:orgId/api-keys/:keyId', {
    config: { scope: 'org:write' },
    schema: { tags: ['API keys'], summary: 'Soft-delete (stops working at once)', params: KeyParams, response: { 200: Envelope(Type.Object({ id: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const k = await revoke('deleted')(request);
    return ok({ id: k.id, deleted: true });
  });

  app.post('/organizations/:orgId/api-keys/:keyId/revoke', {
    config: { scope: 'org:write' },
    schema: { tags: ['API keys'], summary: 'Revoke instantly', params: KeyParams, response: { 200: Envelope(KeySchema) } },
  }, async (request) => ok(view(await revoke('revoked')(request))));

  const replaceSecret = (graceful: boolean) => async (request: FastifyRequest) => {
    const { org, key } = await find(request);
    if (key.revokedAt) throw conflict('A revoked key cannot be rotated');
    const secret = generateApiKey();
    const graceHours = graceful ? (request.body as { grace_hours?: number } | undefined)?.grace_hours ?? 24 : 0;
    const graceUntil = graceHours > 0 ? new Date(Date.now() + graceHours * 3_600_000) : null;
    const updated = await ctx.db.transaction(async (tx) => {
      const [k] = await tx.update(apiKeys).set({
        keyHash: apiKeyHash(ctx.config.API_KEY_PEPPER, secret), masked: maskApiKey(secret),
        previousKeyHash: graceUntil ? key.keyHash : null, previousMasked: graceUntil ? key.masked : null, previousValidUntil: graceUntil, updatedAt: new Date(),
      }).where(eq(apiKeys.id, key.id)).returning();
      await ctx.outbox.enqueue(tx, 'identity.api_key.rotated', { orgId: org.id, tenantId: org.tenantId, apiKeyId: key.id, graceUntil: graceUntil?.toISOString() ?? null }, meta(request));
      return k!;
    });
    return ok(view(updated, secret));
  };

  app.post('/organizations/:orgId/api-keys/:keyId/rotate', {
    config: { scope: 'org:write' },
    schema: {
      tags: ['API keys'], summary: 'Rotate: new secret now, old one valid for grace_hours (default 24)', params: KeyParams,
      body: Type.Object({ grace_hours: Type.Optional(Type.Integer({ minimum: 0, maximum: 720 })) }, { additionalProperties: false }),
      response: { 200: Envelope(KeySchema) },
    },
    // The body is optional: an empty POST means the default grace period.
    preValidation: async (request) => { request.body ??= {}; },
  }, replaceSecret(true));

  app.post('/organizations/:orgId/api-keys/:keyId/roll', {
    config: { scope: 'org:write' },
    schema: { tags: ['API keys'], summary: 'Roll: new secret, the old one stops at once', params: KeyParams, response: { 200: Envelope(KeySchema) } },
  }, replaceSecret(false));

  app.get('/organizations/:orgId/api-keys/:keyId/usage', {
    config: { scope: 'org:read' },
    schema: {
      tags: ['API keys'], summary: 'Per-key usage log, newest first', description: 'Entries are kept API_KEY_USAGE_RETENTION_DAYS days (90 by default).', params: KeyParams, querystring: Type.Object(PaginationQuery),
      response: { 200: ListEnvelope(Type.Object({ at: Type.String(), method: Type.String(), path: Type.String(), status: Type.Integer(), latency_ms: Type.Integer() })) },
    },
  }, async (request) => {
    const { key } = await find(request);
    const p = page(request.query);
    const rows = await ctx.db.select().from(apiKeyUsage).where(eq(apiKeyUsage.apiKeyId, key.id)).orderBy(desc(apiKeyUsage.at), desc(apiKeyUsage.id)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(apiKeyUsage).where(eq(apiKeyUsage.apiKeyId, key.id))) as [{ n: number }];
    return list(rows.map((u) => ({ at: u.at.toISOString(), method: u.method, path: u.path, status: u.status, latency_ms: u.latencyMs })), n, p);
  });
}
