import { subjectFor } from '@aos/bus';
import { limitsOf, limitsPayload, type PlanLimits, type TierSlug } from '@aos/contracts';
import type { ServiceContext } from '@aos/runtime';
import { randomUUID } from 'node:crypto';
import { waitFor } from './wait.js';

interface PlanOptions {
  /** Negotiated limits laid over the tier's (null = unlimited), as a managed Enterprise plan has. */
  limits?: Partial<PlanLimits>;
  /** When billing decided it (default now): an older one than the org's current plan changes nothing. */
  occurredAt?: string;
}

/**
 * Puts an organization on a plan the way billing does: publishes `billing.subscription.changed`
 * on the services' bus (they share one namespace) and waits until each has recorded it (its
 * plan-limits consumer's inbox row). For tests that need more agents, seats or tasks than Free.
 */
export async function putOnPlan(services: { ctx: ServiceContext } | { ctx: ServiceContext }[], orgId: string, tier: TierSlug, opts: PlanOptions = {}) {
  const all = Array.isArray(services) ? services : [services];
  const bus = await all[0]!.ctx.bus;
  const envelope = {
    id: randomUUID(), type: 'billing.subscription.changed', version: 1, source: 'billing', occurredAt: opts.occurredAt ?? new Date().toISOString(),
    tenantId: null, orgId, actor: { type: 'system', id: null },
    data: {
      subscriptionId: null, tier, previousTier: null, status: 'active', userId: null, effectiveAt: new Date().toISOString(),
      limits: limitsPayload(limitsOf(tier, opts.limits)),
    },
  };
  await bus.js.publish(subjectFor(bus.names, 'billing.subscription.changed'), JSON.stringify(envelope), { msgID: envelope.id });
  for (const svc of all) {
    await waitFor(async () => (await svc.ctx.pool.query('SELECT 1 FROM aos_inbox WHERE consumer = $1 AND event_id = $2', [`${svc.ctx.name}:plan-limits`, envelope.id])).rowCount! > 0,
      { message: `${svc.ctx.name} on the ${tier} plan` });
  }
  return envelope;
}
