import { defineHandler, type EventHandler } from '@aos/bus';
import type { EventType } from '@aos/contracts';
import { and, eq } from 'drizzle-orm';
import { agents, assignedTasks, derivations, type DerivationRule } from '../db/schema.js';
import type * as schema from '../db/schema.js';
import type { Ctx } from '../service.js';

type S = typeof schema;

export function ruleMatches(rule: DerivationRule, kind: 'created' | 'updated', task: { type: string; status: string; title: string }): boolean {
  const w = rule.when ?? {};
  if (w.on && w.on !== 'any' && w.on !== kind) return false;
  if (w.type && w.type !== task.type) return false;
  if (w.status && w.status !== task.status) return false;
  if (w.title_matches) {
    try {
      if (!new RegExp(w.title_matches, 'i').test(task.title)) return false;
    } catch {
      return false;
    }
  }
  return true;
}

const fill = (template: string, task: { title: string; taskId: number }) => template.replaceAll('{title}', task.title).replaceAll('{id}', String(task.taskId));

/** Task events from the tasks service: derivation rules of the assignee agent, and per-agent queue state. */
export const handlers = (_ctx: Ctx): EventHandler<EventType, S>[] => [
  defineHandler<'tasks.task.created' | 'tasks.task.updated', S>({
    name: 'derivation-rules',
    events: ['tasks.task.created', 'tasks.task.updated'],
    async handle(event, tx) {
      const d = event.data;
      if (!event.orgId || !d.assignee) return;
      const [agent] = await tx.select().from(agents).where(and(eq(agents.orgId, event.orgId), eq(agents.name, d.assignee)));
      if (!agent) return;
      const kind = event.type === 'tasks.task.created' ? 'created' : 'updated';
      for (const rule of agent.derivationRules) {
        if (!ruleMatches(rule, kind, d)) continue;
        // One request per (task, rule), whatever the redeliveries or later updates.
        const [fresh] = await tx.insert(derivations).values({ orgId: event.orgId, taskId: d.taskId, ruleId: rule.id, agentName: agent.name }).onConflictDoNothing().returning();
        if (!fresh) continue;
        await _ctx.outbox.enqueue(tx, 'agents.task.derivation_requested', {
          parentTaskId: d.taskId, ruleId: rule.id, agentName: agent.name, title: fill(rule.create.title, d).slice(0, 500),
          description: rule.create.description ? fill(rule.create.description, d) : null, priority: rule.create.priority ?? d.priority,
          type: rule.create.type ?? d.type, assignee: rule.create.assignee ?? null, productSlug: d.productSlug,
        }, { tenantId: event.tenantId, orgId: event.orgId, actor: { type: 'agent', id: agent.name } });
      }
    },
  }),

  defineHandler<'tasks.task.created' | 'tasks.task.updated' | 'tasks.task.completed' | 'tasks.task.cancelled', S>({
    name: 'agent-queues',
    events: ['tasks.task.created', 'tasks.task.updated', 'tasks.task.completed', 'tasks.task.cancelled'],
    async handle(event, tx) {
      const d = event.data;
      if (!event.orgId) return;
      if (!d.assignee) {
        await tx.delete(assignedTasks).where(and(eq(assignedTasks.orgId, event.orgId), eq(assignedTasks.taskId, d.taskId)));
        return;
      }
      const at = new Date(event.occurredAt);
      const status = event.type === 'tasks.task.completed' ? 'done' : event.type === 'tasks.task.cancelled' ? 'cancelled' : d.status;
      await tx.insert(assignedTasks).values({ orgId: event.orgId, taskId: d.taskId, assignee: d.assignee, status, queuedSince: at, completedAt: status === 'done' ? at : null })
        .onConflictDoUpdate({ target: [assignedTasks.orgId, assignedTasks.taskId], set: { assignee: d.assignee, status, completedAt: status === 'done' ? at : null } });
    },
  }),
];
