import { defineHandler, systemMeta, type EventMeta } from '@aos/bus';
import type { Executor } from '@aos/db';
import { and, eq, lte, sql } from 'drizzle-orm';
import type { Ctx } from '../service.js';
import type * as schema from '../db/schema.js';
import { autoTopupConfigs, autoTopupRuns, costRecords, usageEntities } from '../db/schema.js';
import { bookUsage, post } from '../domain/ledger.js';
import { endPlanOfDeletedOrg } from '../domain/subscriptions.js';
import { enqueueTopup } from '../jobs/autotopup.js';

type S = typeof schema;

/** Reference ids under this prefix are reserved for postings the service makes itself. */
export const RESERVED_REFERENCE_PREFIX = 'aos:';

/**
 * Records that an entity exists (or no longer does). The newest event wins, so a replayed
 * or late "created" after a "deleted" never resurrects it.
 */
const AGENT_LIFECYCLE_EVENTS = [
  'agents.agent.created', 'agents.agent.updated', 'agents.agent.started', 'agents.agent.stopped',
  'agents.agent.restarted', 'agents.agent.errored', 'agents.agent.deleted',
] as const;
type AgentLifecycleEvent = typeof AGENT_LIFECYCLE_EVENTS[number];

async function track(tx: Executor, orgId: string, kind: 'agent' | 'member' | 'task' | 'personal_org', entityId: string, present: boolean, at: string, product: string | null = null) {
  const eventAt = new Date(at);
  await tx.insert(usageEntities).values({ orgId, kind, entityId, present, product, createdAt: eventAt, eventAt })
    .onConflictDoUpdate({
      target: [usageEntities.orgId, usageEntities.kind, usageEntities.entityId],
      set: { present, eventAt },
      setWhere: sql`${usageEntities.eventAt} <= ${eventAt.toISOString()}::timestamptz`,
    });
}

/** A deleted organization is never charged again: auto top-ups stop and a live plan is cancelled now. */
async function closeAccount(ctx: Ctx, tx: Executor, orgId: string, reason: string, meta: EventMeta) {
  await tx.update(autoTopupConfigs).set({ enabled: false, updatedAt: new Date() }).where(eq(autoTopupConfigs.orgId, orgId));
  await tx.update(autoTopupRuns).set({ status: 'skipped', reason, updatedAt: new Date() })
    .where(and(eq(autoTopupRuns.orgId, orgId), eq(autoTopupRuns.status, 'pending')));
  await endPlanOfDeletedOrg(ctx, tx, orgId, meta);
}

