/**
 * Plan tiers and the limits each allows: defined once here, read by billing (which sells and
 * reports them), by the gateway (rate limits) and by the services that enforce them where the
 * resource is created (agents-runtime: agents, tasks: tasks per month, identity: seats).
 */
export const TierSlugs = ['free', 'pro', 'teams', 'enterprise'] as const;
export type TierSlug = (typeof TierSlugs)[number];

export const isTierSlug = (v: unknown): v is TierSlug => typeof v === 'string' && (TierSlugs as readonly string[]).includes(v);

/** An organization billing has never told about (no `billing.subscription.changed` yet) is on this tier. */
export const DEFAULT_TIER: TierSlug = 'free';

/** `null` means unlimited / negotiated (Enterprise). */
export interface PlanLimits {
  requests_per_minute: number | null;
  requests_per_hour: number | null;
  agents: number | null;
  tasks_per_month: number | null;
  seats: number | null;
  included_tokens: number | null;
}

export const PlanLimitNames = ['requests_per_minute', 'requests_per_hour', 'agents', 'tasks_per_month', 'seats', 'included_tokens'] as const satisfies readonly (keyof PlanLimits)[];

/** The limits a service refuses to go past when it creates the resource. */
export const EnforcedPlanLimits = ['agents', 'tasks_per_month', 'seats'] as const satisfies readonly (keyof PlanLimits)[];
export type EnforcedPlanLimit = (typeof EnforcedPlanLimits)[number];

/** Each tier's default limits. Rate limits are the reference's (API overview); the others are this catalogue's. */
export const TierLimits: Record<TierSlug, PlanLimits> = {
  free: { requests_per_minute: 100, requests_per_hour: 1_000, agents: 3, tasks_per_month: 100, seats: 1, included_tokens: 1_000 },
  pro: { requests_per_minute: 600, requests_per_hour: 10_000, agents: 10, tasks_per_month: 1_000, seats: 3, included_tokens: 50_000 },
  teams: { requests_per_minute: 2_000, requests_per_hour: 50_000, agents: 50, tasks_per_month: 10_000, seats: 20, included_tokens: 250_000 },
  enterprise: { requests_per_minute: null, requests_per_hour: null, agents: null, tasks_per_month: null, seats: null, included_tokens: null },
};

/** A tier's limits with negotiated ones (a managed Enterprise plan) laid over them. */
export function limitsOf(tier: TierSlug, custom?: Partial<PlanLimits> | null): PlanLimits {
  const limits = { ...TierLimits[tier] };
  if (custom) for (const name of PlanLimitNames) if (custom[name] !== undefined) limits[name] = custom[name];
  return limits;
}

/** Limits as `billing.subscription.changed` carries them. */
export interface PlanLimitsPayload {
  requestsPerMinute: number | null; requestsPerHour: number | null; agents: number | null;
  seats: number | null; tasksPerMonth: number | null; includedTokens: number | null;
}

export const limitsPayload = (l: PlanLimits): PlanLimitsPayload => ({
  requestsPerMinute: l.requests_per_minute, requestsPerHour: l.requests_per_hour, agents: l.agents,
  seats: l.seats, tasksPerMonth: l.tasks_per_month, includedTokens: l.included_tokens,
});

/**
 * The limits a `billing.subscription.changed` says now apply: the ones it carries, else (an event
 * from before it carried them) its tier's defaults; an unknown tier without limits is the default tier.
 */
export function limitsFromEvent(data: { tier: string; limits?: PlanLimitsPayload }): PlanLimits {
  const tier = data.tier.toLowerCase();
  const base = limitsOf(isTierSlug(tier) ? tier : DEFAULT_TIER);
  const l = data.limits;
  if (!l) return base;
  return {
    requests_per_minute: l.requestsPerMinute, requests_per_hour: l.requestsPerHour, agents: l.agents,
    tasks_per_month: l.tasksPerMonth, seats: l.seats, included_tokens: l.includedTokens,
  };
}
