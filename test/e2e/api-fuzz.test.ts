import { createTestDatabase, putOnPlan, waitFor } from '@aos/testkit';
import type { LightMyRequestResponse } from 'fastify';
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { dataOf, send, type Call, type Caller, type Method } from './fuzz/client.js';
import { operationsOf, urlOf, type OpenApiDocument, type Operation } from './fuzz/operations.js';
import { pathValue, register, seedOrganization, seedPlatform, sharedParameter, type AdminResources, type Resources } from './fuzz/seed.js';
import { deepArray, deepObject, hostileBodyValues, hostileParamValues, LONG, normalise, nullable, sample, toJson, typeOf, type Schema } from './fuzz/values.js';
import { startFullStack } from './stack.js';

/**
 * A black-box robustness proof of the whole public API, through the real gateway in front of
 * all six services: every operation of the merged OpenAPI document is called without
 * credentials, with another organization's ids, and with hostile inputs generated from its
 * declared schema. No answer may be a 5xx (but the documented ones below), leave the error
 * envelope, lack a trace id, show a stack trace, SQL or a server path, or carry org B's data
 * to org A; a refused write must change nothing.
 */

/** Org B's resources all carry this in their names: it must never appear in an answer to A. */
const MARKER = 'zzbsecret';

/**
 * 5xx answers that are the documented outcome of a dependency this stack leaves unconfigured,
 * by error code: anything else at 500+ is a failure.
 */
const EXPECTED_UNAVAILABLE: Record<string, string> = {
  PAYMENTS_NOT_CONFIGURED: 'Stripe is not configured (no STRIPE_SECRET_KEY): checkout, portal, payment intents and paid plan changes answer 503',
};

