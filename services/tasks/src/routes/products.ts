import { metaFromPrincipal } from '@aos/bus';
import { badRequest, conflict, notFound } from '@aos/core';
import { escapeLike, isUniqueViolation } from '@aos/db';
import { Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, ilike, inArray, or, sql, type SQL } from 'drizzle-orm';
import { products } from '../db/schema.js';
import { csvFilter, literals, Nullable, ProductSchema, ProductStatuses, SLUG_PATTERN, slugify } from '../domain/model.js';
import type { Ctx } from '../service.js';

type ProductRow = typeof products.$inferSelect;

const Color = Type.String({ pattern: '^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$' });
const Fields = {
  tagline: Type.Optional(Nullable(Type.String({ maxLength: 300 }))),
  description: Type.Optional(Nullable(Type.String({ maxLength: 10_000 }))),
  status: Type.Optional(literals(ProductStatuses)),
  domain: Type.Optional(Nullable(Type.String({ maxLength: 253, pattern: '^[A-Za-z0-9.-]+$' }))),
  brand_color: Type.Optional(Nullable(Color)),
  accent_color: Type.Optional(Nullable(Color)),
  logo_url: Type.Optional(Nullable(Type.String({ format: 'uri', maxLength: 2_000 }))),
};
const CreateBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 200, pattern: '\\S' }),
  slug: Type.Optional(Type.String({ minLength: 1, maxLength: 80, pattern: SLUG_PATTERN })),
  ...Fields,
}, { additionalProperties: false });
const UpdateBody = Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '\\S' })), ...Fields }, { additionalProperties: false });
const SlugParam = Type.Object({ slug: Type.String({ minLength: 1, maxLength: 80, pattern: SLUG_PATTERN }) });

async function statsFor(ctx: Ctx, ids: number[]) {
  if (ids.length === 0) return new Map<number, { open_tasks: number; done_tasks: number; total_tasks: number }>();
  const { rows } = await ctx.pool.query<{ product_id: number; open: number; done: number; total: number }>(
    `SELECT product_id, count(*) FILTER (WHERE status NOT IN ('done','cancelled'))::int AS open,
            count(*) FILTER (WHERE status = 'done')::int AS done, count(*)::int AS total
       FROM tasks WHERE product_id = ANY($1::int[]) GROUP BY product_id`, [ids]);
  return new Map(rows.map((r) => [r.product_id, { open_tasks: r.open, done_tasks: r.done, total_tasks: r.total }]));
}

async function views(ctx: Ctx, rows: ProductRow[]) {
  const stats = await statsFor(ctx, rows.map((r) => r.id));
  return rows.map((p) => ({
    id: p.id, name: p.name, slug: p.slug, tagline: p.tagline, description: p.description, status: p.status, domain: p.domain,
    brand_color: p.brandColor, accent_color: p.accentColor, logo_url: p.logoUrl,
    created_at: p.createdAt.toISOString(), updated_at: p.updatedAt.toISOString(),
    stats: stats.get(p.id) ?? { open_tasks: 0, done_tasks: 0, total_tasks: 0 },
  }));
}

