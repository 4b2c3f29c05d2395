import { apiKeyPrincipal, userPrincipal } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client, settled, startTasks, type Svc } from './helpers.js';

let svc: Svc;
beforeAll(async () => { svc = await startTasks(); });
afterAll(() => svc?.close());

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';
/** Every route of the service (checked against its OpenAPI document below), with a valid body. */
const ROUTES: [Method, string, object?][] = [
  ['GET', '/tasks'], ['POST', '/tasks', { title: 'x' }], ['GET', '/tasks/{id}'], ['PATCH', '/tasks/{id}', { title: 'x' }], ['DELETE', '/tasks/{id}'],
  ['GET', '/tasks/{id}/dependencies'], ['POST', '/tasks/{id}/dependencies', { blocked_by: 1 }], ['DELETE', '/tasks/{id}/dependencies/{blockerId}'],
  ['GET', '/v1/public/tasks'], ['POST', '/v1/public/tasks', { title: 'x' }], ['GET', '/v1/public/tasks/{id}'], ['PATCH', '/v1/public/tasks/{id}', { title: 'x' }],
  ['DELETE', '/v1/public/tasks/{id}'],
  ['GET', '/products'], ['POST', '/products', { name: 'x' }], ['GET', '/products/{slug}'], ['PATCH', '/products/{slug}', { name: 'x' }],
  ['GET', '/changelog'], ['GET', '/changelog/summary'], ['GET', '/changelog/feed'],
  ['POST', '/task-queue/submit', { task_type: 't' }], ['POST', '/task-queue/claim', { worker_id: 'w' }], ['GET', '/task-queue'], ['GET', '/task-queue/{id}'],
  ['POST', '/task-queue/{id}/complete', { worker_id: 'w' }], ['POST', '/task-queue/{id}/fail', { worker_id: 'w', error: 'e' }],
  ['POST', '/task-queue/{id}/heartbeat', { worker_id: 'w' }],
];
const fill = (path: string, id = '1', slug = 'some-product') => path.replace('{id}', id).replace('{blockerId}', id).replace('{slug}', slug);
const call = (principal: Parameters<Svc['inject']>[0], method: Method, url: string, body?: unknown) =>
  svc.inject(principal, { method, url, ...(body !== undefined ? { payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}) });

it('the route table covers every route of the service', async () => {
  const paths = (svc.app.swagger() as { paths: Record<string, Record<string, unknown>> }).paths;
  const documented = Object.entries(paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)).sort();
  expect(ROUTES.map(([m, p]) => `${m} ${p}`).sort()).toEqual(documented);
});

describe('authentication and authorisation on every route', () => {
  it.each(ROUTES)('%s %s: 401 without the gateway token, 403 without an organization or scope', async (method, path, body) => {
    const url = fill(path);
    const anonymous = await svc.inject(null, { method, url, ...(body ? { payload: body } : {}) });
    expect(anonymous.statusCode).toBe(401);
    expect(anonymous.json().error.code).toBe('UNAUTHORIZED');
    const noOrg = await call(userPrincipal({ orgId: null, orgRole: null }), method, url, body);
    expect(noOrg.statusCode).toBe(403);
    const noScope = await call(apiKeyPrincipal(['billing:read']), method, url, body);
    expect(noScope.statusCode).toBe(403);
    expect(noScope.json().error.code).toBe('SCOPE_REQUIRED');
  });
});