/** What no answer may contain: stack frames, server paths, SQL or driver errors. */
const LEAKS: [string, RegExp][] = [
  ['stack trace', /\n\s+at [\w.<>[\]]+ \(|"stack"\s*:/],
  ['server path', /\/work\/|\/home\/|node_modules|\/usr\/(lib|local)|\/tmp\/aos|file:\/\/\/(?!etc\/passwd)|\.(ts|js|mjs):\d+/],
  ['SQL error', /syntax error at or near|violates (not-null|foreign key|unique|check) constraint|duplicate key value|relation "[^"]+"|column "[^"]+"|SQLSTATE|invalid input syntax for|out of range for type|\bpg_[a-z_]+\(/i],
  ['SQL text', /\b(select|insert into|update|delete from)\b[^"]{0,80}\b(from|values|set|where)\b/i],
];

let stack: Awaited<ReturnType<typeof startFullStack>>;
let backupDb: Awaited<ReturnType<typeof createTestDatabase>>;
let a: Caller;
let b: Caller;
let c: Caller;
let resA: Resources;
let resB: Resources;
let platform: AdminResources;
let ops: Operation[];
let scopedKey: string;
/** An API key of A with every scope: org scoping must hold for keys as for users. */
let fullKey: Caller;

const failures: string[] = [];
const seen5xx = new Map<string, string>();
let requests = 0;

beforeAll(async () => {
  backupDb = await createTestDatabase('fuzzbackup');
  stack = await startFullStack({
    env: {
      identity: {
        ADMIN_EMAILS: `${MARKER}-admin@example.com`, CREDENTIALS_KEY: randomBytes(32).toString('base64'),
        LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_IP: '1000', LOGIN_MAX_FAILURES_PER_ACCOUNT: '100000', LOGIN_MAX_FAILURES_PER_IP: '100000',
      },
      notifications: { WEBHOOK_ALLOWED_HOSTS: 'localhost', WEBHOOK_BACKOFF_MS: '600000' },
      backups: { BACKUP_DATABASE_URLS: `fuzz=${backupDb.url}` },
      gateway: { RATE_LIMIT_ENTERPRISE_PER_MINUTE: '10000000', RATE_LIMIT_ENTERPRISE_PER_HOUR: '10000000', AUTH_RATE_LIMIT_PER_MINUTE: '100000', AUTH_FAILURES_PER_MINUTE: '100000' },
    },
  });
  const gw = stack.gateway;
  b = await register(gw, `${MARKER}-admin`, `${MARKER}-admin@example.com`);
  a = await register(gw, 'fuzz-a', 'fuzz-a@example.com');
  c = await register(gw, 'fuzz-c', 'fuzz-c@example.com');
  const d = await register(gw, 'fuzz-d', 'fuzz-d@example.com');
  // The organizations are on the enterprise tier (rate limits raised above, plan limits unlimited): the volume of this file is not what gets refused.
  const redis = new Redis(stack.config.REDIS_URL);
  for (const org of [a.orgId, b.orgId, c.orgId]) await redis.set(`${stack.config.REDIS_PREFIX}:tier:${org}`, 'enterprise');
  redis.disconnect();
  const { identity, 'agents-runtime': agents, tasks } = stack.services;
  for (const org of [a.orgId, b.orgId, c.orgId]) await putOnPlan([identity, agents, tasks], org, 'enterprise');
  [resA, resB] = await Promise.all([seedOrganization(gw, a, 'fuzza'), seedOrganization(gw, b, MARKER)]);
  platform = await seedPlatform(gw, b, MARKER, d.orgId);
  const key = await send(gw, a, { method: 'POST', url: `/api/organizations/${a.orgId}/api-keys`, body: { name: 'fuzz read-only', scopes: ['tasks:read'] } });
  scopedKey = dataOf<{ key: string }>(key).key;
  const all = await send(gw, a, { method: 'POST', url: `/api/organizations/${a.orgId}/api-keys`, body: { name: 'fuzz everything', scopes: ['*'] } });
  fullKey = { ...a, label: "A's API key", token: dataOf<{ key: string }>(all).key };
  const doc = (await send(gw, null, { method: 'GET', url: '/api/docs/openapi.json' })).json() as OpenApiDocument & { 'x-unavailable-services': string[] };
  expect(doc['x-unavailable-services']).toEqual([]);
  ops = operationsOf(doc);
}, 120_000);

afterAll(async () => {
  await stack?.close();
  await backupDb?.drop();
});

/** Runs `fn` over `items`, `n` at a time. */
async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

interface Sent {
  op: Operation;
  label: string;
  caller: Caller | null;
  call: Call;
}

/** Sends one case and records what is wrong with its answer. */
async function probe(s: Sent): Promise<LightMyRequestResponse> {
  requests += 1;
  let res: LightMyRequestResponse;
  try {
    res = await send(stack.gateway, s.caller, s.call);
  } catch (err) {
    failures.push(`${s.op.key} [${s.label}] request failed: ${(err as Error).message}`);
    throw err;
  }
  const where = `${s.op.key} [${s.label}] → ${res.statusCode}`;
  const fail = (what: string) => failures.push(`${where}: ${what} ${res.body.slice(0, 300)}`);
  let json: { error?: { code?: unknown; message?: unknown } } | undefined;
  try {
    json = res.body && String(res.headers['content-type']).includes('json') ? (JSON.parse(res.body) as typeof json) : undefined;
  } catch {
    json = undefined;
  }
  if (!/^[0-9a-f]{32}$/.test(String(res.headers['x-trace-id'] ?? ''))) fail('no X-Trace-Id');
  if (res.statusCode >= 500) {
    const code = String(json?.error?.code ?? '');
    if (!EXPECTED_UNAVAILABLE[code] || res.statusCode !== 503) fail('server error');
    else seen5xx.set(code, s.op.key);
  }
  if (res.statusCode === 429) fail('rate limited (the test raises every limit)');
  if (res.statusCode >= 400 && (typeof json?.error?.code !== 'string' || !/^[A-Z_]+$/.test(json.error.code) || typeof json.error.message !== 'string')) {
    fail('not the {error:{code,message}} envelope');
  }
  const body = withoutEchoes(res, echoesOf(s.call), json);
  for (const [what, re] of LEAKS) {
    if (what === 'SQL text' && res.statusCode < 400) continue;
    if (re.test(body)) fail(`leaks ${what}`);
  }
  if (s.caller?.orgId === a.orgId && body.includes(MARKER)) fail("shows org B's data to A");
  return res;
}

/** What a request said itself (URL, its decoded parts, the strings of its body): an answer may repeat those. */
function echoesOf(call: Call): string[] {
  const [path, query = ''] = call.url.split('?');
  const parts = [call.url, path!, ...path!.split('/'), ...query.split('&').map((kv) => kv.slice(kv.indexOf('=') + 1))].filter((p) => p.length > 2);
  const strings: string[] = [];
  const walk = (v: unknown, depth = 0) => {
    if (typeof v === 'string') strings.push(v);
    else if (v && typeof v === 'object' && depth < 20) for (const x of Object.values(v)) walk(x, depth + 1);
  };
  walk(call.body);
  return [...new Set([...parts, ...parts.map(decodeURIComponentSafe), ...strings.filter((x) => x.length > 2)])].sort((x, y) => y.length - x.length);
}

/**
 * The answer without what the request said: an error message or a non-JSON page may quote the
 * request; a JSON answer may hold a value the request sent (exactly that value, not inside a longer one).
 */
function withoutEchoes(res: LightMyRequestResponse, echoes: string[], json: unknown): string {
  if (res.statusCode >= 400 || json === undefined) {
    let body = res.body;
    for (const e of echoes) body = body.split(e).join('');
    return body;
  }
  const sent = new Set(echoes);
  const strip = (v: unknown, depth = 0): unknown => {
    if (typeof v === 'string') return sent.has(v) ? '' : v;
    if (!v || typeof v !== 'object' || depth > 50) return v;
    if (Array.isArray(v)) return v.map((x) => strip(x, depth + 1));
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, strip(x, depth + 1)]));
  };
  return JSON.stringify(strip(json));
}

const decodeURIComponentSafe = (s: string) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

/** C is the disposable caller: the operations that end its session or organization, and the admin's user operations, act on C. */
const resourcesFor = (caller: Caller): Resources => (caller === b ? resB : caller === c ? { ...resA, orgId: c.orgId, userId: c.userId } : resA);

/** URL-encoded path values of `op` for `caller`'s resources. */
function pathValues(op: Operation, caller: Caller, override: Partial<Resources> = {}): Record<string, string> {
  const r = { ...resourcesFor(caller), ...override };
  return Object.fromEntries(op.pathParams.map((p) => [p.name, encodeURIComponent(pathValue(op.path, p.name, r, platform))]));
}

const requiredQuery = (op: Operation): [string, string][] =>
  op.queryParams.filter((q) => q.required).map((q) => [q.name, encodeURIComponent(String(sample(q.schema)))]);

const ok = (status: number) => status >= 200 && status < 300;
const isStream = (op: Operation) => op.path.endsWith('/stream');

beforeEach(() => {
  failures.length = 0;
});

/** What org B can read of its own resources (item reads and list totals), to prove A's calls changed none of it. */
async function snapshotOfB(): Promise<Record<string, unknown>> {
  const reads = ops.filter((op) => op.method === 'GET' && !op.isPublic && !isStream(op) && !op.path.includes('/download') && !op.path.startsWith('/api/dashboard'));
  const out: Record<string, unknown> = {};
  await pool(reads, 4, async (op) => {
    const url = urlOf(op.path, pathValues(op, b), requiredQuery(op));
    const res = await send(stack.gateway, b, { method: 'GET', url });
    if (res.statusCode !== 200) return;
    if (!String(res.headers['content-type']).startsWith('application/json')) {
      out[url] = res.body.replace(/<lastBuildDate>[^<]*<\/lastBuildDate>/, '');
      return;
    }
    const json = res.json() as { data: unknown; meta?: { total: number } };
    out[url] = op.pathParams.length ? stable(json.data) : json.meta?.total;
  });
  return Object.fromEntries(Object.entries(out).sort(([x], [y]) => x.localeCompare(y)));
}

/** A read without the fields that move on their own (heartbeats, uptimes, clocks, retry schedules). */
function stable(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stable);
  if (!value || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).filter(([k]) => !VOLATILE.has(k)).map(([k, v]) => [k, stable(v)]));
}
// balance: the seeded agents' scheduled cycles spend tokens while the fuzzing runs.
const VOLATILE = new Set(['uptime', 'balance', 'last_heartbeat', 'last_cycle_at', 'last_cycle_result', 'next_attempt_at', 'next_run_at', 'next', 'now', 'generated_at']);

