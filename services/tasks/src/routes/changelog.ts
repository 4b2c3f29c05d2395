import { Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { and, desc, eq, gte, sql, type SQL } from 'drizzle-orm';
import { changelog } from '../db/schema.js';
import type { Ctx } from '../service.js';

const EntrySchema = Type.Object({
  id: Type.Integer(), task_id: Type.Integer(), title: Type.String(), agent: Type.Union([Type.String(), Type.Null()]),
  product: Type.Union([Type.String(), Type.Null()]), area: Type.String(), summary: Type.String(), completed_at: Type.String(),
});

type Entry = typeof changelog.$inferSelect;
const view = (e: Entry) => ({
  id: e.id, task_id: e.taskId, title: e.title, agent: e.agent, product: e.productSlug, area: e.area, summary: e.summary,
  completed_at: e.completedAt.toISOString(),
});

/** Characters XML 1.0 forbids (control characters other than tab, LF, CR; lone surrogates; U+FFFE/FFFF). */
// eslint-disable-next-line no-control-regex
const XML_INVALID = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function xmlEscape(value: string): string {
  return value.replace(XML_INVALID, '').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Lines listed per (date, product, area) group of the summary. */
const SUMMARY_LINES = 50;

const Filters = {
  agent: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  product: Type.Optional(Type.String({ minLength: 1, maxLength: 80 })),
};

function where(orgId: string, q: { agent?: string; product?: string; task_id?: number }): SQL {
  const parts: SQL[] = [eq(changelog.orgId, orgId)];
  if (q.agent) parts.push(eq(changelog.agent, q.agent));
  if (q.product) parts.push(eq(changelog.productSlug, q.product));
  if (q.task_id) parts.push(eq(changelog.taskId, q.task_id));
  return and(...parts)!;
}

export async function changelogRoutes(app: App, ctx: Ctx) {
  app.get('/changelog', {
    config: { scope: 'tasks:read' },
    schema: {
      tags: ['Changelog'], summary: 'Changelog entries of completed tasks, newest first',
      querystring: Type.Object({ ...PaginationQuery, ...Filters, task_id: Type.Optional(Type.Integer({ minimum: 1, maximum: 2_147_483_647 })) }),
      response: { 200: ListEnvelope(EntrySchema) },
    },
  }, async (request) => {
    const p = page(request.query);
    const cond = where(orgOf(request), request.query);
    const [rows, total] = await Promise.all([
      ctx.db.select().from(changelog).where(cond).orderBy(desc(changelog.completedAt), desc(changelog.id)).limit(p.limit).offset(p.offset),
      ctx.db.select({ n: sql<number>`count(*)::int` }).from(changelog).where(cond).then((r) => r[0]?.n ?? 0),
    ]);
    return list(rows.map(view), total, p);
  });

  app.get('/changelog/summary', {
    config: { scope: 'tasks:read' },
    schema: {
      tags: ['Changelog'], summary: 'Changelog grouped by day, then product and area, as readable lines',
      querystring: Type.Object({ ...Filters, days: Type.Optional(Type.Integer({ minimum: 1, maximum: 365, default: 7 })) }),
      response: {
        200: Envelope(Type.Object({
          days: Type.Integer(), total: Type.Integer(),
          dates: Type.Array(Type.Object({
            date: Type.String(), count: Type.Integer(), summary: Type.String(),
            groups: Type.Array(Type.Object({ product: Type.Union([Type.String(), Type.Null()]), area: Type.String(), count: Type.Integer(), lines: Type.Array(Type.String()) })),
          })),
        })),
      },
    },
  }, async (request) => {
    const days = request.query.days ?? 7;
    const since = new Date(Date.now() - days * 86_400_000);
    const date = sql<string>`to_char(${changelog.completedAt} AT TIME ZONE 'UTC', 'YYYY-MM-DD')`;
    // Counts are exact; each group lists its newest lines only.
    const groups = await ctx.db.select({
      date, product: changelog.productSlug, area: changelog.area, count: sql<number>`count(*)::int`,
      lines: sql<string[]>`(array_agg(${changelog.summary} || coalesce(' (' || ${changelog.agent} || ')', '')
                            ORDER BY ${changelog.completedAt} DESC, ${changelog.id} DESC))[1:${sql.raw(String(SUMMARY_LINES))}]`,
    }).from(changelog)
      .where(and(where(orgOf(request), request.query), gte(changelog.completedAt, since)))
      .groupBy(date, changelog.productSlug, changelog.area);
    const byDate = new Map<string, typeof groups>();
    for (const g of groups) byDate.set(g.date, [...(byDate.get(g.date) ?? []), g]);
    const dates = [...byDate.entries()].sort(([a], [b]) => b.localeCompare(a)).map(([day, list]) => {
      const sorted = list.map(({ product, area, count, lines }) => ({ product, area, count, lines }))
        .sort((a, b) => (a.product ?? '').localeCompare(b.product ?? '') || a.area.localeCompare(b.area));
      const count = sorted.reduce((n, g) => n + g.count, 0);
      const parts = sorted.map((g) => `${g.count} ${g.area} in ${g.product ?? 'no product'}`);
      return { date: day, count, summary: `${count} ${count === 1 ? 'change' : 'changes'}: ${parts.join(', ')}`, groups: sorted };
    });
    return ok({ days, total: dates.reduce((n, d) => n + d.count, 0), dates });
  });

  app.get('/changelog/feed', {
    config: { scope: 'tasks:read' },
    schema: { tags: ['Changelog'], summary: 'RSS 2.0 feed of the changelog', querystring: Type.Object({ ...Filters, limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })) }) },
  }, async (request, reply) => {
    const q = request.query;
    const rows = await ctx.db.select().from(changelog).where(where(orgOf(request), q))
      .orderBy(desc(changelog.completedAt), desc(changelog.id)).limit(q.limit ?? 50);
    const api = `${ctx.config.APP_URL.replace(/\/$/, '')}/api`;
    const filters = new URLSearchParams(Object.entries({ agent: q.agent, product: q.product }).filter((e): e is [string, string] => e[1] !== undefined));
    const self = `${api}/changelog/feed${filters.size ? `?${filters}` : ''}`;
    const title = ['AOS changelog', q.product, q.agent].filter(Boolean).join(' — ');
    const items = rows.map((e) => [
      '    <item>',
      `      <title>${xmlEscape(e.title)}</title>`,
      `      <link>${xmlEscape(`${api}/tasks/${e.taskId}`)}</link>`,
      `      <description>${xmlEscape(e.agent ? `${e.summary} — ${e.agent}` : e.summary)}</description>`,
      `      <guid isPermaLink="false">aos-changelog-${e.id}</guid>`,
      `      <pubDate>${e.completedAt.toUTCString()}</pubDate>`,
      `      <category>${xmlEscape(e.area)}</category>`,
      ...(e.productSlug ? [`      <category domain="product">${xmlEscape(e.productSlug)}</category>`] : []),
      '    </item>',
    ].join('\n'));
    const xml = [
      '<?xml version="1.0" encoding="UTF-8"?>',
      '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">',
      '  <channel>',
      `    <title>${xmlEscape(title)}</title>`,
      `    <link>${xmlEscape(`${api}/changelog`)}</link>`,
      `    <atom:link href="${xmlEscape(self)}" rel="self" type="application/rss+xml"/>`,
      '    <description>Completed tasks</description>',
      `    <lastBuildDate>${(rows[0]?.completedAt ?? new Date()).toUTCString()}</lastBuildDate>`,
      ...items,
      '  </channel>',
      '</rss>',
      '',
    ].join('\n');
    return reply.type('application/rss+xml; charset=utf-8').send(xml);
  });
}
