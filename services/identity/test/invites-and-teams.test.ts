import { apiKeyPrincipal, putOnPlan } from '@aos/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actingIn, caller, outboxOf, register, startIdentity, type Svc } from './helpers.js';

let svc: Svc;
let call: ReturnType<typeof caller>;
let outbox: ReturnType<typeof outboxOf>;
beforeAll(async () => {
  svc = await startIdentity({ INVITE_TTL_HOURS: '48' });
  call = caller(svc);
  outbox = outboxOf(svc);
  await register(svc); // platform admin
});
afterAll(() => svc?.close());

/** An owner with a shared organization (on Teams: room for members), acting in it. */
async function orgWithOwner() {
  const owner = await register(svc);
  const org = (await call(owner.principal, 'POST', '/organizations', { name: 'Invites Ltd' })).json().data;
  await putOnPlan(svc, org.id, 'teams');
  return { owner, org, as: actingIn(owner, org, 'owner') };
}

describe('organization invitations', () => {
  it('adding a member by e-mail invites them and answers alike whether the address has an account or not', async () => {
    const { owner, org, as } = await orgWithOwner();
    const known = await register(svc);
    const unknownEmail = `nobody-${Date.now()}@example.com`;
    // Everything that differs by nature (ids, addresses, tokens, times) blanked: what is left must be equal.
    const shape = (body: unknown) => JSON.parse(JSON.stringify(body, (k, v) => (['id', 'email', 'token', 'accept_url', 'expires_at', 'created_at'].includes(k) ? typeof v : v)));
    for (const url of [`/organizations/${org.id}/members`, `/organizations/${org.id}/invites`]) {
      const forKnown = await call(as, 'POST', url, { email: known.body.email, role: 'admin' });
      const forUnknown = await call(as, 'POST', url, { email: unknownEmail, role: 'admin' });
      expect(forKnown.statusCode, url).toBe(forUnknown.statusCode);
      expect(shape(forKnown.json()), url).toEqual(shape(forUnknown.json()));
      if (url.endsWith('/members')) {
        expect(forKnown.statusCode).toBe(202);
        expect(forKnown.json().data).toMatchObject({ status: 'invited', invite: { email: known.body.email, role: 'admin', team_id: null } });
        // A second try is refused alike too (a pending invitation), and nobody joined without consent.
        const repeated = [await call(as, 'POST', url, { email: known.body.email }), await call(as, 'POST', url, { email: unknownEmail })];
        expect(repeated.map((r) => r.statusCode)).toEqual([409, 409]);
        expect(repeated[0]!.json().error.message).toBe(repeated[1]!.json().error.message);
        expect((await call(as, 'GET', `/organizations/${org.id}/members`)).json().data.map((m: { user_id: string }) => m.user_id)).toEqual([owner.user.id]);
        // Accepting joins with the role asked for; the address without an account joins by signing up with the code.
        expect((await call(known.principal, 'POST', `/organizations/invites/${forKnown.json().data.invite.token}/accept`)).json().data).toMatchObject({ org_id: org.id, role: 'admin' });
        const newcomer = await register(svc, { email: unknownEmail, invite_code: forUnknown.json().data.invite.token });
        const members = (await call(as, 'GET', `/organizations/${org.id}/members`)).json().data.map((m: { user_id: string; role: string }) => [m.user_id, m.role]);
        expect(members).toEqual(expect.arrayContaining([[known.user.id, 'admin'], [newcomer.user.id, 'admin']]));
        // Once members, both are refused alike (409): the admin sees them in the member list anyway.
        const again = [await call(as, 'POST', url, { email: known.body.email }), await call(as, 'POST', url, { email: unknownEmail })];
        expect(again.map((r) => r.statusCode)).toEqual([409, 409]);
        expect((await call(as, 'DELETE', `/organizations/${org.id}/members/${known.user.id}`)).statusCode).toBe(200);
        expect((await call(as, 'DELETE', `/organizations/${org.id}/members/${newcomer.user.id}`)).statusCode).toBe(200);
      }
    }
    const created = (await outbox('identity.invite.created')).filter((e) => e.orgId === org.id);
    expect(created.map((e) => e.data.email)).toEqual([known.body.email, unknownEmail, known.body.email, unknownEmail]);
    // By id the user joins at once (the reference's form); neither or both fields is a 400.
    expect((await call(as, 'POST', `/organizations/${org.id}/members`, { user_id: known.user.id })).statusCode).toBe(201);
    expect((await call(as, 'POST', `/organizations/${org.id}/members`, { role: 'member' })).statusCode).toBe(400);
    expect((await call(as, 'POST', `/organizations/${org.id}/members`, { user_id: known.user.id, email: known.body.email })).statusCode).toBe(400);
  });

  it('expire after INVITE_TTL_HOURS, are single use, cancellable, and refuse duplicates and existing members (409)', async () => {
    const { owner, org, as } = await orgWithOwner();
    const invitee = await register(svc);
    const res = await call(as, 'POST', `/organizations/${org.id}/invites`, { email: invitee.body.email.toUpperCase(), role: 'admin' });
    expect(res.statusCode).toBe(201);
    const inv = res.json().data;
    expect(new Date(inv.expires_at).getTime() - Date.now()).toBeGreaterThan(47.9 * 3_600_000);
    expect((await call(as, 'POST', `/organizations/${org.id}/invites`, { email: invitee.body.email })).statusCode).toBe(409);
    expect((await call(as, 'POST', `/organizations/${org.id}/invites`, { email: owner.body.email })).statusCode).toBe(409); // already a member

    // Expired: not listed, cannot be accepted, and no longer blocks a new invitation.
    await svc.ctx.pool.query("UPDATE invites SET expires_at = now() - interval '1 second' WHERE id = $1", [inv.id]);
    expect((await call(as, 'GET', `/organizations/${org.id}/invites`)).json().meta.total).toBe(0);
    expect((await call(invitee.principal, 'POST', `/organizations/invites/${inv.token}/accept`)).statusCode).toBe(404);
    const again = (await call(as, 'POST', `/organizations/${org.id}/invites`, { email: invitee.body.email })).json().data;

    // Cancelled: gone.
    expect((await call(as, 'DELETE', `/organizations/${org.id}/invites/${again.id}`)).statusCode).toBe(200);
    expect((await call(as, 'DELETE', `/organizations/${org.id}/invites/${again.id}`)).statusCode).toBe(404);
    expect((await call(invitee.principal, 'POST', `/organizations/invites/${again.token}/accept`)).statusCode).toBe(404);

    const third = (await call(as, 'POST', `/organizations/${org.id}/invites`, { email: invitee.body.email, role: 'viewer' })).json().data;
    expect((await call(invitee.principal, 'POST', `/organizations/invites/${third.token}/accept`)).json().data).toEqual({ org_id: org.id, role: 'viewer', team_id: null });
    expect((await call(invitee.principal, 'POST', `/organizations/invites/${third.token}/accept`)).statusCode).toBe(404);
    expect((await outbox('identity.member.added')).some((e) => e.data.userId === invitee.user.id && e.data.orgId === org.id && e.orgId === org.id)).toBe(true);
    expect((await call(as, 'POST', `/organizations/${org.id}/invites`, { email: invitee.body.email })).statusCode).toBe(409);
  });

  it('an invitation of a deleted organization cannot be accepted', async () => {
    const { org, as } = await orgWithOwner();
    const invitee = await register(svc);
    const inv = (await call(as, 'POST', `/organizations/${org.id}/invites`, { email: invitee.body.email })).json().data;
    expect((await call(as, 'DELETE', `/organizations/${org.id}`)).statusCode).toBe(200);
    expect((await call(invitee.principal, 'POST', `/organizations/invites/${inv.token}/accept`)).statusCode).toBe(404);
  });

  it('registering with an invite code for the same address joins at once (org and team); a code for another address is ignored', async () => {
    const { org, as } = await orgWithOwner();
    const team = (await call(as, 'POST', '/teams', { name: 'Welcome' })).json().data;
    const orgInvite = (await call(as, 'POST', `/organizations/${org.id}/invites`, { email: 'newbie@example.com', role: 'admin' })).json().data;
    const teamInvite = (await call(as, 'POST', `/teams/${team.id}/invites`, { email: 'teamie@example.com' })).json().data;

    const newbie = await register(svc, { email: 'NEWBIE@example.com', invite_code: orgInvite.token });
    expect((await call(actingIn(newbie, org, 'admin'), 'GET', `/organizations/${org.id}`)).json().data.role).toBe('admin');
    const teamie = await register(svc, { email: 'teamie@example.com', invite_code: teamInvite.token });
    expect((await call(as, 'GET', `/teams/${team.id}/members`)).json().data.map((m: { user_id: string }) => m.user_id)).toContain(teamie.user.id);
    const stranger = await register(svc, { invite_code: teamInvite.token }); // used already, and not their address
    expect((await call(as, 'GET', `/organizations/${org.id}/members`)).json().data.map((m: { user_id: string }) => m.user_id)).not.toContain(stranger.user.id);
    const other = (await call(as, 'POST', `/organizations/${org.id}/invites`, { email: 'someone@example.com' })).json().data;
    const wrong = await register(svc, { invite_code: other.token });
    expect((await call(as, 'GET', `/organizations/${org.id}/members`)).json().data.map((m: { user_id: string }) => m.user_id)).not.toContain(wrong.user.id);
    expect((await call(as, 'GET', `/organizations/${org.id}/invites`)).json().data.map((i: { id: string }) => i.id)).toEqual([other.id]);
  });
});