/** Two snapshots in a row that agree: what events of the seeding still had to change has landed. */
const settledSnapshotOfB = () => waitFor(async () => {
  const first = JSON.stringify(await snapshotOfB());
  const second = JSON.stringify(await snapshotOfB());
  return first === second ? (JSON.parse(second) as Record<string, unknown>) : null;
}, { timeoutMs: 30_000, message: "org B's state to settle" });

/** Operations that end the caller's session, account or organization: fuzzed last, as C. */
const SESSION_OPS = new Set([
  'POST /api/auth/logout', 'DELETE /api/users/me', 'DELETE /api/organizations/{id}', 'DELETE /api/organizations/{id}/members/{userId}',
  'PATCH /api/organizations/{id}/members/{userId}', 'POST /api/organizations/invites/{token}/accept',
]);

/** Who fuzzes an operation: someone allowed past its role checks, so the hostile input reaches validation and the handler. */
const fuzzerOf = (op: Operation): Caller => (SESSION_OPS.has(op.key) ? c : op.spec['x-platform-admin'] ? b : a);

/** Valid values for required fields that must name something real to get past the first lookup. */
function validBody(op: Operation, caller: Caller): unknown {
  const body = sample(op.body!) as Record<string, unknown>;
  if (!body || typeof body !== 'object' || Array.isArray(body)) return body;
  const r = resourcesFor(caller);
  for (const k of ['agent_name', 'agent']) if (k in body) body[k] = r.agentName;
  if ('url' in body) body.url = 'http://localhost:9/fuzz';
  return body;
}

