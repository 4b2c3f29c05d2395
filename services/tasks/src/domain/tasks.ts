import type { EventData, EventType } from '@aos/contracts';
import type { EventMeta, Outbox } from '@aos/bus';
import { AppError, conflict, notFound, unprocessable } from '@aos/core';
import { enforcePlanLimit, isUniqueViolation, type Db, type Tx } from '@aos/db';
import { and, eq, inArray, notInArray, sql } from 'drizzle-orm';
import { products, taskDependencies, taskMonthlyUsage, tasks } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { allowedFrom, canTransition, OPEN_STATUSES, titleKey, type TaskStatus, type TaskView } from './model.js';

export type TasksTx = Tx<typeof schema>;
/** Reads run on the database or inside a transaction alike. */
export type TasksExec = TasksTx | Db<typeof schema>;
export type TaskRow = typeof tasks.$inferSelect;

export interface Deps {
  outbox: Outbox;
}

export function taskView(t: TaskRow, productSlug: string | null): TaskView {
  return {
    id: t.id, title: t.title, description: t.description, status: t.status, priority: t.priority, type: t.type,
    assignee: t.assignee, product: productSlug, product_id: t.productId, category: t.category, tags: t.tags,
    estimated_minutes: t.estimatedMinutes, due_date: t.dueDate, parent_task_id: t.parentTaskId,
    derivation_rule_id: t.derivationRuleId, resolution: t.resolution, max_duration_seconds: t.maxDurationSeconds,
    created_by: t.createdBy, created_at: t.createdAt.toISOString(), updated_at: t.updatedAt.toISOString(),
    completed_at: t.completedAt?.toISOString() ?? null,
  };
}

function eventRef(t: TaskRow, productSlug: string | null) {
  return {
    taskId: t.id, title: t.title, status: t.status, priority: t.priority, type: t.type, assignee: t.assignee,
    productId: t.productId, productSlug, parentTaskId: t.parentTaskId, createdBy: t.createdBy,
  };
}

async function emit<T extends EventType>(deps: Deps, tx: TasksTx, type: T, data: EventData<T>, meta: EventMeta) {
  await deps.outbox.enqueue(tx, type, data, meta);
}

export async function productSlugOf(tx: TasksExec, productId: number | null): Promise<string | null> {
  if (productId === null) return null;
  const [p] = await tx.select({ slug: products.slug }).from(products).where(eq(products.id, productId));
  return p?.slug ?? null;
}

/**
 * The task with this id in this org, locked when asked; 404 otherwise. `key share` is for a task whose
 * status the caller relies on without changing it: its completion (updateTask locks FOR UPDATE) waits for
 * the caller's commit, or has committed and is what the caller reads.
 */
export async function getTask(tx: TasksExec, orgId: string, id: number, lock?: 'update' | 'key share'): Promise<TaskRow> {
  const q = (tx as TasksTx).select().from(tasks).where(and(eq(tasks.orgId, orgId), eq(tasks.id, id)));
  const [row] = lock ? await q.for(lock) : await q;
  if (!row) throw notFound('Task');
  return row;
}

/** A task, product or blocker named in a request body that this org does not have: 404 naming the field. */
export function missing(what: string, field: string, value: string | number | (string | number)[]): AppError {
  return new AppError('NOT_FOUND', `${what} ${JSON.stringify(value)} not found`, [{ field, value }]);
}

/** The id of the open task holding this de-duplication key in the product (or the org without product). */
async function openDuplicateId(tx: TasksExec, orgId: string, key: string, productId: number | null): Promise<number | null> {
  const [existing] = await tx.select({ id: tasks.id }).from(tasks).where(and(
    eq(tasks.orgId, orgId), eq(tasks.titleKey, key), notInArray(tasks.status, ['done', 'cancelled']),
    productId === null ? sql`${tasks.productId} IS NULL` : eq(tasks.productId, productId)));
  return existing?.id ?? null;
}

const duplicate = (existingId: number | null) => conflict('An open task with this title already exists', [{ existing_id: existingId }]);

export async function resolveProduct(tx: TasksTx, orgId: string, ref: { slug?: string | null; id?: number | null }): Promise<{ id: number; slug: string } | null> {
  if (ref.slug == null && ref.id == null) return null;
  const cond = ref.slug != null ? eq(products.slug, ref.slug) : eq(products.id, ref.id!);
  // KEY SHARE until commit: an archive (PATCH locks the product FOR UPDATE) either waits for this task, which its
  // cascade then cancels, or commits first and is seen here. Without it a task could land after the cascade ran.
  const [p] = await tx.select({ id: products.id, slug: products.slug, status: products.status }).from(products).where(and(eq(products.orgId, orgId), cond))
    .for('key share');
  if (!p) throw missing('Product', ref.slug != null ? 'product_slug' : 'product_id', ref.slug ?? ref.id!);
  if (p.status === 'archived') throw unprocessable(`Product ${p.slug} is archived`);
  return { id: p.id, slug: p.slug };
}

