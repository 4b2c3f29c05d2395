/** The processes of the system, their ports and databases (DESIGN.md). */
export const Services = {
  identity: { port: 4001, database: 'aos_identity', urlEnv: 'IDENTITY_URL' },
  'agents-runtime': { port: 4002, database: 'aos_agents', urlEnv: 'AGENTS_RUNTIME_URL' },
  tasks: { port: 4003, database: 'aos_tasks', urlEnv: 'TASKS_URL' },
  billing: { port: 4004, database: 'aos_billing', urlEnv: 'BILLING_URL' },
  notifications: { port: 4005, database: 'aos_notifications', urlEnv: 'NOTIFICATIONS_URL' },
  backups: { port: 4006, database: 'aos_backups', urlEnv: 'BACKUPS_URL' },
} as const;

export type ServiceName = keyof typeof Services;
export const ServiceNames = Object.keys(Services) as ServiceName[];
export const GATEWAY_PORT = 3001;

/**
 * Public path prefixes (after `/api` or `/api/v1`) and the service that owns them,
 * per reference/endpoints.tsv. The longest matching prefix wins.
 */
export const RoutePrefixes: ReadonlyArray<readonly [string, ServiceName]> = [
  ['/auth', 'identity'],
  ['/users', 'identity'],
  ['/organizations', 'identity'],
  ['/teams', 'identity'],
  ['/credentials', 'identity'],
  ['/integrations', 'identity'],
  ['/agents', 'agents-runtime'],
  ['/agent-runs', 'agents-runtime'],
  ['/agent-metrics', 'agents-runtime'],
  ['/chat', 'agents-runtime'],
  ['/automations', 'agents-runtime'],
  ['/factory-workers', 'agents-runtime'],
  ['/discovery-engines', 'agents-runtime'],
  ['/rules', 'agents-runtime'],
  ['/logs', 'agents-runtime'],
  ['/files', 'agents-runtime'],
  ['/bull-queue', 'agents-runtime'],
  ['/v1/public/agents', 'agents-runtime'],
  ['/v1/public/templates', 'agents-runtime'],
  ['/tasks', 'tasks'],
  ['/products', 'tasks'],
  ['/changelog', 'tasks'],
  ['/task-queue', 'tasks'],
  ['/v1/public/tasks', 'tasks'],
  ['/billing', 'billing'],
  ['/tokens', 'billing'],
  ['/notifications', 'notifications'],
  ['/activity-log', 'notifications'],
  ['/webhooks', 'notifications'],
  ['/backups', 'backups'],
];

export function serviceForPath(path: string): ServiceName | null {
  let best: readonly [string, ServiceName] | null = null;
  for (const entry of RoutePrefixes) {
    const [prefix] = entry;
    if ((path === prefix || path.startsWith(prefix + '/')) && (!best || prefix.length > best[0].length)) {
      best = entry;
    }
  }
  return best ? best[1] : null;
}
