import { waitFor } from '@aos/testkit';
import { SaxesParser } from 'saxes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, startTasks, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startTasks(); });
afterAll(() => svc?.close());

interface XmlNode { name: string; attributes: Record<string, string>; children: XmlNode[]; text: string }

/** Parses with a conforming XML 1.0 parser: any well-formedness error (bad escape, forbidden character) throws. */
function parseXml(xml: string): XmlNode {
  const root: XmlNode = { name: '#document', attributes: {}, children: [], text: '' };
  const stack = [root];
  const parser = new SaxesParser();
  parser.on('error', (err) => { throw err; });
  parser.on('opentag', (tag) => {
    const node: XmlNode = { name: tag.name, attributes: tag.attributes as Record<string, string>, children: [], text: '' };
    stack.at(-1)!.children.push(node);
    stack.push(node);
  });
  parser.on('closetag', () => { stack.pop(); });
  parser.on('text', (text) => { stack.at(-1)!.text += text; });
  parser.on('cdata', (text) => { stack.at(-1)!.text += text; });
  parser.write(xml).close();
  expect(root.children).toHaveLength(1);
  return root.children[0]!;
}
const child = (n: XmlNode, name: string) => n.children.find((c) => c.name === name);
const children = (n: XmlNode, name: string) => n.children.filter((c) => c.name === name);
const text = (n: XmlNode, name: string) => child(n, name)?.text;

// eslint-disable-next-line no-control-regex
const XML_FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g;
const HOSTILE = [
  'Fix <script>alert("x")</script> & stuff',
  ']]> <![CDATA[ not data ]]> <!-- c --> <?pi?>',
  'Tom\'s "quoted" &amp; &lt;entity&gt; &#0; &#x1F600; &bogus;',
  'ctrl \u0001\u0008\u000b\u000c\u001f end \uFFFE\uFFFF',
  'emoji 🚀 ünïcode 東京 \u200b zero-width',
];