/** Lists whose total a create changes, narrowed where other activity of the organization adds rows too. */
const COUNT_FILTERS: Record<string, [string, string][]> = {
  'POST /api/activity-log': [['actor_id', 'fuzz']],
  'POST /api/logs': [['q', 'fuzz']],
};

interface Read { url: string; list: boolean }

/** The read that shows what a write changes: a GET of the same path, or of the resource an action (`/stop`, `/revoke`) acts on. */
function readOf(op: Operation, values: Record<string, string>): Read | null {
  if (op.method === 'GET') return null;
  const parent = op.path.replace(/\/[a-z-]+$/, '');
  const read = ops.find((o) => o.method === 'GET' && o.path === op.path && !isStream(o))
    ?? (parent !== op.path ? ops.find((o) => o.method === 'GET' && o.path === parent && o.pathParams.length > 0) : undefined);
  if (!read) return null;
  const list = read.queryParams.some((q) => q.name === 'limit');
  return { url: urlOf(read.path, values, [...requiredQuery(read), ...(list ? COUNT_FILTERS[op.key] ?? [] : [])]), list };
}

/** The fields that differ between two JSON reads. */
function changes(before: unknown, after: unknown): string {
  const parse = (v: unknown) => {
    try {
      return JSON.parse(String(v)) as Record<string, unknown>;
    } catch {
      return { value: v };
    }
  };
  const [x, y] = [parse(before), parse(after)];
  if (!x || !y || typeof x !== 'object' || typeof y !== 'object') return `${String(before).slice(0, 200)} → ${String(after).slice(0, 200)}`;
  return Object.keys({ ...x, ...y }).filter((k) => JSON.stringify(x[k]) !== JSON.stringify(y[k]))
    .map((k) => `${k}: ${JSON.stringify(x[k])?.slice(0, 100)} → ${JSON.stringify(y[k])?.slice(0, 100)}`).join('; ');
}

/** The fixed, deterministic hostile cases of one operation, derived from its declared schema. */
/** Fields where a NUL character is fine: data stored encrypted, or a note the action does not keep. */
const NUL_ALLOWED = new Set(['POST /api/credentials value', 'POST /api/agents/{name}/start note', 'POST /api/agents/{name}/restart note']);

/** Why a hostile body value can only be refused (its schema rules it out and no coercion makes it valid), if so. */
function mustRefuse(op: Operation, field: string, schema: Schema, label: string): string | undefined {
  if (typeOf(schema) === undefined) return undefined; // any value (a field the route ignores or takes as is)
  if (label === 'null' && !nullable(schema)) return `${field} is not nullable`;
  if (label === 'NUL' && !NUL_ALLOWED.has(`${op.key.split(' ')[0]} ${op.path} ${field}`)) return 'a NUL character cannot be stored';
  if (['1e309', '-1e309'].includes(label)) return 'no field takes a non-finite number';
  if (label === 'unknown enum' && schema.enum) return `${field} is one of ${schema.enum.join(', ')}`;
  if (label === '100k chars' && schema.maxLength !== undefined && schema.maxLength < 100_000) return `${field} is at most ${schema.maxLength} characters`;
  return undefined;
}

/** Why a hostile query value can only be refused, if so. */
function mustRefuseParam(schema: Schema, label: string): string | undefined {
  const s = normalise(schema);
  const numeric = ['integer', 'number'].includes(typeOf(s) ?? '');
  if (numeric && ['abc', '1e309', '1.5'].includes(label) && (typeOf(s) === 'integer' || label !== '1.5')) return 'not a finite integer';
  if (numeric && ['-1', '0'].includes(label) && s.minimum !== undefined && s.minimum > Number(label)) return `at least ${s.minimum}`;
  if (s.enum && label === 'unknown enum') return `one of ${s.enum.join(', ')}`;
  if (typeOf(s) === 'boolean' && label === 'maybe') return 'a boolean';
  return undefined;
}

/** A case: its label, the request, and — when the input can only be refused — why. */
type Case = [label: string, call: Call, mustRefuse?: string];

