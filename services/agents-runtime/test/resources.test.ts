import { apiKeyPrincipal } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, startAgents, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startAgents(); });
afterAll(() => svc?.close());

const ids = (res: { json: () => { data: { id: number }[] } }) => res.json().data.map((x) => x.id);

describe('templates', () => {
  it('unique slug among live templates, soft delete frees it, filters, validation', async () => {
    const api = client(svc);
    const created = await api.call('POST', '/v1/public/templates', { name: 'Researcher', slug: 'researcher', category: 'research', tools: ['web'], is_featured: true, config: { depth: 2 } });
    expect(created.statusCode).toBe(201);
    const t = created.json().data;
    expect(t).toMatchObject({ slug: 'researcher', tools: ['web'], capabilities: [], config: { depth: 2 }, is_featured: true, sort_order: 0 });
    expect((await api.call('POST', '/v1/public/templates', { name: 'Other', slug: 'researcher' })).statusCode).toBe(409);
    const plain = (await api.call('POST', '/v1/public/templates', { name: 'Writer', slug: 'writer', category: 'content', sort_order: -1 })).json().data;
    expect(ids(await api.call('GET', '/v1/public/templates?featured=true'))).toEqual([t.id]);
    expect(ids(await api.call('GET', '/v1/public/templates?category=content'))).toEqual([plain.id]);
    expect(ids(await api.call('GET', '/v1/public/templates'))).toEqual([plain.id, t.id]);
    expect(ids(await api.call('GET', '/v1/public/templates?q=writ'))).toEqual([plain.id]);
    expect((await api.call('GET', '/v1/public/templates?limit=1')).json().meta).toEqual({ total: 2, limit: 1, offset: 0 });
    expect((await api.call('PATCH', `/v1/public/templates/${t.id}`, { description: 'finds things' })).json().data.description).toBe('finds things');
    expect((await api.call('PATCH', `/v1/public/templates/${t.id}`, {})).statusCode).toBe(400);
    for (const slug of ['Bad Slug', '-x', 'x-', '../x', 'a'.repeat(81)]) expect((await api.call('POST', '/v1/public/templates', { name: 'x', slug })).statusCode, slug).toBe(400);

    expect((await api.call('DELETE', `/v1/public/templates/${t.id}`)).json().data).toEqual({ id: t.id, deleted: true });
    expect((await api.call('GET', `/v1/public/templates/${t.id}`)).statusCode).toBe(404);
    expect((await api.call('DELETE', `/v1/public/templates/${t.id}`)).statusCode).toBe(404);
    expect(ids(await api.call('GET', '/v1/public/templates'))).toEqual([plain.id]);
    // The archived row stays (soft delete); its slug is free for a new template.
    expect((await svc.ctx.pool.query('SELECT archived_at FROM templates WHERE id = $1', [t.id])).rows[0].archived_at).not.toBeNull();
    expect((await api.call('POST', '/v1/public/templates', { name: 'Researcher v2', slug: 'researcher' })).statusCode).toBe(201);
    expect((await client(svc).call('GET', '/v1/public/templates')).json().meta.total).toBe(0);
    expect((await client(svc).call('POST', '/v1/public/templates', { name: 'Mine', slug: 'writer' })).statusCode).toBe(201);
  });
});