export async function productRoutes(app: App, ctx: Ctx) {
  app.get('/products', {
    config: { scope: 'products:read' },
    schema: {
      tags: ['Products'], summary: 'List products with task counts',
      querystring: Type.Object({ ...PaginationQuery, status: Type.Optional(Type.String({ maxLength: 200 })), q: Type.Optional(Type.String({ maxLength: 200 })), slug: Type.Optional(Type.String({ maxLength: 80 })) }),
      response: { 200: ListEnvelope(ProductSchema) },
    },
  }, async (request) => {
    const orgId = orgOf(request);
    const p = page(request.query);
    const where: SQL[] = [eq(products.orgId, orgId)];
    const statuses = csvFilter('status', request.query.status, ProductStatuses);
    if (statuses) where.push(inArray(products.status, statuses));
    if (request.query.slug) where.push(eq(products.slug, request.query.slug));
    if (request.query.q?.trim()) {
      const like = `%${escapeLike(request.query.q.trim())}%`;
      where.push(or(ilike(products.name, like), ilike(products.tagline, like), ilike(products.slug, like))!);
    }
    const cond = and(...where);
    const [rows, total] = await Promise.all([
      ctx.db.select().from(products).where(cond).orderBy(desc(products.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: sql<number>`count(*)::int` }).from(products).where(cond).then((r) => r[0]?.n ?? 0),
    ]);
    return list(await views(ctx, rows), total, p);
  });

  app.post('/products', {
    config: { scope: 'products:write' },
    schema: { tags: ['Products'], summary: 'Create a product (slug from the name unless given)', body: CreateBody, response: { 201: Envelope(ProductSchema) } },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    const slug = b.slug ?? slugify(b.name);
    if (!slug) throw badRequest('The name has no letters or digits to make a slug from; pass a slug', [{ field: 'slug' }]);
    try {
      const row = await ctx.db.transaction(async (tx) => {
        const [created] = await tx.insert(products).values({
          orgId, name: b.name.trim(), slug, tagline: b.tagline, description: b.description, status: b.status ?? 'building',
          domain: b.domain, brandColor: b.brand_color, accentColor: b.accent_color, logoUrl: b.logo_url, createdBy: request.principal.userId,
        }).returning();
        await ctx.outbox.enqueue(tx, 'tasks.product.created', { productId: created!.id, slug, name: created!.name, status: created!.status }, metaFromPrincipal(request.principal));
        return created!;
      });
      return reply.status(201).send(ok((await views(ctx, [row]))[0]!));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`A product with slug "${slug}" already exists`, [{ field: 'slug', slug }]);
      throw err;
    }
  });

  app.get('/products/:slug', {
    config: { scope: 'products:read' },
    schema: { tags: ['Products'], summary: 'Get a product by slug', params: SlugParam, response: { 200: Envelope(ProductSchema) } },
  }, async (request) => {
    const [row] = await ctx.db.select().from(products).where(and(eq(products.orgId, orgOf(request)), eq(products.slug, request.params.slug)));
    if (!row) throw notFound('Product');
    return ok((await views(ctx, [row]))[0]!);
  });

  app.patch('/products/:slug', {
    config: { scope: 'products:write' },
    schema: { tags: ['Products'], summary: 'Update a product; archiving cancels its open tasks', params: SlugParam, body: UpdateBody, response: { 200: Envelope(ProductSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const b = request.body;
    const row = await ctx.db.transaction(async (tx) => {
      const [before] = await tx.select().from(products).where(and(eq(products.orgId, orgId), eq(products.slug, request.params.slug))).for('update');
      if (!before) throw notFound('Product');
      const set: Partial<typeof products.$inferInsert> = {};
      const map: [keyof typeof b, keyof ProductRow][] = [
        ['name', 'name'], ['tagline', 'tagline'], ['description', 'description'], ['status', 'status'], ['domain', 'domain'],
        ['brand_color', 'brandColor'], ['accent_color', 'accentColor'], ['logo_url', 'logoUrl'],
      ];
      const changes: string[] = [];
      for (const [field, column] of map) {
        if (b[field] !== undefined && b[field] !== before[column]) {
          (set as Record<string, unknown>)[column] = b[field];
          changes.push(field);
        }
      }
      if (changes.length === 0) return before;
      const [after] = await tx.update(products).set({ ...set, updatedAt: new Date() }).where(eq(products.id, before.id)).returning();
      const meta = metaFromPrincipal(request.principal);
      await ctx.outbox.enqueue(tx, 'tasks.product.updated', { productId: before.id, slug: before.slug, changes }, meta);
      if (set.status) await ctx.outbox.enqueue(tx, 'tasks.product.status_changed', { productId: before.id, slug: before.slug, from: before.status, to: set.status }, meta);
      return after!;
    });
    return ok((await views(ctx, [row]))[0]!);
  });
}