describe('organization profile', () => {
  it('avatar URLs are http(s) only; null clears nullable fields (never an empty string)', async () => {
    const { org, as } = await orgWithOwner();
    for (const bad of ['javascript:alert(1)', 'data:text/html,hi', 'ftp://x/y.png', 'not a url']) {
      expect((await call(as, 'PATCH', `/organizations/${org.id}`, { avatar_url: bad })).statusCode, bad).toBe(400);
    }
    expect((await call(as, 'PATCH', `/organizations/${org.id}`, { avatar_url: 'https://cdn.example.com/a.png' })).json().data.avatar_url).toBe('https://cdn.example.com/a.png');
    expect((await call(as, 'PATCH', `/organizations/${org.id}`, { avatar_url: null })).json().data.avatar_url).toBeNull();
    const team = (await call(as, 'POST', '/teams', { name: 'Described', description: 'words' })).json().data;
    expect((await call(as, 'PATCH', `/teams/${team.id}`, { description: null })).json().data.description).toBeNull();
    expect((await call(as, 'PATCH', `/organizations/${org.id}`, { slug: 'Bad Slug!' })).statusCode).toBe(400);
  });
});

describe('teams', () => {
  it('filters by name, paginates members, keeps team roles to owner/admin/member', async () => {
    const { owner, org, as } = await orgWithOwner();
    for (const name of ['Platform', 'Data Platform', 'Growth', '100% Sales']) expect((await call(as, 'POST', '/teams', { name })).statusCode).toBe(201);
    const names = async (q: string) => (await call(as, 'GET', `/teams?name=${encodeURIComponent(q)}`)).json().data.map((t: { name: string }) => t.name);
    expect(await names('platform')).toEqual(['Data Platform', 'Platform']);
    expect(await names('%')).toEqual(['100% Sales']); // a literal %, not a wildcard
    expect((await call(as, 'GET', '/teams?limit=2&offset=1')).json()).toMatchObject({ meta: { total: 4, limit: 2, offset: 1 } });

    const team = (await call(as, 'GET', '/teams?name=growth')).json().data[0];
    const people = [];
    for (let i = 0; i < 3; i++) {
      const p = await register(svc);
      await call(as, 'POST', `/organizations/${org.id}/members`, { user_id: p.user.id });
      people.push(p);
    }
    expect((await call(as, 'POST', `/teams/${team.id}/members`, { user_id: people[0]!.user.id, role: 'superuser' })).statusCode).toBe(400);
    for (const p of people) expect((await call(as, 'POST', `/teams/${team.id}/members`, { user_id: p.user.id, role: 'admin' })).statusCode).toBe(201);
    const page = (await call(as, 'GET', `/teams/${team.id}/members?limit=2`)).json();
    expect(page.meta).toEqual({ total: 4, limit: 2, offset: 0 });
    expect(page.data[0]).toMatchObject({ user_id: owner.user.id, role: 'owner' });
  });

  it('members leave a team themselves; admins remove anyone; leaving the organization leaves its teams', async () => {
    const { org, as } = await orgWithOwner();
    const team = (await call(as, 'POST', '/teams', { name: 'Ops' })).json().data;
    const m1 = await register(svc);
    const m2 = await register(svc);
    for (const m of [m1, m2]) {
      await call(as, 'POST', `/organizations/${org.id}/members`, { user_id: m.user.id, role: 'member' });
      await call(as, 'POST', `/teams/${team.id}/members`, { user_id: m.user.id });
    }
    const asM1 = actingIn(m1, org, 'member');
    expect((await call(asM1, 'DELETE', `/teams/${team.id}/members/${m2.user.id}`)).statusCode).toBe(403);
    expect((await call(asM1, 'DELETE', `/teams/${team.id}/members/${m1.user.id}`)).statusCode).toBe(200);
    expect((await call(asM1, 'DELETE', `/teams/${team.id}/members/${m1.user.id}`)).statusCode).toBe(404);
    expect((await outbox('identity.team_member.removed')).some((e) => e.data.userId === m1.user.id && e.data.teamId === team.id)).toBe(true);

    expect((await call(as, 'DELETE', `/organizations/${org.id}/members/${m2.user.id}`)).statusCode).toBe(200);
    expect((await call(as, 'GET', `/teams/${team.id}`)).json().data.members.map((m: { user_id: string }) => m.user_id)).not.toContain(m2.user.id);
  });

  it('a deleted team takes its pending invitations with it; accepting a team invite as an existing member keeps the stronger org role', async () => {
    const { org, as } = await orgWithOwner();
    const team = (await call(as, 'POST', '/teams', { name: 'Short lived' })).json().data;
    const invitee = await register(svc);
    const inv = (await call(as, 'POST', `/teams/${team.id}/invites`, { email: invitee.body.email })).json().data;
    expect((await call(as, 'DELETE', `/teams/${team.id}`)).statusCode).toBe(200);
    expect((await call(invitee.principal, 'POST', `/organizations/invites/${inv.token}/accept`)).statusCode).toBe(404);

    const team2 = (await call(as, 'POST', '/teams', { name: 'Lasting' })).json().data;
    await call(as, 'POST', `/organizations/${org.id}/members`, { user_id: invitee.user.id, role: 'admin' });
    const inv2 = (await call(as, 'POST', `/teams/${team2.id}/invites`, { email: invitee.body.email, role: 'viewer' })).json().data;
    expect((await call(as, 'POST', `/teams/${team2.id}/invites`, { email: invitee.body.email })).statusCode).toBe(409);
    expect((await call(invitee.principal, 'POST', `/organizations/invites/${inv2.token}/accept`)).json().data).toEqual({ org_id: org.id, role: 'admin', team_id: team2.id });
    expect((await call(as, 'POST', `/teams/${team2.id}/invites`, { email: invitee.body.email })).statusCode).toBe(409); // in the team now
  });

  it('an API key with org:write manages teams of its own org; with org:read only reads them', async () => {
    const { owner, org } = await orgWithOwner();
    const writer = apiKeyPrincipal(['org:write'], { orgId: org.id, tenantId: org.tenant_id, userId: owner.user.id });
    const created = await call(writer, 'POST', '/teams', { name: 'By a key' });
    expect(created.statusCode).toBe(201);
    expect(created.json().data.member_count).toBe(0); // a key is nobody's membership
    const reader = apiKeyPrincipal(['org:read'], { orgId: org.id, tenantId: org.tenant_id, userId: owner.user.id });
    expect((await call(reader, 'GET', '/teams')).json().meta.total).toBe(1);
    expect((await call(reader, 'PATCH', `/teams/${created.json().data.id}`, { name: 'x' })).json().error.code).toBe('SCOPE_REQUIRED');
  });
});
