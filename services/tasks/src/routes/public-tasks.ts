import { metaFromPrincipal } from '@aos/bus';
import { badRequest } from '@aos/core';
import { Envelope, ListEnvelope, list, ok, orgOf, page, PaginationQuery, type App } from '@aos/http';
import { Type } from '@sinclair/typebox';
import { csvFilter, literals, Nullable, TaskStatusInputs, taskStatus, TaskTypes } from '../domain/model.js';
import { createTask, getTask, updateTask, type TaskRow } from '../domain/tasks.js';
import type { Ctx } from '../service.js';
import { listTasks } from '../domain/task-list.js';
import { callerName, IdParam } from './tasks.js';

/** The public API speaks low|medium|high|critical; tasks store P3..P0. */
const TO_PRIORITY = { critical: 'P0', high: 'P1', medium: 'P2', low: 'P3' } as const;
const FROM_PRIORITY: Record<string, string> = { P0: 'critical', P1: 'high', P2: 'medium', P3: 'low' };
const PublicPriorities = ['low', 'medium', 'high', 'critical'] as const;

const PublicTask = Type.Object({
  id: Type.Integer(), title: Type.String(), description: Nullable(Type.String()), type: Type.String(), priority: Type.String(),
  status: Type.String(), assigned_to: Nullable(Type.String()), product_id: Nullable(Type.Integer()), parent_task_id: Nullable(Type.Integer()),
  resolution: Nullable(Type.String()), max_duration_seconds: Nullable(Type.Integer()), created_at: Type.String(), updated_at: Type.String(),
  completed_at: Nullable(Type.String()),
});

const view = (t: TaskRow) => ({
  id: t.id, title: t.title, description: t.description, type: t.type, priority: FROM_PRIORITY[t.priority] ?? 'medium', status: t.status,
  assigned_to: t.assignee, product_id: t.productId, parent_task_id: t.parentTaskId, resolution: t.resolution,
  max_duration_seconds: t.maxDurationSeconds, created_at: t.createdAt.toISOString(), updated_at: t.updatedAt.toISOString(),
  completed_at: t.completedAt?.toISOString() ?? null,
});

const Body = {
  title: Type.String({ minLength: 1, maxLength: 500, pattern: '\\S' }),
  description: Type.Optional(Nullable(Type.String({ maxLength: 20_000 }))),
  type: Type.Optional(literals(TaskTypes)),
  priority: Type.Optional(literals(PublicPriorities)),
  status: Type.Optional(literals(TaskStatusInputs)),
  assigned_to: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 200 }))),
  product_id: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 2_147_483_647 }))),
  max_duration_seconds: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 30 * 86_400 }))),
};

export async function publicTaskRoutes(app: App, ctx: Ctx) {
  app.get('/v1/public/tasks', {
    config: { scope: 'tasks:read' },
    schema: {
      tags: ['Public API'], summary: 'List tasks',
      querystring: Type.Object({
        ...PaginationQuery,
        status: Type.Optional(Type.String({ maxLength: 200, description: 'Comma-separated statuses' })),
        priority: Type.Optional(Type.String({ maxLength: 100, description: 'Comma-separated: low, medium, high, critical' })),
        assigned_to: Type.Optional(Type.String({ maxLength: 200 })),
        product_id: Type.Optional(Type.Integer({ minimum: 1, maximum: 2_147_483_647 })),
      }),
      response: { 200: ListEnvelope(PublicTask) },
    },
  }, async (request) => {
    const q = request.query;
    const p = page(q);
    const { rows, total } = await listTasks(ctx.db, orgOf(request), {
      status: csvFilter('status', q.status, TaskStatusInputs)?.map(taskStatus),
      priority: csvFilter('priority', q.priority, PublicPriorities)?.map((pr) => TO_PRIORITY[pr]),
      assignee: q.assigned_to ? [q.assigned_to] : undefined, productId: q.product_id,
    }, p);
    return list(rows.map(view), total, p);
  });

  app.post('/v1/public/tasks', {
    config: { scope: 'tasks:write' },
    schema: { tags: ['Public API'], summary: 'Create a task', body: Type.Object(Body, { additionalProperties: false }), response: { 201: Envelope(PublicTask) } },
  }, async (request, reply) => {
    const orgId = orgOf(request);
    const b = request.body;
    const { task } = await ctx.db.transaction((tx) => createTask(ctx, tx, orgId, {
      title: b.title, description: b.description, type: b.type, priority: b.priority ? TO_PRIORITY[b.priority] : undefined,
      status: b.status && taskStatus(b.status), assignee: b.assigned_to, product: { id: b.product_id }, maxDurationSeconds: b.max_duration_seconds,
      createdBy: callerName(request) || null,
    }, metaFromPrincipal(request.principal)));
    return reply.status(201).send(ok(view(task)));
  });

  app.get('/v1/public/tasks/:id', {
    config: { scope: 'tasks:read' },
    schema: { tags: ['Public API'], summary: 'Get a task', params: IdParam, response: { 200: Envelope(PublicTask) } },
  }, async (request) => ok(view(await getTask(ctx.db, orgOf(request), request.params.id))));

  app.patch('/v1/public/tasks/:id', {
    config: { scope: 'tasks:write' },
    schema: {
      tags: ['Public API'], summary: 'Update a task', params: IdParam,
      body: Type.Object({ ...Body, title: Type.Optional(Body.title), resolution: Type.Optional(Nullable(Type.String({ maxLength: 5_000 }))) }, { additionalProperties: false }),
      response: { 200: Envelope(PublicTask) },
    },
  }, async (request) => {
    const b = request.body;
    if (Object.keys(b).length === 0) throw badRequest('Nothing to update');
    const { task } = await ctx.db.transaction((tx) => updateTask(ctx, tx, orgOf(request), request.params.id, {
      title: b.title, description: b.description, type: b.type, priority: b.priority ? TO_PRIORITY[b.priority] : undefined,
      status: b.status && taskStatus(b.status), assignee: b.assigned_to, product: b.product_id === undefined ? undefined : { id: b.product_id },
      resolution: b.resolution, maxDurationSeconds: b.max_duration_seconds,
    }, metaFromPrincipal(request.principal)));
    return ok(view(task));
  });

  app.delete('/v1/public/tasks/:id', {
    config: { scope: 'tasks:write' },
    schema: { tags: ['Public API'], summary: 'Archive a task (sets status to cancelled)', params: IdParam, response: { 200: Envelope(PublicTask) } },
  }, async (request) => {
    const orgId = orgOf(request);
    const { task } = await ctx.db.transaction(async (tx) => {
      const current = await getTask(tx, orgId, request.params.id, 'update');
      if (current.status === 'cancelled' || current.status === 'done') return { task: current };
      return updateTask(ctx, tx, orgId, request.params.id, { status: 'cancelled' }, metaFromPrincipal(request.principal));
    });
    return ok(view(task));
  });
}
