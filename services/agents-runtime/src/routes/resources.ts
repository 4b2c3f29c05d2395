import { badRequest, conflict, forbidden, notFound } from '@aos/core';
import { isUniqueViolation } from '@aos/db';
import { type App, csv, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, desc, eq, ilike, inArray, isNull, or, sql, type SQL } from 'drizzle-orm';
import { automations, files, logs, rules, templates } from '../db/schema.js';
import type { Ctx } from '../service.js';

const Id = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) });
const like = (q: string) => `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
const count = async (ctx: Ctx, table: typeof rules | typeof templates | typeof logs | typeof files | typeof automations, cond: SQL | undefined) =>
  ((await ctx.db.select({ n: sql<number>`count(*)::int` }).from(table).where(cond)) as [{ n: number }])[0].n;
const Deleted = Envelope(Type.Object({ id: Type.Integer(), deleted: Type.Boolean() }));

/** Templates, rules, logs, files and automations: org-scoped records the agents work with. */
export async function resourceRoutes(app: App, ctx: Ctx) {
  // ---- templates (/v1/public/templates) ----
  type Tpl = typeof templates.$inferSelect;
  const TemplateSchema = Type.Object({
    id: Type.Integer(), name: Type.String(), slug: Type.String(), description: Nullable(Type.String()), icon: Nullable(Type.String()), category: Nullable(Type.String()),
    model: Nullable(Type.String()), interval_sec: Nullable(Type.Integer()), identity: Nullable(Type.String()), tools: Type.Array(Type.String()), capabilities: Type.Array(Type.String()),
    config: Type.Unknown(), is_featured: Type.Boolean(), sort_order: Type.Integer(), created_at: Type.String(), updated_at: Type.String(),
  });
  const tplView = (t: Tpl) => ({
    id: t.id, name: t.name, slug: t.slug, description: t.description, icon: t.icon, category: t.category, model: t.model, interval_sec: t.intervalSec,
    identity: t.identity, tools: t.tools, capabilities: t.capabilities, config: t.config, is_featured: t.isFeatured, sort_order: t.sortOrder,
    created_at: t.createdAt.toISOString(), updated_at: t.updatedAt.toISOString(),
  });
  const TplFields = {
    description: Type.Optional(Type.String({ maxLength: 5_000 })), icon: Type.Optional(Type.String({ maxLength: 16 })), category: Type.Optional(Type.String({ maxLength: 60 })),
    model: Type.Optional(Type.String({ maxLength: 100 })), interval_sec: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 86_400 })), identity: Type.Optional(Type.String({ maxLength: 50_000 })),
    tools: Type.Optional(Type.Array(Type.String({ maxLength: 100 }), { maxItems: 100 })), capabilities: Type.Optional(Type.Array(Type.String({ maxLength: 100 }), { maxItems: 100 })),
    config: Type.Optional(Type.Record(Type.String(), Type.Unknown())), is_featured: Type.Optional(Type.Boolean()), sort_order: Type.Optional(Type.Integer({ minimum: -100_000, maximum: 100_000 })),
  };
  const tplValues = (b: Record<string, unknown>) => ({
    description: b.description as string | undefined, icon: b.icon as string | undefined, category: b.category as string | undefined, model: b.model as string | undefined,
    intervalSec: b.interval_sec as number | undefined, identity: b.identity as string | undefined, tools: b.tools as string[] | undefined, capabilities: b.capabilities as string[] | undefined,
    config: b.config, isFeatured: b.is_featured as boolean | undefined, sortOrder: b.sort_order as number | undefined,
  });
  const findTpl = async (orgId: string, id: number) => {
    const [t] = await ctx.db.select().from(templates).where(and(eq(templates.orgId, orgId), eq(templates.id, id), isNull(templates.archivedAt)));
    if (!t) throw notFound('Template');
    return t;
  };

  app.get('/v1/public/templates', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Public API'], summary: 'List agent templates', querystring: Type.Object({ ...PaginationQuery, category: Type.Optional(Type.String({ maxLength: 60 })), featured: Type.Optional(Type.Boolean()) }), response: { 200: ListEnvelope(TemplateSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const cond = and(eq(templates.orgId, orgOf(request)), isNull(templates.archivedAt), request.query.category ? eq(templates.category, request.query.category) : undefined, request.query.featured !== undefined ? eq(templates.isFeatured, request.query.featured) : undefined);
    const rows = await ctx.db.select().from(templates).where(cond).orderBy(asc(templates.sortOrder), asc(templates.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(tplView), await count(ctx, templates, cond), p);
  });
  app.post('/v1/public/templates', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Public API'], summary: 'Create a template (slug unique)', body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100 }), slug: Type.String({ minLength: 1, maxLength: 80, pattern: '^[a-z0-9]+(?:-[a-z0-9]+)*$' }), ...TplFields }, { additionalProperties: false }), response: { 201: Envelope(TemplateSchema) } },
  }, async (request, reply) => {
    try {
      const [t] = await ctx.db.insert(templates).values({ orgId: orgOf(request), name: request.body.name, slug: request.body.slug, ...tplValues(request.body) }).returning();
      return reply.status(201).send(ok(tplView(t!)));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`A template with slug "${request.body.slug}" already exists`);
      throw err;
    }
  });
  app.get('/v1/public/templates/:id', { config: { scope: 'agents:read' }, schema: { tags: ['Public API'], summary: 'Get a template', params: Id, response: { 200: Envelope(TemplateSchema) } } },
    async (request) => ok(tplView(await findTpl(orgOf(request), request.params.id))));
  app.patch('/v1/public/templates/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Public API'], summary: 'Update a template', params: Id, body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })), ...TplFields }, { additionalProperties: false }), response: { 200: Envelope(TemplateSchema) } },
  }, async (request) => {
    const t = await findTpl(orgOf(request), request.params.id);
    if (Object.keys(request.body).length === 0) throw badRequest('Nothing to update');
    const [u] = await ctx.db.update(templates).set({ name: request.body.name, ...tplValues(request.body), updatedAt: new Date() }).where(eq(templates.id, t.id)).returning();
    return ok(tplView(u!));
  });
  app.delete('/v1/public/templates/:id', { config: { scope: 'agents:write' }, schema: { tags: ['Public API'], summary: 'Archive a template (soft delete)', params: Id, response: { 200: Deleted } } }, async (request) => {
    const t = await findTpl(orgOf(request), request.params.id);
    await ctx.db.update(templates).set({ archivedAt: new Date() }).where(eq(templates.id, t.id));
    return ok({ id: t.id, deleted: true });
  });

  // ---- rules ----
  type Rule = typeof rules.$inferSelect;
  const RuleSchema = Type.Object({ id: Type.Integer(), title: Type.String(), body: Type.String(), scope: Type.String(), agent: Nullable(Type.String()), category: Nullable(Type.String()), permanent: Type.Boolean(), created_at: Type.String(), updated_at: Type.String() });
  const ruleView = (r: Rule) => ({ id: r.id, title: r.title, body: r.body, scope: r.scope, agent: r.agent, category: r.category, permanent: r.permanent, created_at: r.createdAt.toISOString(), updated_at: r.updatedAt.toISOString() });
  const findRule = async (orgId: string, id: number) => {
    const [r] = await ctx.db.select().from(rules).where(and(eq(rules.orgId, orgId), eq(rules.id, id)));
    if (!r) throw notFound('Rule');
    return r;
  };
  const RuleFields = { body: Type.String({ minLength: 1, maxLength: 20_000 }), scope: Type.Optional(Type.String({ maxLength: 60 })), agent: Type.Optional(Nullable(Type.String({ maxLength: 63 }))), category: Type.Optional(Nullable(Type.String({ maxLength: 60 }))) };

  app.get('/rules', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Rules'], summary: 'Rules (filter by scope, agent, category)', querystring: Type.Object({ ...PaginationQuery, scope: Type.Optional(Type.String({ maxLength: 60 })), agent: Type.Optional(Type.String({ maxLength: 63 })), category: Type.Optional(Type.String({ maxLength: 60 })) }), response: { 200: ListEnvelope(RuleSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const cond = and(eq(rules.orgId, orgOf(request)), q.scope ? eq(rules.scope, q.scope) : undefined, q.agent ? or(eq(rules.agent, q.agent), isNull(rules.agent)) : undefined, q.category ? eq(rules.category, q.category) : undefined);
    const rows = await ctx.db.select().from(rules).where(cond).orderBy(asc(rules.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(ruleView), await count(ctx, rules, cond), p);
  });
  app.post('/rules', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Rules'], summary: 'Create a rule', body: Type.Object({ title: Type.String({ minLength: 1, maxLength: 200 }), ...RuleFields, permanent: Type.Optional(Type.Boolean()) }, { additionalProperties: false }), response: { 201: Envelope(RuleSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    const [r] = await ctx.db.insert(rules).values({ orgId: orgOf(request), title: b.title, body: b.body, scope: b.scope ?? 'global', agent: b.agent ?? null, category: b.category ?? null, permanent: b.permanent ?? false }).returning();
    return reply.status(201).send(ok(ruleView(r!)));
  });
  app.patch('/rules/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Rules'], summary: 'Update a rule', params: Id, body: Type.Object({ title: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })), body: Type.Optional(RuleFields.body), scope: RuleFields.scope, agent: RuleFields.agent, category: RuleFields.category }, { additionalProperties: false }), response: { 200: Envelope(RuleSchema) } },
  }, async (request) => {
    const r = await findRule(orgOf(request), request.params.id);
    if (Object.keys(request.body).length === 0) throw badRequest('Nothing to update');
    const [u] = await ctx.db.update(rules).set({ ...request.body, updatedAt: new Date() }).where(eq(rules.id, r.id)).returning();
    return ok(ruleView(u!));
  });
  app.delete('/rules/:id', { config: { scope: 'agents:write' }, schema: { tags: ['Rules'], summary: 'Delete a rule (permanent rules cannot be deleted)', params: Id, response: { 200: Deleted } } }, async (request) => {
    const r = await findRule(orgOf(request), request.params.id);
    if (r.permanent) throw forbidden('Permanent rules cannot be deleted');
    await ctx.db.delete(rules).where(eq(rules.id, r.id));
    return ok({ id: r.id, deleted: true });
  });

  // ---- logs ----
  const LogSchema = Type.Object({ id: Type.Integer(), agent: Type.String(), level: Type.String(), message: Type.String(), meta: Type.Unknown(), created_at: Type.String(), source: Type.String() });
  const Level = Type.Union(['debug', 'info', 'warn', 'error'].map((l) => Type.Literal(l)));
  app.post('/logs', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Logs'], summary: 'Store an agent log entry', body: Type.Object({ agent: Type.String({ minLength: 1, maxLength: 63 }), message: Type.String({ minLength: 1, maxLength: 20_000 }), level: Type.Optional(Level), meta: Type.Optional(Type.Record(Type.String(), Type.Unknown())) }, { additionalProperties: false }), response: { 201: Envelope(LogSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    if (JSON.stringify(b.meta ?? {}).length > 16_384) throw badRequest('meta is larger than 16 KiB');
    const [l] = await ctx.db.insert(logs).values({ orgId: orgOf(request), agent: b.agent, level: b.level ?? 'info', message: b.message, meta: b.meta ?? {} }).returning();
    return reply.status(201).send(ok({ id: l!.id, agent: l!.agent, level: l!.level, message: l!.message, meta: l!.meta, created_at: l!.createdAt.toISOString(), source: 'db' }));
  });
  app.get('/logs', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Logs'], summary: 'Log lines, newest first (agent, level, q)', querystring: Type.Object({ ...PaginationQuery, agent: Type.Optional(Type.String({ maxLength: 63 })), level: Type.Optional(Type.String({ maxLength: 30 })), q: Type.Optional(Type.String({ maxLength: 200 })), source: Type.Optional(Type.Union([Type.Literal('db'), Type.Literal('file'), Type.Literal('all')])) }), response: { 200: ListEnvelope(LogSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const levels = csv(q.level);
    const cond = and(eq(logs.orgId, orgOf(request)), q.agent ? eq(logs.agent, q.agent) : undefined, levels ? inArray(logs.level, levels) : undefined, q.q ? ilike(logs.message, like(q.q)) : undefined);
    const rows = await ctx.db.select().from(logs).where(cond).orderBy(desc(logs.id)).limit(p.limit).offset(p.offset);
    return list(rows.map((l) => ({ id: l.id, agent: l.agent, level: l.level, message: l.message, meta: l.meta, created_at: l.createdAt.toISOString(), source: 'db' })), await count(ctx, logs, cond), p);
  });
  app.get('/logs/files', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Logs'], summary: 'Log sources: one per agent with stored lines', response: { 200: ListEnvelope(Type.Object({ name: Type.String(), lines: Type.Integer(), last_at: Type.String() })) } },
  }, async (request) => {
    const { rows } = await ctx.pool.query(`SELECT agent AS name, count(*)::int AS lines, max(created_at) AS last_at FROM agent_logs WHERE org_id = $1 GROUP BY agent ORDER BY agent`, [orgOf(request)]);
    return list(rows.map((r) => ({ ...r, last_at: new Date(r.last_at).toISOString() })), rows.length, { limit: rows.length, offset: 0 });
  });

  // ---- files ----
  type File = typeof files.$inferSelect;
  const FileSchema = Type.Object({ id: Type.Integer(), path: Type.String(), name: Type.String(), mime_type: Nullable(Type.String()), agent: Nullable(Type.String()), size: Type.Integer(), created_at: Type.String(), updated_at: Type.String(), content: Type.Optional(Type.String()) });
  const fileView = (f: File, withContent = false) => ({ id: f.id, path: f.path, name: f.name, mime_type: f.mimeType, agent: f.agent, size: Buffer.byteLength(f.content), created_at: f.createdAt.toISOString(), updated_at: f.updatedAt.toISOString(), ...(withContent ? { content: f.content } : {}) });
  const FilePath = Type.String({ minLength: 1, maxLength: 500, pattern: '^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$' });
  app.post('/files', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Files'], summary: 'Create or update a file by path', body: Type.Object({ path: FilePath, content: Type.String({ maxLength: 1_000_000 }), mime_type: Type.Optional(Type.String({ maxLength: 100 })), agent: Type.Optional(Type.String({ maxLength: 63 })) }, { additionalProperties: false }), response: { 200: Envelope(FileSchema), 201: Envelope(FileSchema) } },
  }, async (request, reply) => {
    const b = request.body;
    if (b.path.split('/').some((s) => s === '..' || s === '.')) throw badRequest('path must not contain . or .. segments', [{ field: 'path' }]);
    const orgId = orgOf(request);
    const [existing] = await ctx.db.select({ id: files.id }).from(files).where(and(eq(files.orgId, orgId), eq(files.path, b.path)));
    const [f] = await ctx.db.insert(files).values({ orgId, path: b.path, name: b.path.split('/').pop()!, content: b.content, mimeType: b.mime_type ?? null, agent: b.agent ?? null })
      .onConflictDoUpdate({ target: [files.orgId, files.path], set: { content: b.content, mimeType: b.mime_type ?? null, agent: b.agent ?? null, updatedAt: new Date() } }).returning();
    return reply.status(existing ? 200 : 201).send(ok(fileView(f!)));
  });
  app.get('/files', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Files'], summary: 'Files (without content)', querystring: Type.Object({ ...PaginationQuery, agent: Type.Optional(Type.String({ maxLength: 63 })) }), response: { 200: ListEnvelope(FileSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const cond = and(eq(files.orgId, orgOf(request)), request.query.agent ? eq(files.agent, request.query.agent) : undefined);
    const rows = await ctx.db.select().from(files).where(cond).orderBy(asc(files.path), asc(files.id)).limit(p.limit).offset(p.offset);
    return list(rows.map((f) => fileView(f)), await count(ctx, files, cond), p);
  });
  app.get('/files/search', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Files'], summary: 'Search files by name or content', querystring: Type.Object({ ...PaginationQuery, q: Type.String({ minLength: 1, maxLength: 200 }) }), response: { 200: ListEnvelope(FileSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const cond = and(eq(files.orgId, orgOf(request)), or(ilike(files.name, like(request.query.q)), ilike(files.path, like(request.query.q)), ilike(files.content, like(request.query.q))));
    const rows = await ctx.db.select().from(files).where(cond).orderBy(asc(files.path), asc(files.id)).limit(p.limit).offset(p.offset);
    return list(rows.map((f) => fileView(f)), await count(ctx, files, cond), p);
  });
  app.get('/files/:id', { config: { scope: 'agents:read' }, schema: { tags: ['Files'], summary: 'A file with its content', params: Id, response: { 200: Envelope(FileSchema) } } }, async (request) => {
    const [f] = await ctx.db.select().from(files).where(and(eq(files.orgId, orgOf(request)), eq(files.id, request.params.id)));
    if (!f) throw notFound('File');
    return ok(fileView(f, true));
  });

  // ---- automations ----
  type Auto = typeof automations.$inferSelect;
  const AutoStatus = Type.Union(['active', 'inactive', 'disabled'].map((s) => Type.Literal(s)));
  const AutoSchema = Type.Object({ id: Type.Integer(), name: Type.String(), agent_name: Type.String(), type: Type.String(), path: Type.String(), label: Nullable(Type.String()), status: Type.String(), created_at: Type.String(), updated_at: Type.String() });
  const autoView = (a: Auto) => ({ id: a.id, name: a.name, agent_name: a.agentName, type: a.type, path: a.path, label: a.label, status: a.status, created_at: a.createdAt.toISOString(), updated_at: a.updatedAt.toISOString() });
  const findAuto = async (orgId: string, id: number) => {
    const [a] = await ctx.db.select().from(automations).where(and(eq(automations.orgId, orgId), eq(automations.id, id)));
    if (!a) throw notFound('Automation');
    return a;
  };
  const AutoFields = { name: Type.String({ minLength: 1, maxLength: 100 }), agent_name: Type.String({ minLength: 1, maxLength: 63, pattern: '^[a-z0-9][a-z0-9-]{0,62}$' }), type: Type.String({ minLength: 1, maxLength: 30 }), path: FilePath, label: Type.Optional(Type.String({ maxLength: 200 })), status: Type.Optional(AutoStatus) };
  app.get('/automations', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Automations'], summary: 'Automations', querystring: Type.Object({ ...PaginationQuery, agent_name: Type.Optional(Type.String({ maxLength: 63 })), type: Type.Optional(Type.String({ maxLength: 30 })), status: Type.Optional(AutoStatus), q: Type.Optional(Type.String({ maxLength: 100 })) }), response: { 200: ListEnvelope(AutoSchema) } },
  }, async (request) => {
    const p = page(request.query);
    const q = request.query;
    const cond = and(eq(automations.orgId, orgOf(request)), q.agent_name ? eq(automations.agentName, q.agent_name) : undefined, q.type ? eq(automations.type, q.type) : undefined, q.status ? eq(automations.status, q.status) : undefined, q.q ? or(ilike(automations.name, like(q.q)), ilike(automations.label, like(q.q))) : undefined);
    const rows = await ctx.db.select().from(automations).where(cond).orderBy(asc(automations.id)).limit(p.limit).offset(p.offset);
    return list(rows.map(autoView), await count(ctx, automations, cond), p);
  });
  app.post('/automations', { config: { scope: 'agents:write' }, schema: { tags: ['Automations'], summary: 'Create an automation record', body: Type.Object(AutoFields, { additionalProperties: false }), response: { 201: Envelope(AutoSchema) } } }, async (request, reply) => {
    const b = request.body;
    const [a] = await ctx.db.insert(automations).values({ orgId: orgOf(request), name: b.name, agentName: b.agent_name, type: b.type, path: b.path, label: b.label ?? null, status: b.status ?? 'active' }).returning();
    return reply.status(201).send(ok(autoView(a!)));
  });
  app.get('/automations/:id', { config: { scope: 'agents:read' }, schema: { tags: ['Automations'], summary: 'An automation', params: Id, response: { 200: Envelope(AutoSchema) } } }, async (request) => ok(autoView(await findAuto(orgOf(request), request.params.id))));
  app.patch('/automations/:id', {
    config: { scope: 'agents:write' },
    schema: { tags: ['Automations'], summary: 'Update an automation', params: Id, body: Type.Object({ name: Type.Optional(AutoFields.name), type: Type.Optional(AutoFields.type), path: Type.Optional(FilePath), label: AutoFields.label, status: AutoFields.status }, { additionalProperties: false }), response: { 200: Envelope(AutoSchema) } },
  }, async (request) => {
    const a = await findAuto(orgOf(request), request.params.id);
    if (Object.keys(request.body).length === 0) throw badRequest('Nothing to update');
    const [u] = await ctx.db.update(automations).set({ ...request.body, updatedAt: new Date() }).where(eq(automations.id, a.id)).returning();
    return ok(autoView(u!));
  });
  app.delete('/automations/:id', { config: { scope: 'agents:write' }, schema: { tags: ['Automations'], summary: 'Delete an automation', params: Id, response: { 200: Deleted } } }, async (request) => {
    const a = await findAuto(orgOf(request), request.params.id);
    await ctx.db.delete(automations).where(eq(automations.id, a.id));
    return ok({ id: a.id, deleted: true });
  });
}
