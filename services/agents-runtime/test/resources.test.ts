import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, startAgents, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startAgents(); });
afterAll(() => svc?.close());

describe('templates, rules, logs, files, automations', () => {
  it('templates: unique slug, soft delete, filters', async () => {
    const api = client(svc);
    const t = (await api.call('POST', '/v1/public/templates', { name: 'Researcher', slug: 'researcher', category: 'research', tools: ['web'], is_featured: true })).json().data;
    expect((await api.call('POST', '/v1/public/templates', { name: 'Other', slug: 'researcher' })).statusCode).toBe(409);
    expect((await api.call('GET', '/v1/public/templates?featured=true')).json().data.map((x: { id: number }) => x.id)).toEqual([t.id]);
    expect((await api.call('PATCH', `/v1/public/templates/${t.id}`, { description: 'finds things' })).json().data.description).toBe('finds things');
    expect((await api.call('DELETE', `/v1/public/templates/${t.id}`)).statusCode).toBe(200);
    expect((await api.call('GET', `/v1/public/templates/${t.id}`)).statusCode).toBe(404);
    expect((await client(svc).call('GET', '/v1/public/templates')).json().meta.total).toBe(0);
  });

  it('rules: filters; permanent rules cannot be deleted (403)', async () => {
    const api = client(svc);
    const keep = (await api.call('POST', '/rules', { title: 'No secrets in logs', body: 'Never log credentials', permanent: true, category: 'security' })).json().data;
    const temp = (await api.call('POST', '/rules', { title: 'Felix only', body: 'x', agent: 'felix', scope: 'agent' })).json().data;
    expect((await api.call('GET', '/rules?category=security')).json().data.map((r: { id: number }) => r.id)).toEqual([keep.id]);
    expect((await api.call('GET', '/rules?scope=agent&agent=felix')).json().data.map((r: { id: number }) => r.id)).toEqual([temp.id]);
    expect((await api.call('DELETE', `/rules/${keep.id}`)).statusCode).toBe(403);
    expect((await api.call('DELETE', `/rules/${temp.id}`)).statusCode).toBe(200);
    expect((await client(svc).call('PATCH', `/rules/${keep.id}`, { title: 'x' })).statusCode).toBe(404);
  });

  it('logs: store and filter by agent, level and text', async () => {
    const api = client(svc);
    await api.call('POST', '/logs', { agent: 'felix', message: 'deployed v1', level: 'info' });
    await api.call('POST', '/logs', { agent: 'felix', message: 'deploy failed: timeout', level: 'error' });
    await api.call('POST', '/logs', { agent: 'nova', message: 'idle' });
    expect((await api.call('GET', '/logs?agent=felix&level=error')).json().data.map((l: { message: string }) => l.message)).toEqual(['deploy failed: timeout']);
    expect((await api.call('GET', '/logs?q=deploy')).json().meta.total).toBe(2);
    expect((await api.call('GET', '/logs/files')).json().data.map((f: { name: string }) => f.name)).toEqual(['felix', 'nova']);
    expect((await api.call('POST', '/logs', { agent: 'felix', message: 'x', level: 'fatal' })).statusCode).toBe(400);
  });

  it('files: upsert by path, search by name and content, traversal refused', async () => {
    const api = client(svc);
    expect((await api.call('POST', '/files', { path: 'notes/plan.md', content: 'ship the landing page' })).statusCode).toBe(201);
    const again = await api.call('POST', '/files', { path: 'notes/plan.md', content: 'ship the pricing page' });
    expect(again.statusCode).toBe(200);
    expect((await api.call('GET', `/files/${again.json().data.id}`)).json().data.content).toBe('ship the pricing page');
    expect((await api.call('GET', '/files/search?q=pricing')).json().data.map((f: { path: string }) => f.path)).toEqual(['notes/plan.md']);
    expect((await api.call('GET', '/files/search?q=plan')).json().meta.total).toBe(1);
    for (const path of ['../etc/passwd', '/abs/path', 'a/../b', 'a//b']) expect((await api.call('POST', '/files', { path, content: 'x' })).statusCode, path).toBe(400);
    expect((await client(svc).call('GET', `/files/${again.json().data.id}`)).statusCode).toBe(404);
  });

  it('automations: CRUD with status', async () => {
    const api = client(svc);
    const a = (await api.call('POST', '/automations', { name: 'nightly', agent_name: 'felix', type: 'script', path: 'scripts/nightly.sh' })).json().data;
    expect((await api.call('PATCH', `/automations/${a.id}`, { status: 'disabled' })).json().data.status).toBe('disabled');
    expect((await api.call('GET', '/automations?status=disabled')).json().meta.total).toBe(1);
    expect((await api.call('DELETE', `/automations/${a.id}`)).statusCode).toBe(200);
    expect((await api.call('GET', `/automations/${a.id}`)).statusCode).toBe(404);
  });
});