describe('rules', () => {
  it('filters by scope, agent (plus universal), category, permanent; permanent rules cannot be deleted (403)', async () => {
    const api = client(svc);
    const keep = (await api.call('POST', '/rules', { rule: 'Never log credentials', permanent: true, category: 'security' })).json().data;
    expect(keep).toMatchObject({ rule: 'Never log credentials', title: 'Never log credentials', scope: 'all', agent: null, permanent: true });
    const felix = (await api.call('POST', '/rules', { rule: 'Felix ships on Fridays', agent: 'felix', category: 'workflow' })).json().data;
    expect(felix.scope).toBe('agent');
    const nova = (await api.call('POST', '/rules', { rule: 'Nova cites sources', title: 'Citations', agent: 'nova', scope: 'agent' })).json().data;
    expect(ids(await api.call('GET', '/rules?category=security'))).toEqual([keep.id]);
    expect(ids(await api.call('GET', '/rules?agent=felix'))).toEqual([keep.id, felix.id]);
    expect(ids(await api.call('GET', '/rules?scope=agent&agent=nova'))).toEqual([nova.id]);
    expect(ids(await api.call('GET', '/rules?scope=all'))).toEqual([keep.id]);
    expect(ids(await api.call('GET', '/rules?permanent=1'))).toEqual([keep.id]);
    expect(ids(await api.call('GET', '/rules?permanent=0'))).toEqual([felix.id, nova.id]);
    expect(ids(await api.call('GET', '/rules?q=cite'))).toEqual([nova.id]);
    expect((await api.call('GET', '/rules?limit=2&offset=1')).json()).toMatchObject({ meta: { total: 3, limit: 2, offset: 1 } });
    expect((await api.call('GET', '/rules?permanent=maybe')).statusCode).toBe(400);
    expect((await api.call('GET', '/rules?agent=../x')).statusCode).toBe(400);

    const del = await api.call('DELETE', `/rules/${keep.id}`);
    expect(del.statusCode).toBe(403);
    expect(del.json().error.code).toBe('FORBIDDEN');
    // PATCH cannot lift the protection.
    expect((await api.call('PATCH', `/rules/${keep.id}`, { permanent: false, rule: 'Never log secrets' })).json().data).toMatchObject({ permanent: true, rule: 'Never log secrets' });
    expect((await api.call('DELETE', `/rules/${keep.id}`)).statusCode).toBe(403);
    expect((await api.call('DELETE', `/rules/${felix.id}`)).statusCode).toBe(200);
    expect((await api.call('DELETE', `/rules/${felix.id}`)).statusCode).toBe(404);
    expect((await api.call('POST', '/rules', { title: 'no text' })).statusCode).toBe(400);
    expect((await api.call('PATCH', `/rules/${nova.id}`, {})).statusCode).toBe(400);
    const other = client(svc);
    expect((await other.call('PATCH', `/rules/${keep.id}`, { title: 'x' })).statusCode).toBe(404);
    expect((await other.call('DELETE', `/rules/${nova.id}`)).statusCode).toBe(404);
    expect((await other.call('GET', '/rules')).json().meta.total).toBe(0);
  });
});

