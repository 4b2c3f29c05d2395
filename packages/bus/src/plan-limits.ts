import { limitsFromEvent } from '@aos/contracts';
import { recordPlanLimits } from '@aos/db';
import { defineHandler } from './consumer.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySchema = Record<string, any>;

/**
 * Keeps the `plan_limits` projection (see `enforcePlanLimit` in @aos/db) of a service that
 * enforces plan limits, from what billing announces; the newest `occurredAt` wins.
 */
export const planLimitsHandler = <S extends AnySchema>() => defineHandler<'billing.subscription.changed', S>({
  name: 'plan-limits',
  events: ['billing.subscription.changed'],
  async handle(event, tx) {
    if (!event.orgId) return;
    await recordPlanLimits(tx, event.orgId, event.data.tier, limitsFromEvent(event.data), new Date(event.occurredAt));
  },
});