export function handlers(ctx: Ctx) {
  return [
    defineHandler<'identity.user.registered', S>({
      name: 'signup-bonus',
      events: ['identity.user.registered'],
      async handle(event, tx) {
        const { userId, personalOrgId, tenantId } = event.data;
        await track(tx, personalOrgId, 'member', userId, true, event.occurredAt);
        // Remembered so that erasing the account also closes its personal organization's billing.
        await track(tx, personalOrgId, 'personal_org', userId, true, event.occurredAt);
        if (ctx.config.SIGNUP_BONUS_TOKENS <= 0) return;
        await post(ctx, tx, {
          orgId: personalOrgId, ledger: 'tokens', type: 'signup_bonus', amount: ctx.config.SIGNUP_BONUS_TOKENS,
          referenceId: `${RESERVED_REFERENCE_PREFIX}signup:${userId}`, action: 'signup_bonus', userId,
        }, systemMeta(tenantId, personalOrgId));
      },
    }),

    defineHandler<AgentLifecycleEvent | 'identity.member.added' | 'identity.member.removed' | 'tasks.task.created', S>({
      name: 'plan-usage',
      events: [...AGENT_LIFECYCLE_EVENTS, 'identity.member.added', 'identity.member.removed', 'tasks.task.created'],
      async handle(event, tx) {
        switch (event.type) {
          case 'agents.agent.created':
          case 'agents.agent.updated':
          case 'agents.agent.started':
          case 'agents.agent.stopped':
          case 'agents.agent.restarted':
          case 'agents.agent.errored':
          case 'agents.agent.deleted':
            if (!event.orgId) return;
            // A deactivated agent (status offline) does not count against the plan; reactivating it does again.
            return track(tx, event.orgId, 'agent', String(event.data.agentId),
              event.type !== 'agents.agent.deleted' && event.data.status !== 'offline', event.occurredAt);
          case 'identity.member.added':
          case 'identity.member.removed':
            return track(tx, event.data.orgId, 'member', event.data.userId, event.type === 'identity.member.added', event.occurredAt);
          case 'tasks.task.created':
            if (!event.orgId) return;
            return track(tx, event.orgId, 'task', String(event.data.taskId), true, event.occurredAt, event.data.productSlug);
        }
      },
    }),

    // An erased account leaves every organization (no seat anywhere) and its personal
    // organization, which identity removes with it, is closed like a deleted one.
    defineHandler<'identity.user.deleted', S>({
      name: 'seats-user-deleted',
      events: ['identity.user.deleted'],
      async handle(event, tx) {
        const eventAt = new Date(event.occurredAt);
        const { userId, tenantId } = event.data;
        await tx.update(usageEntities).set({ present: false, eventAt })
          .where(and(eq(usageEntities.kind, 'member'), eq(usageEntities.entityId, userId), lte(usageEntities.eventAt, eventAt)));
        const personal = await tx.select({ orgId: usageEntities.orgId }).from(usageEntities)
          .where(and(eq(usageEntities.kind, 'personal_org'), eq(usageEntities.entityId, userId)));
        for (const { orgId } of personal) await closeAccount(ctx, tx, orgId, 'account erased', systemMeta(tenantId, orgId));
      },
    }),

    defineHandler<'identity.org.deleted', S>({
      name: 'org-deleted',
      events: ['identity.org.deleted'],
      async handle(event, tx) {
        await closeAccount(ctx, tx, event.data.orgId, 'organization deleted', systemMeta(event.data.tenantId, event.data.orgId));
      },
    }),

    defineHandler<'agents.run.completed', S>({
      name: 'run-usage',
      events: ['agents.run.completed'],
      async handle(event, tx) {
        const orgId = event.orgId;
        if (!orgId) return;
        const { runId, usage, costUsd, model, userId } = event.data;
        const meta = systemMeta(event.tenantId, orgId);
        const reference = `${RESERVED_REFERENCE_PREFIX}run:${runId}`;
        if (usage.totalTokens > 0) {
          // The run already happened: what the balance does not cover is owed, not forgiven.
          await bookUsage(ctx, tx, {
            orgId, ledger: 'tokens', amount: usage.totalTokens, referenceId: reference, action: 'agent_run', userId,
            metadata: { run_id: runId, agent_id: event.data.agentId, model, input_tokens: usage.inputTokens, output_tokens: usage.outputTokens },
          }, meta);
        }
        if (costUsd > 0 || usage.totalTokens > 0) {
          await tx.insert(costRecords).values({
            orgId, kind: 'ai', source: 'agents.run.completed', referenceId: String(runId), amountUsd: costUsd, tokens: usage.totalTokens, model,
            taskId: event.data.taskId === null ? null : String(event.data.taskId), occurredAt: new Date(event.occurredAt),
          }).onConflictDoNothing();
        }
        const cents = Math.ceil(Math.max(0, costUsd) * 100);
        if (cents > 0) {
          await bookUsage(ctx, tx, { orgId, ledger: 'credits', amount: cents, referenceId: reference, action: 'ai_cost', userId, metadata: { run_id: runId, cost_usd: costUsd } }, meta);
        }
      },
    }),

    defineHandler<'billing.balance.low', S>({
      name: 'auto-topup-trigger',
      events: ['billing.balance.low'],
      async handle(event, tx) {
        if (!event.orgId) return;
        const pending = await tx.select({ crossingId: autoTopupRuns.crossingId }).from(autoTopupRuns)
          .where(and(eq(autoTopupRuns.orgId, event.orgId), eq(autoTopupRuns.ledger, event.data.ledger), eq(autoTopupRuns.status, 'pending')));
        // jobId = crossing id: a redelivered event adds nothing.
        for (const run of pending) await enqueueTopup(ctx, run.crossingId);
      },
    }),
  ];
}
