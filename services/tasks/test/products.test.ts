import { apiKeyPrincipal } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, startTasks, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startTasks(); });
afterAll(() => svc?.close());

const events = async (type: string) => (await svc.ctx.pool.query(`SELECT envelope->'data' AS data FROM aos_outbox WHERE type = $1 ORDER BY created_at, id`, [type])).rows.map((r) => r.data);

describe('POST /products', () => {
  it('generates the slug from the name, keeps brand fields, emits tasks.product.created', async () => {
    const api = client(svc);
    const res = await api.post('/products', {
      name: '  Ünïcode Rocket! ', tagline: 'fast', description: 'long text', domain: 'rocket.example.com',
      brand_color: '#ff0000', accent_color: '#0F0', logo_url: 'https://cdn.example.com/logo.png',
    });
    expect(res.statusCode).toBe(201);
    const p = res.json().data;
    expect(p).toMatchObject({
      name: 'Ünïcode Rocket!', slug: 'unicode-rocket', tagline: 'fast', description: 'long text', status: 'building', domain: 'rocket.example.com',
      brand_color: '#ff0000', accent_color: '#0F0', logo_url: 'https://cdn.example.com/logo.png', stats: { open_tasks: 0, done_tasks: 0, total_tasks: 0 },
    });
    expect(await events('tasks.product.created')).toContainEqual({ productId: p.id, slug: 'unicode-rocket', name: 'Ünïcode Rocket!', status: 'building' });
    expect((await api.post('/products', { name: 'Explicit', slug: 'my-own-slug', status: 'active' })).json().data).toMatchObject({ slug: 'my-own-slug', status: 'active' });
  });

  it('a slug is unique per org: 409 on a clash (generated or given), free in another org', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Clash' });
    for (const body of [{ name: 'CLASH' }, { name: 'Other name', slug: 'clash' }]) {
      const res = await api.post('/products', body);
      expect(res.statusCode).toBe(409);
      expect(res.json().error).toMatchObject({ code: 'CONFLICT', details: [{ field: 'slug', slug: 'clash' }] });
    }
    const racers = await Promise.all(Array.from({ length: 5 }, () => api.post('/products', { name: 'Racer' })));
    expect(racers.map((r) => r.statusCode).sort()).toEqual([201, 409, 409, 409, 409]);
    expect((await client(svc).post('/products', { name: 'Clash' })).statusCode).toBe(201);
  });

  it('validates: names without slug material need a slug, bad slugs/colours/urls/statuses are 400', async () => {
    const api = client(svc);
    const noSlug = await api.post('/products', { name: '東京' });
    expect(noSlug.statusCode).toBe(400);
    expect(noSlug.json().error.details).toEqual([{ field: 'slug' }]);
    expect((await api.post('/products', { name: '東京', slug: 'tokyo' })).statusCode).toBe(201);
    for (const body of [{}, { name: '' }, { name: '  ' }, { name: 'x'.repeat(201) }, { name: 'Bad', slug: '../etc' }, { name: 'Bad', slug: 'UPPER' }, { name: 'Bad', slug: 'a--b' },
      { name: 'Bad', brand_color: 'red;' }, { name: 'Bad', accent_color: '#12' }, { name: 'Bad', logo_url: 'not a url' }, { name: 'Bad', status: 'gone' }, { name: 'Bad', domain: 'a b' }]) {
      const res = await api.post('/products', body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json().error.code).toBe('VALIDATION_ERROR');
    }
  });
});