describe('logs', () => {
  it('stores and filters by agent, level (comma list) and text; validates input', async () => {
    const api = client(svc);
    expect((await api.call('POST', '/logs', { agent: 'felix', message: 'deployed v1', level: 'info', meta: { version: 1 } })).statusCode).toBe(201);
    await api.call('POST', '/logs', { agent: 'felix', message: 'deploy failed: timeout', level: 'error' });
    await api.call('POST', '/logs', { agent: 'felix', message: 'slow deploy', level: 'warn' });
    await api.call('POST', '/logs', { agent: 'nova', message: 'idle 100%_done' });
    expect((await api.call('GET', '/logs?agent=felix&level=error')).json().data.map((l: { message: string }) => l.message)).toEqual(['deploy failed: timeout']);
    expect((await api.call('GET', '/logs?level=error,warn')).json().meta.total).toBe(2);
    expect((await api.call('GET', '/logs?q=deploy')).json().meta.total).toBe(3);
    expect((await api.call('GET', '/logs?q=100%25_')).json().data.map((l: { agent: string }) => l.agent)).toEqual(['nova']);
    expect((await api.call('GET', '/logs?q=%25')).json().meta.total).toBe(1);
    const newest = (await api.call('GET', '/logs?limit=1')).json();
    expect(newest.data[0].message).toBe('idle 100%_done');
    expect(newest.meta).toEqual({ total: 4, limit: 1, offset: 0 });
    expect((await api.call('GET', `/logs?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).json().meta.total).toBe(0);
    expect(newest.data[0]).toMatchObject({ source: 'db', file: null });
    expect((await api.call('GET', '/logs?source=db')).json().meta.total).toBe(4);
    // Stored entries are no agent's own log: no files.
    expect((await api.call('GET', '/logs?source=file')).json().meta.total).toBe(0);
    expect((await api.call('GET', '/logs/files')).json()).toMatchObject({ data: [], meta: { total: 0 } });
    for (const body of [{ agent: 'felix', message: 'x', level: 'fatal' }, { agent: '../etc', message: 'x' }, { agent: 'felix', message: '' }, { agent: 'felix', message: 'x', meta: { big: 'x'.repeat(20_000) } }]) {
      expect((await api.call('POST', '/logs', body)).statusCode, JSON.stringify(body).slice(0, 60)).toBe(400);
    }
    expect((await api.call('GET', '/logs?level=fatal')).statusCode).toBe(400);
    expect((await api.call('GET', '/logs?since=yesterday')).statusCode).toBe(400);
    expect((await client(svc).call('GET', '/logs')).json().meta.total).toBe(0);
    expect((await client(svc, apiKeyPrincipal(['agents:read'], { orgId: api.principal.orgId })).call('POST', '/logs', { agent: 'felix', message: 'x' })).statusCode).toBe(403);
  });
});

describe('agent log files', () => {
  type Line = { id: number; agent: string; message: string; source: string; file: string | null; created_at: string; level: string };
  type LogFile = { name: string; agent: string; date: string; lines: number; size_bytes: number; levels: Record<string, number>; first_at: string; last_at: string };
  const bytes = (lines: Line[]) => lines.reduce((n, l) => n + Buffer.byteLength(l.message) + 1, 0);

  it("the runtime writes each agent's own log (source file); /logs/files lists it per agent and UTC day with lines and sizes; file= reads one", async () => {
    const api = client(svc);
    await api.agent({ name: 'scribe' });
    const { id: runId } = (await api.call('POST', '/agents/scribe/runs', { input: 'Write the release notes' })).json().data;
    await api.finished(runId);
    await api.call('POST', '/agents/scribe/stop', { note: 'holiday – back soon' });
    await api.call('POST', '/logs', { agent: 'scribe', message: 'posted by the agent itself' });
    // Lines of an earlier day, as the runtime would have written them then.
    await svc.ctx.pool.query(
      `INSERT INTO agent_logs (org_id, agent, level, message, source, created_at) VALUES
         ($1, 'scribe', 'info', 'run 1 started', 'file', '2024-03-01T08:00:00Z'), ($1, 'scribe', 'error', 'run 1 failed: boom', 'file', '2024-03-01T23:59:59.999Z'),
         ($1, 'herald', 'info', 'agent herald bootstrapped', 'file', '2024-03-01T12:00:00Z'), ($1, 'scribe', 'info', 'next day', 'file', '2024-03-02T00:00:00Z')`,
      [api.principal.orgId]);

    const own = (await api.call('GET', '/logs?source=file&agent=scribe&limit=200')).json().data as Line[];
    const today = own.filter((l) => !l.created_at.startsWith('2024-'));
    expect(today.map((l) => l.message).reverse()).toEqual([
      'agent scribe bootstrapped', `run ${runId} queued`, `run ${runId} started with offline/offline-1`, expect.stringMatching(new RegExp(`^run ${runId} succeeded: \\d+ in / \\d+ out tokens, \\$0\\.\\d{6}$`)),
      'agent scribe stopped (paused): holiday – back soon',
    ]);
    for (const l of own) expect(l).toMatchObject({ source: 'file', file: `scribe/${l.created_at.slice(0, 10)}.log` });

    const files = (await api.call('GET', '/logs/files')).json();
    const todayName = `scribe/${today[0]!.created_at.slice(0, 10)}.log`;
    expect(files.meta.total).toBe(4);
    expect(files.data.map((f: LogFile) => f.name)).toEqual([todayName, 'scribe/2024-03-02.log', 'herald/2024-03-01.log', 'scribe/2024-03-01.log']);
    expect(files.data[0]).toEqual({
      name: todayName, agent: 'scribe', date: todayName.slice(7, 17), lines: 5, size_bytes: bytes(today), levels: { debug: 0, info: 5, warn: 0, error: 0 },
      first_at: today.at(-1)!.created_at, last_at: today[0]!.created_at,
    });
    expect(files.data[3]).toMatchObject({ lines: 2, size_bytes: Buffer.byteLength('run 1 started') + Buffer.byteLength('run 1 failed: boom') + 2, levels: { info: 1, error: 1 }, first_at: '2024-03-01T08:00:00.000Z', last_at: '2024-03-01T23:59:59.999Z' });
    expect((await api.call('GET', '/logs/files?agent=herald')).json().data.map((f: LogFile) => f.name)).toEqual(['herald/2024-03-01.log']);
    expect((await api.call('GET', '/logs/files?limit=2&offset=2')).json()).toMatchObject({ data: [{ name: 'herald/2024-03-01.log' }, { name: 'scribe/2024-03-01.log' }], meta: { total: 4 } });
    expect((await api.call('GET', '/logs/files?offset=10')).json().meta.total).toBe(4);

    const read = async (file: string, extra = '') => (await api.call('GET', `/logs?file=${encodeURIComponent(file)}${extra}`)).json();
    expect((await read('scribe/2024-03-01.log')).data.map((l: Line) => l.message)).toEqual(['run 1 failed: boom', 'run 1 started']);
    expect((await read(todayName)).meta.total).toBe(5);
    expect((await read('scribe/2024-03-01.log', '&level=error')).meta.total).toBe(1);
    expect((await read('scribe/2024-03-01.log', '&agent=herald')).meta.total).toBe(0);
    expect((await read('scribe/1999-01-01.log')).meta.total).toBe(0);
    // Merged: both sources, newest first.
    expect((await api.call('GET', '/logs?agent=scribe&limit=1')).json().data[0]).toMatchObject({ message: 'posted by the agent itself', source: 'db', file: null });
    expect((await api.call('GET', '/logs?agent=scribe&source=all')).json().meta.total).toBe(5 + 1 + 3);

    for (const file of ['../../etc/passwd', 'scribe/2024-02-30.log', 'scribe/2024-3-1.log', 'Scribe/2024-03-01.log', '/scribe/2024-03-01.log', 'scribe/2024-03-01.log/../x', 'scribe/2024-03-01.txt', `${'a'.repeat(64)}/2024-03-01.log`]) {
      const res = await api.call('GET', `/logs?file=${encodeURIComponent(file)}`);
      expect(res.statusCode, file).toBe(400);
      expect(res.json().error.code).toBe('VALIDATION_ERROR');
    }
    expect((await api.call('GET', `/logs?file=${encodeURIComponent(todayName)}&source=db`)).statusCode).toBe(400);
    const other = client(svc);
    expect((await other.call('GET', '/logs/files')).json().meta.total).toBe(0);
    expect((await other.call('GET', `/logs?file=${encodeURIComponent(todayName)}`)).json().meta.total).toBe(0);
  });
});

describe('files', () => {
  it('upserts by path (201 then 200), lists and searches by name/content with filters and pagination, refuses traversal', async () => {
    const api = client(svc);
    const first = await api.call('POST', '/files', { path: 'notes/plan.md', content: 'ship the landing page', category: 'planning' });
    expect(first.statusCode).toBe(201);
    expect(first.json().data).toMatchObject({ path: 'notes/plan.md', name: 'plan.md', file_type: 'md', category: 'planning', size: 21 });
    const again = await api.call('POST', '/files', { path: 'notes/plan.md', content: 'ship the pricing page', category: 'planning' });
    expect(again.statusCode).toBe(200);
    expect(again.json().data.id).toBe(first.json().data.id);
    expect((await api.call('GET', `/files/${again.json().data.id}`)).json().data.content).toBe('ship the pricing page');
    await api.call('POST', '/files', { path: 'workspaces/felix/run.sh', name: 'Runner', file_type: 'sh', content: 'echo pricing', agent: 'felix' });
    await api.call('POST', '/files', { path: 'workspaces/nova/README', content: 'hello' });

    const search = async (qs: string) => (await api.call('GET', `/files/search?${qs}`)).json().data.map((f: { path: string }) => f.path);
    expect(await search('q=pricing')).toEqual(['notes/plan.md', 'workspaces/felix/run.sh']);
    expect(await search('q=runner')).toEqual(['workspaces/felix/run.sh']);
    expect(await search('q=pricing&workspace=workspaces/felix')).toEqual(['workspaces/felix/run.sh']);
    expect(await search('ext=md')).toEqual(['notes/plan.md']);
    expect(await search('category=planning')).toEqual(['notes/plan.md']);
    expect(await search('q=%25')).toEqual([]);
    expect((await api.call('GET', '/files/search')).statusCode).toBe(400);
    expect((await api.call('GET', '/files/search?workspace=../etc')).statusCode).toBe(400);

    const listed = (await api.call('GET', '/files?limit=2')).json();
    expect(listed.meta).toEqual({ total: 3, limit: 2, offset: 0 });
    expect(listed.data[0].content).toBeUndefined();
    expect((await api.call('GET', '/files?limit=2&page=2')).json()).toMatchObject({ data: [{ path: 'workspaces/nova/README' }], meta: { offset: 2 } });
    expect((await api.call('GET', '/files?agent=felix')).json().meta.total).toBe(1);
    expect((await api.call('GET', '/files?page=0')).statusCode).toBe(400);

    for (const path of ['../etc/passwd', '/abs/path', 'a/../b', 'a//b', './a', 'a/.', '..', 'a\\b', 'a b', '']) {
      expect((await api.call('POST', '/files', { path, content: 'x' })).statusCode, path).toBe(400);
    }
    expect((await api.call('POST', '/files', { path: 'ok.txt', name: '../x', content: 'x' })).statusCode).toBe(400);
    expect((await api.call('POST', '/files', { path: 'ok.txt', content: 'x'.repeat(1_000_001) })).statusCode).toBeGreaterThanOrEqual(400);
    const other = client(svc);
    expect((await other.call('GET', `/files/${again.json().data.id}`)).statusCode).toBe(404);
    expect((await other.call('GET', '/files/search?q=pricing')).json().meta.total).toBe(0);
    // Same path, other organization: a separate file.
    expect((await other.call('POST', '/files', { path: 'notes/plan.md', content: 'theirs' })).statusCode).toBe(201);
  });
});

describe('automations', () => {
  it('CRUD with status and filters; paths and agent names validated', async () => {
    const api = client(svc);
    for (const name of ['felix', 'nova']) await api.call('POST', '/agents', { name });
    const created = await api.call('POST', '/automations', { name: 'nightly', agent_name: 'felix', type: 'script', path: 'scripts/nightly.sh', label: 'Nightly run' });
    expect(created.statusCode).toBe(201);
    const a = created.json().data;
    expect(a).toMatchObject({ status: 'active', label: 'Nightly run' });
    await api.call('POST', '/automations', { name: 'hourly', agent_name: 'nova', type: 'schedule', path: 'scripts/hourly.sh' });
    expect((await api.call('PATCH', `/automations/${a.id}`, { status: 'disabled', label: null })).json().data).toMatchObject({ status: 'disabled', label: null });
    expect((await api.call('GET', '/automations?status=disabled')).json().meta.total).toBe(1);
    expect((await api.call('GET', '/automations?agent_name=nova')).json().data.map((x: { name: string }) => x.name)).toEqual(['hourly']);
    expect((await api.call('GET', '/automations?type=script&q=night')).json().meta.total).toBe(1);
    expect((await api.call('GET', '/automations?status=broken')).statusCode).toBe(400);
    expect((await api.call('GET', `/automations/${a.id}`)).json().data.name).toBe('nightly');
    for (const body of [
      { name: 'x', agent_name: 'felix', type: 'script', path: '../../etc/cron.d/evil' }, { name: 'x', agent_name: 'felix', type: 'script', path: '/etc/passwd' },
      { name: 'x', agent_name: '../felix', type: 'script', path: 'a.sh' }, { name: 'x', agent_name: 'felix', type: 'Script Kiddie', path: 'a.sh' },
      { name: 'x', agent_name: 'felix', type: 'script', path: 'a.sh', status: 'on' },
    ]) expect((await api.call('POST', '/automations', body)).statusCode, JSON.stringify(body)).toBe(400);
    expect((await api.call('PATCH', `/automations/${a.id}`, { path: 'a/../../b' })).statusCode).toBe(400);
    expect((await api.call('PATCH', `/automations/${a.id}`, {})).statusCode).toBe(400);
    const other = client(svc);
    for (const [method, body] of [['GET', undefined], ['PATCH', { status: 'active' }], ['DELETE', undefined]] as const) {
      expect((await other.call(method, `/automations/${a.id}`, body)).statusCode).toBe(404);
    }
    expect((await api.call('DELETE', `/automations/${a.id}`)).statusCode).toBe(200);
    expect((await api.call('GET', `/automations/${a.id}`)).statusCode).toBe(404);
  });
});
