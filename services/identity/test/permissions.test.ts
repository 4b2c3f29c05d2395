import type { Principal } from '@aos/contracts';
import { apiKeyPrincipal, putOnPlan } from '@aos/testkit';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actingIn, caller, register, startIdentity, type Svc } from './helpers.js';

/** The permission table of the service README, as rows of action → allowed per column. */
function readPermissionTable() {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Permission table'));
  const lines = section.split('\n').filter((l) => l.startsWith('|'));
  const cells = (l: string) => l.split('|').slice(1, -1).map((c) => c.trim());
  const columns = cells(lines[0]!).slice(1);
  return {
    columns,
    rows: lines.slice(2).map((l) => {
      const [action, ...marks] = cells(l);
      return { action: action!, allowed: Object.fromEntries(columns.map((c, i) => [c, marks[i] === '✓'])) as Record<string, boolean> };
    }),
  };
}

let svc: Svc;
let call: ReturnType<typeof caller>;
beforeAll(async () => {
  svc = await startIdentity();
  call = caller(svc);
  await register(svc); // the first user is a platform admin; the actors below must not be
});
afterAll(() => svc?.close());

type Req = [method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, body?: unknown];

/** A fresh organization with a target member, a team, an invitation and an API key to act upon. */
async function world() {
  const owner = await register(svc);
  const org = (await call(owner.principal, 'POST', '/organizations', { name: 'Permissions Inc' })).json().data;
  await putOnPlan(svc, org.id, 'teams');
  const target = await register(svc);
  const newcomer = await register(svc);
  const asOwner = actingIn(owner, org, 'owner');
  expect((await call(asOwner, 'POST', `/organizations/${org.id}/members`, { user_id: target.user.id, role: 'viewer' })).statusCode).toBe(201);
  const team = (await call(asOwner, 'POST', '/teams', { name: 'Core' })).json().data;
  const invite = (await call(asOwner, 'POST', `/organizations/${org.id}/invites`, { email: 'pending@example.com' })).json().data;
  const key = (await call(asOwner, 'POST', `/organizations/${org.id}/api-keys`, { name: 'fixture', scopes: ['org:read', 'org:write'] })).json().data;
  return { owner, org, target, newcomer, team, invite, key };
}
type World = Awaited<ReturnType<typeof world>>;

/** What each action of the table means as requests (all must pass when allowed, each must be 403 when not). */
const actions: Record<string, (w: World, actorId: string) => Req[]> = {
  'read the organization and its members': (w) => [['GET', `/organizations/${w.org.id}`], ['GET', `/organizations/${w.org.id}/members`]],
  'read teams and team members': (w) => [['GET', '/teams'], ['GET', `/teams/${w.team.id}`], ['GET', `/teams/${w.team.id}/members`]],
  'update the organization': (w) => [['PATCH', `/organizations/${w.org.id}`, { name: 'Renamed' }]],
  'add members, change roles below owner, remove members': (w) => [
    ['POST', `/organizations/${w.org.id}/members`, { user_id: w.newcomer.user.id, role: 'member' }],
    ['PATCH', `/organizations/${w.org.id}/members/${w.target.user.id}`, { role: 'admin' }],
    ['DELETE', `/organizations/${w.org.id}/members/${w.target.user.id}`],
  ],
  'invite to the organization, list and cancel invitations': (w) => [
    ['POST', `/organizations/${w.org.id}/invites`, { email: 'new@example.com', role: 'admin' }],
    ['GET', `/organizations/${w.org.id}/invites`],
    ['DELETE', `/organizations/${w.org.id}/invites/${w.invite.id}`],
  ],
  'create, change and delete teams, their members and invitations': (w) => [
    ['POST', '/teams', { name: 'Another' }],
    ['PATCH', `/teams/${w.team.id}`, { description: 'changed' }],
    ['POST', `/teams/${w.team.id}/members`, { user_id: w.target.user.id }],
    ['DELETE', `/teams/${w.team.id}/members/${w.target.user.id}`],
    ['POST', `/teams/${w.team.id}/invites`, { email: 'team-new@example.com' }],
    ['GET', `/teams/${w.team.id}/invites`],
    ['DELETE', `/teams/${w.team.id}`],
  ],
  'list, create, change, rotate, roll, revoke and delete API keys': (w) => {
    const k = `/organizations/${w.org.id}/api-keys/${w.key.id}`;
    return [
      ['GET', `/organizations/${w.org.id}/api-keys`], ['POST', `/organizations/${w.org.id}/api-keys`, { name: 'made', scopes: ['org:read', 'org:write'] }],
      ['GET', k], ['PATCH', k, { name: 'changed' }], ['GET', `${k}/usage`], ['POST', `${k}/rotate`, { grace_hours: 1 }], ['POST', `${k}/roll`],
      ['POST', `${k}/revoke`], ['DELETE', k],
    ];
  },
  'grant, change or remove the owner role, invite owners': (w) => [
    ['PATCH', `/organizations/${w.org.id}/members/${w.target.user.id}`, { role: 'owner' }],
    ['POST', `/organizations/${w.org.id}/invites`, { email: 'owner-to-be@example.com', role: 'owner' }],
    ['POST', `/organizations/${w.org.id}/members`, { user_id: w.newcomer.user.id, role: 'owner' }],
  ],
  'delete the organization': (w) => [['DELETE', `/organizations/${w.org.id}`]],
  'leave the organization (an owner only while another owner remains)': (w, actorId) => [['DELETE', `/organizations/${w.org.id}/members/${actorId}`]],
};

