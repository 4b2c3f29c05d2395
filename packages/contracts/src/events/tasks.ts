import { Type } from '@sinclair/typebox';
import { defineEvent, Nullable } from './define.js';

const TaskRef = {
  taskId: Type.Integer(), title: Type.String(), status: Type.String(), priority: Type.String(),
  type: Type.String(), assignee: Nullable(Type.String()), productId: Nullable(Type.Integer()),
  productSlug: Nullable(Type.String()), parentTaskId: Nullable(Type.Integer()), createdBy: Nullable(Type.String()),
};

export const tasksEvents = {
  'tasks.task.created': defineEvent('tasks.task.created', 1, Type.Object(TaskRef)),
  'tasks.task.updated': defineEvent('tasks.task.updated', 1, Type.Object({
    ...TaskRef, changes: Type.Array(Type.String()), previousStatus: Nullable(Type.String()), previousAssignee: Nullable(Type.String()),
  })),
  'tasks.task.completed': defineEvent('tasks.task.completed', 1, Type.Object({ ...TaskRef, completedAt: Type.String(), resolution: Nullable(Type.String()) })),
  'tasks.task.cancelled': defineEvent('tasks.task.cancelled', 1, Type.Object({ ...TaskRef, reason: Nullable(Type.String()) })),
  /** Deleted permanently by an admin: the task as it was. */
  'tasks.task.deleted': defineEvent('tasks.task.deleted', 1, Type.Object(TaskRef)),
  /** A derived task (agents.task.derivation_requested) was not created: the plan's tasks per month are used up. */
  'tasks.task.derivation_refused': defineEvent('tasks.task.derivation_refused', 1, Type.Object({
    parentTaskId: Type.Integer(), ruleId: Type.String(), agentName: Type.String(), title: Type.String(),
    reason: Type.Literal('plan_limit'), limit: Type.String(), used: Type.Integer(), max: Type.Integer(), tier: Type.String(),
  })),
  'tasks.product.created': defineEvent('tasks.product.created', 1, Type.Object({ productId: Type.Integer(), slug: Type.String(), name: Type.String(), status: Type.String() })),
  'tasks.product.updated': defineEvent('tasks.product.updated', 1, Type.Object({ productId: Type.Integer(), slug: Type.String(), changes: Type.Array(Type.String()) })),
  'tasks.product.status_changed': defineEvent('tasks.product.status_changed', 1, Type.Object({
    productId: Type.Integer(), slug: Type.String(), from: Type.String(), to: Type.String(),
  })),
};
