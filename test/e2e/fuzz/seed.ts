import type { App } from '@aos/http';
import { waitFor } from '@aos/testkit';
import { expect } from 'vitest';
import { dataOf, send, type Caller, type Method } from './client.js';

/** Real resources of one organization, by what a path parameter names. */
export interface Resources {
  orgId: string;
  userId: string;
  taskId: number;
  blockerTaskId: number;
  productSlug: string;
  productId: number;
  agentName: string;
  runId: number;
  automationId: number;
  templateId: number;
  publicAgentId: number;
  publicTaskId: number;
  ruleId: number;
  fileId: number;
  engineSlug: string;
  webhookId: number;
  deliveryId: number;
  notificationId: number;
  apiKeyId: string;
  teamId: string;
  inviteId: string;
  inviteToken: string;
  queueJobId: number;
}

/** Platform resources only an admin creates (credentials, backups, schedulers). */
export interface AdminResources {
  credentialKey: string;
  backupFilename: string;
  restoreId: number;
  schedulerId: string;
  /** The organization whose plan the admin plan routes set: nobody else's rate limits move. */
  managedOrgId: string;
}

export async function register(gateway: App, username: string, email: string): Promise<Caller> {
  const res = await send(gateway, null, {
    method: 'POST', url: '/api/auth/register',
    body: { username, email, password: 'correct horse battery staple', terms_accepted: true, privacy_accepted: true },
  });
  expect(res.statusCode, res.body).toBe(201);
  const d = dataOf<{ token: string; org_id: string; user: { id: string } }>(res);
  return { label: username, token: d.token, orgId: d.org_id, userId: d.user.id, email };
}

/**
 * Creates one of each resource for `caller`'s organization; every name starts with `prefix`
 * (org B's marker is what the fuzzing looks for in answers to A).
 */
export async function seedOrganization(gateway: App, caller: Caller, prefix: string): Promise<Resources> {
  const create = async <T = Record<string, unknown>>(method: Method, url: string, body: unknown = {}): Promise<T> => {
    const res = await send(gateway, caller, { method, url, body });
    expect(res.statusCode, `${method} ${url}: ${res.body}`).toBeLessThan(300);
    return dataOf<T>(res);
  };
  const product = await create<{ id: number; slug: string }>('POST', '/api/products', { name: `${prefix} product` });
  const task = await create<{ id: number }>('POST', '/api/tasks', { title: `${prefix} task`, product_slug: product.slug });
  const blocker = await create<{ id: number }>('POST', '/api/tasks', { title: `${prefix} blocker` });
  await create('POST', `/api/tasks/${task.id}/dependencies`, { blocked_by: blocker.id });
  const agent = (await create<{ agent: { name: string } }>('POST', '/api/agents', { name: `${prefix}-agent` })).agent;
  const run = await create<{ id: number }>('POST', `/api/agents/${agent.name}/runs`, { input: `${prefix} run` });
  const automation = await create<{ id: number }>('POST', '/api/automations', { name: `${prefix} automation`, agent_name: agent.name, type: 'cron', path: `${prefix}/run.md` });
  const template = await create<{ id: number }>('POST', '/api/v1/public/templates', { name: `${prefix} template`, slug: `${prefix}-template` });
  const publicAgent = await create<{ id: number }>('POST', '/api/v1/public/agents', { name: `${prefix}-public-agent`, role: 'dev' });
  const publicTask = await create<{ id: number }>('POST', '/api/v1/public/tasks', { title: `${prefix} public task` });
  const rule = await create<{ id: number }>('POST', '/api/rules', { rule: `${prefix} rule` });
  const file = await create<{ id: number }>('POST', '/api/files', { path: `${prefix}/notes.md`, content: `${prefix} notes` });
  await create('POST', '/api/logs', { agent: agent.name, message: `${prefix} log line` });
  const engine = await create<{ slug: string }>('POST', '/api/discovery-engines', { name: `${prefix} engine`, layer: 'market' });
  const webhook = await create<{ id: number }>('POST', '/api/webhooks', { url: `http://localhost:9/${prefix}`, events: ['*'], description: `${prefix} hook` });
  const notification = await create<{ id: number }>('POST', '/api/notifications', { title: `${prefix} notification`, message: `${prefix} message` });
  await create('POST', '/api/activity-log', { actor_type: 'user', actor_id: `${prefix}-actor`, action: `${prefix}.acted` });
  const apiKey = await create<{ id: string }>('POST', `/api/organizations/${caller.orgId}/api-keys`, { name: `${prefix} key` });
  const team = await create<{ id: string }>('POST', '/api/teams', { name: `${prefix} team`, description: `${prefix} team` });
  const invite = await create<{ id: string; token: string }>('POST', `/api/organizations/${caller.orgId}/invites`, { email: `${prefix}-invitee@example.com` });
  const job = await create<{ id: number }>('POST', '/api/task-queue/submit', { task_type: `${prefix}-job`, payload: { note: prefix } });
  await create('POST', '/api/billing/costs', { source: `${prefix}-source`, reference_id: `${prefix}-ref`, amount_usd: 1, description: `${prefix} cost` });
  // Every event of the organization is offered to the webhook (which cannot be reached): a delivery row.
  const delivery = await waitFor(async () => {
    const res = await send(gateway, caller, { method: 'GET', url: `/api/webhooks/${webhook.id}/deliveries` });
    return dataOf<{ id: number }[]>(res)[0];
  }, { message: `a webhook delivery for ${prefix}` });
  return {
    orgId: caller.orgId, userId: caller.userId, taskId: task.id, blockerTaskId: blocker.id, productSlug: product.slug, productId: product.id, agentName: agent.name,
    runId: run.id, automationId: automation.id, templateId: template.id, publicAgentId: publicAgent.id, publicTaskId: publicTask.id,
    ruleId: rule.id, fileId: file.id, engineSlug: engine.slug, webhookId: webhook.id, deliveryId: delivery.id, notificationId: notification.id,
    apiKeyId: apiKey.id, teamId: team.id, inviteId: invite.id, inviteToken: invite.token, queueJobId: job.id,
  };
}

