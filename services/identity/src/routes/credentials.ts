import { escapeLike } from '@aos/db';
import { metaFromPrincipal } from '@aos/bus';
import { AppError, badRequest, notFound, serviceUnavailable } from '@aos/core';
import { Envelope, ListEnvelope, list, Nullable, ok, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { asc, eq, like, sql } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { credentials } from '../db/schema.js';
import { vaultOf } from '../domain/credentials.js';
import type { ITx } from '../domain/users.js';
import type { Ctx } from '../service.js';

const Key = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.:-]+$' });
const Value = Type.String({ minLength: 1, maxLength: 20_000 });
const CredentialSchema = Type.Object({ key: Type.String(), description: Nullable(Type.String()), key_id: Type.String(), updated_at: Type.String(), value: Type.Optional(Type.String()) });
type Row = typeof credentials.$inferSelect;
const view = (c: Row, value?: string) => ({ key: c.key, description: c.description, key_id: c.keyId, updated_at: c.updatedAt.toISOString(), ...(value !== undefined ? { value } : {}) });

/** Integrations AOS knows, and the credential fields each needs. */
export const INTEGRATIONS = [
  { id: 'github', name: 'GitHub', fields: ['token'] },
  { id: 'slack', name: 'Slack', fields: ['webhook_url'] },
  { id: 'openai', name: 'OpenAI', fields: ['api_key'] },
  { id: 'anthropic', name: 'Anthropic', fields: ['api_key'] },
  { id: 'stripe', name: 'Stripe', fields: ['secret_key', 'webhook_secret'] },
  { id: 'smtp', name: 'SMTP relay', fields: ['url'] },
] as const;

export const integrationKey = (id: string, field: string) => `integration.${id}.${field}`;

/**
 * Platform credentials, encrypted with AES-256-GCM (random nonce per value, the credential's name
 * as associated data, key id stored for rotation). Values are never logged; reading or writing
 * them needs the platform admin role.
 */