describe('changelog', () => {
  let api: ReturnType<typeof client>;
  const ids: Record<string, number> = {};

  beforeAll(async () => {
    api = client(svc);
    await api.post('/products', { name: 'Feed Product' });
    await api.post('/products', { name: 'Other Product' });
    for (const [i, title] of HOSTILE.entries()) {
      const t = await api.task({ title, assignee: i === 0 ? '<agent & "co">' : 'nova', product_slug: 'feed-product', type: i % 2 ? 'bug' : 'feature' });
      await api.complete(t.id);
      ids[`h${i}`] = t.id;
    }
    const a = await api.task({ title: 'Ship billing export', assignee: 'felix', product_slug: 'other-product', type: 'feature' });
    await api.complete(a.id, 'CSV and JSON');
    ids.a = a.id;
    const b = await api.task({ title: 'No product chore', type: 'ops' });
    await api.complete(b.id);
    ids.b = b.id;
    await waitFor(async () => (await api.get('/changelog')).json().meta.total === HOSTILE.length + 2, { message: 'changelog entries' });
    // An entry older than a week, as the consumer would have written it back then.
    await svc.ctx.pool.query(
      `INSERT INTO changelog (org_id, task_id, event_id, title, agent, product_slug, area, summary, completed_at)
       VALUES ($1, 999, gen_random_uuid(), 'Ancient', 'felix', 'other-product', 'feature', 'Ancient', now() - interval '10 days')`, [api.principal.orgId]);
  });

  it('GET /changelog lists entries newest first with agent, product, area and summary; filters agent, product, task_id', async () => {
    const all = (await api.get('/changelog?limit=200')).json();
    expect(all.meta).toEqual({ total: 8, limit: 200, offset: 0 });
    expect(all.data.at(-1).title).toBe('Ancient');
    expect(all.data[0].task_id).toBe(ids.b);
    expect(all.data.find((e: { task_id: number }) => e.task_id === ids.a)).toMatchObject({
      title: 'Ship billing export', agent: 'felix', product: 'other-product', area: 'feature', summary: 'Ship billing export: CSV and JSON',
    });
    const times = all.data.map((e: { completed_at: string }) => Date.parse(e.completed_at));
    expect(times).toEqual([...times].sort((x, y) => y - x));
    const taskIds = async (q: string) => (await api.get(`/changelog?${q}`)).json().data.map((e: { task_id: number }) => e.task_id);
    expect(await taskIds('agent=felix')).toEqual([ids.a, 999]);
    expect(await taskIds('product=other-product')).toEqual([ids.a, 999]);
    expect(await taskIds(`task_id=${ids.h2}`)).toEqual([ids.h2]);
    expect(await taskIds('agent=nova&product=feed-product')).toHaveLength(HOSTILE.length - 1);
    expect(await taskIds('agent=nobody')).toEqual([]);
    const page = (await api.get('/changelog?limit=2&offset=2')).json();
    expect(page.meta).toEqual({ total: 8, limit: 2, offset: 2 });
    expect(page.data.map((e: { task_id: number }) => e.task_id)).toEqual(all.data.slice(2, 4).map((e: { task_id: number }) => e.task_id));
    for (const q of ['task_id=abc', 'task_id=0', 'limit=0', 'offset=-1', 'agent=']) expect((await api.get(`/changelog?${q}`)).statusCode, q).toBe(400);
    expect((await client(svc).get('/changelog')).json().meta.total).toBe(0);
  });

  it('GET /changelog/summary groups by date, then product and area, as readable lines', async () => {
    const today = new Date().toISOString().slice(0, 10);
    const week = (await api.get('/changelog/summary')).json().data;
    expect(week).toMatchObject({ days: 7, total: 7 });
    expect(week.dates.map((d: { date: string }) => d.date)).toEqual([today]);
    const day = week.dates[0];
    expect(day.count).toBe(7);
    expect(day.groups.map((g: { product: string | null; area: string; count: number }) => [g.product, g.area, g.count])).toEqual([
      [null, 'ops', 1], ['feed-product', 'bug', 2], ['feed-product', 'feature', 3], ['other-product', 'feature', 1],
    ]);
    expect(day.summary).toBe('7 changes: 1 ops in no product, 2 bug in feed-product, 3 feature in feed-product, 1 feature in other-product');
    expect(day.groups[3].lines).toEqual(['Ship billing export: CSV and JSON (felix)']);
    expect(day.groups[0].lines).toEqual(['No product chore']);
    const month = (await api.get('/changelog/summary?days=30&agent=felix')).json().data;
    expect(month.total).toBe(2);
    expect(month.dates).toHaveLength(2);
    expect(month.dates[1].summary).toBe('1 change: 1 feature in other-product');
    expect((await api.get('/changelog/summary?product=other-product')).json().data.total).toBe(1);
    for (const q of ['days=0', 'days=366', 'days=abc']) expect((await api.get(`/changelog/summary?${q}`)).statusCode, q).toBe(400);
  });

  it('summary counts are exact while each group lists only its 50 newest lines', async () => {
    const busy = client(svc);
    await svc.ctx.pool.query(
      `INSERT INTO changelog (org_id, task_id, event_id, title, agent, product_slug, area, summary, completed_at)
       SELECT $1, g, gen_random_uuid(), 'Bulk ' || g, NULL, 'bulk', 'ops', 'Bulk ' || g,
               date_trunc('day', now(), 'UTC') + (100 - g) * interval '1 second' FROM generate_series(1, 55) g`, [busy.principal.orgId]);
    const summary = (await busy.get('/changelog/summary')).json().data;
    expect(summary.total).toBe(55);
    expect(summary.dates).toHaveLength(1);
    expect(summary.dates[0]).toMatchObject({ count: 55, summary: '55 changes: 55 ops in bulk', groups: [{ product: 'bulk', area: 'ops', count: 55 }] });
    const lines = summary.dates[0].groups[0].lines;
    expect(lines).toHaveLength(50);
    expect(lines[0]).toBe('Bulk 1');
    expect(lines.at(-1)).toBe('Bulk 50');
  });

  it('GET /changelog/feed is valid RSS 2.0 that round-trips hostile titles through a conforming XML parser', async () => {
    const res = await api.get('/changelog/feed');
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/rss+xml; charset=utf-8');
    const rss = parseXml(res.body);
    expect(rss.name).toBe('rss');
    expect(rss.attributes.version).toBe('2.0');
    const channel = child(rss, 'channel')!;
    expect(text(channel, 'title')).toBe('AOS changelog');
    expect(text(channel, 'link')).toBe('http://127.0.0.1:3001/api/changelog');
    expect(text(channel, 'description')).toBe('Completed tasks');
    expect(child(channel, 'atom:link')!.attributes).toEqual({ href: 'http://127.0.0.1:3001/api/changelog/feed', rel: 'self', type: 'application/rss+xml' });
    const items = children(channel, 'item');
    expect(items).toHaveLength(8);
    const rfc822 = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;
    expect(text(channel, 'lastBuildDate')).toMatch(rfc822);
    for (const item of items) {
      expect(text(item, 'pubDate')).toMatch(rfc822);
      expect(text(item, 'guid')).toMatch(/^aos-changelog-\d+$/);
      expect(child(item, 'guid')!.attributes.isPermaLink).toBe('false');
      expect(text(item, 'link')).toMatch(/^http:\/\/127\.0\.0\.1:3001\/api\/tasks\/\d+$/);
    }
    expect(new Set(items.map((i) => text(i, 'guid'))).size).toBe(8);
    const titles = items.map((i) => text(i, 'title'));
    for (const title of HOSTILE) expect(titles).toContain(title.replace(XML_FORBIDDEN, ''));
    const first = items.find((i) => text(i, 'title') === HOSTILE[0])!;
    expect(text(first, 'description')).toBe(`${HOSTILE[0]} — <agent & "co">`);
    expect(children(first, 'category').map((c) => [c.text, c.attributes.domain])).toEqual([['feature', undefined], ['feed-product', 'product']]);
    expect(res.body).not.toContain('<script>');
  });

  it('the feed filters by agent and product and honours limit; the self link carries the filters', async () => {
    const feed = async (q: string) => {
      const channel = child(parseXml((await api.get(`/changelog/feed?${q}`)).body), 'channel')!;
      return { channel, titles: children(channel, 'item').map((i) => text(i, 'title')) };
    };
    expect((await feed('agent=felix')).titles).toEqual(['Ship billing export', 'Ancient']);
    const both = await feed('product=feed-product&agent=nova');
    expect(both.titles).toHaveLength(HOSTILE.length - 1);
    expect(text(both.channel, 'title')).toBe('AOS changelog — feed-product — nova');
    expect(child(both.channel, 'atom:link')!.attributes.href).toBe('http://127.0.0.1:3001/api/changelog/feed?agent=nova&product=feed-product');
    expect((await feed('agent=%3Cagent%20%26%20%22co%22%3E')).titles).toEqual([HOSTILE[0]]);
    expect((await feed('limit=1')).titles).toEqual(['No product chore']);
    const empty = await feed('product=nothing-here');
    expect(empty.titles).toEqual([]);
    expect(text(empty.channel, 'lastBuildDate')).toBeTruthy();
    for (const q of ['limit=0', 'limit=201', 'product=', 'agent=']) expect((await api.get(`/changelog/feed?${q}`)).statusCode, q).toBe(400);
    const other = await client(svc).get('/changelog/feed');
    expect(children(child(parseXml(other.body), 'channel')!, 'item')).toEqual([]);
  });
});
