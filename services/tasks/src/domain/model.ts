import { badRequest } from '@aos/core';
import { csv, Nullable } from '@aos/http';
import { Type, type Static } from '@sinclair/typebox';

export { Nullable };

export const TaskStatuses = ['todo', 'in_progress', 'review', 'done', 'blocked', 'cancelled'] as const;
export const Priorities = ['P0', 'P1', 'P2', 'P3'] as const;
export const TaskTypes = ['feature', 'bug', 'research', 'ops', 'infra', 'content', 'other'] as const;
export const ProductStatuses = ['idea', 'building', 'active', 'launched', 'live', 'placeholder', 'archived'] as const;

export type TaskStatus = (typeof TaskStatuses)[number];
/** What clients may send: the reference also calls `cancelled` `archived`. */
export const TaskStatusInputs = [...TaskStatuses, 'archived'] as const;
export type TaskStatusInput = (typeof TaskStatusInputs)[number];
export const taskStatus = (s: TaskStatusInput): TaskStatus => (s === 'archived' ? 'cancelled' : s);
export const OPEN_STATUSES: readonly TaskStatus[] = ['todo', 'in_progress', 'review', 'blocked'];

/** A string enum schema whose static type is the union of `values`. */
export const literals = <T extends string>(values: readonly T[]) => Type.Unsafe<T>(Type.Union(values.map((v) => Type.Literal(v))));

/**
 * The status machine: todo → in_progress → review → done; any open status → blocked or
 * cancelled; a blocked task resumes (todo/in_progress); review can go back to in_progress.
 * done and cancelled are final.
 */
const TRANSITIONS: Record<TaskStatus, readonly TaskStatus[]> = {
  todo: ['in_progress', 'blocked', 'cancelled'],
  in_progress: ['review', 'todo', 'blocked', 'cancelled'],
  review: ['done', 'in_progress', 'blocked', 'cancelled'],
  blocked: ['todo', 'in_progress', 'cancelled'],
  done: [],
  cancelled: [],
};

export function canTransition(from: TaskStatus, to: TaskStatus): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

export const allowedFrom = (from: TaskStatus) => TRANSITIONS[from];

/** De-duplication key of a title: case and whitespace do not make a task new. */
export const titleKey = (title: string) => title.normalize('NFKC').trim().replace(/\s+/g, ' ').toLowerCase();

/** URL slug of a name: accents folded, anything else than a-z0-9 becomes one dash; "" when nothing is left. */
export function slugify(name: string): string {
  return name.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase()
    .replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 80).replace(/-+$/g, '');
}

/** A comma-separated filter (`?status=todo,done`) whose values must be in `allowed`; 400 names the unknown ones. */
export function csvFilter<T extends string>(name: string, value: string | undefined, allowed: readonly T[]): T[] | undefined {
  const values = csv(value);
  const unknown = values?.filter((v) => !(allowed as readonly string[]).includes(v)) ?? [];
  if (unknown.length) throw badRequest(`Unknown ${name}: ${unknown.join(', ')}`, [{ field: name, allowed }]);
  return values as T[] | undefined;
}

export const SLUG_PATTERN = '^[a-z0-9]+(?:-[a-z0-9]+)*$';


export const TaskRefSchema = Type.Object({ id: Type.Integer(), title: Type.String(), status: Type.String() });

export const TaskSchema = Type.Object({
  id: Type.Integer(),
  title: Type.String(),
  description: Nullable(Type.String()),
  status: Type.String(),
  priority: Type.String(),
  type: Type.String(),
  assignee: Nullable(Type.String()),
  product: Nullable(Type.String()),
  product_id: Nullable(Type.Integer()),
  category: Nullable(Type.String()),
  tags: Nullable(Type.String()),
  estimated_minutes: Nullable(Type.Integer()),
  due_date: Nullable(Type.String()),
  parent_task_id: Nullable(Type.Integer()),
  derivation_rule_id: Nullable(Type.String()),
  resolution: Nullable(Type.String()),
  max_duration_seconds: Nullable(Type.Integer()),
  created_by: Nullable(Type.String()),
  created_at: Type.String(),
  updated_at: Type.String(),
  completed_at: Nullable(Type.String()),
  blocked_by: Type.Optional(Type.Array(TaskRefSchema)),
  blocks: Type.Optional(Type.Array(TaskRefSchema)),
});
export type TaskView = Static<typeof TaskSchema>;

export const ProductSchema = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  slug: Type.String(),
  tagline: Nullable(Type.String()),
  description: Nullable(Type.String()),
  status: Type.String(),
  domain: Nullable(Type.String()),
  brand_color: Nullable(Type.String()),
  accent_color: Nullable(Type.String()),
  logo_url: Nullable(Type.String()),
  created_at: Type.String(),
  updated_at: Type.String(),
  stats: Type.Object({ open_tasks: Type.Integer(), done_tasks: Type.Integer(), total_tasks: Type.Integer() }),
});