export async function seedPlatform(gateway: App, admin: Caller, prefix: string, managedOrgId: string): Promise<AdminResources> {
  const post = (url: string, body: unknown) => send(gateway, admin, { method: 'POST', url, body });
  const credential = await post('/api/credentials', { key: `${prefix}.credential`, value: `${prefix} secret value` });
  expect(credential.statusCode, credential.body).toBe(201);
  const scheduler = await post('/api/bull-queue/submit-scheduled', { queue: 'factory', name: `${prefix}-schedule`, data: {}, every: 3_600_000 });
  expect(scheduler.statusCode, scheduler.body).toBe(201);
  const trigger = await post('/api/backups/trigger', {});
  expect(trigger.statusCode, trigger.body).toBe(200);
  const backup = await waitFor(async () => {
    const list = dataOf<{ filename: string; status: string }[]>(await send(gateway, admin, { method: 'GET', url: '/api/backups' }));
    return list.find((b) => b.status === 'completed');
  }, { message: 'a completed backup' });
  // The stack backs up only a scratch database, so a real restore of it is harmless.
  const restore = await post(`/api/backups/${encodeURIComponent(backup.filename)}/restore`, { confirm: backup.filename });
  expect(restore.statusCode, restore.body).toBe(202);
  const restoreId = dataOf<{ id: number }>(restore).id;
  await waitFor(async () => {
    const r = dataOf<{ status: string }>(await send(gateway, admin, { method: 'GET', url: `/api/backups/restores/${restoreId}` }));
    return r.status === 'succeeded' || r.status === 'failed';
  }, { message: 'the restore to finish' });
  return { credentialKey: `${prefix}.credential`, backupFilename: backup.filename, restoreId, schedulerId: dataOf<{ id: string }>(scheduler).id, managedOrgId };
}

/** The value of path parameter `name` of `path` among an organization's resources. */
export function pathValue(path: string, name: string, r: Resources, p: AdminResources): string {
  const id = (v: string | number) => String(v);
  if (name === 'orgId') return path.startsWith('/api/billing/admin/orgs/') ? p.managedOrgId : r.orgId;
  if (name === 'keyId') return r.apiKeyId;
  if (name === 'inviteId') return r.inviteId;
  if (name === 'token') return r.inviteToken;
  if (name === 'blockerId') return id(r.blockerTaskId);
  if (name === 'deliveryId') return id(r.deliveryId);
  if (name === 'userId') return r.userId;
  if (name === 'name') return r.agentName;
  if (name === 'filename') return p.backupFilename;
  if (name === 'queue') return 'factory';
  if (name === 'key') return p.credentialKey;
  if (name === 'slug') return path.startsWith('/api/products') ? r.productSlug : r.engineSlug;
  const byPrefix: [string, string | number][] = [
    ['/api/backups/restores/', p.restoreId], ['/api/organizations/', r.orgId], ['/api/teams/', r.teamId], ['/api/users/', r.userId], ['/api/tasks/', r.taskId],
    ['/api/agent-runs/', r.runId], ['/api/automations/', r.automationId], ['/api/files/', r.fileId], ['/api/notifications/', r.notificationId],
    ['/api/rules/', r.ruleId], ['/api/task-queue/', r.queueJobId], ['/api/webhooks/', r.webhookId], ['/api/v1/public/agents/', r.publicAgentId],
    ['/api/v1/public/tasks/', r.publicTaskId], ['/api/v1/public/templates/', r.templateId], ['/api/bull-queue/', p.schedulerId],
    ['/api/integrations/', 'github'],
  ];
  const hit = byPrefix.find(([prefix]) => path.startsWith(prefix));
  if (!hit) throw new Error(`no resource for {${name}} of ${path}`);
  return id(hit[1]);
}

/** Parameters naming something every organization shares (an integration kind, a queue): no "foreign" value exists. */
export const sharedParameter = (path: string, name: string) => name === 'queue' || (path.startsWith('/api/integrations/') && name === 'id');