export interface NewTask {
  title: string;
  description?: string | null;
  status?: TaskStatus;
  priority?: string;
  type?: string;
  assignee?: string | null;
  product?: { slug?: string | null; id?: number | null };
  category?: string | null;
  tags?: string | null;
  estimatedMinutes?: number | null;
  dueDate?: string | null;
  parentTaskId?: number | null;
  derivationRuleId?: string | null;
  maxDurationSeconds?: number | null;
  resolution?: string | null;
  blockedBy?: number[];
  createdBy: string | null;
}

/** The current UTC calendar month (of the transaction's start), as `task_monthly_usage` keys it. */
const THIS_MONTH = sql`(date_trunc('month', now() AT TIME ZONE 'UTC'))::date`;

/** Tasks the organization created this month, deleted ones included. */
export async function tasksCreatedThisMonth(tx: TasksExec, orgId: string): Promise<number> {
  const [row] = await tx.select({ n: taskMonthlyUsage.created }).from(taskMonthlyUsage)
    .where(and(eq(taskMonthlyUsage.orgId, orgId), eq(taskMonthlyUsage.month, THIS_MONTH)));
  return row?.n ?? 0;
}

/**
 * Creates a task (409 with the existing id when an open task with the same normalised
 * title exists in the same product/org) and its dependencies; a task with open blockers
 * starts `blocked`. Emits `tasks.task.created`. 402 PLAN_LIMIT_REACHED (before any write) when the
 * organization created its plan's `tasks_per_month` this month already.
 */
export async function createTask(deps: Deps, tx: TasksTx, orgId: string, input: NewTask, meta: EventMeta): Promise<{ task: TaskRow; productSlug: string | null }> {
  const product = await resolveProduct(tx, orgId, input.product ?? {});
  if (input.parentTaskId != null) await getTask(tx, orgId, input.parentTaskId).catch(() => { throw missing('Parent task', 'parent_task_id', input.parentTaskId!); });
  const blockers = [...new Set(input.blockedBy ?? [])];
  let openBlockers = 0;
  if (blockers.length > 0) {
    // Locked as in addDependency: a blocker completed meanwhile is either seen done or unblocks this task after its commit.
    const found = await tx.select({ id: tasks.id, status: tasks.status }).from(tasks).where(and(eq(tasks.orgId, orgId), inArray(tasks.id, blockers)))
      .orderBy(tasks.id).for('key share');
    if (found.length !== blockers.length) throw missing('Blocking task', 'blocked_by', blockers.filter((b) => !found.some((f) => f.id === b)));
    openBlockers = found.filter((f) => f.status !== 'done').length;
  }
  let status: TaskStatus = input.status ?? 'todo';
  if (openBlockers > 0 && status === 'todo') status = 'blocked';
  const key = titleKey(input.title);
  const values = {
    orgId, title: input.title.trim(), titleKey: key, description: input.description ?? null, status,
    priority: input.priority ?? 'P2', type: input.type ?? 'feature', assignee: input.assignee ?? null,
    productId: product?.id ?? null, category: input.category ?? null, tags: input.tags ?? null,
    estimatedMinutes: input.estimatedMinutes ?? null, dueDate: input.dueDate ?? null, parentTaskId: input.parentTaskId ?? null,
    derivationRuleId: input.derivationRuleId ?? null, maxDurationSeconds: input.maxDurationSeconds ?? null, resolution: input.resolution ?? null,
    createdBy: input.createdBy, completedAt: status === 'done' ? new Date() : null,
  };
  await enforcePlanLimit(tx, orgId, 'tasks_per_month', () => tasksCreatedThisMonth(tx, orgId));
  let task: TaskRow;
  try {
    [task] = (await tx.transaction(async (sp) => sp.insert(tasks).values(values).returning())) as [TaskRow];
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    throw duplicate(await openDuplicateId(tx, orgId, key, product?.id ?? null));
  }
  await tx.insert(taskMonthlyUsage).values({ orgId, month: THIS_MONTH, created: 1 })
    .onConflictDoUpdate({ target: [taskMonthlyUsage.orgId, taskMonthlyUsage.month], set: { created: sql`${taskMonthlyUsage.created} + 1` } });
  if (blockers.length > 0) {
    await tx.insert(taskDependencies).values(blockers.map((b) => ({ orgId, taskId: task.id, blockedById: b })));
  }
  const ref = eventRef(task, product?.slug ?? null);
  await emit(deps, tx, 'tasks.task.created', ref, meta);
  if (task.status === 'done') await emit(deps, tx, 'tasks.task.completed', { ...ref, completedAt: task.completedAt!.toISOString(), resolution: task.resolution }, meta);
  return { task, productSlug: product?.slug ?? null };
}

