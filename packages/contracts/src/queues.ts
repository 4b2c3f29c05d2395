/**
 * BullMQ queue names. Do not rename one without migrating its jobs: a renamed queue
 * strands every waiting, delayed and repeatable job of the old name in Redis.
 */
export const Queues = {
  agentRuns: 'agent-runs',
  agentSchedules: 'agent-schedules',
  discovery: 'discovery-engines',
  factory: 'factory',
  notificationDelivery: 'notification-delivery',
  webhookDelivery: 'webhook-delivery',
  email: 'email',
  backups: 'backups',
  backupRestores: 'backup-restores',
  autoTopup: 'auto-topup',
  planChanges: 'plan-changes',
  identityCleanup: 'identity-cleanup',
  agentsCleanup: 'agents-cleanup',
} as const;

export type QueueName = (typeof Queues)[keyof typeof Queues];