describe('another organization gets 404 for every id, and sees nothing in lists', () => {
  const owner = () => ownerApi;
  let ownerApi: ReturnType<typeof client>;
  let ids: { task: number; blocker: number; done: number; product: { id: number; slug: string }; job: number };
  let other: ReturnType<typeof client>;
  let own: number;

  beforeAll(async () => {
    ownerApi = client(svc);
    const product = (await ownerApi.post('/products', { name: 'Secret Product' })).json().data;
    const blocker = await ownerApi.task({ title: 'Secret blocker' });
    const task = await ownerApi.task({ title: 'Secret plan', product_slug: 'secret-product', blocked_by: [blocker.id] });
    const done = await ownerApi.task({ title: 'Secret shipped', status: 'done' });
    const job = (await ownerApi.post('/task-queue/submit', { task_type: 't', queue_name: 'private' })).json().data;
    await ownerApi.post('/task-queue/claim', { worker_id: 'w', queue_name: 'private' });
    ids = { task: task.id, blocker: blocker.id, done: done.id, product, job: job.id };
    other = client(svc);
    own = (await other.task({ title: 'Their own task' })).id;
    await settled(svc);
  });

  const byId = (): [Method, string, unknown?][] => [
    ['GET', `/tasks/${ids.task}`], ['PATCH', `/tasks/${ids.task}`, { title: 'pwned' }], ['DELETE', `/tasks/${ids.task}`],
    ['GET', `/tasks/${ids.task}/dependencies`], ['POST', `/tasks/${ids.task}/dependencies`, { blocked_by: own }],
    ['POST', `/tasks/${own}/dependencies`, { blocked_by: ids.task }], ['DELETE', `/tasks/${ids.task}/dependencies/${ids.blocker}`],
    ['DELETE', `/tasks/${own}/dependencies/${ids.blocker}`],
    ['POST', '/tasks', { title: 'Blocked by theirs', blocked_by: [ids.task] }], ['POST', '/tasks', { title: 'Child of theirs', parent_task_id: ids.task }],
    ['POST', '/tasks', { title: 'In their product', product_slug: ids.product.slug }], ['PATCH', `/tasks/${own}`, { product_slug: ids.product.slug }],
    ['GET', `/v1/public/tasks/${ids.task}`], ['PATCH', `/v1/public/tasks/${ids.task}`, { title: 'pwned' }], ['DELETE', `/v1/public/tasks/${ids.task}`],
    ['POST', '/v1/public/tasks', { title: 'In their product', product_id: ids.product.id }], ['PATCH', `/v1/public/tasks/${own}`, { product_id: ids.product.id }],
    ['GET', `/products/${ids.product.slug}`], ['PATCH', `/products/${ids.product.slug}`, { status: 'archived' }],
    ['GET', `/task-queue/${ids.job}`], ['POST', `/task-queue/${ids.job}/complete`, { worker_id: 'w' }],
    ['POST', `/task-queue/${ids.job}/fail`, { worker_id: 'w', error: 'x' }], ['POST', `/task-queue/${ids.job}/heartbeat`, { worker_id: 'w' }],
  ];

  it('every route taking an id of theirs answers 404 and changes nothing', async () => {
    for (const [method, url, body] of byId()) {
      const res = await call(other.principal, method, url, body);
      expect(res.statusCode, `${method} ${url} ${JSON.stringify(body) ?? ''}`).toBe(404);
      expect(res.json().error.code).toBe('NOT_FOUND');
    }
    await settled(svc);
    expect((await owner().get(`/tasks/${ids.task}`)).json().data).toMatchObject({ title: 'Secret plan', status: 'blocked', product: 'secret-product', blocked_by: [{ id: ids.blocker }] });
    expect((await owner().get(`/products/${ids.product.slug}`)).json().data.status).toBe('building');
    expect((await owner().get(`/task-queue/${ids.job}`)).json().data).toMatchObject({ status: 'claimed', worker_id: 'w' });
    expect((await other.get(`/tasks/${own}`)).json().data).toMatchObject({ status: 'todo', product: null, blocked_by: [] });
  });

  it('lists, searches, the changelog, its summary and feed, and the queue show nothing of theirs', async () => {
    const lists: [string, (body: { data: unknown }) => unknown][] = [
      ['/tasks?q=secret', (b) => b.data], ['/tasks?status=done', (b) => b.data], [`/tasks?parent_task_id=${ids.task}`, (b) => b.data],
      ['/tasks?product=secret-product', (b) => b.data], ['/v1/public/tasks?status=blocked', (b) => b.data], [`/v1/public/tasks?product_id=${ids.product.id}`, (b) => b.data],
      ['/products', (b) => b.data], ['/products?q=secret', (b) => b.data], ['/changelog', (b) => b.data], [`/changelog?task_id=${ids.done}`, (b) => b.data],
      ['/changelog/summary', (b) => (b.data as { dates: unknown[] }).dates], ['/task-queue', (b) => b.data],
    ];
    for (const [url, pick] of lists) expect(pick((await other.get(url)).json()), url).toEqual([]);
    expect((await other.get('/changelog/feed')).body).not.toContain('<item>');
    expect((await owner().get('/changelog/feed')).body).toContain('Secret shipped');
    expect((await other.post('/task-queue/claim', { worker_id: 'x', queue_name: 'private', batch_size: 10 })).json().data).toBeNull();
  });
});