export type TaskChanges = Partial<Omit<NewTask, 'createdBy' | 'blockedBy' | 'parentTaskId' | 'derivationRuleId'>>;

const FIELD_NAMES: Record<string, keyof TaskRow> = {
  title: 'title', description: 'description', status: 'status', priority: 'priority', type: 'type', assignee: 'assignee',
  category: 'category', tags: 'tags', estimatedMinutes: 'estimatedMinutes', dueDate: 'dueDate', resolution: 'resolution',
  maxDurationSeconds: 'maxDurationSeconds',
};

/** Applies changes under the status machine (422 on an illegal transition) and emits the events they imply. */
export async function updateTask(deps: Deps, tx: TasksTx, orgId: string, id: number, changes: TaskChanges, meta: EventMeta): Promise<{ task: TaskRow; productSlug: string | null }> {
  const before = await getTask(tx, orgId, id, 'update');
  const from = before.status as TaskStatus;
  if (changes.status && !canTransition(from, changes.status)) {
    throw unprocessable(`Cannot move a task from ${from} to ${changes.status}`, [{ from, to: changes.status, allowed: allowedFrom(from) }]);
  }
  const set: Partial<typeof tasks.$inferInsert> = {};
  const changed: string[] = [];
  for (const [field, column] of Object.entries(FIELD_NAMES)) {
    const value = (changes as Record<string, unknown>)[field];
    if (value === undefined || value === before[column]) continue;
    (set as Record<string, unknown>)[column] = value;
    changed.push(field);
  }
  if (changes.product !== undefined) {
    const product = changes.product.slug === null || changes.product.id === null ? null : await resolveProduct(tx, orgId, changes.product);
    if ((product?.id ?? null) !== before.productId) {
      set.productId = product?.id ?? null;
      changed.push('product');
    }
  }
  if (set.title) set.titleKey = titleKey(set.title);
  const to = (set.status ?? from) as TaskStatus;
  if (to === 'done' && from !== 'done') set.completedAt = new Date();
  if (changed.length === 0) return { task: before, productSlug: await productSlugOf(tx, before.productId) };
  set.updatedAt = new Date();
  let task: TaskRow;
  try {
    [task] = (await tx.transaction(async (sp) => sp.update(tasks).set(set).where(eq(tasks.id, id)).returning())) as [TaskRow];
  } catch (err) {
    if (!isUniqueViolation(err)) throw err;
    throw duplicate(await openDuplicateId(tx, orgId, set.titleKey ?? before.titleKey, set.productId !== undefined ? set.productId : before.productId));
  }
  const productSlug = await productSlugOf(tx, task.productId);
  const ref = eventRef(task, productSlug);
  await emit(deps, tx, 'tasks.task.updated', { ...ref, changes: changed, previousStatus: from, previousAssignee: before.assignee }, meta);
  if (to !== from && to === 'done') {
    await emit(deps, tx, 'tasks.task.completed', { ...ref, completedAt: task.completedAt!.toISOString(), resolution: task.resolution }, meta);
  }
  if (to !== from && to === 'cancelled') {
    await emit(deps, tx, 'tasks.task.cancelled', { ...ref, reason: changes.resolution ?? null }, meta);
  }
  return { task, productSlug };
}

/** Cancels every open task matching `where` (used by cascades); returns how many. */
export async function cancelOpen(deps: Deps, tx: TasksTx, orgId: string, where: ReturnType<typeof and>, reason: string, meta: EventMeta): Promise<number> {
  const rows = await tx.update(tasks)
    .set({ status: 'cancelled', resolution: reason, updatedAt: new Date() })
    .where(and(eq(tasks.orgId, orgId), inArray(tasks.status, [...OPEN_STATUSES]), where))
    .returning();
  for (const t of rows) {
    const ref = eventRef(t, await productSlugOf(tx, t.productId));
    await emit(deps, tx, 'tasks.task.cancelled', { ...ref, reason }, meta);
  }
  return rows.length;
}

export async function dependencyRefs(tx: TasksExec, orgId: string, id: number) {
  const blockedBy = await tx.select({ id: tasks.id, title: tasks.title, status: tasks.status }).from(taskDependencies)
    .innerJoin(tasks, eq(tasks.id, taskDependencies.blockedById))
    .where(and(eq(taskDependencies.orgId, orgId), eq(taskDependencies.taskId, id))).orderBy(tasks.id);
  const blocks = await tx.select({ id: tasks.id, title: tasks.title, status: tasks.status }).from(taskDependencies)
    .innerJoin(tasks, eq(tasks.id, taskDependencies.taskId))
    .where(and(eq(taskDependencies.orgId, orgId), eq(taskDependencies.blockedById, id))).orderBy(tasks.id);
  return { blocked_by: blockedBy, blocks };
}

