import { defineHandler, planLimitsHandler, systemMeta } from '@aos/bus';
import { AppError } from '@aos/core';
import { and, eq } from 'drizzle-orm';
import { changelog, tasks } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { Priorities, TaskTypes } from '../domain/model.js';
import { cancelOpen, createTask, unblockDependents } from '../domain/tasks.js';
import type { Ctx } from '../service.js';

type S = typeof schema;

/** The cascades of the tasks service, each a durable consumer (effects exactly once per event). */
export const handlers = (ctx: Ctx) => [
  planLimitsHandler<S>(),

  defineHandler<'tasks.task.completed', S>({
    name: 'changelog',
    events: ['tasks.task.completed'],
    async handle(event, tx) {
      const d = event.data;
      if (!event.orgId) return;
      await tx.insert(changelog).values({
        orgId: event.orgId, taskId: d.taskId, eventId: event.id, title: d.title, agent: d.assignee, productSlug: d.productSlug,
        area: d.type, summary: d.resolution ? `${d.title}: ${d.resolution}` : d.title, completedAt: new Date(d.completedAt),
      }).onConflictDoNothing();
    },
  }),

  defineHandler<'tasks.task.completed', S>({
    name: 'unblock-dependents',
    events: ['tasks.task.completed'],
    async handle(event, tx) {
      if (!event.orgId) return;
      await unblockDependents(ctx, tx, event.orgId, event.data.taskId, systemMeta(event.tenantId, event.orgId));
    },
  }),

  defineHandler<'tasks.task.cancelled', S>({
    name: 'cancel-derived-children',
    events: ['tasks.task.cancelled'],
    async handle(event, tx) {
      if (!event.orgId) return;
      await cancelOpen(ctx, tx, event.orgId, eq(tasks.parentTaskId, event.data.taskId), `parent task ${event.data.taskId} cancelled`, systemMeta(event.tenantId, event.orgId));
    },
  }),

  defineHandler<'tasks.product.status_changed', S>({
    name: 'archive-product-tasks',
    events: ['tasks.product.status_changed'],
    async handle(event, tx) {
      if (!event.orgId || event.data.to !== 'archived') return;
      await cancelOpen(ctx, tx, event.orgId, eq(tasks.productId, event.data.productId), `product ${event.data.slug} archived`, systemMeta(event.tenantId, event.orgId));
    },
  }),

  defineHandler<'agents.task.derivation_requested', S>({
    name: 'derive-task',
    events: ['agents.task.derivation_requested'],
    async handle(event, tx, { log }) {
      const d = event.data;
      if (!event.orgId) return;
      // SHARE until commit: a cancellation of the parent (FOR UPDATE, or a cascade's plain UPDATE) waits for the child,
      // which its cascade then cancels, or has committed and is seen here.
      const [parent] = await tx.select().from(tasks).where(and(eq(tasks.orgId, event.orgId), eq(tasks.id, d.parentTaskId))).for('share');
      if (!parent || parent.status === 'cancelled') {
        log.info({ parentTaskId: d.parentTaskId, ruleId: d.ruleId }, 'derivation skipped: parent task missing or cancelled');
        return;
      }
      const [existing] = await tx.select({ id: tasks.id }).from(tasks).where(and(eq(tasks.parentTaskId, d.parentTaskId), eq(tasks.derivationRuleId, d.ruleId)));
      if (existing) return;
      const meta = { tenantId: event.tenantId, orgId: event.orgId, actor: { type: 'agent' as const, id: d.agentName } };
      await createTask(ctx, tx, event.orgId, {
        title: d.title, description: d.description, priority: (Priorities as readonly string[]).includes(d.priority) ? d.priority : parent.priority,
        type: (TaskTypes as readonly string[]).includes(d.type) ? d.type : parent.type, assignee: d.assignee, product: { id: parent.productId },
        parentTaskId: parent.id, derivationRuleId: d.ruleId, createdBy: `agent:${d.agentName}`,
      }, meta).catch(async (err: unknown) => {
        const code = err instanceof AppError ? err.code : undefined;
        if (code === 'PLAN_LIMIT_REACHED') {
          // Refused like a client's task, but said so (activity log) instead of dead-lettered: retrying cannot help
          // before the plan changes, and then the derivation would land at a surprising time. Nothing was written yet.
          const [limit] = (err as AppError).details as [{ limit: string; used: number; max: number; tier: string }];
          log.warn({ parentTaskId: d.parentTaskId, ruleId: d.ruleId, ...limit }, 'derivation refused: plan limit reached');
          await ctx.outbox.enqueue(tx, 'tasks.task.derivation_refused', {
            parentTaskId: parent.id, ruleId: d.ruleId, agentName: d.agentName, title: d.title, reason: 'plan_limit', ...limit,
          }, meta);
          return;
        }
        // Nothing to derive when an open task already has this title, or the product was archived meanwhile:
        // retrying would fail the same way.
        if (code !== 'CONFLICT' && code !== 'UNPROCESSABLE' && code !== 'NOT_FOUND') throw err;
        log.info({ parentTaskId: d.parentTaskId, ruleId: d.ruleId, code }, 'derivation skipped');
      });
    },
  }),
];
