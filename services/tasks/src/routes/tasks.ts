import { metaFromPrincipal } from '@aos/bus';
import { csv, Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { csvFilter, literals, Nullable, Priorities, TaskSchema, TaskStatusInputs, taskStatus, TaskTypes } from '../domain/model.js';
import { listTasks, withProductSlugs } from '../domain/task-list.js';
import { addDependency, createTask, deleteTask, dependencyRefs, getTask, removeDependency, productSlugOf, taskView, updateTask } from '../domain/tasks.js';
import type { Ctx } from '../service.js';

export const IdParam = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) });
const Title = Type.String({ minLength: 1, maxLength: 500, pattern: '\\S' });
const Text = (max: number) => Type.String({ maxLength: max });
const Name = Type.String({ minLength: 1, maxLength: 200 });

/** Fields a client may set on create and on update. */
const TaskFields = {
  description: Type.Optional(Nullable(Text(20_000))),
  status: Type.Optional(literals(TaskStatusInputs)),
  priority: Type.Optional(literals(Priorities)),
  type: Type.Optional(literals(TaskTypes)),
  assignee: Type.Optional(Nullable(Name)),
  product_slug: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 100 }))),
  category: Type.Optional(Nullable(Text(100))),
  tags: Type.Optional(Nullable(Text(500))),
  estimated_minutes: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 1_000_000 }))),
  due_date: Type.Optional(Nullable(Type.String({ format: 'date' }))),
  max_duration_seconds: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 30 * 86_400 }))),
  resolution: Type.Optional(Nullable(Text(5_000))),
};

export const CreateTaskBody = Type.Object({
  title: Title,
  ...TaskFields,
  parent_task_id: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 2_147_483_647 }))),
  blocked_by: Type.Optional(Type.Array(Type.Integer({ minimum: 1, maximum: 2_147_483_647 }), { maxItems: 100 })),
}, { additionalProperties: false });

const UpdateTaskBody = Type.Object({ title: Type.Optional(Title), ...TaskFields }, { additionalProperties: false });

export const ListQuery = Type.Object({
  ...PaginationQuery,
  status: Type.Optional(Type.String({ maxLength: 200 })),
  priority: Type.Optional(Type.String({ maxLength: 50 })),
  assignee: Type.Optional(Type.String({ maxLength: 500 })),
  product: Type.Optional(Type.String({ maxLength: 500 })),
  type: Type.Optional(Type.String({ maxLength: 200 })),
  parent_task_id: Type.Optional(Type.Integer({ minimum: 1, maximum: 2_147_483_647 })),
  q: Type.Optional(Type.String({ maxLength: 200 })),
  next: Type.Optional(Type.Boolean()),
});

/** The caller's identity for `assignee=me`: the user (or the API key's owner). */
export const callerName = (request: FastifyRequest) => request.principal.userId ?? request.principal.apiKeyId ?? '';

