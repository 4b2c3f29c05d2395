import { escapeLike } from '@aos/db';
import { badRequest, notFound } from '@aos/core';
import { type App, Envelope, list, ListEnvelope, Nullable, ok, orgOf, page, PaginationQuery } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, asc, eq, ilike, or, sql, type SQL } from 'drizzle-orm';
import { files } from '../db/schema.js';
import type { Ctx } from '../service.js';
import { AgentName, countOf, Id, like, SafePath } from './common.js';

type File = typeof files.$inferSelect;
const FileSchema = Type.Object({
  id: Type.Integer(), path: Type.String(), name: Type.String(), file_type: Nullable(Type.String()), category: Nullable(Type.String()), mime_type: Nullable(Type.String()),
  agent: Nullable(Type.String()), size: Type.Integer(), created_at: Type.String(), updated_at: Type.String(), content: Type.Optional(Type.String()),
});
const view = (f: File, withContent = false) => ({
  id: f.id, path: f.path, name: f.name, file_type: f.fileType, category: f.category, mime_type: f.mimeType, agent: f.agent, size: Buffer.byteLength(f.content),
  created_at: f.createdAt.toISOString(), updated_at: f.updatedAt.toISOString(), ...(withContent ? { content: f.content } : {}),
});
const extOf = (name: string) => (/\.([A-Za-z0-9]{1,16})$/.exec(name)?.[1] ?? null)?.toLowerCase() ?? null;
const Category = Type.String({ minLength: 1, maxLength: 60 });
/** `?page=` (1-based, as the reference API has it) or `?offset=`. */
const Paging = { ...PaginationQuery, page: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })) };
const paging = (q: { limit?: number; offset?: number; page?: number }) => {
  const p = page(q);
  return q.page ? { limit: p.limit, offset: (q.page - 1) * p.limit } : p;
};

/** The agents' files (workspace documents such as SOUL.md), upserted by path. */
export async function fileRoutes(app: App, ctx: Ctx) {
  app.post('/files', {
    config: { scope: 'agents:write' },
    schema: {
      tags: ['Files'], summary: 'Create or update a file by path (201 created, 200 updated)',
      body: Type.Object({
        path: SafePath, name: Type.Optional(Type.String({ minLength: 1, maxLength: 255, pattern: '^[^/\\\\\\u0000]+$' })), content: Type.Optional(Type.String({ maxLength: 1_000_000 })),
        file_type: Type.Optional(Type.String({ minLength: 1, maxLength: 30 })), category: Type.Optional(Category), mime_type: Type.Optional(Type.String({ maxLength: 100 })), agent: Type.Optional(AgentName),
      }, { additionalProperties: false }),
      response: { 200: Envelope(FileSchema), 201: Envelope(FileSchema) },
    },
  }, async (request, reply) => {
    const b = request.body;
    const name = b.name ?? b.path.split('/').pop()!;
    const values = { content: b.content ?? '', name, fileType: b.file_type ?? extOf(name), category: b.category ?? null, mimeType: b.mime_type ?? null, agent: b.agent ?? null };
    const [row] = await ctx.db.insert(files).values({ orgId: orgOf(request), path: b.path, ...values })
      .onConflictDoUpdate({ target: [files.orgId, files.path], set: { ...values, updatedAt: new Date() } })
      .returning({ id: files.id, inserted: sql<boolean>`(xmax = 0)` });
    const [file] = await ctx.db.select().from(files).where(eq(files.id, row!.id));
    return reply.status(row!.inserted ? 201 : 200).send(ok(view(file!)));
  });

  const filters = (q: { agent?: string; category?: string; workspace?: string; ext?: string }): SQL[] => [
    ...(q.agent ? [eq(files.agent, q.agent)] : []), ...(q.category ? [eq(files.category, q.category)] : []),
    ...(q.workspace ? [sql`${files.path} LIKE ${`${escapeLike(q.workspace)}/%`}`] : []), ...(q.ext ? [eq(files.fileType, q.ext.toLowerCase())] : []),
  ];
  const Filters = { agent: Type.Optional(AgentName), category: Type.Optional(Category), workspace: Type.Optional(SafePath), ext: Type.Optional(Type.String({ minLength: 1, maxLength: 16, pattern: '^[A-Za-z0-9]+$' })) };

  app.get('/files', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Files'], summary: 'Files without content (agent, category, workspace prefix, ext)', querystring: Type.Object({ ...Paging, ...Filters }), response: { 200: ListEnvelope(FileSchema) } },
  }, async (request) => {
    const p = paging(request.query);
    const cond = and(eq(files.orgId, orgOf(request)), ...filters(request.query));
    const rows = await ctx.db.select().from(files).where(cond).orderBy(asc(files.path), asc(files.id)).limit(p.limit).offset(p.offset);
    return list(rows.map((f) => view(f)), await countOf(ctx, files, cond), p);
  });

  app.get('/files/search', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Files'], summary: 'Search files by name, path or content', querystring: Type.Object({ ...Paging, ...Filters, q: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })) }), response: { 200: ListEnvelope(FileSchema) } },
  }, async (request) => {
    const q = request.query;
    if (!q.q && !q.workspace && !q.category && !q.ext && !q.agent) throw badRequest('Give q or at least one filter (workspace, category, ext, agent)', [{ field: 'q' }]);
    const p = paging(q);
    const text = q.q ? [or(ilike(files.name, like(q.q)), ilike(files.path, like(q.q)), ilike(files.content, like(q.q)))!] : [];
    const cond = and(eq(files.orgId, orgOf(request)), ...text, ...filters(q));
    const rows = await ctx.db.select().from(files).where(cond).orderBy(asc(files.path), asc(files.id)).limit(p.limit).offset(p.offset);
    return list(rows.map((f) => view(f)), await countOf(ctx, files, cond), p);
  });

  app.get('/files/:id', {
    config: { scope: 'agents:read' },
    schema: { tags: ['Files'], summary: 'A file with its content', params: Id, response: { 200: Envelope(FileSchema) } },
  }, async (request) => {
    const [f] = await ctx.db.select().from(files).where(and(eq(files.orgId, orgOf(request)), eq(files.id, request.params.id)));
    if (!f) throw notFound('File');
    return ok(view(f, true));
  });
}