function hostileCases(op: Operation, caller: Caller): { baseline: Call; cases: Case[] } {
  const values = pathValues(op, caller);
  const query = requiredQuery(op);
  const body = op.body ? validBody(op, caller) : undefined;
  const url = urlOf(op.path, values, query);
  const baseline: Call = { method: op.method, url, ...(body !== undefined ? { body } : {}) };
  const cases: Case[] = [];
  if (op.method !== 'DELETE' && !SESSION_OPS.has(op.key)) cases.push(['valid', baseline]);
  for (const p of op.pathParams) {
    for (const v of [...hostileParamValues(p.schema), { label: '1000 chars', value: 'x'.repeat(1_000) }]) {
      cases.push([`path ${p.name}: ${v.label}`, { ...baseline, url: urlOf(op.path, { ...values, [p.name]: String(v.value) }, query) }]);
    }
  }
  for (const q of op.queryParams) {
    const extra = [{ label: '100k chars', value: LONG }, { label: 'repeated', value: `a&${q.name}=b` }, ...(q.name === 'limit' ? [{ label: '100000', value: '100000' }] : [])];
    for (const v of [...hostileParamValues(q.schema), ...extra]) {
      cases.push([`query ${q.name}: ${v.label}`, { ...baseline, url: urlOf(op.path, values, [...query.filter(([k]) => k !== q.name), [q.name, String(v.value)]]) }, mustRefuseParam(q.schema, v.label)]);
    }
  }
  for (const h of op.headerParams) {
    for (const [label, value] of [['SQL', "' OR 1=1 --"], ['traversal', '../../etc/passwd'], ['10k chars', 'x'.repeat(10_000)], ['empty', '']]) {
      cases.push([`header ${h.name}: ${label}`, { ...baseline, headers: { [h.name]: value! } }]);
    }
  }
  const json = (label: string, value: unknown, mustRefuse?: string) =>
    cases.push([label, { ...baseline, body: undefined, raw: toJson(value), headers: { 'content-type': 'application/json' } }, mustRefuse]);
  const props = Object.entries(op.body?.properties ?? {});
  for (const [name, schema] of props) {
    const base = body as Record<string, unknown>;
    for (const v of hostileBodyValues(schema)) json(`body ${name}: ${v.label}`, { ...base, [name]: v.value }, mustRefuse(op, name, schema, v.label));
    // One level down: the fields of an object, or of an array's objects.
    const inner = schema.properties ? schema : schema.items?.properties ? schema.items : null;
    for (const [sub, subSchema] of Object.entries(inner?.properties ?? {})) {
      for (const v of hostileBodyValues(subSchema).slice(0, 8)) {
        const obj = { ...(sample(inner!) as Record<string, unknown>), [sub]: v.value };
        json(`body ${name}.${sub}: ${v.label}`, { ...base, [name]: schema.properties ? obj : [obj] });
      }
    }
  }
  if (op.method === 'GET') return { baseline, cases };
  const raw = (label: string, text: string | Buffer, type = 'application/json') => cases.push([label, { ...baseline, body: undefined, raw: text, headers: { 'content-type': type } }]);
  const valid = body === undefined ? '{}' : toJson(body);
  raw('malformed JSON', '{"a": ');
  raw('deep array 10k', deepArray(10_000));
  raw('deep object 10k', deepObject(10_000));
  raw('text/plain', valid, 'text/plain');
  raw('form encoded', 'a=1&b=2', 'application/x-www-form-urlencoded');
  raw('xml', '<a>1</a>', 'application/xml');
  raw('empty JSON', '');
  raw('invalid UTF-8', Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xff, 0xfe, 0xc0]), Buffer.from('"}')]));
  raw('2 MB', `{"a":"${'x'.repeat(2 * 1024 * 1024)}"}`);
  raw('__proto__', `{"__proto__":{"isAdmin":true},${valid.slice(1)}`.replace(',}', '}'));
  raw('constructor.prototype', `{"constructor":{"prototype":{"isAdmin":true}},${valid.slice(1)}`.replace(',}', '}'));
  if (op.body) {
    raw('array body', `[${valid}]`);
    raw('empty array', '[]');
    raw('null body', 'null');
    raw('string body', '"x"');
    raw('1e309 body', '1e309');
    raw('BOM', `\ufeff${valid}`);
  }
  return { baseline, cases };
}

/**
 * Runs an operation's cases one after another, and proves a refused write changed nothing: the
 * resource it targets reads the same after each 4xx, and a list grows by no more than the writes it accepted.
 */