describe('GET /products', () => {
  it('lists with summary stats, status/q/slug filters and pagination', async () => {
    const api = client(svc);
    await api.post('/products', { name: 'Unosend', tagline: 'email API', status: 'active' });
    await api.post('/products', { name: 'Tracker', status: 'building' });
    await api.post('/products', { name: 'Old Thing', status: 'archived' });
    const open = await api.task({ title: 'Open in unosend', product_slug: 'unosend' });
    const done = await api.task({ title: 'Done in unosend', product_slug: 'unosend' });
    await api.complete(done.id);
    const cancelled = await api.task({ title: 'Cancelled in unosend', product_slug: 'unosend' });
    await api.patch(`/tasks/${cancelled.id}`, { status: 'cancelled' });
    expect(open.status).toBe('todo');
    const all = (await api.get('/products')).json();
    expect(all.meta).toEqual({ total: 3, limit: 50, offset: 0 });
    expect(all.data.map((p: { slug: string }) => p.slug)).toEqual(['old-thing', 'tracker', 'unosend']);
    expect(all.data[2].stats).toEqual({ open_tasks: 1, done_tasks: 1, total_tasks: 3 });
    expect(all.data[1].stats).toEqual({ open_tasks: 0, done_tasks: 0, total_tasks: 0 });
    const slugs = async (q: string) => (await api.get(`/products?${q}`)).json().data.map((p: { slug: string }) => p.slug);
    expect(await slugs('status=active,building')).toEqual(['tracker', 'unosend']);
    expect(await slugs('status=archived')).toEqual(['old-thing']);
    expect(await slugs('q=EMAIL')).toEqual(['unosend']);
    expect(await slugs('q=track')).toEqual(['tracker']);
    expect(await slugs('q=%25')).toEqual([]);
    expect(await slugs('slug=tracker')).toEqual(['tracker']);
    expect(await slugs('limit=1&offset=1')).toEqual(['tracker']);
    expect((await api.get('/products?status=gone')).statusCode).toBe(400);
    expect((await client(svc).get('/products')).json().meta.total).toBe(0);
  });
});

describe('GET/PATCH /products/{slug}', () => {
  it('gets by slug; PATCH updates fields, emits updated (+ status_changed), and a no-op emits nothing', async () => {
    const api = client(svc);
    const created = (await api.post('/products', { name: 'Patchable' })).json().data;
    expect((await api.get('/products/patchable')).json().data).toEqual(created);
    const res = await api.patch('/products/patchable', { name: 'Patchable v2', tagline: 'new', brand_color: '#000000', accent_color: null, domain: 'p.example.com', status: 'live' });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toMatchObject({ name: 'Patchable v2', slug: 'patchable', tagline: 'new', brand_color: '#000000', accent_color: null, domain: 'p.example.com', status: 'live' });
    expect(Date.parse(res.json().data.updated_at)).toBeGreaterThan(Date.parse(created.updated_at));
    expect((await events('tasks.product.updated')).at(-1)).toEqual({ productId: created.id, slug: 'patchable', changes: ['name', 'tagline', 'status', 'domain', 'brand_color'] });
    expect((await events('tasks.product.status_changed')).at(-1)).toEqual({ productId: created.id, slug: 'patchable', from: 'building', to: 'live' });
    const before = (await events('tasks.product.updated')).length;
    expect((await api.patch('/products/patchable', { tagline: 'new' })).statusCode).toBe(200);
    expect((await api.patch('/products/patchable', {})).statusCode).toBe(200);
    expect(await events('tasks.product.updated')).toHaveLength(before);
    for (const status of ['idea', 'building', 'active', 'launched', 'live', 'placeholder', 'archived']) {
      expect((await api.patch('/products/patchable', { status })).json().data.status).toBe(status);
    }
    expect((await api.patch('/products/patchable', { status: 'deleted' })).statusCode).toBe(400);
    expect((await api.patch('/products/patchable', { brand_color: 'blue' })).statusCode).toBe(400);
    expect((await api.get('/products/missing')).statusCode).toBe(404);
    expect((await api.patch('/products/missing', { name: 'x' })).statusCode).toBe(404);
    expect((await api.get('/products/NOT_A_SLUG')).statusCode).toBe(400);
  });

  it('another org gets 404; API keys need the products scopes', async () => {
    const owner = client(svc);
    await owner.post('/products', { name: 'Private Product' });
    const other = client(svc);
    expect((await other.get('/products/private-product')).statusCode).toBe(404);
    expect((await other.patch('/products/private-product', { name: 'mine' })).statusCode).toBe(404);
    expect((await other.post('/tasks', { title: 'Sneak in', product_slug: 'private-product' })).statusCode).toBe(404);
    const reader = client(svc, apiKeyPrincipal(['products:read'], { orgId: owner.principal.orgId }));
    expect((await reader.get('/products/private-product')).statusCode).toBe(200);
    expect((await reader.patch('/products/private-product', { name: 'no' })).json().error).toMatchObject({ code: 'SCOPE_REQUIRED', details: [{ scope: 'products:write' }] });
    expect((await reader.post('/products', { name: 'no' })).statusCode).toBe(403);
    const tasksOnly = client(svc, apiKeyPrincipal(['tasks:read'], { orgId: owner.principal.orgId }));
    expect((await tasksOnly.get('/products')).statusCode).toBe(403);
  });
});
