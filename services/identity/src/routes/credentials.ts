import { metaFromPrincipal } from '@aos/bus';
import { AppError, notFound, serviceUnavailable } from '@aos/core';
import { Envelope, ListEnvelope, list, ok, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { asc, eq, like } from 'drizzle-orm';
import { credentials } from '../db/schema.js';
import { decrypt, encrypt } from '../domain/crypto.js';
import type { Ctx } from '../service.js';

const Key = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.:-]+$' });
const CredentialSchema = Type.Object({ key: Type.String(), description: Type.Union([Type.String(), Type.Null()]), key_id: Type.String(), updated_at: Type.String(), value: Type.Optional(Type.String()) });
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

/**
 * Platform credentials, encrypted with AES-256-GCM (random nonce per value, key id stored
 * for rotation). Values are never logged; reading or writing them needs the platform admin role.
 */
export async function credentialRoutes(app: App, ctx: Ctx) {
  const keyOf = () => {
    if (!ctx.config.CREDENTIALS_KEY) throw serviceUnavailable('Credential storage is not configured (CREDENTIALS_KEY)');
    return ctx.config.CREDENTIALS_KEY;
  };
  const save = async (key: string, value: string, description: string | null, by: string | null) => {
    const sealed = encrypt(keyOf(), value);
    const [row] = await ctx.db.insert(credentials).values({ key, description, ...sealed, keyId: ctx.config.CREDENTIALS_KEY_ID, updatedBy: by })
      .onConflictDoUpdate({ target: credentials.key, set: { description, ...sealed, keyId: ctx.config.CREDENTIALS_KEY_ID, updatedBy: by, updatedAt: new Date() } }).returning();
    return row!;
  };

  app.get('/credentials', {
    config: { platformAdmin: true, scope: 'credentials:read' },
    schema: { tags: ['Credentials'], summary: 'Credential keys (values hidden)', response: { 200: ListEnvelope(CredentialSchema) } },
  }, async () => {
    const rows = await ctx.db.select().from(credentials).orderBy(asc(credentials.key));
    return list(rows.map((c) => view(c)), rows.length, { limit: rows.length, offset: 0 });
  });

  app.post('/credentials', {
    config: { platformAdmin: true, scope: 'credentials:write' },
    schema: {
      tags: ['Credentials'], summary: 'Create or update a credential (admin only)',
      body: Type.Object({ key: Key, value: Type.String({ minLength: 1, maxLength: 20_000 }), description: Type.Optional(Type.String({ maxLength: 500 })) }, { additionalProperties: false }),
      response: { 201: Envelope(CredentialSchema) },
    },
  }, async (request, reply) => {
    const row = await save(request.body.key, request.body.value, request.body.description ?? null, request.principal.userId);
    await ctx.db.transaction((tx) => ctx.outbox.enqueue(tx, 'identity.credential.changed', { key: row.key, action: 'saved' }, metaFromPrincipal(request.principal)));
    return reply.status(201).send(ok(view(row)));
  });

  app.get('/credentials/:key', {
    config: { platformAdmin: true, scope: 'credentials:read' },
    schema: { tags: ['Credentials'], summary: 'A credential with its decrypted value', params: Type.Object({ key: Key }), response: { 200: Envelope(CredentialSchema) } },
  }, async (request) => {
    const [row] = await ctx.db.select().from(credentials).where(eq(credentials.key, request.params.key));
    if (!row) throw notFound('Credential');
    const key = keyOf();
    try {
      return ok(view(row, decrypt(key, row)));
    } catch {
      throw new AppError('INTERNAL_ERROR', `Decryption failed (stored with key ${row.keyId})`);
    }
  });

  app.delete('/credentials/:key', {
    config: { platformAdmin: true, scope: 'credentials:write' },
    schema: { tags: ['Credentials'], summary: 'Delete a credential (admin only)', params: Type.Object({ key: Key }), response: { 200: Envelope(Type.Object({ key: Type.String(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const rows = await ctx.db.delete(credentials).where(eq(credentials.key, request.params.key)).returning({ key: credentials.key });
    if (!rows.length) throw notFound('Credential');
    await ctx.db.transaction((tx) => ctx.outbox.enqueue(tx, 'identity.credential.changed', { key: request.params.key, action: 'deleted' }, metaFromPrincipal(request.principal)));
    return ok({ key: request.params.key, deleted: true });
  });

  const IntegrationSchema = Type.Object({ id: Type.String(), name: Type.String(), fields: Type.Array(Type.String()), configured: Type.Boolean(), missing: Type.Array(Type.String()) });
  const status = async (id: string) => {
    const integration = INTEGRATIONS.find((i) => i.id === id);
    if (!integration) throw notFound('Integration');
    const stored = new Set((await ctx.db.select({ key: credentials.key }).from(credentials).where(like(credentials.key, `integration.${id}.%`))).map((r) => r.key));
    const missing = integration.fields.filter((f) => !stored.has(`integration.${id}.${f}`));
    return { id, name: integration.name, fields: [...integration.fields], configured: missing.length === 0, missing };
  };
  const IntegrationId = Type.Object({ id: Type.String({ maxLength: 50, pattern: '^[a-z0-9_-]+$' }) });

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
      tags: ['Integrations'], summary: 'Save the integration secrets (stored as credentials)', params: IntegrationId,
      body: Type.Object({ values: Type.Record(Type.String({ maxLength: 50 }), Type.String({ minLength: 1, maxLength: 20_000 })) }, { additionalProperties: false }),
      response: { 200: Envelope(IntegrationSchema) },
    },
  }, async (request) => {
    const current = await status(request.params.id);
    const unknown = Object.keys(request.body.values).filter((f) => !(current.fields as string[]).includes(f));
    if (unknown.length) throw new AppError('VALIDATION_ERROR', `Unknown fields for ${current.name}: ${unknown.join(', ')}`, [{ allowed: current.fields }]);
    for (const [field, value] of Object.entries(request.body.values)) {
      await save(`integration.${request.params.id}.${field}`, value, `${current.name} ${field}`, request.principal.userId);
    }
    return ok(await status(request.params.id));
  });
}