describe('hostile input on every route', () => {
  const strings = ['\u0000', 'a\u0000b', "'; DROP TABLE tasks;--", 'x'.repeat(100_000), '\ud800', '%', '%00', '../../etc/passwd', '(((', '&&&', ':*', '\\', '<script>', '${{7*7}}'];
  const bodies: unknown[] = [
    null, [], 'str', 1, true, {},
    ...strings.flatMap((s) => [{ title: s }, { name: s }, { worker_id: s }, { task_type: s }, { blocked_by: s }, { status: s }]),
    { title: 'ok', description: '\u0000' }, { title: 'ok', due_date: '99999-01-01' }, { title: 'ok', estimated_minutes: 1e20 }, { title: 'ok', blocked_by: [1e20] },
    { title: 'ok', parent_task_id: -1 }, { title: 'ok', product_slug: '\u0000' }, { title: 'ok', product_id: 1e20 }, { title: { $ne: 1 } },
    { task_type: 't', payload: { a: '\u0000' } }, { task_type: 't', payload: { 'a\u0000': 1 } }, { task_type: 't', payload: 'x'.repeat(300_000) },
    { task_type: 't', idempotency_key: '\u0000' }, { task_type: 't', priority: 1e20 }, { worker_id: 'w', batch_size: 1e6 }, { worker_id: 'w', queue_name: '\u0000' },
    { worker_id: 'w', result: { a: '\u0000' } }, { worker_id: 'w', error: '\u0000' }, { name: 'ok', logo_url: 'javascript:alert(1)' }, { name: 'ok', tagline: '\u0000' },
    { resolution: '\u0000' }, { assigned_to: '\u0000' }, { assignee: '\u0000' }, { blocked_by: 1e20 }, { __proto__: { admin: true } },
  ];
  const queries = ['limit=-1', 'limit=0', 'limit=abc', 'limit=1e30', 'offset=1e30', 'offset=-5', 'offset=99999999999999999999', 'q=%00', 'q=a%00b', 'q=%ED%A0%80',
    'status=%00', 'status=todo&status=done', 'assignee=%00', 'product=%00', 'agent=%00', 'task_id=abc', 'task_id=1e30', 'next=maybe', 'product_id=abc',
    'priority=%00', `q=${'x'.repeat(300)}`, 'days=0', 'days=1e9', 'slug=%00', 'queue_name=%00', 'type=%00', 'parent_task_id=-1', 'q=!!!', 'q=%27%22'];
  const ids = ['0', '-1', 'abc', '1e30', '99999999999999999999', '%00', '1.5', '%27%20OR%201%3D1', 'NaN'];

  it('never answers 5xx, always in the error envelope, never leaking SQL or stack traces', async () => {
    const api = client(svc);
    const t = await api.task({ title: 'hostile target' });
    await api.post('/products', { name: 'Hostile Product' });
    const job = (await api.post('/task-queue/submit', { task_type: 't', queue_name: 'hostile' })).json().data;
    await api.post('/task-queue/claim', { worker_id: 'w', queue_name: 'hostile' });
    const problems: string[] = [];
    for (const [method, path] of ROUTES) {
      const urls = path.includes('{')
        ? [...ids.map((id) => fill(path, id, id)), fill(path, String(path.startsWith('/task-queue') ? job.id : t.id), 'hostile-product')]
        : [path];
      for (const base of urls) {
        for (const url of method === 'GET' ? [base, ...queries.map((q) => `${base}?${q}`)] : [base]) {
          for (const body of method === 'GET' || method === 'DELETE' ? [undefined] : bodies) {
            const res = await call(api.principal, method, url, body);
            const label = `${res.statusCode} ${method} ${url.slice(0, 60)} ${JSON.stringify(body)?.slice(0, 60) ?? ''}`;
            if (res.statusCode >= 500) problems.push(label);
            else if (res.statusCode >= 400 && !res.json().error?.code) problems.push(`${label}: no error envelope`);
            if (/\bat \S+ \(|node_modules|SELECT |INSERT |UPDATE |syntax error|violates|relation "/.test(res.body) && res.statusCode >= 400) problems.push(`${label}: leaks ${res.body.slice(0, 80)}`);
          }
        }
      }
    }
    expect(problems).toEqual([]);
  }, 300_000);
});