/**
 * Adds `blockerId` as a blocker of `taskId`; refuses cycles. Dependency changes of one org are
 * serialised (advisory lock) so two opposite edges added at once cannot both pass the cycle check.
 * A todo task with an open blocker becomes blocked.
 */
export async function addDependency(deps: Deps, tx: TasksTx, orgId: string, taskId: number, blockerId: number, meta: EventMeta) {
  await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtextextended(${`task-dependencies:${orgId}`}, 0))`);
  const task = await getTask(tx, orgId, taskId, 'update');
  if (taskId === blockerId) throw unprocessable('A task cannot block itself', [{ field: 'blocked_by' }]);
  // Locked so that a completion racing this edge either waits for it (and then unblocks the task) or is seen here.
  const blocker = await getTask(tx, orgId, blockerId, 'key share').catch(() => { throw missing('Blocking task', 'blocked_by', blockerId); });
  const { rows } = await tx.execute<{ id: number }>(sql`
    WITH RECURSIVE upstream(id) AS (
      SELECT blocked_by_id FROM task_dependencies WHERE task_id = ${blockerId}
      UNION SELECT d.blocked_by_id FROM task_dependencies d JOIN upstream u ON d.task_id = u.id
    ) SELECT id FROM upstream WHERE id = ${taskId} LIMIT 1`);
  if (rows.length > 0) throw unprocessable('This dependency would create a cycle', [{ field: 'blocked_by', task_id: taskId, blocked_by: blockerId }]);
  await tx.insert(taskDependencies).values({ orgId, taskId, blockedById: blockerId }).onConflictDoNothing();
  if (task.status === 'todo' && blocker.status !== 'done') await updateTask(deps, tx, orgId, taskId, { status: 'blocked' }, meta);
}

/** Removes a blocker (404 when it is not one of the task's); the task resumes (blocked → todo) when its remaining blockers are all done. */
export async function removeDependency(deps: Deps, tx: TasksTx, orgId: string, taskId: number, blockerId: number, meta: EventMeta) {
  await getTask(tx, orgId, taskId, 'update');
  const removed = await tx.delete(taskDependencies)
    .where(and(eq(taskDependencies.orgId, orgId), eq(taskDependencies.taskId, taskId), eq(taskDependencies.blockedById, blockerId)))
    .returning({ id: taskDependencies.blockedById });
  if (removed.length === 0) throw notFound('Dependency');
  await resumeUnblocked(deps, tx, orgId, [taskId], meta);
}

/** Deletes a task for good; its dependents resume when their remaining blockers are all done, its children lose their parent. */
export async function deleteTask(deps: Deps, tx: TasksTx, orgId: string, id: number, meta: EventMeta) {
  const task = await getTask(tx, orgId, id, 'update');
  const dependents = await tx.select({ id: taskDependencies.taskId }).from(taskDependencies)
    .where(and(eq(taskDependencies.orgId, orgId), eq(taskDependencies.blockedById, id)));
  await tx.delete(tasks).where(and(eq(tasks.orgId, orgId), eq(tasks.id, id)));
  await emit(deps, tx, 'tasks.task.deleted', eventRef(task, await productSlugOf(tx, task.productId)), meta);
  await resumeUnblocked(deps, tx, orgId, dependents.map((d) => d.id), meta);
}

/** Of `candidates`, the blocked tasks with no open blocker left move blocked → todo; returns their ids. */
async function resumeUnblocked(deps: Deps, tx: TasksTx, orgId: string, candidates: number[], meta: EventMeta): Promise<number[]> {
  if (candidates.length === 0) return [];
  const { rows } = await tx.execute<{ id: number }>(sql`
    SELECT t.id FROM tasks t
     WHERE t.id IN ${candidates} AND t.org_id = ${orgId} AND t.status = 'blocked'
       AND NOT EXISTS (SELECT 1 FROM task_dependencies d JOIN tasks b ON b.id = d.blocked_by_id
                        WHERE d.task_id = t.id AND b.status <> 'done')
     ORDER BY t.id FOR UPDATE OF t`);
  for (const { id } of rows) await updateTask(deps, tx, orgId, id, { status: 'todo' }, meta);
  return rows.map((r) => r.id);
}

/** Dependents of a completed task whose blockers are now all done move blocked → todo. */
export async function unblockDependents(deps: Deps, tx: TasksTx, orgId: string, completedId: number, meta: EventMeta): Promise<number[]> {
  const dependents = await tx.select({ id: taskDependencies.taskId }).from(taskDependencies)
    .where(and(eq(taskDependencies.orgId, orgId), eq(taskDependencies.blockedById, completedId)));
  return resumeUnblocked(deps, tx, orgId, dependents.map((d) => d.id), meta);
}
