import { adminPrincipal, createNamespace, removeNamespace, startTestService, userPrincipal, waitFor, type TestNamespace } from '@aos/testkit';
import type { Principal } from '@aos/contracts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service as agentsService } from '../../services/agents-runtime/src/service.js';
import { service as billingService } from '../../services/billing/src/service.js';
import { service as notificationsService } from '../../services/notifications/src/service.js';
import { service as tasksService } from '../../services/tasks/src/service.js';

/** The cascades of DESIGN.md across real services sharing one bus namespace. */
let ns: TestNamespace;
let tasks: Awaited<ReturnType<typeof startTestService<typeof tasksService.schema, typeof tasksService.config>>>;
let agents: Awaited<ReturnType<typeof startTestService<typeof agentsService.schema, typeof agentsService.config>>>;
let billing: Awaited<ReturnType<typeof startTestService<typeof billingService.schema, typeof billingService.config>>>;
let notifications: Awaited<ReturnType<typeof startTestService<typeof notificationsService.schema, typeof notificationsService.config>>>;
const owner: Principal = userPrincipal();

beforeAll(async () => {
  ns = createNamespace();
  [tasks, agents, billing, notifications] = await Promise.all([
    startTestService(tasksService, { namespace: ns }),
    startTestService(agentsService, { namespace: ns }),
    startTestService(billingService, { namespace: ns }),
    startTestService(notificationsService, { namespace: ns }),
  ]);
});
afterAll(async () => {
  await Promise.all([tasks?.close(), agents?.close(), billing?.close(), notifications?.close()]);
  await removeNamespace(ns);
});

describe('cross-service cascades', () => {
  it('a task for an agent with a derivation rule gets its derived child from the tasks service', async () => {
    const created = await agents.inject(owner, { method: 'POST', url: '/agents', payload: { name: 'builder', derivation_rules: [{ id: 'review', when: { type: 'feature' }, create: { title: 'Review: {title}', type: 'research', assignee: 'reviewer' } }] } });
    expect(created.statusCode).toBe(201);
    const parent = (await tasks.inject(owner, { method: 'POST', url: '/tasks', payload: { title: 'Build the pricing page', assignee: 'builder', type: 'feature' } })).json().data;
    const child = await waitFor(async () => (await tasks.inject(owner, { method: 'GET', url: `/tasks?parent_task_id=${parent.id}` })).json().data[0], { message: 'derived task' });
    expect(child).toMatchObject({ title: 'Review: Build the pricing page', assignee: 'reviewer', derivation_rule_id: 'review', type: 'research' });
  });

  it('completing a task lands in the changelog, the activity log and the agent queue metrics', async () => {
    const t = (await tasks.inject(owner, { method: 'POST', url: '/tasks', payload: { title: 'Ship onboarding', assignee: 'builder', type: 'bug' } })).json().data;
    for (const status of ['in_progress', 'review', 'done']) await tasks.inject(owner, { method: 'PATCH', url: `/tasks/${t.id}`, payload: { status } });
    await waitFor(async () => (await tasks.inject(owner, { method: 'GET', url: `/changelog?task_id=${t.id}` })).json().meta.total === 1);
    await waitFor(async () => (await notifications.inject(owner, { method: 'GET', url: `/activity-log?action=tasks.task.completed&entity_id=${t.id}` })).json().meta.total === 1, { message: 'activity row' });
    await waitFor(async () => (await agents.inject(owner, { method: 'GET', url: '/agent-metrics/efficiency' })).json().data.find((a: { agent: string }) => a.agent === 'builder')?.tasks_completed >= 1, { message: 'agent metrics' });
  });

  it('a finished agent run consumes its tokens on the billing ledger exactly once', async () => {
    const grant = await billing.inject(adminPrincipal(), { method: 'POST', url: '/tokens/grant', payload: { org_id: owner.orgId, amount: 10_000 } });
    expect(grant.statusCode).toBe(200);
    const run = (await agents.inject(owner, { method: 'POST', url: '/agents/builder/runs', payload: { input: 'Draft the release notes' } })).json().data;
    const done = await waitFor(async () => {
      const r = (await agents.inject(owner, { method: 'GET', url: `/agent-runs/${run.id}` })).json().data;
      return r.status === 'succeeded' ? r : null;
    });
    const balance = await waitFor(async () => {
      const b = (await billing.inject(owner, { method: 'GET', url: '/tokens/balance' })).json().data.balance;
      return b < 10_000 ? b : null;
    }, { message: 'tokens consumed' });
    expect(balance).toBe(10_000 - done.total_tokens);
    const consumes = (await billing.inject(owner, { method: 'GET', url: '/tokens/transactions?type=consume' })).json().data;
    expect(consumes).toHaveLength(1);
  });
});