export async function taskRoutes(app: App, ctx: Ctx) {
  const read = { scope: 'tasks:read' as const };
  const write = { scope: 'tasks:write' as const };

  app.get('/tasks', {
    config: read,
    schema: { tags: ['Tasks'], summary: 'List tasks', querystring: ListQuery, response: { 200: ListEnvelope(TaskSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const q = request.query;
    const p = page(q);
    const assignee = csv(q.assignee)?.map((a) => (a === 'me' ? callerName(request) : a));
    const { rows, total, limit } = await listTasks(ctx.db, orgId, {
      status: csvFilter('status', q.status, TaskStatusInputs)?.map(taskStatus), priority: csvFilter('priority', q.priority, Priorities),
      types: csvFilter('type', q.type, TaskTypes), assignee, productSlugs: csv(q.product), parentTaskId: q.parent_task_id,
      q: q.q?.trim() || undefined, next: q.next,
    }, p);
    return list(await withProductSlugs(ctx.db, rows), total, { ...p, limit });
  });

  app.post('/tasks', {
    config: write,
    schema: { tags: ['Tasks'], summary: 'Create a task', body: CreateTaskBody, response: { 201: Envelope(TaskSchema) } },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    const { task, productSlug } = await ctx.db.transaction((tx) => createTask(ctx, tx, orgId, {
      title: b.title, description: b.description, status: b.status && taskStatus(b.status), priority: b.priority, type: b.type, assignee: b.assignee,
      product: { slug: b.product_slug }, category: b.category, tags: b.tags, estimatedMinutes: b.estimated_minutes,
      dueDate: b.due_date, parentTaskId: b.parent_task_id, blockedBy: b.blocked_by, maxDurationSeconds: b.max_duration_seconds,
      resolution: b.resolution,
      createdBy: callerName(request) || null,
    }, metaFromPrincipal(request.principal)));
    return reply.status(201).send(ok({ ...taskView(task, productSlug), ...(await dependencyRefs(ctx.db, orgId, task.id)) }));
  });

  app.get('/tasks/:id', {
    config: read,
    schema: { tags: ['Tasks'], summary: 'Get a task with its blockers and dependents', params: IdParam, response: { 200: Envelope(TaskSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const task = await getTask(ctx.db, orgId, request.params.id);
    return ok({ ...taskView(task, await productSlugOf(ctx.db, task.productId)), ...(await dependencyRefs(ctx.db, orgId, task.id)) });
  });

  app.patch('/tasks/:id', {
    config: write,
    schema: { tags: ['Tasks'], summary: 'Update a task (status machine enforced)', params: IdParam, body: UpdateTaskBody, response: { 200: Envelope(TaskSchema) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const b = request.body;
    const { task, productSlug } = await ctx.db.transaction((tx) => updateTask(ctx, tx, orgId, request.params.id, {
      title: b.title, description: b.description, status: b.status && taskStatus(b.status), priority: b.priority, type: b.type, assignee: b.assignee,
      product: b.product_slug === undefined ? undefined : { slug: b.product_slug }, category: b.category, tags: b.tags,
      estimatedMinutes: b.estimated_minutes, dueDate: b.due_date, resolution: b.resolution, maxDurationSeconds: b.max_duration_seconds,
    }, metaFromPrincipal(request.principal)));
    return ok({ ...taskView(task, productSlug), ...(await dependencyRefs(ctx.db, orgId, task.id)) });
  });

  app.delete('/tasks/:id', {
    config: { ...write, minRole: 'admin' },
    schema: { tags: ['Tasks'], summary: 'Delete a task permanently (admin)', params: IdParam, response: { 200: Envelope(Type.Object({ id: Type.Integer(), deleted: Type.Boolean() })) } },
  }, async (request) => {
    const orgId = orgOf(request);
    await ctx.db.transaction((tx) => deleteTask(ctx, tx, orgId, request.params.id, metaFromPrincipal(request.principal)));
    return ok({ id: request.params.id, deleted: true });
  });

  const DepsBody = Type.Object({ blocked_by: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) }, { additionalProperties: false });
  const Deps = Type.Object({ blocked_by: Type.Array(Type.Object({ id: Type.Integer(), title: Type.String(), status: Type.String() })), blocks: Type.Array(Type.Object({ id: Type.Integer(), title: Type.String(), status: Type.String() })) });

  app.get('/tasks/:id/dependencies', {
    config: read, schema: { tags: ['Tasks'], summary: 'Blockers and dependents of a task', params: IdParam, response: { 200: Envelope(Deps) } },
  }, async (request) => {
    const orgId = orgOf(request);
    await getTask(ctx.db, orgId, request.params.id);
    return ok(await dependencyRefs(ctx.db, orgId, request.params.id));
  });

  app.post('/tasks/:id/dependencies', {
    config: write, schema: { tags: ['Tasks'], summary: 'Add a blocker (cycles refused)', params: IdParam, body: DepsBody, response: { 201: Envelope(Deps) } },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    await ctx.db.transaction((tx) => addDependency(ctx, tx, orgId, request.params.id, request.body.blocked_by, metaFromPrincipal(request.principal)));
    return reply.status(201).send(ok(await dependencyRefs(ctx.db, orgId, request.params.id)));
  });

  app.delete('/tasks/:id/dependencies/:blockerId', {
    config: write,
    schema: { tags: ['Tasks'], summary: 'Remove a blocker', params: Type.Object({ id: IdParam.properties.id, blockerId: IdParam.properties.id }), response: { 200: Envelope(Deps) } },
  }, async (request) => {
    const orgId = orgOf(request);
    await ctx.db.transaction((tx) => removeDependency(ctx, tx, orgId, request.params.id, request.params.blockerId, metaFromPrincipal(request.principal)));
    return ok(await dependencyRefs(ctx.db, orgId, request.params.id));
  });
}
