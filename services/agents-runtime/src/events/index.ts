import { defineHandler, planLimitsHandler, type EventHandler } from '@aos/bus';
import type { EventType } from '@aos/contracts';
import { and, eq, sql } from 'drizzle-orm';
import { agents, assignedTasks, derivations, orgBudgets, taskLineage } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import { evictIdle } from '../domain/agents.js';
import { fillTemplate, ruleMatches } from '../domain/derivation.js';
import type { Ctx } from '../service.js';

type S = typeof schema;

/** Task events (derivation rules, the per-agent task projection), billing balances (over-budget projection) and plan limits. */
export const handlers = (ctx: Ctx): EventHandler<EventType, S>[] => [
  planLimitsHandler<S>(),

  defineHandler<'tasks.task.created' | 'tasks.task.updated', S>({
    name: 'derivation-rules',
    events: ['tasks.task.created', 'tasks.task.updated'],
    async handle(event, tx, { log }) {
      const d = event.data;
      if (!event.orgId) return;
      let depth = 0;
      if (d.parentTaskId) {
        const [parent] = await tx.select({ depth: taskLineage.depth }).from(taskLineage).where(and(eq(taskLineage.orgId, event.orgId), eq(taskLineage.taskId, d.parentTaskId)));
        depth = (parent?.depth ?? 0) + 1;
        await tx.insert(taskLineage).values({ orgId: event.orgId, taskId: d.taskId, parentTaskId: d.parentTaskId, depth }).onConflictDoNothing();
      }
      if (!d.assignee) return;
      const [agent] = await tx.select().from(agents).where(and(eq(agents.orgId, event.orgId), eq(agents.name, d.assignee)));
      if (!agent || agent.derivationRules.length === 0) return;
      if (depth >= ctx.config.DERIVATION_MAX_DEPTH) {
        log.info({ taskId: d.taskId, depth }, 'derivation skipped: task is at the maximum derivation depth');
        return;
      }
      const kind = event.type === 'tasks.task.created' ? 'created' : 'updated';
      for (const rule of agent.derivationRules) {
        if (!ruleMatches(rule, kind, d)) continue;
        // One request per (task, rule), whatever the redeliveries or later updates.
        const [fresh] = await tx.insert(derivations).values({ orgId: event.orgId, taskId: d.taskId, ruleId: rule.id, agentName: agent.name }).onConflictDoNothing().returning();
        if (!fresh) continue;
        await ctx.outbox.enqueue(tx, 'agents.task.derivation_requested', {
          parentTaskId: d.taskId, ruleId: rule.id, agentName: agent.name, title: fillTemplate(rule.create.title, d).slice(0, 500),
          description: rule.create.description ? fillTemplate(rule.create.description, d).slice(0, 5_000) : null, priority: rule.create.priority ?? d.priority,
          type: rule.create.type ?? d.type, assignee: rule.create.assignee ?? null, productSlug: d.productSlug,
        }, { tenantId: event.tenantId, orgId: event.orgId, actor: { type: 'agent', id: agent.name } });
      }
    },
  }),

  defineHandler<'tasks.task.created' | 'tasks.task.updated' | 'tasks.task.completed' | 'tasks.task.cancelled' | 'tasks.task.deleted', S>({
    name: 'agent-queues',
    events: ['tasks.task.created', 'tasks.task.updated', 'tasks.task.completed', 'tasks.task.cancelled', 'tasks.task.deleted'],
    async handle(event, tx, { afterCommit }) {
      const d = event.data;
      const orgId = event.orgId;
      if (!orgId) return;
      const at = new Date(event.occurredAt);
      // A deleted task stays as a row (status `deleted`) so that its older events arriving late cannot bring it back.
      const status = event.type === 'tasks.task.completed' ? 'done' : event.type === 'tasks.task.cancelled' ? 'cancelled' : event.type === 'tasks.task.deleted' ? 'deleted' : d.status;
      // An unassigned task stays as a row with no assignee: its event time still guards against late older events.
      const assignee = d.assignee ?? '';
      const [before] = await tx.select({ assignee: assignedTasks.assignee }).from(assignedTasks).where(and(eq(assignedTasks.orgId, orgId), eq(assignedTasks.taskId, d.taskId)));
      await tx.insert(assignedTasks).values({ orgId, taskId: d.taskId, assignee, title: d.title, status, queuedSince: at, completedAt: status === 'done' ? at : null, eventAt: at })
        .onConflictDoUpdate({
          target: [assignedTasks.orgId, assignedTasks.taskId],
          set: {
            assignee, title: d.title, status, completedAt: status === 'done' ? at : null, eventAt: at,
            // The wait restarts when the task (re)enters todo or moves to another agent.
            queuedSince: sql`CASE WHEN ${assignedTasks.status} <> 'todo' OR ${assignedTasks.assignee} <> excluded.assignee THEN excluded.queued_since ELSE ${assignedTasks.queuedSince} END`,
          },
          setWhere: sql`${assignedTasks.eventAt} <= excluded.event_at`,
        });
      const touched = [assignee, before?.assignee].filter((n): n is string => !!n);
      afterCommit(() => evictIdle(ctx, orgId, touched));
    },
  }),

  defineHandler<'billing.tokens.consumed' | 'billing.tokens.credited', S>({
    name: 'org-budgets',
    events: ['billing.tokens.consumed', 'billing.tokens.credited'],
    async handle(event, tx, { afterCommit }) {
      const orgId = event.orgId;
      if (!orgId) return;
      const at = new Date(event.occurredAt);
      await tx.insert(orgBudgets).values({ orgId, tokenBalance: event.data.balance, balanceAt: at })
        .onConflictDoUpdate({ target: orgBudgets.orgId, set: { tokenBalance: event.data.balance, balanceAt: at }, setWhere: sql`${orgBudgets.balanceAt} <= excluded.balance_at` });
      afterCommit(() => evictIdle(ctx, orgId, 'all'));
    },
  }),
];
