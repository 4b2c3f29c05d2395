import { and, asc, desc, eq, inArray, sql, type SQL } from 'drizzle-orm';
import { products, taskDependencies, tasks } from '../db/schema.js';
import { taskView, type TasksExec, type TaskRow } from './tasks.js';

/** Task views of `rows` with their product slugs (one query for the whole page). */
export async function withProductSlugs(db: TasksExec, rows: TaskRow[]) {
  const ids = [...new Set(rows.map((r) => r.productId).filter((id): id is number => id !== null))];
  const slugs = ids.length ? await db.select({ id: products.id, slug: products.slug }).from(products).where(inArray(products.id, ids)) : [];
  const byId = new Map(slugs.map((s) => [s.id, s.slug]));
  return rows.map((r) => taskView(r, r.productId === null ? null : byId.get(r.productId) ?? null));
}

export interface TaskFilters {
  status?: string[];
  priority?: string[];
  assignee?: string[];
  productSlugs?: string[];
  productId?: number;
  types?: string[];
  parentTaskId?: number;
  q?: string;
  next?: boolean;
}

/** The WHERE and ORDER BY of a task listing: stable order (priority then age for `next`, rank for `q`, else newest id first). */
export function taskListQuery(orgId: string, f: TaskFilters): { where: SQL; orderBy: SQL[] } {
  const where: SQL[] = [eq(tasks.orgId, orgId)];
  if (f.status) where.push(inArray(tasks.status, f.status));
  if (f.priority) where.push(inArray(tasks.priority, f.priority));
  if (f.assignee) where.push(inArray(tasks.assignee, f.assignee));
  if (f.types) where.push(inArray(tasks.type, f.types));
  if (f.parentTaskId) where.push(eq(tasks.parentTaskId, f.parentTaskId));
  if (f.productId) where.push(eq(tasks.productId, f.productId));
  if (f.productSlugs) where.push(sql`${tasks.productId} IN (SELECT id FROM products WHERE org_id = ${orgId} AND slug IN ${f.productSlugs})`);
  // Matches the generated `search` column, so the GIN index tasks_search_idx serves it.
  const tsq = f.q ? sql`websearch_to_tsquery('simple', ${f.q})` : null;
  if (tsq) where.push(sql`${tasks.search} @@ ${tsq}`);
  if (f.next) {
    where.push(eq(tasks.status, 'todo'));
    where.push(sql`NOT EXISTS (SELECT 1 FROM ${taskDependencies} d JOIN tasks b ON b.id = d.blocked_by_id WHERE d.task_id = ${tasks.id} AND b.status <> 'done')`);
  }
  const orderBy = f.next
    ? [asc(tasks.priority), asc(tasks.createdAt), asc(tasks.id)]
    : tsq ? [desc(sql`ts_rank(${tasks.search}, ${tsq})`), desc(tasks.id)] : [desc(tasks.id)];
  return { where: and(...where)!, orderBy };
}

/** Lists an org's tasks with the filters; `next` returns at most one. */
export async function listTasks(db: TasksExec, orgId: string, f: TaskFilters, p: { limit: number; offset: number }) {
  const { where, orderBy } = taskListQuery(orgId, f);
  const limit = f.next ? Math.min(p.limit, 1) : p.limit;
  const [rows, total] = await Promise.all([
    db.select().from(tasks).where(where).orderBy(...orderBy).limit(limit).offset(p.offset),
    db.select({ n: sql<number>`count(*)::int` }).from(tasks).where(where).then((r) => r[0]?.n ?? 0),
  ]);
  return { rows, total: f.next ? Math.min(total, 1) : total, limit };
}
