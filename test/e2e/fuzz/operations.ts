import type { Method } from './client.js';
import { normalise, type Schema } from './values.js';

export interface Parameter {
  in: 'path' | 'query' | 'header';
  name: string;
  required?: boolean;
  schema: Schema;
}

export interface OpenApiOperation {
  security?: unknown[];
  parameters?: Parameter[];
  requestBody?: { content?: Record<string, { schema?: Schema }> };
  'x-platform-admin'?: boolean;
  'x-required-scope'?: string;
  'x-min-role'?: string;
  'x-service'?: string;
}

export interface OpenApiDocument {
  paths: Record<string, Record<string, OpenApiOperation>>;
  components?: { schemas?: Record<string, Schema> };
}

export interface Operation {
  method: Method;
  /** OpenAPI path template, e.g. `/api/tasks/{id}`. */
  path: string;
  key: string;
  spec: OpenApiOperation;
  isPublic: boolean;
  pathParams: Parameter[];
  queryParams: Parameter[];
  headerParams: Parameter[];
  body: Schema | undefined;
  /** Family: operations on the same resource (run one after another, so list totals and snapshots hold). */
  family: string;
}

const METHODS = new Set(['get', 'post', 'put', 'patch', 'delete']);

export function operationsOf(doc: OpenApiDocument): Operation[] {
  const components = doc.components?.schemas ?? {};
  const ops: Operation[] = [];
  for (const [path, byMethod] of Object.entries(doc.paths)) {
    for (const [m, spec] of Object.entries(byMethod)) {
      if (!METHODS.has(m)) continue;
      const params = spec.parameters ?? [];
      const body = spec.requestBody?.content?.['application/json']?.schema;
      const segments = path.replace(/^\/api(\/v1\/public)?\//, '').split('/');
      ops.push({
        method: m.toUpperCase() as Method, path, key: `${m.toUpperCase()} ${path}`, spec,
        isPublic: Array.isArray(spec.security) && spec.security.length === 0,
        pathParams: params.filter((p) => p.in === 'path'),
        queryParams: params.filter((p) => p.in === 'query'),
        headerParams: params.filter((p) => p.in === 'header'),
        body: body ? normalise(body, components) : undefined,
        family: FAMILY_ALIASES[segments[0]!] ?? segments[0]!,
      });
    }
  }
  return ops;
}

/** Paths whose writes change another family's reads (a product's task stats, an agent's runs). */
const FAMILY_ALIASES: Record<string, string> = { 'agent-runs': 'agents', 'chat': 'agents', changelog: 'tasks', 'agent-metrics': 'agents', products: 'tasks' };

/** `/api/tasks/{id}` with `{ id: '7' }` (values already URL-encoded) and a query string. */
export function urlOf(path: string, values: Record<string, string>, query: [string, string][] = []): string {
  const p = path.replace(/\{(\w+)\}/g, (_m, name: string) => {
    const v = values[name];
    if (v === undefined) throw new Error(`no value for {${name}} of ${path}`);
    return v;
  });
  return query.length ? `${p}?${query.map(([k, v]) => `${k}=${v}`).join('&')}` : p;
}