async function fuzzOperation(op: Operation) {
  const caller = fuzzerOf(op);
  const { baseline, cases } = hostileCases(op, caller);
  const read = readOf(op, pathValues(op, caller));
  const basePath = baseline.url.split('?')[0];
  const current = async () => {
    if (!read) return null;
    const res = await send(stack.gateway, caller, { method: 'GET', url: read.url });
    if (res.statusCode !== 200) return `${res.statusCode}`;
    const json = res.json() as { data: unknown; meta?: { total: number } };
    return read.list ? json.meta?.total ?? null : JSON.stringify(stable(json.data));
  };
  const start = await current();
  let last = start;
  let accepted = 0;
  for (const [label, call, refuse] of cases) {
    const res = await probe({ op, label, caller, call });
    if (refuse && res.statusCode < 400) failures.push(`${op.key} [${label}] → ${res.statusCode}: accepted, but ${refuse}`);
    if (label.startsWith('query limit: 100000') && ok(res.statusCode) && (res.json() as { meta?: { limit: number } }).meta?.limit !== 200) {
      failures.push(`${op.key} [${label}] → meta.limit ${(res.json() as { meta?: { limit: number } }).meta?.limit}, expected the cap of 200`);
    }
    // FUZZ_ACCEPTED=1 lists the hostile inputs an operation accepted (coerced or legitimately valid), for review.
    if (process.env.FUZZ_ACCEPTED && ok(res.statusCode) && label !== 'valid') process.stdout.write(`ACCEPTED ${op.key} [${label}] ${res.statusCode}\n`);
    if (!read || call.url.split('?')[0] !== basePath) continue;
    if (ok(res.statusCode)) {
      accepted += 1;
      if (!read.list) last = await current();
    } else if (res.statusCode >= 400 && !read.list) {
      const now = await current();
      if (now !== last) failures.push(`${op.key} [${label}] → ${res.statusCode} but ${read.url} changed: ${changes(last, now)}`);
      last = now;
    }
  }
  if (read?.list && typeof start === 'number') {
    const end = await current();
    if (typeof end === 'number' && end - start > accepted) failures.push(`${op.key}: ${read.url} grew by ${end - start} with ${accepted} writes accepted`);
  }
}