/** The principal of each column, acting in the world's organization. */
async function actor(column: string, w: World): Promise<{ principal: Principal; id: string }> {
  const orgRef = { id: w.org.id, tenant_id: w.org.tenant_id };
  if (column.startsWith('key ')) {
    return { principal: apiKeyPrincipal(column.slice(4).split('+'), { orgId: w.org.id, tenantId: w.org.tenant_id, userId: w.owner.user.id }), id: w.owner.user.id };
  }
  if (column === 'owner') {
    // A second owner exists, so "leave" is about the role, not about the last-owner rule.
    const other = await register(svc);
    await call(actingIn(w.owner, orgRef, 'owner'), 'POST', `/organizations/${w.org.id}/members`, { user_id: other.user.id, role: 'owner' });
    return { principal: actingIn(w.owner, orgRef, 'owner'), id: w.owner.user.id };
  }
  const u = await register(svc);
  expect((await call(actingIn(w.owner, orgRef, 'owner'), 'POST', `/organizations/${w.org.id}/members`, { user_id: u.user.id, role: column })).statusCode).toBe(201);
  return { principal: actingIn(u, orgRef, column as Principal['orgRole']), id: u.user.id };
}

describe('the README permission table', () => {
  const table = readPermissionTable();

  it('has a row for every action tested here and columns for every role and API-key scope', () => {
    expect(table.columns).toEqual(['owner', 'admin', 'member', 'viewer', 'key org:read+org:write', 'key org:read']);
    expect(table.rows.map((r) => r.action).sort()).toEqual(Object.keys(actions).sort());
  });

  for (const row of table.rows) {
    it(row.action, async () => {
      for (const column of table.columns) {
        const w = await world();
        const who = await actor(column, w);
        for (const [method, url, body] of actions[row.action]!(w, who.id)) {
          const res = await call(who.principal, method, url, body);
          const label = `${column}: ${method} ${url} → ${res.statusCode} ${res.body.slice(0, 120)}`;
          if (row.allowed[column]) expect(res.statusCode, label).toBeLessThan(300);
          else expect(res.statusCode, label).toBe(403);
        }
      }
    });
  }

  it('the last owner cannot leave or be demoted', async () => {
    const w = await world();
    const asOwner = actingIn(w.owner, w.org, 'owner');
    expect((await call(asOwner, 'DELETE', `/organizations/${w.org.id}/members/${w.owner.user.id}`)).statusCode).toBe(422);
    expect((await call(asOwner, 'PATCH', `/organizations/${w.org.id}/members/${w.owner.user.id}`, { role: 'admin' })).statusCode).toBe(422);
  });
});