export async function credentialRoutes(app: App, ctx: Ctx) {
  const vault = vaultOf(ctx);
  const vaultOrFail = () => {
    if (!vault) throw serviceUnavailable('Credential storage is not configured (CREDENTIALS_KEY)');
    return vault;
  };
  const save = async (tx: ITx, key: string, value: string, description: string | null, by: string | null) => {
    const sealed = vaultOrFail().seal(key, value);
    const [row] = await tx.insert(credentials).values({ key, description, ...sealed, updatedBy: by })
      .onConflictDoUpdate({ target: credentials.key, set: { description, ...sealed, updatedBy: by, updatedAt: new Date() } }).returning();
    return row!;
  };
  const meta = (request: FastifyRequest) => metaFromPrincipal(request.principal);

  app.get('/credentials', {
    config: { platformAdmin: true, scope: 'credentials:read' },
    schema: {
      tags: ['Credentials'], summary: 'Credential keys (values hidden)',
      querystring: Type.Object({ ...PaginationQuery, prefix: Type.Optional(Type.String({ maxLength: 200, pattern: '^[A-Za-z0-9_.:-]*$' })) }),
      response: { 200: ListEnvelope(CredentialSchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const cond = request.query.prefix ? like(credentials.key, `${escapeLike(request.query.prefix)}%`) : undefined;
    const rows = await ctx.db.select().from(credentials).where(cond).orderBy(asc(credentials.key)).limit(p.limit).offset(p.offset);
    const [{ n }] = (await ctx.db.select({ n: sql<number>`count(*)::int` }).from(credentials).where(cond)) as [{ n: number }];
    return list(rows.map((c) => view(c)), n, p);
  });

  app.post('/credentials', {
    config: { platformAdmin: true, scope: 'credentials:write' },
    schema: {
      tags: ['Credentials'], summary: 'Create or update a credential (admin only)',
      body: Type.Object({ key: Key, value: Value, description: Type.Optional(Type.String({ maxLength: 500 })) }, { additionalProperties: false }),
      response: { 201: Envelope(CredentialSchema) },
    },
  }, async (request, reply) => {
    const row = await ctx.db.transaction(async (tx) => {
      const saved = await save(tx, request.body.key, request.body.value, request.body.description ?? null, request.principal.userId);
      await ctx.outbox.enqueue(tx, 'identity.credential.changed', { key: saved.key, action: 'saved' }, meta(request));
      return saved;
    });
    return reply.status(201).send(ok(view(row)));
  });

  app.get('/credentials/:key', {
    config: { platformAdmin: true, scope: 'credentials:read' },
    schema: { tags: ['Credentials'], summary: 'A credential with its decrypted value', params: Type.Object({ key: Key }), response: { 200: Envelope(CredentialSchema) } },
  }, async (request) => {
    const v = vaultOrFail();
    const [row] = await ctx.db.select().from(credentials).where(eq(credentials.key, request.params.key));
    if (!row) throw notFound('Credential');
    const value = v.open(row.key, row);
    if (value === null) throw new AppError('INTERNAL_ERROR', `Decryption failed (stored with key ${row.keyId})`);
    return ok(view(row, value));
  });

  app.delete('/credentials/:key', {
    config: { platformAdmin: true, scope: 'credentials:write' },
    schema: { tags: ['Credentials'], summary: 'Delete a credential (admin only)', params: Type.Object({ key: Key }), response: { 200: Envelope(Type.Object({ key: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    await ctx.db.transaction(async (tx) => {
      const rows = await tx.delete(credentials).where(eq(credentials.key, request.params.key)).returning({ key: credentials.key });
      if (!rows.length) throw notFound('Credential');
      await ctx.outbox.enqueue(tx, 'identity.credential.changed', { key: request.params.key, action: 'deleted' }, meta(request));
    });
    return ok({ key: request.params.key, deleted: true });
  });

  const IntegrationSchema = Type.Object({ id: Type.String(), name: Type.String(), fields: Type.Array(Type.String()), configured: Type.Boolean(), missing: Type.Array(Type.String()) });
  const status = async (id: string) => {
    const integration = INTEGRATIONS.find((i) => i.id === id);
    if (!integration) throw notFound('Integration');
    const stored = new Set((await ctx.db.select({ key: credentials.key }).from(credentials).where(like(credentials.key, `integration.${id}.%`))).map((r) => r.key));
    const missing = integration.fields.filter((f) => !stored.has(integrationKey(id, f)));
    return { id, name: integration.name, fields: [...integration.fields], configured: missing.length === 0, missing };
  };
  const IntegrationId = Type.Object({ id: Type.String({ maxLength: 50, pattern: '^[a-z0-9_-]+$' }) });
  const Fields = Type.Record(Type.String({ maxLength: 50 }), Value, { maxProperties: 20 });

  app.get('/integrations', {
    config: { scope: 'credentials:read' },
    schema: { tags: ['Integrations'], summary: 'Integrations and whether each is configured', response: { 200: ListEnvelope(IntegrationSchema) } },
  }, async () => {
    const rows = await Promise.all(INTEGRATIONS.map((i) => status(i.id)));
    return list(rows, rows.length, { limit: rows.length, offset: 0 });
  });

  app.get('/integrations/:id/status', {
    config: { scope: 'credentials:read' },
    schema: { tags: ['Integrations'], summary: 'Is this integration configured?', params: IntegrationId, response: { 200: Envelope(IntegrationSchema) } },
  }, async (request) => ok(await status(request.params.id)));

  app.post('/integrations/:id/configure', {
    config: { platformAdmin: true, scope: 'credentials:write' },
    schema: {
      tags: ['Integrations'], summary: 'Save the integration secrets (stored as credentials; admin only)', params: IntegrationId,
      description: '`fields` maps each of the integration\'s field names to its secret (`values` is accepted as an alias).',
      body: Type.Object({ fields: Type.Optional(Fields), values: Type.Optional(Fields) }, { additionalProperties: false }),
      response: { 200: Envelope(IntegrationSchema) },
    },
  }, async (request) => {
    const current = await status(request.params.id);
    const fields = { ...request.body.values, ...request.body.fields };
    if (Object.keys(fields).length === 0) throw badRequest('fields is required', [{ field: 'fields', allowed: current.fields }]);
    const unknown = Object.keys(fields).filter((f) => !(current.fields as string[]).includes(f));
    if (unknown.length) throw badRequest(`Unknown fields for ${current.name}: ${unknown.join(', ')}`, [{ field: 'fields', allowed: current.fields }]);
    await ctx.db.transaction(async (tx) => {
      for (const [field, value] of Object.entries(fields)) {
        const key = integrationKey(request.params.id, field);
        await save(tx, key, value, `${current.name} ${field}`, request.principal.userId);
        await ctx.outbox.enqueue(tx, 'identity.credential.changed', { key, action: 'saved' }, meta(request));
      }
    });
    return ok(await status(request.params.id));
  });
}