describe('every operation of the merged OpenAPI document, through the gateway', () => {
  it('covers the reference endpoints and more', () => {
    expect(ops.length).toBeGreaterThanOrEqual(200);
  });

  it('refuses calls without valid credentials (401) unless the operation is public', async () => {
    const tampered = (() => {
      const [h, p, sig] = a.token.split('.');
      const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
      return [h, Buffer.from(JSON.stringify({ ...claims, org: b.orgId, roles: ['admin'] })).toString('base64url'), sig].join('.');
    })();
    const algNone = `${Buffer.from('{"alg":"none","typ":"at+jwt"}').toString('base64url')}.${a.token.split('.')[1]}.`;
    const variants: [string, Record<string, string>][] = [
      ['none', {}],
      ['garbage bearer', { authorization: 'Bearer not-a-token' }],
      ['tampered JWT', { authorization: `Bearer ${tampered}` }],
      ['alg none JWT', { authorization: `Bearer ${algNone}` }],
      ['basic auth', { authorization: 'Basic YTpi' }],
      ['garbage cookie', { cookie: 'assimetria_jwt=%E0%A4%A' }],
      ['unknown API key', { authorization: 'Bearer osk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }],
    ];
    await pool(ops, 4, async (op) => {
      const url = urlOf(op.path, pathValues(op, a), requiredQuery(op));
      for (const [label, headers] of variants) {
        if (op.isPublic && label !== 'none') continue;
        const res = await probe({ op, label: `credentials: ${label}`, caller: null, call: { method: op.method, url, headers } });
        if (!op.isPublic && res.statusCode !== 401) failures.push(`${op.key} [credentials: ${label}] → ${res.statusCode}, expected 401`);
      }
      if (op.isPublic) return;
      const wrongOrg = await probe({ op, label: "X-Org-Id of B's org", caller: a, call: { method: op.method, url, headers: { 'x-org-id': b.orgId } } });
      if (wrongOrg.statusCode !== 403) failures.push(`${op.key} [X-Org-Id of B] → ${wrongOrg.statusCode}, expected 403`);
      const badOrg = await probe({ op, label: 'X-Org-Id not an id', caller: a, call: { method: op.method, url, headers: { 'x-org-id': "' OR 1=1 --" } } });
      if (badOrg.statusCode !== 400) failures.push(`${op.key} [X-Org-Id not an id] → ${badOrg.statusCode}, expected 400`);
    });
    expect(failures).toEqual([]);
  }, 60_000);

  it('refuses an API key lacking the scope an operation names', async () => {
    const key: Caller = { ...a, label: 'scoped key', token: scopedKey };
    await pool(ops.filter((op) => op.spec['x-required-scope'] && op.spec['x-required-scope'] !== 'tasks:read'), 4, async (op) => {
      const url = urlOf(op.path, pathValues(op, a), requiredQuery(op));
      const res = await probe({ op, label: 'API key without the scope', caller: key, call: { method: op.method, url, ...(op.body ? { body: sample(op.body) } : {}) } });
      if (res.statusCode !== 403) failures.push(`${op.key} [API key with tasks:read only] → ${res.statusCode}, expected 403`);
    });
    expect(failures).toEqual([]);
  }, 60_000);
  it("never serves caller A org B's resources (404, or 403 where role-gated), and A's calls change none of them", async () => {
    const before = await settledSnapshotOfB();
    const withForeignPath = ops.filter((op) => !op.isPublic && op.pathParams.some((p) => !sharedParameter(op.path, p.name)));
    await pool(withForeignPath, 4, async (op) => {
      const mine = pathValues(op, a);
      const theirs = pathValues(op, b);
      const last = op.pathParams.at(-1)!.name;
      const variants: [string, Record<string, string>][] = [["B's ids", theirs]];
      if (op.pathParams.length > 1) variants.push(["A's parent, B's child", { ...mine, [last]: theirs[last]! }]);
      for (const [label, values] of variants) {
        const call: Call = { method: op.method, url: urlOf(op.path, values, requiredQuery(op)), ...(op.body ? { body: sample(op.body, {}, 1) } : {}) };
        for (const caller of [a, fullKey]) {
          const res = await probe({ op, label: `${label} as ${caller.label}`, caller, call });
          if (![403, 404].includes(res.statusCode)) failures.push(`${op.key} [${label} as ${caller.label}] → ${res.statusCode}, expected 404 (or 403) ${res.body.slice(0, 200)}`);
        }
      }
    });
    // Lists and aggregates filtered by B's names and ids: never one of B's rows.
    const reads = ops.filter((op) => op.method === 'GET' && !op.isPublic && op.pathParams.length === 0 && !isStream(op));
    await pool(reads, 4, async (op) => {
      const valueFor = (name: string, schema: Schema): string => {
        if (schema.type === 'integer') return String(/product/.test(name) ? resB.productId : resB.taskId);
        if (/agent/.test(name)) return resB.agentName;
        if (/product|slug/.test(name)) return resB.productSlug;
        return MARKER;
      };
      await probe({ op, label: 'plain', caller: a, call: { method: 'GET', url: urlOf(op.path, {}, requiredQuery(op)) } });
      for (const q of op.queryParams.filter((p) => ['string', 'integer'].includes(String(p.schema.type)) && !p.schema.enum && !p.schema.format)) {
        if (['limit', 'offset', 'page', 'days', 'start', 'end'].includes(q.name)) continue;
        const query = [...requiredQuery(op).filter(([k]) => k !== q.name), [q.name, encodeURIComponent(valueFor(q.name, q.schema))] as [string, string]];
        await probe({ op, label: `filter ${q.name} by B`, caller: a, call: { method: 'GET', url: urlOf(op.path, {}, query) } });
      }
    });
    // Names and ids of B's resources inside A's writes: 404 naming the field, never a link to B's row.
    const references: [string, string, unknown][] = [
      ['POST', '/api/tasks', { title: 'child of B', parent_task_id: resB.taskId }],
      ['POST', '/api/tasks', { title: 'blocked by B', blocked_by: [resB.taskId] }],
      ['POST', '/api/tasks', { title: "in B's product", product_slug: resB.productSlug }],
      ['PATCH', `/api/tasks/${resA.taskId}`, { product_slug: resB.productSlug }],
      ['POST', `/api/tasks/${resA.taskId}/dependencies`, { blocked_by: resB.taskId }],
      ['POST', '/api/v1/public/tasks', { title: "in B's product", product_id: resB.productId }],
      ['PATCH', `/api/v1/public/tasks/${resA.publicTaskId}`, { product_id: resB.productId }],
      ['POST', `/api/agents/${resA.agentName}/runs`, { input: "B's task", task_id: resB.taskId }],
      ['POST', '/api/automations', { name: "B's agent", agent_name: resB.agentName, type: 'cron', path: 'a/b.md' }],
      ['POST', '/api/chat/stream', { agent: resB.agentName, message: 'hello' }],
      ['POST', '/api/notifications', { title: 'to B', message: 'to B', user_id: resB.userId }],
      ['POST', `/api/teams/${resA.teamId}/members`, { user_id: resB.userId }],
    ];
    for (const [method, url, body] of references) {
      const op = ops.find((o) => o.method === method && new RegExp(`^${o.path.replace(/\{\w+\}/g, '[^/]+')}$`).test(url))!;
      const res = await probe({ op, label: `reference to B in ${JSON.stringify(body)}`, caller: a, call: { method: method as Method, url, body } });
      if (res.statusCode !== 404) failures.push(`${method} ${url} ${JSON.stringify(body)} → ${res.statusCode}, expected 404 ${res.body.slice(0, 200)}`);
    }
    const after = await settledSnapshotOfB();
    for (const url of new Set([...Object.keys(before), ...Object.keys(after)])) {
      if (JSON.stringify(before[url]) !== JSON.stringify(after[url])) failures.push(`B's ${url} changed: ${JSON.stringify(before[url])?.slice(0, 300)} → ${JSON.stringify(after[url])?.slice(0, 300)}`);
    }
    expect(failures).toEqual([]);
  }, 90_000);
  it('answers hostile input with a 4xx in the envelope (never a 5xx, a stack trace, SQL or a path), and a refused write changes nothing', async () => {
    const started = Date.now();
    const sent = requests;
    const families = new Map<string, Operation[]>();
    for (const op of ops.filter((o) => !SESSION_OPS.has(o.key))) families.set(op.family, [...(families.get(op.family) ?? []), op]);
    await pool([...families.values()], 4, async (family) => {
      for (const op of family) await fuzzOperation(op);
    });
    // What ends a session or an organization, last and as the disposable caller C.
    for (const op of ops.filter((o) => SESSION_OPS.has(o.key))) await fuzzOperation(op);
    process.stdout.write(`api-fuzz: ${requests - sent} hostile requests over ${ops.length} operations in ${Math.round((Date.now() - started) / 1000)} s; documented 5xx seen: ${JSON.stringify(Object.fromEntries(seen5xx))}\n`);
    expect(failures).toEqual([]);
    // ~10k requests: ~110 s when the suite's other files share the 2 cores; a bound for hangs, not a speed target.
  }, 300_000);
  it("answers what Node's HTTP parser refuses at the gateway's socket (oversized URL or headers, garbage) in the envelope", async () => {
    await stack.gateway.listen({ host: '127.0.0.1', port: 0 });
    const port = (stack.gateway.server.address() as AddressInfo).port;
    const raw = (request: string) => new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => socket.write(request));
      let answer = '';
      socket.on('data', (chunk) => { answer += chunk.toString(); });
      socket.on('end', () => resolve(answer));
      socket.on('error', reject);
    });
    const auth = `Authorization: Bearer ${a.token}\r\n`;
    const cases: [string, string, number][] = [
      ['URL of 20 KB', `GET /api/tasks?q=${'x'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, 431],
      ['URL of 10 KB', `GET /api/tasks?q=${'x'.repeat(10_000)} HTTP/1.1\r\nHost: x\r\n${auth}Connection: close\r\n\r\n`, 414],
      ['header of 20 KB', `GET /api/tasks HTTP/1.1\r\nHost: x\r\n${auth}X-Big: ${'y'.repeat(20_000)}\r\n\r\n`, 431],
      ['not HTTP', 'HELLO THERE\r\n\r\n', 400],
      ['bad content-length', `POST /api/tasks HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: -5\r\n\r\n`, 400],
      ['NUL in the path', `GET /api/tasks/\u0000 HTTP/1.1\r\nHost: x\r\n\r\n`, 400],
    ];
    for (const [label, request, status] of cases) {
      const answer = await raw(request);
      const [head, ...rest] = answer.split('\r\n\r\n');
      if (!new RegExp(`^HTTP/1.1 ${status} `).test(head!)) failures.push(`raw HTTP [${label}]: ${head?.split('\r\n')[0]}, expected ${status}`);
      if (!/\r\nx-trace-id: [0-9a-f]{32}\r\n/i.test(head!)) failures.push(`raw HTTP [${label}]: no X-Trace-Id`);
      const body = rest.join('\r\n\r\n');
      let code: unknown;
      try {
        code = (JSON.parse(body) as { error?: { code?: unknown } }).error?.code;
      } catch {
        code = undefined;
      }
      if (typeof code !== 'string') failures.push(`raw HTTP [${label}]: not the envelope: ${body.slice(0, 200)}`);
    }
    expect(failures).toEqual([]);
  });
});
